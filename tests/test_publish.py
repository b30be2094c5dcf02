import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from synth.publish import (
    CardInfo,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    publish_dataset,
    render_card,
)
from synth.publish.card import hub_language_code, size_category
from synth.schema import BACKTRANSLATION_SCHEMA, REJECT_SCHEMA, table_from_rows

STATS = {
    "read": {"files": 1, "lines_read": 30, "empty_dropped": 0, "duplicates_dropped": 0,
             "too_long_dropped": 0, "segments": 30},
    "generation": {"requests": 30, "cache_hits": 0, "failed": 1,
                   "prompt_tokens": 1234, "completion_tokens": 2345},
    "funnel": {"zu": [
        {"step": "read", "in": 30, "out": 30, "dropped": {}},
        {"step": "generate", "in": 30, "out": 29, "dropped": {"generation_failed": 1}},
        {"step": "heuristics", "in": 29, "out": 27, "dropped": {"copy": 1, "length_ratio": 1}},
        {"step": "language_id", "in": 27, "out": 25, "dropped": {"lid_mismatch": 2}},
        {"step": "embedding", "in": 25, "out": 22, "dropped": {"low_margin": 3}},
    ]},
    "lid": {"unverified": {"text": 30, "translation": 0}},
    "run": {"started": "2025-01-01T00:00:00", "finished": "2025-01-01T00:00:12", "seconds": 12.3},
}


def _row(i: int, **extra) -> dict:
    return {
        "id": f"{i:016x}", "text": f"Umusho {i}", "translation": f"Sentence {i}",
        "lang": "zu", "pivot_lang": "en", "synthetic_side": "translation",
        "source": "zul.txt", "line": i, "model": "test-model", "prompt_version": "bt-v1",
        **extra,
    }


def _stage(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    pq.write_table(table_from_rows(rows, schema), path)
    return path


def _reject(i: int) -> dict:
    return _row(i, reject_stage="heuristics", reject_reason="copy")


@pytest.fixture
def card() -> CardInfo:
    return CardInfo(
        lang="zu", pivot_lang="en", model="test-model",
        generation_params={"temperature": 0.2, "max_tokens": 256},
        prompt_versions={"backtranslate": "bt-v1"},
        embedder="intfloat/multilingual-e5-small",
        lid_detectors={"zu": None, "en": "py3langid"},
        thresholds={"min_margin": 1.05, "max_length_ratio": 3.0, "min_consistency": None},
        command="synth backtranslate zul.txt --lang zu --pivot en --out out",
        source_files=["zul.txt"],
    )


@pytest.fixture
def staged(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    stage = tmp_path / "stage"
    stage.mkdir()
    kept = [
        _stage(stage / "kept-0.parquet", [_row(i) for i in range(0, 3)], BACKTRANSLATION_SCHEMA),
        _stage(stage / "kept-1.parquet", [], BACKTRANSLATION_SCHEMA),
        _stage(stage / "kept-2.parquet", [_row(i) for i in range(3, 7)], BACKTRANSLATION_SCHEMA),
    ]
    rejects = [
        _stage(stage / "rej-0.parquet", [_reject(i) for i in range(100, 102)], REJECT_SCHEMA),
        _stage(stage / "rej-1.parquet", [_reject(102)], REJECT_SCHEMA),
    ]
    return kept, rejects


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _load(out: Path, cache: Path, config: str | None = None):
    return load_dataset(str(out), config, cache_dir=str(cache))


def test_publish_writes_shards_in_order(tmp_path, staged, card):
    kept, rejects = staged
    out = tmp_path / "out"
    result = publish_dataset(out, kept, rejects, STATS, card, rows_per_shard=3)

    assert _files(out) == [
        "README.md",
        "data/train-00000-of-00003.parquet",
        "data/train-00001-of-00003.parquet",
        "data/train-00002-of-00003.parquet",
        "rejects/rejects-00000-of-00001.parquet",
        "stats.json",
    ]
    assert (result.kept_rows, result.rejected_rows) == (7, 3)
    assert result.train_files == [out / f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [pq.read_metadata(f).num_rows for f in result.train_files] == [3, 3, 1]
    ids = [i for f in result.train_files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert ids == [f"{i:016x}" for i in range(7)]
    assert pq.read_schema(result.reject_files[0]).equals(REJECT_SCHEMA)


def test_load_dataset_reads_kept_and_rejects_configs(tmp_path, staged, card):
    out = tmp_path / "out"
    publish_dataset(out, *staged, STATS, card, rows_per_shard=3)

    pairs = _load(out, tmp_path / "cache")
    assert list(pairs) == ["train"]
    assert pairs["train"].column_names == BACKTRANSLATION_SCHEMA.names
    assert pairs["train"]["id"] == [f"{i:016x}" for i in range(7)]
    assert set(pairs["train"]["synthetic_side"]) == {"translation"}

    rejects = _load(out, tmp_path / "cache", "rejects")
    assert rejects["train"].column_names == REJECT_SCHEMA.names
    assert rejects["train"]["reject_reason"] == ["copy"] * 3


def test_stats_json(tmp_path, staged, card):
    out = tmp_path / "out"
    publish_dataset(out, *staged, STATS, card, rows_per_shard=3)

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["funnel"] == STATS["funnel"]
    assert stats["rows"] == {"kept": 7, "rejected": 3}
    assert stats["files"] == [
        "data/train-00000-of-00003.parquet",
        "data/train-00001-of-00003.parquet",
        "data/train-00002-of-00003.parquet",
        "rejects/rejects-00000-of-00001.parquet",
    ]


def test_card_metadata_and_body(tmp_path, staged, card):
    out = tmp_path / "out"
    publish_dataset(out, *staged, STATS, card, rows_per_shard=3)
    text = (out / "README.md").read_text(encoding="utf-8")

    data = DatasetCard(text).data
    assert data.language == ["zu", "en"]
    assert data.license == "cc-by-4.0"
    assert data.size_categories == ["n<1K"]
    assert data.task_categories == ["translation", "sentence-similarity"]
    assert data.tags == ["synthetic", "back-translation", "low-resource"]
    assert data.pretty_name
    assert data.configs == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]},
        {"config_name": "rejects", "data_files": [{"split": "train", "path": "rejects/*.parquet"}]},
    ]

    assert "authentic Zulu sentence" in text and "`synthetic_side`" in text
    assert "| heuristics | 29 | 27 | copy: 1, length_ratio: 1 |" in text
    assert "| read | 30 | 30 | - |" in text
    assert "Zulu (`zu`): **unverified**" in text
    assert "English (`en`): `py3langid`" in text
    assert "| `min_consistency` | off |" in text
    assert "prompt tokens: 1,234" in text and "completion tokens: 2,345" in text
    assert "`bt-v1`" in text and "intfloat/multilingual-e5-small" in text
    assert card.command in text
    assert 'load_dataset("' in text


def test_card_tolerates_missing_stats(card):
    text = render_card(card, {}, 0, 0, ["data/train-00000-of-00001.parquet"], [])
    assert DatasetCard(text).data.size_categories == ["n<1K"]
    assert "Filtering funnel" not in text


@pytest.mark.parametrize(
    ("rows", "label"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"),
     (100_000, "100K<n<1M"), (2_000_000, "1M<n<10M"), (10**13, "n>1T")],
)
def test_size_category(rows, label):
    assert size_category(rows) == label


def test_hub_language_codes_prefer_639_1():
    assert [hub_language_code(c) for c in ("zul", "zu", "eng", "haw")] == ["zu", "zu", "en", "haw"]


def test_republish_with_fewer_rows_removes_stale_shards(tmp_path, staged, card):
    kept, rejects = staged
    out = tmp_path / "out"
    publish_dataset(out, kept, rejects, STATS, card, rows_per_shard=3)
    publish_dataset(out, kept[:1], rejects[1:], STATS, card, rows_per_shard=3)

    assert _files(out) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "rejects/rejects-00000-of-00001.parquet",
        "stats.json",
    ]
    assert _load(out, tmp_path / "cache")["train"]["id"] == [f"{i:016x}" for i in range(3)]
    assert json.loads((out / "stats.json").read_text())["rows"] == {"kept": 3, "rejected": 1}


