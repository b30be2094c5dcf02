"""Filter blocks: each looks at a batch of rows and answers keep (None) or drop (a reason).

A filter may add score columns to the rows it sees (consistency, lid_lang, ...), so kept and
dropped rows both carry the evidence. `FilterChain` runs filters in order, moves drops aside with
`reject_stage`/`reject_reason`, and counts rows in and out of every filter, per language.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol


class Filter(Protocol):
    name: str

    def judge(self, rows: list[dict]) -> list[str | None]:
        """One verdict per row: None keeps it, a short reason (``kind`` or ``kind:detail``) drops it."""


@dataclass
class FilterStats:
    """Rows in/out of one filter, per language, and the drop reasons (kind only, detail dropped)."""

    rows_in: Counter = field(default_factory=Counter)
    rows_out: Counter = field(default_factory=Counter)
    reasons: dict = field(default_factory=lambda: defaultdict(Counter))

    def merge(self, other: "FilterStats") -> None:
        self.rows_in.update(other.rows_in)
        self.rows_out.update(other.rows_out)
        for lang, counts in other.reasons.items():
            self.reasons[lang].update(counts)


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
            verdicts = block.judge(rows) if rows else []
            if len(verdicts) != len(rows):
                raise RuntimeError(f"filter {block.name} returned {len(verdicts)} verdicts for {len(rows)} rows")
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
