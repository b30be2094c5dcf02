"""Publish staged Parquet parts as a dataset folder that `datasets.load_dataset` and the Hub read:

    out_dir/data/{split}-0000i-of-0000n-{hash}.parquet     kept rows with provenance (config "default")
    out_dir/{view}/{split}-0000i-of-0000n-{hash}.parquet   each view of the kept rows (e.g. "pairs")
    out_dir/rejects/train-0000i-of-0000n-{hash}.parquet    rejected rows (config "rejects")
    out_dir/plots/*.png                                    funnel and score histograms
    out_dir/stats.json
    out_dir/README.md                                      the dataset card

Every kept config splits its records the same way (by a hash of `split_key`); a split with no rows
gets no file and is not declared in the card.

A republish is atomic for readers. A shard's name ends with a hash of its bytes, so the new
version's shards never replace the old one's (the same bytes keep the same name); the card,
written last and atomically, lists the exact files of its version in `data_files`; the old
version's files are removed only after it. At every instant `load_dataset` (or the Hub, whose
commits are atomic) reads one whole version, the old or the new, never both and never neither.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.atomic import (
    TEMP_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    hidden_temp_path,
    replace_durably,
)
from synth.publish.card import CardInfo, PublishedConfig, render_card
from synth.redact import scrub
from synth.publish.hub import HubPush
from synth.publish.views import DEFAULT_SPLITS, MIN_HELD_OUT_ROWS, TRAIN, Splits, View, positions

DEFAULT_FOLDER = "data"
REJECTS = "rejects"
# Shards of this layout and of the one before (no hash in the name).
_SHARD_GLOB = "*-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]*.parquet"
SHARD_HASH_CHARS = 16


@dataclass
class PublishResult:
    out_dir: Path
    configs: list[PublishedConfig]   # default first, then the views, then rejects
    hub: HubPush | None = None       # set once the folder is pushed

    def config(self, name: str) -> PublishedConfig:
        return next(c for c in self.configs if c.name == name)

    @property
    def kept_rows(self) -> int:
        return self.configs[0].total_rows

    @property
    def rejected_rows(self) -> int:
        return self.config(REJECTS).total_rows

    def files(self, config: str = "default", split: str = TRAIN) -> list[Path]:
        return [self.out_dir / f for f in self.config(config).files.get(split, [])]


def publish_dataset(
    out_dir: Path,
    kept_parts: Sequence[Path],
    reject_parts: Sequence[Path],
    stats: dict,
    card: CardInfo,
    *,
    kept_schema: pa.Schema,
    reject_schema: pa.Schema,
    views: Sequence[View] = (),
    splits: Splits | str = DEFAULT_SPLITS,
    split_key: str = "id",
    rows_per_shard: int = 100_000,
) -> PublishResult:
    """Shard the parts (in order) into out_dir's configs and splits, then write the plots,
    stats.json and README.md.

    Every file appears complete under its final name or not at all; shards of an earlier
    publish that this one does not reuse are removed once the new files are in place.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    names = [view.name for view in views]
    taken = {"default", DEFAULT_FOLDER, REJECTS, "plots"}
    if len(set(names)) != len(names) or taken & set(names):
        raise ValueError(f"view names must be unique and none of {sorted(taken)}: got {names}")
    out_dir = Path(out_dir)
    splits = Splits.parse(splits) if isinstance(splits, str) else splits
    default = View("default", kept_schema, lambda table: table, "every kept row with its provenance and scores")
    kept_configs = [(default, DEFAULT_FOLDER), *((view, view.name) for view in views)]
    writers = {
        (view.name, split): _ShardWriter(out_dir / folder, split, view.schema, rows_per_shard)
        for view, folder in kept_configs
        for split in splits.names
    }
    rejects = _ShardWriter(out_dir / REJECTS, TRAIN, reject_schema, rows_per_shard)
    everything = [*writers.values(), rejects]
    try:
        cuts = splits.cut_points(_all_positions(kept_parts, split_key) if splits.needs_all_keys else None)
        for part in kept_parts:
            table = _read_part(Path(part), kept_schema)
            assigned = np.array(splits.assign(table[split_key], cuts))
            for split in splits.names:
                rows = table.filter(pa.array(assigned == split)) if table.num_rows else table
                for view, _ in kept_configs:
                    writers[view.name, split].append(view.rows(rows))
        for part in reject_parts:
            rejects.append(_read_part(Path(part), reject_schema))
        for writer in everything:
            writer.close()
        # Renamed only once every shard is complete, so a failure above leaves the old publish whole.
        committed = {writer: writer.commit() for writer in everything}
    except BaseException:
        for writer in everything:
            writer.discard()
        raise

    def published(name: str, folder: str, description: str, split_writers: dict[str, "_ShardWriter"]) -> PublishedConfig:
        return PublishedConfig(
            name=name, folder=folder, description=description,
            rows={split: writer.rows for split, writer in split_writers.items()},
            files={
                split: [f.relative_to(out_dir).as_posix() for f in committed[writer]]
                for split, writer in split_writers.items() if committed[writer]
            },
        )

    configs = [
        published(view.name, folder, view.description, {split: writers[view.name, split] for split in splits.names})
        for view, folder in kept_configs
    ]
    configs.append(published(REJECTS, REJECTS, "every dropped row, with the step and the reason", {TRAIN: rejects}))

    from synth.publish.plots import write_plots  # matplotlib costs ~1 s to import: only when publishing

    plots = write_plots(out_dir, stats.get("funnel") or {}, _scores(configs, out_dir, card.score_columns), card.thresholds, card.score_columns)
    files = [f for config in configs for names in config.files.values() for f in names]
    atomic_write_json(out_dir / "stats.json", {
        **stats,
        "rows": {"kept": configs[0].total_rows, "rejected": configs[-1].total_rows},
        "splits": {"rule": str(splits), "key": split_key, "rows": {c.name: c.rows for c in configs}},
        "files": files,
    })
    # Written last: the switch from the old version to this one (it lists this version's files).
    atomic_write_text(out_dir / "README.md", scrub(render_card(card, stats, configs, plots, _split_rule(splits, split_key))))
    _remove_stale(out_dir, [DEFAULT_FOLDER, *(view.name for view in views), REJECTS], keep={out_dir / f for f in files})
    return PublishResult(out_dir, configs)


