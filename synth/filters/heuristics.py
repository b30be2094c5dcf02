"""Cheap checks on a pair, run before the model-based filters.

Each class is one filter block (see synth.filters.base). Defaults are OpusFilter's published ones
(https://github.com/Helsinki-NLP/OpusFilter, opusfilter/filters.py) unless a comment says why
not: LengthFilter 1-100 words, LengthRatioFilter 3, LongestCommonSubstringFilter 0.9,
RepetitionFilter 2 repeats of 3-100 characters, NonZeroNumeralsFilter 0.5,
TerminalPunctuationFilter -2.
"""

import difflib
import math
import re

import numpy as np
from rapidfuzz.distance import Indel, LCSseq
from synth.filters.base import BaseFilter

# Refusals and chatter that stand in for (or wrap) a translation. Each phrase is one a model says
# about its task, not one a translated sentence says: a bare "I'm sorry" is content ("Ngiyaxolisa").
# A phrase that the source itself holds is content too and is not held against the pair.
REFUSAL = re.compile(
    r"\bas an ai\b|\bas an? (?:ai |large )?language model\b|\bi(?:'m| am) an ai\b|"
    r"\bi(?: cannot|can't|can not| am unable to|'m unable to| won't| will not| am not able to|'m not able to) "
    r"(?:translate|help|assist|provide|do that|comply|fulfil)|"
    r"\bi(?:'m| am) sorry,? but\b|\bi apologi[sz]e,? but\b|\b(?:cannot|can't|unable to) (?:be )?translat|"
    r"\bi (?:do not|don't) (?:know|understand) (?:the|this|what)\b|"
    r"\bhere(?:'s| is| are) (?:the|a|my|your) (?:\w+ )?translations?\b|\b(?:the )?translation (?:is|reads)\s*:|"
    r"^\W*(?:translation|translated text)\s*:|^\W*(?:sure|certainly|of course)\s*[,!.]|"
    r"\bi hope (?:this|that) helps\b|\blet me know if\b|\bnote:\s|"
    # The same in the other common pivot languages (French, Spanish, Portuguese).
    r"\bje suis désolée?,? mais\b|\bje ne (?:peux|suis) pas (?:traduire|fournir|aider|en mesure)|"
    r"\ben tant que (?:modèle de langage|ia\b|intelligence artificielle)|\bvoici (?:la|une) traduction\b|"
    r"\blo siento,? pero\b|\bno puedo (?:traducir|proporcionar|ayudar)|"
    r"\bcomo (?:un )?(?:modelo de lenguaje|ia\b|inteligencia artificial)|\baquí (?:está|tienes) la traducción\b|"
    r"\bdesculpe,? mas\b|\bnão (?:posso|consigo) (?:traduzir|fornecer|ajudar)|"
    r"\bcomo (?:um )?modelo de linguagem|\baqui está a tradução\b",
    re.I | re.M,
)
# OpusFilter's RepetitionFilter pattern: a string of min_length..max_length characters (not
# starting with a space) followed by `threshold` copies of itself, spaces allowed between (exactly
# `threshold`: finding more adds nothing to a yes/no and costs time).
_REPEAT = "(\\S.{{{low},{high}}}?)(?: *\\1){{{times}}}"
# Sentence-final marks: OpusFilter's . ? ! … plus those of the scripts low-resource languages use
# (Ethiopic ። ፧ ፨, Arabic ؟ ۔, Devanagari । ॥, CJK 。！？, Armenian ։, Myanmar ။, Khmer ។).
TERMINAL_PUNCTUATION = frozenset(".?!…።፧፨؟۔।॥。！？։။។")
# Amharic typists often write the full stop '።' as two word separators '፡፡'.
_ETHIOPIC_FULL_STOP = re.compile("፡[ \t]*፡")
_CLOSING = "\"'”’»)]}*_፡ \t\n"  # what may follow a full stop (Ethiopic: a word separator)
# Word separators besides whitespace: Ethiopic writes '፡' between words, often with no space.
_WORD = re.compile(r"[^\s፡]+")


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


class EmptyAnswerFilter(BaseFilter):
    name = "empty"

    def judge_row(self, row: dict) -> str | None:
        return None if (row.get("translation") or "").strip() else "empty_translation"


class SideFilter(BaseFilter):
    """A filter that suspects each of `sides` in turn (the synthetic one by default), judged
    against its partner: the row is dropped for the first side `judge_side` gives a reason for."""

    def __init__(self, sides: tuple[str, ...] = ("translation",)):
        self.sides = sides

    def judge_side(self, side: str, text: str, partner: str) -> str | None:
        raise NotImplementedError

    def judge_row(self, row: dict) -> str | None:
        for side in self.sides:
            partner = row["text"] if side == "translation" else row["translation"]
            verdict = self.judge_side(side, row[side], partner)
            if verdict:
                return verdict
        return None


