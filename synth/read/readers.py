"""Read monolingual corpora as a stream of normalised, deduplicated segments.

Formats: plain text (one segment per line), JSON Lines, CSV/TSV (all three optionally
gzipped), Parquet, and Hugging Face dataset folders (written by `save_to_disk`, or laid out
like a Hub repo). Everything is streamed: memory grows with the dedup set, not the corpus.
"""

import codecs
import csv
import errno
import glob
import gzip
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from synth.read.dedup import ExactDedup
from synth.read.normalize import normalize_text, record_id
from synth.read.segment import SEGMENTERS, split_sentences

T = TypeVar("T")

FORMATS = ("auto", "text", "jsonl", "csv", "tsv", "parquet")
_FORMAT_ALIASES = {"txt": "text", "ndjson": "jsonl"}
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SUPPORTED = "UTF-8 text, JSON Lines, CSV/TSV, Parquet or a Hugging Face dataset folder"
_SNIFF_BYTES = 8192
_BATCH_ROWS = 1000


class CorpusError(Exception):
    """Unusable input. str() reads "PATH:LINE: what is wrong. What to do." (no LINE if none applies)."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # The default pickling would call CorpusError(str(self)); keep it picklable for workers.
        return type(self), (self.path, self.message, self.line)


@dataclass(frozen=True, slots=True)
class Segment:
    id: str  # record_id(text)
    text: str  # normalised
    source: str  # the file (or dataset folder) as given or expanded from a glob
    line: int  # 1-based line, CSV line, or row number


@dataclass
class ReadStats:
    files: int = 0
    lines_read: int = 0
    empty_dropped: int = 0
    duplicates_dropped: int = 0
    too_long_dropped: int = 0
    segments: int = 0

    def merge(self, other: "ReadStats") -> None:
        for counter in fields(self):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def expand_inputs(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Files, globs (matches sorted) and dataset folders to a list of paths, each once, in order."""
    if isinstance(inputs, (str, os.PathLike)):  # a lone path is not a sequence of characters
        inputs = [inputs]
    paths: list[Path] = []
    resolved: set[Path] = set()
    for item in inputs:
        for path in _expand_one(item):
            if path.resolve() not in resolved:
                resolved.add(path.resolve())
                paths.append(path)
    return paths


def read_segments(
    inputs: Sequence[str | Path] | str | Path,
    *,
    text_field: str = "text",
    fmt: str = "auto",
    dedup: bool = True,
    max_chars: int = 100_000,
    stats: ReadStats | None = None,
    limit: int | None = None,
    segment: str = "line",
) -> Iterator[Segment]:
    """Stream segments from every input, in order; counts go to `stats` as they happen.
    `segment="sentence"` splits each line/row into sentences (they keep its line number).

    Arguments and paths are checked now; problems inside files raise CorpusError when reached.
    """
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if max_chars < 1 or (limit is not None and limit < 0):
        raise ValueError(f"need max_chars >= 1 and limit >= 0, got max_chars={max_chars}, limit={limit}")
    if segment not in SEGMENTERS:
        raise ValueError(f"unknown segmentation {segment!r}; expected one of {', '.join(SEGMENTERS)}")
    paths = expand_inputs(inputs)
    split = split_sentences if segment == "sentence" else None
    return _segments(paths, text_field, fmt, dedup, max_chars, stats if stats is not None else ReadStats(), limit, split)


