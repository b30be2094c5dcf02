"""What a published folder holds besides the full rows: training views and deterministic splits.

A `View` is a config of the dataset derived from the kept rows (its own folder, explicit Arrow
schema, the same split of records as every other config). `Splits` assigns each record to a split
by a hash of its key, so a record lands in the same split on every rerun and as the corpus grows.
"""

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TRAIN = "train"
DEFAULT_SPLITS = "train=0.98,validation=0.01,test=0.01"
# A held-out split given as a fraction gets at least this many records (or a tenth of the records,
# if fewer): 1% of 2,000 pairs is 20, too few to validate on.
MIN_HELD_OUT_ROWS = 50
_HASH_SPACE = 2**64


@dataclass(frozen=True)
class View:
    """A config of the published dataset made from the kept rows.

    `rows` maps a table of kept rows (the task's kept schema) to this view's rows; it may drop
    rows (e.g. those without a negative). `name` is the config name and its folder.
    """

    name: str
    schema: pa.Schema
    rows: Callable[[pa.Table], pa.Table]
    description: str


def pairs_view(anchor: str, positive: str, negative: str | None = None, description: str = "") -> View:
    """`anchor`, `positive`[, `negative`]: the columns sentence-transformers' trainer feeds to
    MultipleNegativesRankingLoss, and nothing else (every other column would be taken as an input).
    Rows with an empty or missing value in one of them are left out."""
    sources = {"anchor": anchor, "positive": positive}
    if negative is not None:
        sources["negative"] = negative
    schema = pa.schema([pa.field(name, pa.string(), nullable=False) for name in sources])

    def rows(kept: pa.Table) -> pa.Table:
        table = pa.table([kept[column] for column in sources.values()], names=list(sources))
        return _without_empty(table, list(sources)).cast(schema)

    return View("pairs", schema, rows, description)


def translation_view(lang: str, lang_column: str, pivot: str, pivot_column: str, description: str = "") -> View:
    """`id` and `translation: {lang: ..., pivot: ...}`, `datasets`' Translation feature (the
    format of the Hub's translation datasets and of transformers' translation scripts)."""
    from datasets import Features, Translation, Value  # ~2 s to import: only for the tasks that use it

    features = Features({"id": Value("string"), "translation": Translation(languages=[lang, pivot])})
    schema = features.arrow_schema
    struct_type = schema.field("translation").type

    def rows(kept: pa.Table) -> pa.Table:
        kept = _without_empty(kept, [lang_column, pivot_column])
        sides = {lang: kept[lang_column], pivot: kept[pivot_column]}
        names = [struct_type.field(i).name for i in range(struct_type.num_fields)]
        translation = pa.StructArray.from_arrays([sides[n].combine_chunks() for n in names], names=names)
        return pa.Table.from_arrays([kept["id"].combine_chunks(), translation], schema=schema)

    return View("translation", schema, rows, description)


def bitext_views(text_lang: str, translation_lang: str, anchor_description: str) -> list[View]:
    """The two views of a bitext with columns `text` and `translation`: `pairs` (the translation
    as anchor, the text as positive: LaBSE-style training finds `text_lang` text from the other
    side) and `translation` (datasets' Translation feature)."""
    return [
        pairs_view(anchor="translation", positive="text", description=anchor_description),
        translation_view(
            text_lang, "text", translation_lang, "translation",
            description=f"`id`, `translation: {{{text_lang}, {translation_lang}}}` (datasets' Translation feature)",
        ),
    ]


def _without_empty(table: pa.Table, columns: list[str]) -> pa.Table:
    keep = None
    for column in columns:
        present = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table[column])), 0), False)
        keep = present if keep is None else pc.and_(keep, present)
    return table.filter(keep)


class SplitSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Splits:
    """Held-out splits in order, each a fraction (0-1) or a number of records; `train` takes the rest.

    A record's position is the first 8 bytes of sha256(key) as an integer; the held-out splits take
    the lowest positions, in the order given, and train the rest. With fractions the cut points are
    fixed, so a record stays in its split whatever else the corpus holds. With counts the cut points
    are the positions of the N lowest records: as the corpus grows they only move down, so a record
    can move from a held-out split towards train, never from train into a held-out split.
    """

    held_out: tuple[tuple[str, float | int], ...]

    @classmethod
    def parse(cls, spec: str) -> "Splits":
        """'train=0.98,validation=0.01,test=0.01', 'validation=500,test=500' or 'train' (no held-out).

        Held-out sizes are all fractions or all counts; train takes the rest (given a fraction, it
        must be that rest)."""
        sizes: dict[str, float | int | None] = {}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            name, _, size = (s.strip() for s in part.partition("="))
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise SplitSpecError(f"split name {name!r} must be lowercase letters, digits and _ (e.g. validation)")
            if name in sizes:
                raise SplitSpecError(f"split {name!r} is given twice")
            sizes[name] = _size(name, size) if size else None
        train = sizes.pop(TRAIN, None)
        if train is not None and not sizes and train != 1:  # train=1: all of it, as `train` alone says
            # `train=0.5` or `train=2` alone would hold nothing out and train on everything: say so.
            raise SplitSpecError(
                f"train={train:g} alone: train takes every record not held out, so its size cannot be set by "
                "itself; give the held-out splits instead (validation=0.01,test=0.01 or validation=500,test=500), "
                "or 'train' for no held-out split"
            )
        for name, size in sizes.items():
            if size is None:
                raise SplitSpecError(f"split {name!r} needs a size: {name}=0.01 (a fraction) or {name}=500 (records)")
        kinds = {type(size) for size in sizes.values()}
        if len(kinds) > 1:
            raise SplitSpecError("give every held-out split a fraction, or every one a number of records, not both")
        if kinds == {float}:
            rest = 1 - sum(sizes.values())
            if rest <= 0:
                raise SplitSpecError(f"the held-out fractions sum to {1 - rest:g}: train would get nothing")
            if train is not None and abs(train - rest) > 1e-9:
                raise SplitSpecError(f"train takes the rest ({rest:g} here): give it no size, or fractions that sum to 1")
        elif train is not None and sizes:
            raise SplitSpecError("train takes the rest: with held-out sizes in records, give train no size")
        return cls(tuple(sizes.items()))

    def __str__(self) -> str:
        return ",".join(f"{name}={size:g}" if isinstance(size, float) else f"{name}={size}" for name, size in self.held_out) or TRAIN

    @property
    def names(self) -> list[str]:
        """In the order the card lists them: train first."""
        return [TRAIN, *(name for name, _ in self.held_out)]

    @property
    def needs_all_keys(self) -> bool:
        # Counts need every key; so do fractions, for the floor of small datasets (min_held_out).
        return bool(self.held_out)

    @staticmethod
    def min_held_out(records: int) -> int:
        """The fewest records a fraction-sized held-out split gets: MIN_HELD_OUT_ROWS, or a tenth
        of the records when that is fewer (so that train always keeps most of a small dataset)."""
        return min(MIN_HELD_OUT_ROWS, records // 10)

    def cut_points(self, all_positions: np.ndarray | None = None) -> np.ndarray:
        """The exclusive upper bound of each held-out split's positions, from every record's
        `positions()`. Counts: the N lowest records. Fractions: the fixed cut of each fraction,
        moved up where needed so that each held-out split gets at least `min_held_out` records."""
        ordered = np.sort(all_positions) if all_positions is not None else np.array([], dtype=np.uint64)
        if any(isinstance(size, int) for _, size in self.held_out):
            bounds = np.cumsum([size for _, size in self.held_out])
            return np.array([ordered[b] if b < len(ordered) else _HASH_SPACE - 1 for b in bounds], dtype=np.uint64)
        floor = self.min_held_out(len(ordered))
        cuts, below = [], 0
        for bound in np.cumsum([size for _, size in self.held_out]):
            cut = min(int(bound * _HASH_SPACE), _HASH_SPACE - 1)
            if floor and below + floor < len(ordered):
                cut = max(cut, int(ordered[below + floor]))
            cuts.append(cut)
            below = int(np.searchsorted(ordered, np.uint64(cut), side="left"))
        return np.array(cuts, dtype=np.uint64)

    def assign(self, keys: pa.Array | pa.ChunkedArray | Iterable[str], cuts: np.ndarray) -> list[str]:
        """The split of each key."""
        index = np.searchsorted(cuts, positions(keys), side="right")
        names = [name for name, _ in self.held_out] + [TRAIN]
        return [names[i] for i in index]


def _size(name: str, text: str) -> float | int:
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise SplitSpecError(f"split {name!r}: {text!r} is not a fraction or a number of records") from None
        if not 0 < value < 1 and not (name == TRAIN and value == 1):
            raise SplitSpecError(f"split {name!r}: a fraction must be between 0 and 1, got {text}")
        return value
    if value < 1:
        raise SplitSpecError(f"split {name!r}: a number of records must be at least 1, got {text}")
    return value


def positions(keys: pa.Array | pa.ChunkedArray | Iterable[str]) -> np.ndarray:
    """Each key's place in the hash space: the first 8 bytes of sha256(key), big-endian."""
    if isinstance(keys, pa.Array | pa.ChunkedArray):
        keys = keys.to_pylist()
    return np.array(
        [int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "big") for key in keys], dtype=np.uint64
    )
