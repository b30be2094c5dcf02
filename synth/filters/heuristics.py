"""Cheap checks on a generated pair, run before the model-based filters.

Each class is one filter block (see synth.filters.base). Defaults follow OpusFilter's published
ones where it has them (length ratio 3, unit characters).
"""

import re
from difflib import SequenceMatcher

# Refusals and chatter that stand in for a translation. Anchored loosely: they are checked on
# the parsed answer, which should hold a translation and nothing else.
REFUSAL = re.compile(
    r"\b(as an ai\b|as a language model|i am an ai|i'm an ai|language model\b|i (?:cannot|can't|can not|am unable to|'m unable to|won't) "
    r"(?:translate|help|assist|provide|do that|comply)|i(?:'m| am) sorry\b|i apologi[sz]e|i (?:do not|don't) (?:know|understand)|"
    r"(?:cannot|can't|unable to) (?:be )?translat)",
    re.I,
)
# The same run of 10+ characters three times in a row: a model stuck in a loop.
REPEAT = re.compile(r"(.{10,}?)\1{2,}", re.S)


class EmptyAnswerFilter:
    name = "empty"

    def judge(self, rows: list[dict]) -> list[str | None]:
        return [None if (row.get("translation") or "").strip() else "empty_translation" for row in rows]


class RefusalFilter:
    name = "refusal"

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            match = REFUSAL.search(row["translation"])
            # A refusal phrase inside the source itself is content, not chatter.
            verdicts.append(f"refusal:{match.group(0)}" if match and not REFUSAL.search(row["text"]) else None)
        return verdicts


class CopyFilter:
    """The 'translation' is (nearly) the source again."""

    name = "copy"

    def __init__(self, max_similarity: float = 0.8):
        self.max_similarity = max_similarity

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            source, target = row["text"].casefold(), row["translation"].casefold()
            matcher = SequenceMatcher(None, source, target, autojunk=False)
            if source == target:
                verdicts.append("copy:identical")
            elif matcher.quick_ratio() > self.max_similarity and matcher.ratio() > self.max_similarity:
                verdicts.append(f"copy:{matcher.ratio():.2f}")
            else:
                verdicts.append(None)
        return verdicts


class LengthRatioFilter:
    """Longer side over shorter side, in characters (OpusFilter LengthRatioFilter, threshold 3)."""

    name = "length_ratio"

    def __init__(self, max_ratio: float = 3.0):
        self.max_ratio = max_ratio

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            a, b = len(row["text"]), len(row["translation"])
            ratio = max(a, b) / max(1, min(a, b))
            verdicts.append(f"length_ratio:{ratio:.2f}" if ratio > self.max_ratio else None)
        return verdicts


class RepetitionFilter:
    name = "repetition"

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            match = REPEAT.search(row["translation"])
            looped = match and not REPEAT.search(row["text"])
            verdicts.append(f"repetition:{match.group(1)[:20]!r}" if looped else None)
        return verdicts