def chunked(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _segments(
    paths: list[Path], text_field: str, fmt: str, dedup: bool, max_chars: int, stats: ReadStats, limit: int | None,
    split: Callable[[str], list[str]] | None = None,
) -> Iterator[Segment]:
    if limit == 0:
        return
    seen = ExactDedup() if dedup else None
    yielded = 0
    for path in paths:
        source = str(path)
        if path.is_file() and path.stat().st_size == 0:
            raise CorpusError(
                source, "empty file (0 bytes). Remove it from the inputs or check that it was fully written."
            )
        path_fmt = _format_of(path, fmt)
        stats.files += 1
        rows = texts = 0
        for line, value in _rows(path, path_fmt, text_field):
            rows += 1
            stats.lines_read += 1
            if value is not None and not isinstance(value, str):
                raise CorpusError(
                    source,
                    f"the {text_field!r} value is not a string ({type(value).__name__}: {value!r:.40}). "
                    "Name a text field with --text-field.",
                    line,
                )
            text = normalize_text(value or "")  # None (a null cell) counts as empty
            if not text:
                stats.empty_dropped += 1
                continue
            texts += 1
            for piece in split(text) if split else (text,):
                if len(piece) > max_chars:
                    stats.too_long_dropped += 1
                    continue
                if seen is not None and seen.seen(piece):
                    stats.duplicates_dropped += 1
                    continue
                stats.segments += 1
                yield Segment(record_id(piece), piece, source, line)
                yielded += 1
                if yielded == limit:
                    return
        if not texts:
            what = f"{rows} lines or rows, all empty" if rows else "nothing to read"
            raise CorpusError(
                source,
                f"no text found (read as {path_fmt}: {what}). "
                "Check the format (--format) and the field (--text-field).",
            )


def _expand_one(item: str | Path) -> list[Path]:
    name = os.path.expanduser(os.fspath(item))
    path = Path(name)
    _check_special(path)
    if path.exists():  # before globbing: "a[1].txt" may be a real file name
        if path.is_dir() and not _is_dataset_dir(path):
            raise CorpusError(
                path,
                "a folder, but not a Hugging Face dataset (no state.json/dataset_dict.json from save_to_disk, "
                f"no README.md or data/ of a Hub repo). Name its files instead, e.g. '{path / '*.txt'}'.",
            )
        return [path]
    if any(char in name for char in "*?["):
        # A pattern such as corpus/* may also catch plain subfolders: skip those, keep datasets.
        matches = [Path(match) for match in sorted(glob.glob(name, recursive=True))]
        matches = [match for match in matches if match.is_file() or _is_dataset_dir(match)]
        if not matches:
            raise CorpusError(name, "no file matches this pattern. Check the folder and the extension.")
        return matches
    raise CorpusError(name, f"no such file or folder. Check the path (relative paths start in {os.getcwd()}).")


def _check_special(path: Path) -> None:
    """A symbolic link that leads nowhere, a named pipe, a device or a socket: CorpusError."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CorpusError(path, "a loop of symbolic links (it leads back to itself). Point it at the real file.") from None
        if os.path.islink(path):
            raise CorpusError(
                path, f"a symbolic link to {os.readlink(path)!r}, which does not exist. Fix the link or name the real file."
            ) from None
        return  # not there at all: a glob, or "no such file", said by the caller
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise CorpusError(
            path,
            f"{kind}, not a file. synth reads its inputs more than once (and again on a rerun): "
            "write the stream to a file first and name that file.",
        )


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (_is_saved_dataset(path) or (path / "README.md").is_file() or (path / "data").is_dir())


def _format_of(path: Path, fmt: str) -> str:
    if path.is_dir():
        return "dataset"
    if fmt != "auto":
        return fmt
    name = path.name.lower().removesuffix(".gz")
    return _SUFFIX_FORMATS.get(Path(name).suffix, "text")


def _rows(path: Path, fmt: str, field: str) -> Iterator[tuple[int, Any]]:
    """(1-based line or row number, raw text value) for every record of one input."""
    if fmt == "dataset":
        return _dataset_rows(path, field)
    if fmt == "parquet":
        return _parquet_rows(path, field)
    if fmt == "jsonl":
        return _jsonl_rows(path, field)
    if fmt in ("csv", "tsv"):
        return _csv_rows(path, field, "," if fmt == "csv" else "\t")
    return _lines(path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines, decoded one by one from a binary handle so that a bad byte can be located."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            if b"\0" in handle.read(_SNIFF_BYTES):
                raise CorpusError(
                    path,
                    f"looks binary (a NUL byte in the first 8 KiB). synth reads {_SUPPORTED}; "
                    "re-save UTF-16 text as UTF-8.",
                )
            handle.seek(0)
            offset = 0  # of the current line in the (uncompressed) file
            for number, raw in enumerate(handle, 1):
                start, offset = offset, offset + len(raw)
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw, start = raw[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise CorpusError(
                        path,
                        f"invalid UTF-8 at byte offset {start + error.start} (byte {error.start + 1} of the line). "
                        "Convert the file to UTF-8, e.g. iconv -f LATIN1 -t UTF-8.",
                        number,
                    ) from None
                yield number, line
    except (gzip.BadGzipFile, EOFError) as error:
        raise CorpusError(path, f"not a readable gzip file ({error}).") from None


def parse_json_line(path: Path, line: str, number: int) -> Any:
    """One JSON Lines record, or CorpusError saying what is wrong with it and what to do."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise CorpusError(
            path,
            f"not valid JSON ({error.msg} at column {error.colno}). Each line must hold one JSON object.",
            number,
        ) from None
    except RecursionError:
        raise CorpusError(
            path, "JSON nested too deeply to read (thousands of levels). Flatten the record, or drop the line.", number
        ) from None
    except ValueError as error:  # an integer of more than 4,300 digits (sys.set_int_max_str_digits)
        raise CorpusError(
            path, f"a number too long to read ({str(error).split(';')[0]}). Write it as a string, or drop the field.", number
        ) from None