def _split_rule(splits: Splits, key: str) -> str:
    if not splits.held_out:
        return "Every record is in `train`."
    sizes = ", ".join(f"`{name}` {size:g}" if isinstance(size, float) else f"`{name}` {size:,} records" for name, size in splits.held_out)
    rule = (
        f"Records are split by the first 8 bytes of sha256(`{key}`) ({sizes}, `train` the rest), the same "
        f"way in every config: a record lands in the same split on every rerun"
    )
    if any(isinstance(size, int) for _, size in splits.held_out):
        return rule + "; as the corpus grows a record can only move towards `train`, never out of it."
    return rule + (
        f". A held-out split gets at least {MIN_HELD_OUT_ROWS} records (a tenth of the records in a dataset of fewer "
        f"than {MIN_HELD_OUT_ROWS * 10}), its cut moved up to the lowest records where its fraction gives fewer; as the "
        "corpus grows a record can then only move towards `train`."
    )


def _all_positions(parts: Sequence[Path], key: str) -> np.ndarray:
    found = [positions(pq.read_table(part, columns=[key])[key]) for part in parts]
    return np.concatenate(found) if found else np.array([], dtype=np.uint64)


def _scores(configs: list[PublishedConfig], out_dir: Path, columns: dict) -> dict[str, dict[str, np.ndarray]]:
    """score column -> {"kept": values, "rejected": values}, nulls left out (float arrays: a
    million Python floats would cost ~30 MiB a column)."""
    if not columns:
        return {}
    found: dict[str, dict[str, list[np.ndarray]]] = {column: {"kept": [], "rejected": []} for column in columns}
    for config, side in ((configs[0], "kept"), (configs[-1], "rejected")):
        for names in config.files.values():
            for name in names:
                table = pq.read_table(out_dir / name, columns=list(columns))
                for column in columns:
                    found[column][side].append(pc.drop_null(table[column]).to_numpy().astype(float))
    return {
        column: {side: np.concatenate(parts) if parts else np.array([], dtype=float) for side, parts in sides.items()}
        for column, sides in found.items()
    }