class RefusalFilter(SideFilter):
    """A side holding a refusal or chatter ("Here is the translation:") that its partner does not."""

    name = "refusal"

    def judge_side(self, side: str, text: str, partner: str) -> str | None:
        match = REFUSAL.search(text)
        return f"refusal:{match.group(0).strip()[:40]}" if match and not REFUSAL.search(partner) else None


class CopyFilter(BaseFilter):
    """The 'translation' is (nearly) the source again.

    Two measures, on casefolded text: the longest common substring over the shorter side
    (OpusFilter LongestCommonSubstringFilter, threshold 0.9: catches one side contained in the
    other) and difflib's similarity ratio (catches a copy with a few words changed; 0.8: the
    closest good UDHR pair, Haitian Creole against French, is at 0.50).
    """

    name = "copy"

    def __init__(self, max_similarity: float = 0.8, max_lcs_ratio: float = 0.9):
        self.max_similarity = max_similarity
        self.max_lcs_ratio = max_lcs_ratio

    def judge_row(self, row: dict) -> str | None:
        return self.verdict(row["text"].casefold(), row["translation"].casefold())

    def verdict(self, source: str, target: str) -> str | None:
        # difflib is pure Python (~2 ms a pair of paragraphs); rapidfuzz's C++ bounds it first (~0.01 ms):
        # the longest common substring is at most the longest common subsequence, and difflib's
        # ratio at most the Indel similarity (2 x LCS subsequence / total length). A real translation
        # stays below both bounds (UDHR: Indel 0.62 at most), so difflib runs for near-copies only.
        if source == target:
            return "copy:identical"
        shorter = min(len(source), len(target))
        if shorter and LCSseq.similarity(source, target) >= self.max_lcs_ratio * shorter:
            matcher = difflib.SequenceMatcher(None, source, target, autojunk=False)
            lcs = matcher.find_longest_match(0, len(source), 0, len(target)).size / shorter
            if lcs >= self.max_lcs_ratio:
                return f"copy:lcs={lcs:.2f}"
        if Indel.normalized_similarity(source, target) > self.max_similarity:
            ratio = difflib.SequenceMatcher(None, source, target, autojunk=False).ratio()
            if ratio > self.max_similarity:
                return f"copy:similarity={ratio:.2f}"
        return None


class LengthFilter(BaseFilter):
    """Each side's length within bounds: words (OpusFilter LengthFilter: 1 to 100) and, where
    set, characters (for scripts written without spaces, where a sentence is one 'word').

    OpusFilter's bounds are for sentences. With `per_sentence` (the default) a segment of several
    sentences (a paragraph, a whole record) has its upper bounds applied to each of its sentences,
    not to the whole: a long, good paragraph is not dropped for being long, while a run-on "sentence"
    past the bound still is. `derived_thresholds` counts the rows judged per sentence
    (`paragraphs`), so the card can say which rule applied."""

    name = "length"

    def __init__(
        self, min_words: int = 1, max_words: int | None = 100, min_chars: int = 1, max_chars: int | None = None,
        per_sentence: bool = True,
    ):
        self.min_words, self.max_words = min_words, max_words
        self.min_chars, self.max_chars = min_chars, max_chars
        self.per_sentence = per_sentence
        self.derived_thresholds: dict[str, float] = {}

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        paragraphs = 0
        for row in rows:
            verdict = None
            paragraph = self.per_sentence and is_paragraph(row)
            paragraphs += paragraph
            for side in ("translation", "text"):
                words, chars = word_count(row[side]), len(row[side])
                if paragraph:
                    units = sentences(row[side])
                    most_words, most_chars = max(map(word_count, units)), max(map(len, units))
                    unit = f"{side}_sentence"
                else:
                    most_words, most_chars, unit = words, chars, side
                if words < self.min_words or (self.max_words is not None and most_words > self.max_words):
                    verdict = f"length:{unit}={most_words if words >= self.min_words else words}_words"
                elif chars < self.min_chars or (self.max_chars is not None and most_chars > self.max_chars):
                    verdict = f"length:{unit}={most_chars if chars >= self.min_chars else chars}_chars"
                if verdict:
                    break
            verdicts.append(verdict)
        self.derived_thresholds = {"paragraphs": paragraphs} if self.per_sentence else {}
        return verdicts


def sentences(text: str) -> list[str]:
    """The sentences of a segment (synth's segmenter), at least one."""
    from synth.read.segment import split_sentences

    return split_sentences(text) or [text]


