"""Publish staged Parquet parts as a dataset folder that `datasets.load_dataset` and the Hub read:

    out_dir/data/train-00000-of-0000N.parquet      kept pairs (the default config)
    out_dir/rejects/rejects-00000-of-0000N.parquet rejected pairs (config "rejects")
    out_dir/stats.json
    out_dir/README.md                              the dataset card
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synth.publish.atomic import (
    TEMP_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    hidden_temp_path,
    replace_durably,
)
from synth.publish.card import CardInfo, render_card
from synth.schema import BACKTRANSLATION_SCHEMA, REJECT_SCHEMA


@dataclass
class PublishResult:
    out_dir: Path
    train_files: list[Path]
    reject_files: list[Path]
    kept_rows: int
    rejected_rows: int


def publish_dataset(
    out_dir: Path,
    kept_parts: Sequence[Path],
    reject_parts: Sequence[Path],
    stats: dict,
    card: CardInfo,
    rows_per_shard: int = 100_000,
) -> PublishResult:
    """Shard the parts (in order) into out_dir, then write stats.json and README.md.

    Every file appears complete under its final name or not at all; shards of an earlier
    publish that this one does not reuse are removed once the new files are in place.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    out_dir = Path(out_dir)
    kept = _ShardWriter(out_dir / "data", "train", BACKTRANSLATION_SCHEMA, rows_per_shard)
    rejects = _ShardWriter(out_dir / "rejects", "rejects", REJECT_SCHEMA, rows_per_shard)
    try:
        kept.write_parts(kept_parts)
        rejects.write_parts(reject_parts)
        # Renamed only once every shard is complete, so a failure above leaves the old publish whole.
        train_files = kept.commit()
        reject_files = rejects.commit()
    except BaseException:
        kept.discard()
        rejects.discard()
        raise

    train_names = [f.relative_to(out_dir).as_posix() for f in train_files]
    reject_names = [f.relative_to(out_dir).as_posix() for f in reject_files]
    rows = {"kept": kept.rows, "rejected": rejects.rows}
    atomic_write_json(out_dir / "stats.json", {**stats, "rows": rows, "files": train_names + reject_names})
    atomic_write_text(
        out_dir / "README.md",
        render_card(card, stats, kept.rows, rejects.rows, train_names, reject_names),
    )
    kept.remove_stale(keep=train_files)
    rejects.remove_stale(keep=reject_files)
    return PublishResult(out_dir, train_files, reject_files, kept.rows, rejects.rows)


class _ShardWriter:
    """Streams parts into hidden temp shards of at most `rows_per_shard` rows; `commit` names them.

    Only one part is in memory at a time.
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

    def write_parts(self, parts: Sequence[Path]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for part in parts:
            self._append(_read_part(Path(part), self.schema))
        if not self._temps:  # no rows at all: still one shard, so the schema is published
            self._open_next_shard()
        self._close_writer()

    def commit(self) -> list[Path]:
        count = len(self._temps)
        finals = [self.directory / f"{self.prefix}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
        for temp, final in zip(self._temps, finals):
            replace_durably(temp, final)
        return finals

    def discard(self) -> None:
        self._close_writer()
        for temp in self._temps:
            temp.unlink(missing_ok=True)

    def remove_stale(self, keep: list[Path]) -> None:
        for path in self.directory.glob(f"{self.prefix}-*-of-*.parquet"):
            if path not in keep:
                path.unlink()
        # Temp shards of an earlier publish that was killed before it could clean up after itself.
        for path in self.directory.glob(f".{self.prefix}-*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)

    def _append(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self._room == 0:
                self._open_next_shard()
            take = min(self._room, table.num_rows - offset)
            self._writer.write_table(table.slice(offset, take))
            offset += take
            self._room -= take
            self.rows += take

    def _open_next_shard(self) -> None:
        self._close_writer()
        temp = hidden_temp_path(self.directory / f"{self.prefix}-{len(self._temps):05d}.parquet")
        self._temps.append(temp)  # listed before it exists, so discard() also finds a half-made one
        self._writer = pq.ParquetWriter(temp, self.schema)
        self._room = self.rows_per_shard

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """A staged part with exactly `schema`'s columns, in its order (extra columns are dropped)."""
    table = pq.read_table(path)
    if not table.schema.equals(schema):
        table = table.select(schema.names).cast(schema)
    return table