def _remove_stale(out_dir: Path, folders: list[str], keep: set[Path]) -> None:
    for folder in folders:
        directory = out_dir / folder
        for path in directory.glob(_SHARD_GLOB):
            if path not in keep:
                path.unlink()
        # Temp shards of an earlier publish that was killed before it could clean up after itself.
        for path in directory.glob(f".*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


# Rows per Parquet row group: staged parts are a chunk each (256 rows by default), and a shard
# written part by part would hold hundreds of tiny row groups, slow to scan and to page through.
ROW_GROUP_ROWS = 10_000
_MAX_PENDING_TABLES = 64


class _ShardWriter:
    """Streams tables into hidden temp shards of at most `rows_per_shard` rows, in row groups of
    `ROW_GROUP_ROWS` (the last one of a shard smaller); `commit` names them.

    No rows, no shard: `datasets` cannot load an empty split.
    """

    def __init__(self, directory: Path, prefix: str, schema: pa.Schema, rows_per_shard: int):
        self.directory = directory
        self.prefix = prefix
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.rows = 0
        self._temps: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._room = 0  # rows the open shard can still take
        self._pending: list[pa.Table] = []  # rows of the open shard's next row group
        self._pending_rows = 0

    def append(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self._room == 0:
                self._open_next_shard()
            take = min(self._room, table.num_rows - offset)
            self._pending.append(table.slice(offset, take))
            self._pending_rows += take
            if len(self._pending) >= _MAX_PENDING_TABLES:
                # A held-out split gets a few rows of every chunk: thousands of tiny tables would cost
                # far more than their rows (a million-line run: 300 MiB). Keep them as one.
                self._pending = [pa.concat_tables(self._pending).combine_chunks()]
            offset += take
            self._room -= take
            self.rows += take
            if self._pending_rows >= ROW_GROUP_ROWS or self._room == 0:
                self._write_pending()

    def _write_pending(self) -> None:
        if self._pending_rows:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=max(self._pending_rows, 1))
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        if self._writer is not None:
            self._write_pending()
            self._writer.close()
            self._writer = None

    def commit(self) -> list[Path]:
        """Name each shard after its place and its bytes: the new files never replace the ones
        the current card lists (unless they are the same bytes)."""
        count = len(self._temps)
        finals = []
        for i, temp in enumerate(self._temps):
            final = self.directory / f"{self.prefix}-{i:05d}-of-{count:05d}-{_digest(temp)}.parquet"
            replace_durably(temp, final)
            finals.append(final)
        return finals

    def discard(self) -> None:
        self._pending, self._pending_rows = [], 0  # nothing more is written on the way out of a failure
        self.close()
        for temp in self._temps:
            temp.unlink(missing_ok=True)

    def _open_next_shard(self) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = hidden_temp_path(self.directory / f"{self.prefix}-{len(self._temps):05d}.parquet")
        self._temps.append(temp)  # listed before it exists, so discard() also finds a half-made one
        self._writer = pq.ParquetWriter(temp, self.schema)
        self._room = self.rows_per_shard


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:SHARD_HASH_CHARS]


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """A staged part with exactly `schema`'s columns, in its order (extra columns are dropped)."""
    table = pq.read_table(path)
    if not table.schema.equals(schema):
        table = table.select(schema.names).cast(schema)
    return table
