"""The Read stage on real files: every format, normalisation, dedup, limits and error messages."""

import csv
import gzip
import json
import pickle
import subprocess
import sys
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.data import udhr_path
from synth.read import (
    CorpusError,
    ExactDedup,
    ReadStats,
    Segment,
    chunked,
    expand_inputs,
    normalize_text,
    read_segments,
    record_id,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def texts(segments) -> list[str]:
    return [segment.text for segment in segments]


def corpus_error(inputs, **kwargs) -> CorpusError:
    """The CorpusError that reading `inputs` to the end raises."""
    with pytest.raises(CorpusError) as caught:
        list(read_segments(inputs, **kwargs))
    return caught.value


# --- normalisation and ids --------------------------------------------------------------------


def test_normalize_composes_to_nfc():
    decomposed = "caf" + "e\u0301"
    assert unicodedata.is_normalized("NFD", decomposed)
    assert normalize_text(decomposed) == "caf\u00e9"


def test_normalize_whitespace_to_single_spaces():
    messy = "\t  Umuntu\u00a0nomuntu\u3000unelungelo \r\n lokuphila\u2028\u2009kahle.  \n"
    assert normalize_text(messy) == "Umuntu nomuntu unelungelo lokuphila kahle."


def test_normalize_drops_invisible_controls_but_keeps_joiners():
    # BEL, zero-width space, BOM, soft hyphen and LRM go; ZWNJ (Persian) and ZWJ (Sinhala) stay.
    assert normalize_text("a\x07b\u200bc\ufeffd\u00ade\u200ef") == "abcdef"
    assert normalize_text("\u0645\u06cc\u200c\u0631\u0648\u0645") == "\u0645\u06cc\u200c\u0631\u0648\u0645"
    assert normalize_text("\u0dc1\u0dca\u200d\u0dbb\u0dd3") == "\u0dc1\u0dca\u200d\u0dbb\u0dd3"


def test_normalize_is_idempotent():
    for text in ["  e\u0301\u00a0x\x00y ", "\u200b\u200c", "plain text", "\ud800lone surrogate"]:
        once = normalize_text(text)
        assert normalize_text(once) == once
    assert normalize_text("\ud800lone surrogate") == "lone surrogate"


def test_record_id_is_a_fixed_sha256_prefix():
    # A literal: changing the hash (or its input encoding) must break this test, and the ids.
    assert record_id("Bonke abantu bazalwa bekhululekile.") == "9afbf67df191be3a"
    assert record_id("") == "e3b0c44298fc1c14"


def test_exact_dedup():
    seen = ExactDedup()
    assert not seen.seen("sawubona")
    assert seen.seen("sawubona")
    assert not seen.seen("Sawubona")
    assert len(seen) == 2


def test_chunked():
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
    with pytest.raises(ValueError):
        list(chunked([1], 0))


def test_read_stats_merge_and_as_dict():
    total = ReadStats(files=1, lines_read=5, segments=3)
    total.merge(ReadStats(files=2, lines_read=1, empty_dropped=1, duplicates_dropped=2, too_long_dropped=3, segments=4))
    assert total.as_dict() == {
        "files": 3,
        "lines_read": 6,
        "empty_dropped": 1,
        "duplicates_dropped": 2,
        "too_long_dropped": 3,
        "segments": 7,
    }


# --- formats ------------------------------------------------------------------------------------


def test_text_lines_with_numbers_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbfUmuntu wokuqala\r\n\r\n  \t\r\nUmuntu wesibili  \r\nlast line without newline")
    stats = ReadStats()
    segments = list(read_segments([path], stats=stats))
    assert [(s.text, s.line) for s in segments] == [
        ("Umuntu wokuqala", 1),
        ("Umuntu wesibili", 4),
        ("last line without newline", 5),
    ]
    assert all(s.source == str(path) and s.id == record_id(s.text) for s in segments)
    assert stats.as_dict() == {
        "files": 1,
        "lines_read": 5,
        "empty_dropped": 2,
        "duplicates_dropped": 0,
        "too_long_dropped": 0,
        "segments": 3,
    }


def test_segments_are_frozen(tmp_path):
    segment = next(read_segments([write(tmp_path / "a.txt", "x\n")]))
    assert segment == Segment(id=record_id("x"), text="x", source=str(tmp_path / "a.txt"), line=1)
    with pytest.raises(AttributeError):
        segment.text = "y"


def test_jsonl_with_text_field_and_blank_lines(tmp_path):
    path = write(
        tmp_path / "corpus.jsonl",
        '{"id": 7, "sentence": "Sawubona\\u00a0mhlaba", "lang": "zu"}\n'
        '\n{"sentence": "e\\u0301"}\n{"sentence": null}\n',
    )
    segments = list(read_segments([path], text_field="sentence"))
    assert [(s.text, s.line) for s in segments] == [("Sawubona mhlaba", 1), ("\u00e9", 3)]


def test_ndjson_extension_is_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "corpus.ndjson", [{"text": "one"}, {"text": "two"}])
    assert texts(read_segments([path])) == ["one", "two"]