def is_paragraph(row: dict) -> bool:
    """A pair whose segments hold several sentences on either side (a paragraph, a whole record)."""
    return any(terminal_marks(row[side]) > 1 and len(sentences(row[side])) > 1 for side in ("text", "translation"))


def terminal_marks(text: str) -> int:
    return sum(ch in TERMINAL_PUNCTUATION for ch in _ETHIOPIC_FULL_STOP.sub("።", text))


class LengthRatioFilter(BaseFilter):
    """Longer side over shorter side, in characters (OpusFilter LengthRatioFilter, threshold 3).

    OpusFilter counts words by default; characters here, because Ethiopic text separates words
    with '፡' and CJK/Thai not at all: an Amharic UDHR article is one whitespace 'word'.
    """

    name = "length_ratio"

    def __init__(self, max_ratio: float = 3.0):
        self.max_ratio = max_ratio

    def judge_row(self, row: dict) -> str | None:
        a, b = len(row["text"]), len(row["translation"])
        ratio = max(a, b) / max(1, min(a, b))
        return f"length_ratio:{ratio:.2f}" if ratio >= self.max_ratio else None


class RepetitionFilter(BaseFilter):
    """A side repeating a string of 3-100 characters 2+ more times in a row (OpusFilter
    RepetitionFilter), unless its partner repeats too (a chant, a list: content, not a loop)."""

    name = "repetition"

    def __init__(self, times: int = 2, min_length: int = 3, max_length: int = 100):
        self.pattern = re.compile(_REPEAT.format(low=min_length - 1, high=max_length, times=times))
        self.times = times
        self.max_period = max_length + 1  # the pattern's unit: \S plus up to max_length characters

    def search(self, text: str) -> re.Match | None:
        """The pattern's first match, or None. The regex tries every unit length at every position
        (~2 ms a paragraph); a vectorised test that can only err towards "maybe" runs first
        (~0.2 ms), so the regex runs on the few texts that may repeat."""
        return self.pattern.search(text) if self.may_repeat(text) else None

    def may_repeat(self, text: str) -> bool:
        """False only when the pattern cannot match. A match is a unit u, spaces, u, spaces, u...;
        with every space removed it becomes v v v (v: u without its spaces, 1 to max_period
        characters), a stretch where each character equals the one p = len(v) further on for
        times * p characters in a row. That is looked for at every period at once."""
        codes = np.frombuffer(text.replace(" ", "").encode("utf-32-le"), dtype=np.uint32)
        n = len(codes)
        periods = np.arange(1, min(self.max_period, n // (self.times + 1)) + 1)
        if not len(periods):
            return False
        positions = np.arange(n)
        ahead = positions[None, :] + periods[:, None]
        same = (codes[None, :] == codes[np.minimum(ahead, n - 1)]) & (ahead < n)
        runs = np.zeros((len(periods), n + 1), dtype=np.int32)
        np.cumsum(same, axis=1, out=runs[:, 1:])
        ends = positions[None, :] + self.times * periods[:, None]
        full = runs[np.arange(len(periods))[:, None], np.minimum(ends, n)] - runs[:, :n]
        return bool(((full == self.times * periods[:, None]) & (ends <= n)).any())

    def judge_row(self, row: dict) -> str | None:
        for side, other in (("translation", "text"), ("text", "translation")):
            match = self.search(row[side])
            if match and not self.search(row[other]):
                return f"repetition:{side}={match.group(1)[:20]!r}"
        return None


class NumeralsFilter(BaseFilter):
    """The non-zero digits of the two sides, in order, must agree (OpusFilter NonZeroNumeralsFilter:
    difflib ratio of the digit sequences >= 0.5; no digits on either side agrees)."""

    name = "numerals"

    def __init__(self, min_similarity: float = 0.5):
        self.min_similarity = min_similarity

    @staticmethod
    def digits(text: str) -> list[int]:
        # Any script's digits (Arabic-Indic, Devanagari, ...) count as their value.
        return [int(ch) for ch in text if ch.isdecimal() and int(ch) != 0]

    def judge_row(self, row: dict) -> str | None:
        ratio = difflib.SequenceMatcher(None, self.digits(row["text"]), self.digits(row["translation"])).ratio()
        return f"numerals:{ratio:.2f}" if ratio < self.min_similarity else None


class TerminalPunctuationFilter(BaseFilter):
    """OpusFilter's TerminalPunctuationFilter (Vázquez et al. 2019): penalty = |marks(a) - marks(b)|
    plus the marks beyond the first on each side; score = -log(penalty + 1) >= threshold (-2).

    Sentence-level by design: segments of five or more sentences a side score below -2 whatever
    their quality. With `per_sentence` (the default) a paragraph pair is judged as the sentence
    pairs it holds: each sentence has its one mark, so only the difference in sentence counts is a
    penalty (a paragraph of 6 sentences against one of 6 scores 0, against one of 1 scores -1.79,
    against none: -1.95, and the truncation filter is there for that). Sentence pairs get
    OpusFilter's score unchanged."""

    name = "terminal_punctuation"

    def __init__(self, threshold: float = -2.0, per_sentence: bool = True):
        self.threshold = threshold
        self.per_sentence = per_sentence
        self.derived_thresholds: dict[str, float] = {}

    @staticmethod
    def score(text: str, translation: str, paragraph: bool = False) -> float:
        a, b = terminal_marks(text), terminal_marks(translation)
        penalty = abs(a - b) + (0 if paragraph else max(a - 1, 0) + max(b - 1, 0))
        return -math.log(penalty + 1)

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        paragraphs = 0
        for row in rows:
            paragraph = self.per_sentence and is_paragraph(row)
            paragraphs += paragraph
            score = self.score(row["text"], row["translation"], paragraph)
            verdicts.append(f"terminal_punctuation:{score:.2f}" if score < self.threshold else None)
        self.derived_thresholds = {"paragraphs": paragraphs} if self.per_sentence else {}
        return verdicts


# Marks that close a clause: a segment ending with one is complete, not cut off. Sentence
# splitters (synth's among them) split at semicolons, so an aligned corpus pairs "..., religion;"
# with a partner that ends its sentence with a full stop (UDHR: 17 of the 180 good Kinyarwanda
# sentence pairs of bench/filters.py were dropped as truncations for it).
CLAUSE_END = frozenset(";:؛፤፥")


def ends_sentence(text: str, clause: bool = False) -> bool:
    """Whether `text` ends with sentence-final punctuation (closing quotes and brackets aside);
    with `clause`, a clause-final mark (semicolon, colon) counts too."""
    text = _ETHIOPIC_FULL_STOP.sub("።", text).rstrip(_CLOSING)
    return bool(text) and (text[-1] in TERMINAL_PUNCTUATION or (clause and text[-1] in CLAUSE_END))


class TruncationFilter(SideFilter):
    """A side that stops mid-sentence where its partner ends one: an answer cut off by the token
    limit, a segment split badly. Only `sides` are suspected (the synthetic one by default): a
    human-written side missing its full stop is not a truncation."""

    name = "truncation"

    def judge_side(self, side: str, text: str, partner: str) -> str | None:
        return f"truncation:{side}" if ends_sentence(partner) and not ends_sentence(text, clause=True) else None


_ECHO_WORD = re.compile(r"\w+", re.U)


def _trigrams(text: str) -> list[tuple[str, ...]]:
    words = _ECHO_WORD.findall(text.casefold())
    return list(zip(words, words[1:], words[2:]))


class PromptEchoFilter(SideFilter):
    """An answer that repeats the prompt's instructions (the system prompt or the user message
    around the text, word for word or nearly) instead of translating: the share of its word
    trigrams found in the instructions is at least `max_share` (0.5). A side whose partner holds
    the same trigrams (a corpus about translation, say) is not held against the pair.

    `instructions`: the prompt's own words, the text to translate left out (see
    `instruction_texts`); a pair from a corpus of unknown making is checked against the default
    back-translation prompt's.
    """

    name = "prompt_echo"

    def __init__(self, instructions: list[str], max_share: float = 0.5, sides: tuple[str, ...] = ("translation",)):
        super().__init__(sides)
        self.max_share = max_share
        self.grams = {gram for text in instructions for gram in _trigrams(text)}

    def share(self, text: str) -> float:
        grams = _trigrams(text)
        return sum(gram in self.grams for gram in grams) / len(grams) if grams else 0.0

    def judge_side(self, side: str, text: str, partner: str) -> str | None:
        share = self.share(text or "")
        return f"prompt_echo:{side}={share:.2f}" if share >= self.max_share and self.share(partner or "") < self.max_share else None


def instruction_texts(template, **names: str) -> list[str]:
    """The fixed words of a prompt template (synth.generate.prompts.PromptTemplate): its system
    prompt and its user message with the text left out, language names filled in where given."""
    values = {"source_language": "", "target_language": "", **names, "text": "\n"}

    class _Blank(dict):
        def __missing__(self, key):  # a placeholder this task does not fill: left out
            return ""

    return [part.format_map(_Blank(values)) for part in (template.system, template.user) if part]
