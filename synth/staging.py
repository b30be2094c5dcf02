"""Staged chunks: what the engine has finished, under OUT/.synth/chunks.

A chunk's kept rows and rejects are written as Parquet, then its record (`ChunkResult`, JSON): the
record is written last, so its presence means the chunk is complete, and every write is atomic. On
rerun a chunk with a record is taken as it is; one whose files are damaged (garbage, cut short,
missing) is set aside into `damaged/` and redone (its answers are in the generation cache, so this
costs no request). `publish` reads the staged files; a publish drops the chunks that are no longer
part of the dataset (earlier settings or corpora).
"""

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synth.atomic import atomic_write_json, atomic_write_parquet
from synth.schema import table_from_rows

log = logging.getLogger("synth")
# A rejected row keeps at most this many characters of each generated column (the answer, the
# text parsed from it): enough to see why it was dropped, not a runaway answer stored twice.
REJECT_EXCERPT_CHARS = 4096
# Columns of a row that come from the model (the rest is the corpus's own, kept whole).
GENERATED_COLUMNS = ("raw_answer", "translation", "query")


def bounded_excerpt(text, limit: int = REJECT_EXCERPT_CHARS):
    """`text` cut to `limit` characters, saying how much was cut; other values as they are."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters cut]"


def excerpted(row: dict) -> dict:
    """A rejected row with its generated columns cut to REJECT_EXCERPT_CHARS."""
    if not any(isinstance(row.get(name), str) and len(row[name]) > REJECT_EXCERPT_CHARS for name in GENERATED_COLUMNS):
        return row
    return {**row, **{name: bounded_excerpt(row[name]) for name in GENERATED_COLUMNS if name in row}}


def set_aside(path: Path, reason: str, into: Path | None = None) -> Path | None:
    """Move a damaged file out of the way, into `into` (default: a `damaged` folder beside it),
    renamed with the time: kept for inspection, never read again. Says so in the log."""
    if not path.exists():
        return None
    into = into or path.parent / "damaged"
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{path.name}.{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    os.replace(path, target)
    log.warning("%s is damaged (%s): set aside as %s and redone", path, reason, target.name)
    return target


@dataclass
class ChunkResult:
    """A staged chunk's record: where its rows are and what its stages counted."""

    index: int
    key: str
    kept_path: str
    rejects_path: str
    kept: int
    rejected: int
    generation: dict
    filters: dict                    # step name -> {"in": {lang: n}, "out": {...}, "dropped": {lang: {reason: n}}}
    generation_failures: int         # requests with no answer: the chunk is redone on rerun
    lid_unverified: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # follow-up stage -> what it asked, heard and cost
    reused: bool = False             # staged by an earlier run and taken as it was

    @classmethod
    def load(cls, path: Path) -> "ChunkResult":
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class ChunkStore:
    """The staged chunks of one output folder (`work_dir`: OUT/.synth, or where the config puts it)."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.directory = self.work_dir / "chunks"

    def record_path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def finished(self, key: str) -> ChunkResult | None:
        """The record of chunk `key` staged before with every answer in hand, if any; a damaged
        one is set aside (and None returned: the chunk is redone)."""
        path = self.record_path(key)
        if not path.exists():
            return None
        try:
            result = ChunkResult.load(path)
        except (ValueError, TypeError, UnicodeDecodeError) as error:  # garbage JSON, or not a chunk's record
            self.set_aside(key, f"unreadable record: {error!r:.120}")
            return None
        result.reused = True
        # The staged files sit next to this record: found there even when OUT was moved or renamed.
        result.kept_path = str(self.directory / Path(result.kept_path).name)
        result.rejects_path = str(self.directory / Path(result.rejects_path).name)
        if not (Path(result.kept_path).exists() and Path(result.rejects_path).exists()):
            return None
        # A damaged part (garbage, cut short) is redone now rather than failing the publish later.
        for part, rows in ((result.kept_path, result.kept), (result.rejects_path, result.rejected)):
            try:
                found = pq.read_metadata(part).num_rows
            except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
                self.set_aside(key, f"{Path(part).name} unreadable: {error!r:.120}")
                return None
            if found != rows:
                self.set_aside(key, f"{Path(part).name} holds {found} rows, its record says {rows}")
                return None
        return result if result.generation_failures == 0 else None

    def set_aside(self, key: str, reason: str) -> None:
        """Every file of a damaged staged chunk, renamed out of the way (the record first: without
        it the chunk counts as not done), so that the chunk is redone."""
        damaged = self.work_dir / "damaged"
        set_aside(self.record_path(key), reason, damaged)
        for path in self.directory.glob(f"{key}.*.parquet"):
            set_aside(path, f"part of the damaged chunk {key}", damaged)

    def write(
        self, index: int, key: str, kept: list[dict], rejects: list[dict], kept_schema: pa.Schema, reject_schema: pa.Schema,
        **counts,
    ) -> ChunkResult:
        """Writes a chunk's kept rows and rejects, then its record (`counts`: the rest of
        ChunkResult's fields). Returns the record."""
        kept_path = self.directory / f"{key}.kept.parquet"
        rejects_path = self.directory / f"{key}.rejects.parquet"
        atomic_write_parquet(table_from_rows(kept, kept_schema), kept_path)
        atomic_write_parquet(table_from_rows(rejects, reject_schema), rejects_path)
        result = ChunkResult(
            index=index, key=key, kept_path=str(kept_path), rejects_path=str(rejects_path),
            kept=len(kept), rejected=len(rejects), **counts,
        )
        atomic_write_json(self.record_path(key), asdict(result))  # last: the chunk is done
        return result

    def remove_stale(self, keep: set[str]) -> None:
        """Staged chunks of earlier settings or corpora are no longer part of the dataset."""
        for path in self.directory.glob("*"):
            if path.is_file() and path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)