def test_csv_header_column_quoted_multiline_cell_and_line_numbers(tmp_path):
    path = tmp_path / "corpus.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerow(["1", "Umuntu, wokuqala"])
        writer.writerow(["2", "two\nphysical lines"])
        writer.writerow(["3", 'with "quotes"'])
    segments = list(read_segments([path]))
    assert [(s.text, s.line) for s in segments] == [
        ("Umuntu, wokuqala", 2),
        ("two physical lines", 3),
        ('with "quotes"', 5),
    ]


def test_csv_with_one_column_uses_it_whatever_its_name(tmp_path):
    path = write(tmp_path / "corpus.csv", "sentence\nfirst\nsecond\n")
    assert texts(read_segments([path])) == ["first", "second"]


def test_csv_cell_longer_than_the_csv_module_default_limit(tmp_path):
    long_text = "a" * 300_000  # the csv module refuses cells over 128 KiB by default
    path = write(tmp_path / "long.csv", f"id,text\n1,{long_text}\n")
    assert texts(read_segments([path], max_chars=1_000_000)) == [long_text]


def test_tsv(tmp_path):
    path = write(tmp_path / "corpus.tsv", "text\tlang\nSawubona, mhlaba\tzu\nNgiyabonga\tzu\n")
    segments = list(read_segments([path]))
    assert [(s.text, s.line) for s in segments] == [("Sawubona, mhlaba", 2), ("Ngiyabonga", 3)]


def test_parquet_written_with_pyarrow(tmp_path):
    path = tmp_path / "corpus.parquet"
    table = pa.table({"id": [1, 2, 3, 4], "content": ["Sawubona", None, "e\u0301", "Sawubona"]})
    pq.write_table(table, path, row_group_size=2)  # rows span row groups and batches
    stats = ReadStats()
    segments = list(read_segments([path], text_field="content", stats=stats))
    assert [(s.text, s.line) for s in segments] == [("Sawubona", 1), ("\u00e9", 3)]
    assert (stats.empty_dropped, stats.duplicates_dropped) == (1, 1)


def test_gzipped_text_and_jsonl(tmp_path):
    with gzip.open(tmp_path / "corpus.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("one\ntwo\n")
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write('{"text": "three"}\n')
    assert texts(read_segments([tmp_path / "corpus.txt.gz", tmp_path / "corpus.jsonl.gz"])) == ["one", "two", "three"]


def test_explicit_format_overrides_the_extension(tmp_path):
    path = write_jsonl(tmp_path / "corpus.dat", [{"text": "from json"}])
    assert texts(read_segments([path], fmt="jsonl")) == ["from json"]
    assert texts(read_segments([path])) == ['{"text": "from json"}']
    with pytest.raises(ValueError, match="unknown format"):
        read_segments([path], fmt="xml")


def test_saved_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"text": ["Sawubona", None, "Ngiyabonga"], "n": [1, 2, 3]}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "saved")
    segments = list(read_segments([tmp_path / "saved"]))
    assert [(s.text, s.line, s.source) for s in segments] == [
        ("Sawubona", 1, str(tmp_path / "saved")),
        ("Ngiyabonga", 3, str(tmp_path / "saved")),
    ]

    other = datasets.Dataset.from_dict({"text": ["other split"], "n": [0]})
    datasets.DatasetDict({"validation": other, "train": datasets.Dataset.from_dict(rows)}).save_to_disk(
        tmp_path / "with_train"
    )
    assert texts(read_segments([tmp_path / "with_train"])) == ["Sawubona", "Ngiyabonga"]
    datasets.DatasetDict({"validation": other, "test": datasets.Dataset.from_dict(rows)}).save_to_disk(
        tmp_path / "without_train"
    )
    assert texts(read_segments([tmp_path / "without_train"])) == ["other split"]


