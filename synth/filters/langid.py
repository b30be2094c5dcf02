"""Language identification: does each side of a pair really read as the language it claims?

Three detectors with different coverage, tried in preference order: pycld2 (~160 languages, the
most accurate on UDHR), then langdetect (55; it labels languages it lacks confidently as something
else: Yoruba as Vietnamese, Zulu as Swahili, so it only answers for languages it knows), then
py3langid (~140). The user may name the detector of a language (`chosen`) and its minimum score.
A language none of them knows cannot be checked: such rows are kept as "unverified" rather than
dropped, and counted so the caller can say how many there were (the script check in
synth.filters.script still applies to them).

All codes are canonical (`synth.languages.normalize_language`, which also folds 'swh' into the
'sw' the detectors answer), so a detection matches when the two codes are equal.
"""

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from typing import Protocol

from synth.languages import UnknownLanguageError, language_name, normalize_language
from synth.filters.base import BaseFilter


@dataclass(frozen=True)
class Detection:
    lang: str | None  # canonical code; None when the detector could not tell
    score: float      # probability of `lang`, 0..1


class Detector(Protocol):
    name: str
    languages: frozenset[str]  # the canonical codes `detect` can answer

    def detect(self, text: str) -> Detection: ...


def _canonical_codes(raw_codes: Iterable[str]) -> dict[str, str]:
    """A detector's own labels -> canonical codes ('zh-cn' -> 'zh', 'iw' -> 'he', 'jw' -> 'jv').

    Labels that name no language (pycld2's 'zzp' = Pig Latin and 'xx-Goth' = a script, py3langid's
    'zxx') are left out, so looking them up gives None, as for any label not listed ('un').
    """
    codes = {}
    for raw in raw_codes:
        try:
            codes[raw] = normalize_language(raw)
        except UnknownLanguageError:
            continue
    return codes


class LangdetectDetector:
    name = "langdetect"

    def __init__(self) -> None:
        from langdetect.detector_factory import PROFILES_DIRECTORY

        self._profiles_dir = PROFILES_DIRECTORY
        # One profile file per language, named by its code: the same list the factory loads,
        # read without paying for the load, so a coverage table stays instant.
        self._codes = _canonical_codes(f for f in os.listdir(PROFILES_DIRECTORY) if not f.startswith("."))
        self.languages = frozenset(self._codes.values())

    @cached_property
    def _factory(self):
        from langdetect.detector_factory import DetectorFactory

        factory = DetectorFactory()
        factory.load_profile(self._profiles_dir)  # ~0.6 s, hence on first use only
        # langdetect samples n-grams at random; a fixed seed makes the same text give the same
        # answer. Set on this factory, not on the class, so other users of langdetect are untouched.
        factory.set_seed(0)
        return factory

    def detect(self, text: str) -> Detection:
        from langdetect.lang_detect_exception import LangDetectException

        detector = self._factory.create()
        detector.append(text)
        try:
            best = detector.get_probabilities()[0]
        except LangDetectException:  # no letters at all (digits, punctuation)
            return Detection(None, 0.0)
        return Detection(self._codes.get(best.lang), float(best.prob))


def _printable(text: str) -> str:
    # Control characters, surrogates and non-characters (U+FFFE) are what pycld2 rejects as
    # "invalid UTF-8"; none of them carries language, so a space stands in for each.
    return "".join(ch if ch.isprintable() else " " for ch in text)


class Cld2Detector:
    name = "pycld2"

    def __init__(self) -> None:
        import pycld2

        self._cld2 = pycld2
        # LANGUAGES lists every (NAME, code) CLD2 has a name for; DETECTED_LANGUAGES the names
        # its model can actually output.
        detected = set(pycld2.DETECTED_LANGUAGES)
        self._codes = _canonical_codes({code for name, code in pycld2.LANGUAGES if name in detected})
        self.languages = frozenset(self._codes.values())

    def _top(self, text: str) -> tuple[bool, str, int]:
        reliable, _, details = self._cld2.detect(text, isPlainText=True)  # not HTML: keep '<'
        _, code, percent, _ = details[0]
        return reliable, code, percent

    def detect(self, text: str) -> Detection:
        try:
            reliable, code, percent = self._top(text)
        except (self._cld2.error, UnicodeEncodeError):  # UnicodeEncodeError: lone surrogates
            try:
                reliable, code, percent = self._top(_printable(text))
            except (self._cld2.error, UnicodeEncodeError):
                return Detection(None, 0.0)
        lang = self._codes.get(code)  # 'un' (unknown) maps to None
        if not reliable or lang is None:
            return Detection(None, 0.0)
        # CLD2 reports the share of the text's bytes in each language, not a probability; the
        # share of the top language is the closest thing it offers.
        return Detection(lang, percent / 100)


class Py3LangidDetector:
    name = "py3langid"

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        # norm_probs: softmax probabilities (0..1) instead of raw log-likelihoods.
        self._model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)  # ~0.8 s
        self._codes = _canonical_codes(self._model.labels)
        self.languages = frozenset(self._codes.values())

    def detect(self, text: str) -> Detection:
        code, prob = self._model.classify(text)
        return Detection(self._codes.get(code), float(prob))


_DETECTOR_CLASSES = {cls.name: cls for cls in (LangdetectDetector, Cld2Detector, Py3LangidDetector)}
# Preference order. pycld2 first: on the 30 UDHR articles of 18 languages it was right 540/540
# where it knows the language (langdetect 178/180, py3langid 479/480) and is ~200x faster than
# langdetect; langdetect and py3langid still answer for languages pycld2 lacks.
DEFAULT_DETECTORS = ("pycld2", "langdetect", "py3langid")


