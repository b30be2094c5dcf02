"""Script check: is a side written in the script its language is written in?

Backs up language ID where detectors are weak or absent: a Tigrinya claim written in Latin letters,
an Amharic side answered in English, a Zulu side in Arabic script all fail here whatever a detector
says. The expected script comes from CLDR's likely subtags (`langcodes`: 'am' -> Ethi, 'zu' ->
Latn, 'sr' -> Cyrl); the script of each letter from the Unicode Character Database as fontTools
ships it. Letters shared by several scripts (Common, Inherited) are left out of the count.
"""

from collections import Counter
from collections.abc import Mapping
from functools import cache

import langcodes
from fontTools import unicodedata

from synth.filters.base import BaseFilter, PerLanguage
from synth.languages import normalize_language

# ISO 15924 codes that stand for several scripts used together.
_COMPOSITE_SCRIPTS = {
    "Jpan": frozenset({"Hira", "Kana", "Hani"}),
    "Kore": frozenset({"Hang", "Hani"}),
    "Hans": frozenset({"Hani"}),
    "Hant": frozenset({"Hani"}),
    "Hrkt": frozenset({"Hira", "Kana"}),
}
_SHARED = frozenset({"Zyyy", "Zinh", "Zzzz"})  # Common, Inherited, Unknown

_script_of = cache(unicodedata.script)


@cache
def expected_scripts(lang: str) -> frozenset[str]:
    """The ISO 15924 script(s) `lang` is most likely written in ('am' -> {'Ethi'}, 'ja' -> Hira/Kana/Hani)."""
    script = langcodes.Language.get(normalize_language(lang)).maximize().script
    if script is None:
        return frozenset()
    return _COMPOSITE_SCRIPTS.get(script, frozenset({script}))


def parse_scripts(value: str) -> frozenset[str]:
    """'Latn' or 'Arab+Latn' (either script is right) -> ISO 15924 codes; raises ValueError on an unknown one."""
    codes = frozenset(part.strip().title() for part in value.split("+") if part.strip())
    for code in codes:
        if unicodedata.script_name(code, default=None) is None and code not in _COMPOSITE_SCRIPTS:
            raise ValueError(f"unknown script {code!r}: use ISO 15924 codes such as Latn, Ethi, Arab, Cyrl, Deva")
    expanded = frozenset().union(*(_COMPOSITE_SCRIPTS.get(code, {code}) for code in codes))
    if not expanded:
        raise ValueError(f"no script in {value!r}")
    return expanded


def script_counts(text: str) -> Counter:
    """Letters per script (ISO 15924), Common and Inherited letters left out."""
    counts = Counter(map(_script_of, filter(str.isalpha, text)))
    for shared in _SHARED & counts.keys():
        del counts[shared]
    return counts


def script_share(text: str, scripts: frozenset[str]) -> tuple[float | None, str | None]:
    """(share of the letters in `scripts`, the most frequent script); (None, None) without letters."""
    counts = script_counts(text)
    total = sum(counts.values())
    if not total:
        return None, None
    return sum(counts[s] for s in scripts) / total, counts.most_common(1)[0][0]


class ScriptFilter(BaseFilter):
    """Drops a pair when less than `min_share` of a side's letters are in its language's script.

    A side without letters (digits, punctuation) passes: it has no script to be wrong in. A language
    CLDR gives no script for passes too (counted as unchecked). `scripts` overrides the expected
    script per language, e.g. {'ha': 'Latn+Arab'} for Hausa written in Ajami as well.
    """

    name = "script"

    def __init__(
        self,
        min_share: PerLanguage[float] | float = 0.9,
        scripts: Mapping[str, str] | None = None,
        sides: tuple[tuple[str, str], ...] = (("translation", "pivot_lang"), ("text", "lang")),
    ):
        self.min_share = PerLanguage.of(min_share)
        self.scripts = {normalize_language(lang): parse_scripts(value) for lang, value in (scripts or {}).items()}
        self.sides = sides

    def scripts_for(self, lang: str) -> frozenset[str]:
        lang = normalize_language(lang)
        return self.scripts.get(lang) or expected_scripts(lang)

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            verdict = None
            for text_key, lang_key in self.sides:
                lang = row[lang_key]
                expected = self.scripts_for(lang)
                share, found = script_share(row.get(text_key) or "", expected) if expected else (None, None)
                row[f"{text_key}_script_share"] = None if share is None else round(share, 4)
                threshold = self.min_share(lang)  # None: this language is not checked
                if verdict is None and share is not None and threshold is not None and share < threshold:
                    verdict = f"script:{text_key}={found}"
            verdicts.append(verdict)
        return verdicts
