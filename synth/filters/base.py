"""Filter blocks: each looks at a batch of rows and answers keep (None) or drop (a reason).

A filter may add score columns to the rows it sees (consistency, lid_lang, ...), so kept and
dropped rows both carry the evidence. `FilterChain` runs filters in order, moves drops aside with
`reject_stage`/`reject_reason`, and counts rows in and out of every filter, per language. A filter
whose thresholds are derived from the batch (a percentile) reports the values it used in
`derived_thresholds`; the chain keeps them per batch, so stats and the card can say what was cut.
"""

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from synth.languages import normalize_language

T = TypeVar("T")

# The key of a per-language mapping that holds the value for every other language.
ANY_LANGUAGE = "*"


@dataclass(frozen=True)
class PerLanguage(Generic[T]):
    """A setting with per-language exceptions: `by_lang[lang]` where given, else `default`."""

    default: T
    by_lang: Mapping[str, T] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_lang", {normalize_language(lang): value for lang, value in self.by_lang.items()})

    def __call__(self, lang: str) -> T:
        return self.by_lang.get(normalize_language(lang), self.default)

    @classmethod
    def of(cls, value: "PerLanguage[T] | Mapping[str, T] | T", default: T | None = None) -> "PerLanguage[T]":
        """From a plain value, or a mapping of language codes (and '*' for the rest) to values."""
        if isinstance(value, PerLanguage):
            return value
        if isinstance(value, Mapping):
            rest = {lang: v for lang, v in value.items() if lang != ANY_LANGUAGE}
            return cls(value.get(ANY_LANGUAGE, default), rest)
        return cls(value)


class Filter(Protocol):
    name: str

    def judge(self, rows: list[dict]) -> list[str | None]:
        """One verdict per row: None keeps it, a short reason (``kind`` or ``kind:detail``) drops it.
        A block that derives a threshold from the rows sets `derived_thresholds` ({name: value})."""


@dataclass
class FilterStats:
    """Rows in/out of one filter, per language, and the drop reasons (kind only, detail dropped)."""

    rows_in: Counter = field(default_factory=Counter)
    rows_out: Counter = field(default_factory=Counter)
    reasons: dict = field(default_factory=lambda: defaultdict(Counter))
    derived: dict = field(default_factory=lambda: defaultdict(list))  # threshold -> value per batch
    seconds: float = 0.0  # time spent judging (the filter's own cost)

    def merge(self, other: "FilterStats") -> None:
        self.seconds += other.seconds
        self.rows_in.update(other.rows_in)
        self.rows_out.update(other.rows_out)
        for lang, counts in other.reasons.items():
            self.reasons[lang].update(counts)
        for name, values in other.derived.items():
            self.derived[name].extend(values)

    def derived_summary(self) -> dict:
        """threshold -> {min, max, batches}: the range of the values derived over the batches."""
        return {
            name: {"min": round(min(values), 6), "max": round(max(values), 6), "batches": len(values), "sum": round(sum(values), 6)}
            for name, values in self.derived.items() if values
        }


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


class FilterChain:
    def __init__(self, filters: list[Filter], lang_key: str = "lang"):
        self.filters = filters
        self.lang_key = lang_key
        self.stats: dict[str, FilterStats] = {f.name: FilterStats() for f in filters}

    def run(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """Returns (kept, rejected); rejected rows gain reject_stage and reject_reason."""
        rejected: list[dict] = []
        for block in self.filters:
            stats = self.stats[block.name]
            for row in rows:
                stats.rows_in[row[self.lang_key]] += 1
            started = time.perf_counter()
            verdicts = block.judge(rows) if rows else []
            stats.seconds += time.perf_counter() - started
            if len(verdicts) != len(rows):
                raise RuntimeError(f"filter {block.name} returned {len(verdicts)} verdicts for {len(rows)} rows")
            if rows:
                for name, value in getattr(block, "derived_thresholds", {}).items():
                    stats.derived[name].append(value)
            survivors = []
            for row, reason in zip(rows, verdicts):
                if reason is None:
                    survivors.append(row)
                    stats.rows_out[row[self.lang_key]] += 1
                else:
                    stats.reasons[row[self.lang_key]][reason_kind(reason)] += 1
                    rejected.append({**row, "reject_stage": block.name, "reject_reason": reason})
            rows = survivors
        return rows, rejected