def write_hub_dataset(root: Path, table: pa.Table) -> Path:
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet")
    configs = "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
    write(root / "README.md", f"---\n{configs}---\n# A corpus\n")
    return root


def test_hub_layout_folder(tmp_path):
    pytest.importorskip("datasets")
    root = write_hub_dataset(tmp_path / "hub", pa.table({"sentence": ["Umuntu", "", "Abantu"], "n": [1, 2, 3]}))
    segments = list(read_segments([root], text_field="sentence"))
    assert [(s.text, s.line) for s in segments] == [("Umuntu", 1), ("Abantu", 3)]


def test_real_udhr_zulu():
    stats = ReadStats()
    segments = list(read_segments([udhr_path("zul")], stats=stats))
    assert len(segments) == 30
    assert [s.line for s in segments] == list(range(1, 31))
    assert segments[0].text.startswith("Bonke abantu bazalwa bekhululekile")
    assert stats.segments == stats.lines_read == 30


# --- inputs, dedup, limits --------------------------------------------------------------------


def test_globs_are_sorted_and_dedup_spans_files(tmp_path):
    write(tmp_path / "b.txt", "shared\nonly in b\n")
    write(tmp_path / "a.txt", "shared\nonly in a\nshared\n")
    write(tmp_path / "c.jsonl", '{"text": "  shared "}\n{"text": "only in c"}\n')
    write(tmp_path / "sub" / "nested.txt", "nested\n")  # the plain subfolder is skipped by "*"
    stats = ReadStats()
    segments = list(read_segments([tmp_path / "*"], stats=stats))
    assert [(Path(s.source).name, s.line, s.text) for s in segments] == [
        ("a.txt", 1, "shared"),
        ("a.txt", 2, "only in a"),
        ("b.txt", 2, "only in b"),
        ("c.jsonl", 2, "only in c"),
    ]
    assert (stats.files, stats.lines_read, stats.duplicates_dropped, stats.segments) == (3, 7, 3, 4)

    kept = list(read_segments([str(tmp_path / "*.txt")], dedup=False))
    assert len(kept) == 5


def test_expand_inputs(tmp_path):
    a = write(tmp_path / "a.txt", "x\n")
    b = write(tmp_path / "b.txt", "y\n")
    write(tmp_path / "notes.md", "z\n")
    assert expand_inputs([str(b), tmp_path / "*.txt"]) == [b, a]  # order kept, each file once
    assert expand_inputs(str(a)) == [a]  # a lone path, not a sequence of characters
    assert expand_inputs([tmp_path / "**" / "*.md"]) == [tmp_path / "notes.md"]


def test_max_chars_drops_long_segments(tmp_path):
    path = write(tmp_path / "corpus.txt", "short\n" + "x" * 101 + "\n" + "y" * 100 + "\n")
    stats = ReadStats()
    assert [s.line for s in read_segments([path], max_chars=100, stats=stats)] == [1, 3]
    assert stats.too_long_dropped == 1


def test_limit_stops_early_without_reading_further_files(tmp_path):
    first = write(tmp_path / "a.txt", "one\ntwo\nthree\n")
    broken = tmp_path / "b.txt"
    broken.write_bytes(b"\0\0binary")
    stats = ReadStats()
    assert texts(read_segments([first, broken], limit=2, stats=stats)) == ["one", "two"]
    assert (stats.segments, stats.lines_read) == (2, 2)
    assert list(read_segments([first], limit=0)) == []