def _jsonl_rows(path: Path, field: str) -> Iterator[tuple[int, Any]]:
    for number, line in _lines(path):
        if not line.strip():
            yield number, None  # a blank line is an empty record
            continue
        record = parse_json_line(path, line, number)
        if not isinstance(record, dict):
            raise CorpusError(
                path,
                f"a JSON {type(record).__name__}, not an object. Each line must hold one object such as "
                f'{{"{field}": "..."}}.',
                number,
            )
        if field not in record:
            raise CorpusError(path, _no_field(field, record), number)
        yield number, record[field]


def _csv_rows(path: Path, field: str, delimiter: str) -> Iterator[tuple[int, Any]]:
    # Long documents exceed the csv module's 128 KiB cell limit; 2**31 - 1 fits a C long everywhere.
    csv.field_size_limit(2**31 - 1)
    # strict: a quote opened and never closed is an error, not the rest of the file as one cell.
    reader = csv.reader((line for _, line in _lines(path)), delimiter=delimiter, strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        if len(header) == 1:  # a one-column file is the text, whatever its header says
            column = 0
        elif field in header:
            column = header.index(field)
        else:
            raise CorpusError(path, _no_field(field, header), 1)
        start = reader.line_num + 1  # a quoted cell may span lines: report where the row starts
        for row in reader:
            yield start, row[column] if column < len(row) else None
            start = reader.line_num + 1
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            raise CorpusError(
                path,
                f"a quoted cell opens on line {start} and is never closed (the rest of the file would be one cell). "
                "Close the quote (a quote inside a cell is written twice: \"\"), or read the file with --format text.",
                start,
            ) from None
        raise CorpusError(path, f"malformed CSV ({error}). Check quoting and the delimiter.", reader.line_num) from None


def _parquet_rows(path: Path, field: str) -> Iterator[tuple[int, Any]]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise CorpusError(path, f"not a readable Parquet file ({error}).") from None
    with parquet:
        if field not in parquet.schema_arrow.names:
            raise CorpusError(path, _no_field(field, parquet.schema_arrow.names))
        batches = parquet.iter_batches(columns=[field], batch_size=_BATCH_ROWS)
        yield from _numbered(batch.column(0).to_pylist() for batch in batches)


def _dataset_rows(path: Path, field: str) -> Iterator[tuple[int, Any]]:
    import datasets  # slow to import (about 1.5 s): only when a dataset folder is read

    try:
        if _is_saved_dataset(path):
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
        else:
            dataset = datasets.load_dataset(str(path), split="train", streaming=True)
    except (ValueError, FileNotFoundError) as error:
        raise CorpusError(path, f"could not load this Hugging Face dataset ({error}).") from None
    # Streaming datasets of untyped files may not know their columns before the first row.
    if dataset.column_names is not None and field not in dataset.column_names:
        raise CorpusError(path, _no_field(field, dataset.column_names))
    batches = dataset.select_columns([field]).iter(batch_size=_BATCH_ROWS)
    yield from _numbered(batch[field] for batch in batches)


def _numbered(batches: Iterable[list[Any]]) -> Iterator[tuple[int, Any]]:
    return enumerate(chain.from_iterable(batches), 1)


def _no_field(field: str, names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:20]) + (", ..." if len(names) > 20 else "")
    return f"no field {field!r} (fields: {shown or 'none'}). Name the text field with --text-field."
