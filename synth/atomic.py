"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Each write goes to a hidden temp file in the destination's directory (same filesystem, so the
final os.replace is atomic; a leading "." so globs such as data/train-*.parquet never match it),
is fsynced, then renamed over the destination.
"""

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TEMP_SUFFIX = ".tmp"


def hidden_temp_path(path: Path) -> Path:
    """A fresh hidden sibling of `path`: '.<name>.<random>.tmp'."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def replace_durably(temp: Path, path: Path) -> None:
    """fsync `temp`, rename it to `path` and fsync the directory so the rename survives a crash."""
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path`, on any exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = hidden_temp_path(path)
    try:
        yield temp
        replace_durably(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temp, open(temp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def atomic_write_parquet(table: pa.Table, path: str | os.PathLike, **kw: Any) -> None:
    """`kw` goes to pyarrow.parquet.write_table (compression, row_group_size, ...)."""
    with atomic_path(path) as temp:
        pq.write_table(table, temp, **kw)