# Run in a child process: tracemalloc would slow the reader about eightfold (13 s here), and
# ru_maxrss also sees memory outside Python's allocator.
_PEAK_GROWTH = """
import resource, sys
from synth.read import read_segments
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = sum(1 for _ in read_segments([sys.argv[1]], dedup=False))
print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_streaming_keeps_memory_flat(tmp_path):
    path = tmp_path / "big.txt"
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(f"Umuntu {i} unelungelo lokuphila.\n" for i in range(200_000))
    child = subprocess.run(
        [sys.executable, "-c", _PEAK_GROWTH, str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    count, grown_kib = map(int, child.stdout.split())
    assert count == 200_000
    # The file is 7 MB; holding it as one string takes ~27 MB, as segments ~55 MB. Streaming: ~0.
    assert grown_kib < 10_000, grown_kib


# --- errors -------------------------------------------------------------------------------------


def test_missing_path_and_unmatched_glob(tmp_path):
    error = corpus_error([tmp_path / "missing.txt"])
    assert str(error).startswith(f"{tmp_path / 'missing.txt'}: no such file")
    assert error.line is None
    # Checked when read_segments is called, before anything is read.
    with pytest.raises(CorpusError, match="no file matches"):
        read_segments([write(tmp_path / "ok.txt", "x\n"), tmp_path / "*.jsonl"])


def test_folder_that_is_not_a_dataset(tmp_path):
    write(tmp_path / "plain" / "a.txt", "x\n")
    error = corpus_error([tmp_path / "plain"])
    assert str(error).startswith(f"{tmp_path / 'plain'}: a folder, but not a Hugging Face dataset")
    assert "*.txt" in str(error)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.txt", "")
    assert str(corpus_error([path])) == (
        f"{path}: empty file (0 bytes). Remove it from the inputs or check that it was fully written."
    )


def test_file_without_any_text(tmp_path):
    path = write(tmp_path / "blank.jsonl", '{"text": ""}\n{"text": null}\n\n')
    error = corpus_error([path])
    assert str(error).startswith(f"{path}: no text found (read as jsonl: 3 lines or rows, all empty)")
    assert "--text-field" in str(error)


def test_binary_file(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)))
    error = corpus_error([path])
    assert str(error).startswith(f"{path}: looks binary")
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("Sawubona\n", encoding="utf-16")
    assert "UTF-16" in str(corpus_error([utf16]))


def test_invalid_utf8_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Sawubona\ncaf\u00e9 ok\n".encode() + "na\u00efve\n".encode("latin-1"))
    yielded = []
    with pytest.raises(CorpusError) as caught:
        for segment in read_segments([path]):
            yielded.append(segment.text)
    assert yielded == ["Sawubona", "caf\u00e9 ok"]  # what came before the error stays yielded
    assert caught.value.line == 3
    # Line 3 starts at byte 18 ("Sawubona\n" is 9 bytes, "café ok\n" 9 as é takes 2); ï is its 3rd byte.
    assert str(caught.value).startswith(f"{path}:3: invalid UTF-8 at byte offset 20 (byte 3 of the line)")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "corpus.jsonl", '{"text": "fine"}\n["a", "list"]\n')
    assert str(corpus_error([path])).startswith(f"{path}:2: a JSON list, not an object")
    broken = write(tmp_path / "broken.jsonl", '{"text": "fine"}\n{"text": "unterminated\n')
    assert str(corpus_error([broken])).startswith(f"{broken}:2: not valid JSON")


def test_missing_text_field_lists_fields(tmp_path):
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", [{"sentence": "x", "lang": "zu"}])
    assert str(corpus_error([jsonl])) == (
        f"{jsonl}:1: no field 'text' (fields: 'sentence', 'lang'). Name the text field with --text-field."
    )
    csv_path = write(tmp_path / "corpus.csv", "id,sentence\n1,x\n")
    assert str(corpus_error([csv_path])).startswith(f"{csv_path}:1: no field 'text' (fields: 'id', 'sentence')")
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"sentence": ["x"], "lang": ["zu"]}), parquet)
    error = corpus_error([parquet])
    assert str(error).startswith(f"{parquet}: no field 'text' (fields: 'sentence', 'lang')")
    assert "--text-field" in str(error)


def test_missing_text_field_in_a_hub_dataset(tmp_path):
    pytest.importorskip("datasets")
    root = write_hub_dataset(tmp_path / "hub", pa.table({"sentence": ["x"]}))
    assert str(corpus_error([root])).startswith(f"{root}: no field 'text' (fields: 'sentence')")


def test_non_string_text_value(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "fine"}, {"text": 42}])
    assert str(corpus_error([path])).startswith(f"{path}:2: the 'text' value is not a string (int: 42)")
    parquet = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1.5]}), parquet)
    assert str(corpus_error([parquet])).startswith(f"{parquet}:1: the 'text' value is not a string (float: 1.5)")


def test_corpus_error_pickles():
    error = pickle.loads(pickle.dumps(CorpusError("corpus.txt", "broken.", 3)))
    assert (str(error), error.path, error.line) == ("corpus.txt:3: broken.", "corpus.txt", 3)