@cache
def check_detector_name(name: str) -> None:
    """Raises ValueError, with the known names, for a detector synth does not have (loads nothing)."""
    if name not in _DETECTOR_CLASSES:
        raise ValueError(f"unknown language detector {name!r}; known: {', '.join(_DETECTOR_CLASSES)}")


@lru_cache(maxsize=None)
def make_detector(name: str) -> Detector:
    """The detector called `name`, built on first request and shared afterwards (models load slowly)."""
    check_detector_name(name)
    return _DETECTOR_CLASSES[name]()


@dataclass(frozen=True)
class LidResult:
    lang: str | None       # detected language (canonical), None when the detector could not tell
    score: float | None
    detector: str | None   # the detector that produced lang/score
    status: str            # "verified" | "failed" | "unverified" (no detector knows the language)


class LanguageIdentifier:
    def __init__(
        self,
        detectors: Sequence[str] = DEFAULT_DETECTORS,
        min_score: float = 0.5,
        min_scores: Mapping[str, float] | None = None,
        chosen: Mapping[str, str] | None = None,
    ):
        """`min_scores` and `chosen` (a detector name) override the defaults per language."""
        if not detectors:
            raise ValueError("LanguageIdentifier needs at least one detector")
        self.detectors = [make_detector(name) for name in detectors]  # in preference order
        self.min_score = min_score
        self.min_scores = {normalize_language(lang): score for lang, score in (min_scores or {}).items()}
        self.chosen = {normalize_language(lang): make_detector(name) for lang, name in (chosen or {}).items()}
        for lang, detector in self.chosen.items():
            if lang not in detector.languages:
                known = [d.name for d in map(make_detector, _DETECTOR_CLASSES) if lang in d.languages]
                raise ValueError(
                    f"{detector.name} cannot recognise {language_name(lang)} ({lang}); "
                    + (f"detectors that can: {', '.join(known)}" if known else "no available detector can")
                )

    def detector_for(self, lang: str) -> Detector | None:
        """The detector named for `lang`, else the first in preference order that can recognise it."""
        lang = normalize_language(lang)
        if lang in self.chosen:
            return self.chosen[lang]
        return next((d for d in self.detectors if lang in d.languages), None)

    def identify(self, text: str, expected: str) -> LidResult:
        expected = normalize_language(expected)
        detector = self.detector_for(expected)
        # With nobody able to recognise the language, the first detector's guess is still
        # worth recording (e.g. a supposed Nahuatl text that reads as Spanish).
        found = self._detect(detector or self.detectors[0], text)
        if detector is None:
            return LidResult(found.lang, found.score, self.detectors[0].name, "unverified")
        threshold = self.min_scores.get(expected, self.min_score)
        status = "verified" if found.lang == expected and found.score >= threshold else "failed"
        return LidResult(found.lang, found.score, detector.name, status)

    @staticmethod
    def _detect(detector: Detector, text: str) -> Detection:
        # An empty side is in no language; py3langid would otherwise answer a uniform guess.
        if not text or not text.strip():
            return Detection(None, 0.0)
        return detector.detect(text)

    def coverage(self, langs: Iterable[str] | None = None) -> list[dict]:
        """One row per language: which detectors know it and which one would check it."""
        from synth.filters.script import expected_scripts

        if langs is None:
            codes = set().union(*(d.languages for d in self.detectors))
        else:
            codes = {normalize_language(lang) for lang in langs}
        rows = []
        for code in sorted(codes):
            chosen = self.detector_for(code)
            rows.append(
                {
                    "lang": code,
                    "name": language_name(code),
                    **{d.name: code in d.languages for d in self.detectors},
                    "chosen": chosen.name if chosen else None,
                    "script": "+".join(sorted(expected_scripts(code))) or None,
                }
            )
        return rows


class LanguageIdFilter(BaseFilter):
    """Drops a pair when either side is not in its declared language; unknown languages pass."""

    name = "language_id"

    def __init__(
        self,
        identifier: LanguageIdentifier,
        text_key: str = "text",
        text_lang_key: str = "lang",
        translation_key: str = "translation",
        translation_lang_key: str = "pivot_lang",
    ):
        self.identifier = identifier
        self.text_key = text_key
        self.text_lang_key = text_lang_key
        self.translation_key = translation_key
        self.translation_lang_key = translation_lang_key
        self.unverified_counts: Counter = Counter()  # "text" / "translation" -> rows kept unchecked

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            translation = self.identifier.identify(row.get(self.translation_key) or "", row[self.translation_lang_key])
            text = self.identifier.identify(row.get(self.text_key) or "", row[self.text_lang_key])
            for prefix, result in (("", translation), ("text_", text)):
                row[f"{prefix}lid_lang"] = result.lang
                row[f"{prefix}lid_score"] = result.score
                row[f"{prefix}lid_detector"] = result.detector
                row[f"{prefix}lid_status"] = result.status
            for side, result in (("translation", translation), ("text", text)):
                if result.status == "unverified":
                    self.unverified_counts[side] += 1
            # The synthetic side is the likelier culprit, so its mismatch is the reason given.
            if translation.status == "failed":
                verdicts.append(f"lid_mismatch:translation={translation.lang or 'unknown'}")
            elif text.status == "failed":
                verdicts.append(f"lid_mismatch:text={text.lang or 'unknown'}")
            else:
                verdicts.append(None)
        return verdicts
