"""Filter blocks: each looks at a batch of rows and answers keep (None) or drop (a reason).

A filter may add score columns to the rows it sees (consistency, lid_lang, ...), so kept and
dropped rows both carry the evidence. Every filter is a `BaseFilter`, whose `apply` moves drops
aside with `reject_stage`/`reject_reason` and counts rows in and out, per language, the reasons
and the filter's own time; `FilterChain` runs filters in order. A filter whose thresholds are
derived from the batch (a percentile) reports the values it used in `derived_thresholds`; they are
kept per batch, so stats and the card can say what was cut.
"""

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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


class BaseFilter:
    """What every filter block shares (datatrove's BaseFilter is the model): `apply` owns the loop
    over a batch, the counters (rows in and out per language, drop reasons), the timing and the
    derived thresholds, in `stats`; a block only answers keep (None) or drop (a short reason,
    ``kind`` or ``kind:detail``). A block that judges each row alone implements `judge_row`; one
    that needs the whole batch (percentiles, margins within a chunk) overrides `judge`, and sets
    `derived_thresholds` ({name: value}) when it derived one from the rows."""

    name = "filter"

    @property
    def stats(self) -> "FilterStats":
        if "_stats" not in self.__dict__:
            self._stats = FilterStats()
        return self._stats

    @stats.setter
    def stats(self, value: "FilterStats") -> None:
        self._stats = value

    def judge(self, rows: list[dict]) -> list[str | None]:
        """One verdict per row."""
        return [self.judge_row(row) for row in rows]

    def judge_row(self, row: dict) -> str | None:
        raise NotImplementedError(f"{type(self).__name__} implements judge_row(row) or judge(rows)")

    def apply(self, rows: list[dict], lang_key: str = "lang") -> tuple[list[dict], list[dict]]:
        """(kept, rejected) of a batch, counted in `stats`; rejected rows gain reject_stage and reject_reason."""
        stats = self.stats
        for row in rows:
            stats.rows_in[row[lang_key]] += 1
        started = time.perf_counter()
        verdicts = self.judge(rows) if rows else []
        stats.seconds += time.perf_counter() - started
        if len(verdicts) != len(rows):
            raise RuntimeError(f"filter {self.name} returned {len(verdicts)} verdicts for {len(rows)} rows")
        if rows:
            for name, value in getattr(self, "derived_thresholds", {}).items():
                stats.derived[name].append(value)
        kept, rejected = [], []
        for row, reason in zip(rows, verdicts):
            if reason is None:
                kept.append(row)
                stats.rows_out[row[lang_key]] += 1
            else:
                stats.reasons[row[lang_key]][reason_kind(reason)] += 1
                rejected.append({**row, "reject_stage": self.name, "reject_reason": reason})
        return kept, rejected


class FilterChain:
    """Filter blocks in order, each seeing what the ones before it kept; the counts start afresh
    with each chain (one chain per chunk)."""

    def __init__(self, filters: list[BaseFilter], lang_key: str = "lang"):
        self.filters = filters
        self.lang_key = lang_key
        for block in filters:
            block.stats = FilterStats()

    @property
    def stats(self) -> dict[str, FilterStats]:
        return {block.name: block.stats for block in self.filters}

    def run(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """Returns (kept, rejected); rejected rows gain reject_stage and reject_reason."""
        rejected: list[dict] = []
        for block in self.filters:
            rows, dropped = block.apply(rows, self.lang_key)
            rejected += dropped
        return rows, rejected