def test_publish_without_rows_still_writes_the_schema(tmp_path, staged, card):
    kept, _ = staged
    out = tmp_path / "out"
    result = publish_dataset(out, kept[1:2], [], STATS, card)

    assert (result.kept_rows, result.rejected_rows) == (0, 0)
    assert _files(out) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "rejects/rejects-00000-of-00001.parquet",
        "stats.json",
    ]
    assert pq.read_schema(result.train_files[0]).equals(BACKTRANSLATION_SCHEMA)
    assert pq.read_schema(result.reject_files[0]).equals(REJECT_SCHEMA)


def test_failed_publish_leaves_the_previous_one_intact(tmp_path, staged, card):
    kept, rejects = staged
    out = tmp_path / "out"
    publish_dataset(out, kept, rejects, STATS, card, rows_per_shard=3)
    before = {name: (out / name).read_bytes() for name in _files(out)}

    # The first part fills a temp shard before the missing one fails the publish.
    with pytest.raises(FileNotFoundError):
        publish_dataset(out, [kept[0], tmp_path / "missing.parquet"], rejects, STATS, card)

    assert {name: (out / name).read_bytes() for name in _files(out)} == before


def test_atomic_write_parquet_failure_keeps_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    atomic_write_parquet(pa.table({"a": [1, 2]}), path)
    unwritable = pa.table({"i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})

    with pytest.raises(pa.ArrowNotImplementedError):
        atomic_write_parquet(unwritable, path)

    assert pq.read_table(path).to_pydict() == {"a": [1, 2]}
    assert _files(tmp_path) == ["t.parquet"]


def test_atomic_write_removes_partly_written_temp_file(tmp_path):
    path = tmp_path / "card.md"
    atomic_write_text(path, "old")

    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "partly written \ud800")  # a lone surrogate fails mid-write

    assert path.read_text() == "old"
    assert _files(tmp_path) == ["card.md"]


def test_atomic_write_json_creates_parents_and_keeps_unicode(tmp_path):
    path = tmp_path / "a" / "b" / "stats.json"
    atomic_write_json(path, {"name": "isiZulu ñ", "n": 1})
    assert path.read_text(encoding="utf-8") == '{\n  "name": "isiZulu ñ",\n  "n": 1\n}\n'
