import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Translation, load_dataset
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image

from synth.publish import (
    CardInfo,
    PublishResult,
    Splits,
    SplitSpecError,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    pairs_view,
    publish_dataset,
    render_card,
    translation_view,
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
}
VIEWS = [
    pairs_view("translation", "text", description="anchor: English, positive: Zulu"),
    translation_view("zu", "text", "en", "translation", description="translation pairs"),
]
SCHEMAS = {"kept_schema": BACKTRANSLATION_SCHEMA, "reject_schema": REJECT_SCHEMA}


def _row(i: int, **extra) -> dict:
    return {
        "id": f"{i:016x}", "text": f"Umusho {i}", "translation": f"Sentence {i}",
        "lang": "zu", "pivot_lang": "en", "synthetic_side": "translation",
        "source": "zul.txt", "line": i, "model": "test-model", "prompt_version": "bt-v1",
        "consistency": 0.8 + (i % 10) / 100, "margin": 1.0 + (i % 7) / 100,
        **extra,
    }


def _stage(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    pq.write_table(table_from_rows(rows, schema), path)
    return path


def _reject(i: int) -> dict:
    return _row(i, consistency=0.5, margin=0.9, reject_stage="embedding", reject_reason="low_margin:0.9")


def _card() -> CardInfo:
    return CardInfo(
        lang="zu", pivot_lang="en", model="test-model",
        generation_params={"temperature": 0.2, "max_tokens": 256},
        prompt_versions={"backtranslate": "bt-v1"},
        embedder="intfloat/multilingual-e5-small",
        lid_detectors={"zu": None, "en": "py3langid"},
        thresholds={"min_cosine": 0.8, "min_margin": 1.05, "max_length_ratio": 3.0, "max_rank": None},
        command="synth backtranslate zul.txt --lang zu --pivot en --out out",
        source_files=["zul.txt"],
        summary="Each `text` is authentic Zulu; each `translation` is **synthetic** English.",
        columns=[("id", "record id"), ("text", "authentic Zulu")],
        task_categories=["translation", "sentence-similarity"],
        tags=["synthetic", "back-translation"],
        lid_columns={"zu": "text", "en": "translation"},
        score_columns={"consistency": "min_cosine", "margin": "min_margin"},
        training="`anchor` is the English sentence, `positive` its Zulu partner.",
    )


@pytest.fixture
def card() -> CardInfo:
    return _card()


def _stage_all(stage: Path) -> tuple[list[Path], list[Path]]:
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


@pytest.fixture
def staged(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    return _stage_all(tmp_path / "stage")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, PublishResult]:
    """One publish of the staged parts, read by the tests that only look at it."""
    tmp = tmp_path_factory.mktemp("published")
    out = tmp / "out"
    return out, _publish(out, *_stage_all(tmp / "stage"), _card(), splits="train", rows_per_shard=3)


def _many(tmp_path: Path, n: int, name: str, start: int = 0) -> Path:
    return _stage(tmp_path / f"{name}.parquet", [_row(i) for i in range(start, start + n)], BACKTRANSLATION_SCHEMA)


def _unhashed(name: str) -> str:
    """A shard's name without the hash of its bytes that ends it (train-00000-of-00001-<hash>.parquet)."""
    return re.sub(r"-[0-9a-f]{16}(?=\.parquet$)", "", name)


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _names(directory: Path) -> list[str]:
    """The folder's files, shards named without their hash (checked to be there)."""
    names = _files(directory)
    assert all(re.search(r"-of-\d{5}-[0-9a-f]{16}\.parquet$", n) for n in names if n.endswith(".parquet") and "-of-" in n)
    return sorted(_unhashed(n) for n in names)


def _load(out: Path, cache: Path, config: str | None = None):
    return load_dataset(str(out), config, cache_dir=str(cache))


def _publish(out, kept, rejects, card, **kw):
    return publish_dataset(out, kept, rejects, STATS, card, **SCHEMAS, **{"views": VIEWS, **kw})


def test_publish_writes_every_config_in_bounded_shards_in_order(published):
    out, result = published

    shards = [f"{folder}/train-0000{i}-of-00003.parquet" for folder in ("data", "pairs", "translation") for i in range(3)]
    assert _names(out) == sorted([
        "README.md", *shards, "plots/funnel.png", "plots/scores.png",
        "rejects/train-00000-of-00001.parquet", "stats.json",
    ])
    assert (result.kept_rows, result.rejected_rows) == (7, 3)
    assert [pq.read_metadata(f).num_rows for f in result.files("default")] == [3, 3, 1]
    ids = [i for f in result.files("default") for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert ids == [f"{i:016x}" for i in range(7)]
    assert pq.read_schema(result.files("rejects")[0]).equals(REJECT_SCHEMA)
    assert pq.read_schema(result.files("pairs")[0]).equals(VIEWS[0].schema)
    assert pq.read_schema(result.files("translation")[0]).equals(VIEWS[1].schema)


def test_chunk_sized_parts_make_large_row_groups(tmp_path, card, monkeypatch):
    import synth.publish.dataset as dataset

    monkeypatch.setattr(dataset, "ROW_GROUP_ROWS", 100)
    kept = [_many(tmp_path, 30, f"part-{i}", start=30 * i) for i in range(9)]  # 270 rows in parts of 30
    out = tmp_path / "out"
    _publish(out, kept, [], card, splits="train", rows_per_shard=250)
    shards = [pq.ParquetFile(path) for path in sorted((out / "data").glob("train-*.parquet"))]
    # 250 rows: row groups of 120 (four parts reach 100), 120, then the shard's last 10; the rest: 20.
    assert [[f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)] for f in shards] == [[120, 120, 10], [20]]
    assert [row["line"] for f in shards for row in f.read().to_pylist()] == list(range(270))


def test_load_dataset_reads_every_config(published, tmp_path):
    out, _ = published
    cache = tmp_path / "cache"

    default = _load(out, cache)["train"]
    assert default.column_names == BACKTRANSLATION_SCHEMA.names
    assert default["id"] == [f"{i:016x}" for i in range(7)]

    pairs = _load(out, cache, "pairs")["train"]
    assert pairs.column_names == ["anchor", "positive"]
    assert pairs[0] == {"anchor": "Sentence 0", "positive": "Umusho 0"}

    translation = _load(out, cache, "translation")["train"]
    assert translation.features["translation"] == Translation(languages=["zu", "en"])
    assert translation[0] == {"id": f"{0:016x}", "translation": {"en": "Sentence 0", "zu": "Umusho 0"}}

    rejects = _load(out, cache, "rejects")["train"]
    assert rejects.column_names == REJECT_SCHEMA.names
    assert rejects["reject_reason"] == ["low_margin:0.9"] * 3


def test_splits_are_the_same_in_every_config_and_stable_as_the_corpus_grows(tmp_path, card):
    small, large = _many(tmp_path, 300, "small"), _many(tmp_path, 300, "more", start=300)
    spec = "train=0.8,validation=0.1,test=0.1"

    def splits_of(out: Path) -> dict[str, str]:
        return {
            row_id: split
            for split in ("train", "validation", "test")
            for f in (out / "data").glob(f"{split}-*.parquet")
            for row_id in pq.read_table(f, columns=["id"])["id"].to_pylist()
        }

    _publish(tmp_path / "a", [small], [], card, splits=spec)
    grown = _publish(tmp_path / "c", [small, large], [], card, splits=spec)

    before, after = splits_of(tmp_path / "a"), splits_of(tmp_path / "c")
    # Fixed fraction cuts, except where a small dataset's floor (MIN_HELD_OUT_ROWS) moved one up:
    # a record then only ever moves towards train (validation -> test -> train), never out of it.
    order = ["validation", "test", "train"]
    assert all(order.index(after[row_id]) >= order.index(split) for row_id, split in before.items())
    assert sum(after[row_id] == split for row_id, split in before.items()) >= 290
    assert all(after[row_id] == "train" for row_id, split in before.items() if split == "train")
    assert grown.config("default").rows == grown.config("pairs").rows == grown.config("translation").rows
    rows = grown.config("default").rows
    assert sum(rows.values()) == 600 and 30 <= rows["validation"] <= 90 and 30 <= rows["test"] <= 90
    pairs_test = _load(tmp_path / "c", tmp_path / "cache", "pairs")["test"]["positive"]
    assert sorted(pairs_test) == sorted(f"Umusho {int(i, 16)}" for i, s in after.items() if s == "test")


def test_split_sizes_in_records_only_ever_move_records_towards_train(tmp_path, card):
    small, large = _many(tmp_path, 100, "small"), _many(tmp_path, 100, "more", start=100)
    first = _publish(tmp_path / "a", [small], [], card, splits="validation=5,test=5")
    grown = _publish(tmp_path / "b", [small, large], [], card, splits="validation=5,test=5")

    assert first.config("default").rows == {"train": 90, "validation": 5, "test": 5}
    assert grown.config("default").rows == {"train": 190, "validation": 5, "test": 5}

    def ids(out: Path, split: str) -> set[str]:
        return {i for f in (out / "data").glob(f"{split}-*.parquet") for i in pq.read_table(f)["id"].to_pylist()}

    old_train = ids(tmp_path / "a", "train")
    assert not (ids(tmp_path / "b", "validation") | ids(tmp_path / "b", "test")) & old_train


@pytest.mark.parametrize(("records", "held_out"), [(24, 2), (200, 20), (1000, 50)])
def test_small_datasets_get_usable_held_out_splits(records, held_out):
    """1% of 1,000 rows is 10: each held-out split given as a fraction gets at least
    MIN_HELD_OUT_ROWS (50) records, or a tenth of the records when that is fewer."""
    from collections import Counter

    from synth.publish.views import positions

    splits = Splits.parse("train=0.98,validation=0.01,test=0.01")
    keys = [f"record-{i}" for i in range(records)]
    counts = Counter(splits.assign(keys, splits.cut_points(positions(keys))))
    assert counts["validation"] == counts["test"] == held_out
    assert counts["train"] == records - 2 * held_out


def test_tiny_dataset_declares_only_the_splits_it_has(tmp_path, card):
    """29 rows with 1% held out: most held-out splits are empty, and `datasets` cannot load an
    empty split, so those are neither written nor declared."""
    out = tmp_path / "out"
    result = _publish(out, [_many(tmp_path, 29, "tiny")], [], card)

    rows = result.config("default").rows
    assert sum(rows.values()) == 29 and rows["train"] >= 25
    declared = {c["config_name"]: [f["split"] for f in c["data_files"]] for c in DatasetCard((out / "README.md").read_text()).data.configs}
    present = [split for split, n in rows.items() if n]
    assert declared == {"default": present, "pairs": present, "translation": present}  # no rejects either
    for config in ("default", "pairs", "translation"):
        assert {s: len(d) for s, d in _load(out, tmp_path / "cache", config).items()} == {s: rows[s] for s in present}
    assert "A split with no rows is not declared" in (out / "README.md").read_text()


def test_without_kept_rows_only_the_rejects_are_declared(tmp_path, staged, card):
    kept, rejects = staged
    out = tmp_path / "out"
    result = _publish(out, kept[1:2], rejects, card)

    assert (result.kept_rows, result.rejected_rows) == (0, 3)
    assert not (out / "data").exists() and not (out / "pairs").exists()
    data = DatasetCard((out / "README.md").read_text()).data
    assert [c["config_name"] for c in data.configs] == ["rejects"]
    assert len(_load(out, tmp_path / "cache", "rejects")["train"]) == 3


def test_pairs_view_leaves_out_rows_missing_a_side(tmp_path, card):
    part = _stage(tmp_path / "p.parquet", [_row(0), _row(1, translation=None), _row(2, translation="  ")], BACKTRANSLATION_SCHEMA)
    result = _publish(tmp_path / "out", [part], [], card, splits="train")
    assert result.config("default").rows == {"train": 3}
    assert result.config("pairs").rows == {"train": 1}
    assert result.config("translation").rows == {"train": 1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("train=0.9,validation=0.05", "train takes the rest"),
        ("validation=0.6,test=0.5", "train would get nothing"),
        ("validation=10,test=0.1", "not both"),
        ("validation", "needs a size"),
        ("validation=abc", "not a fraction"),
        ("Validation=0.1", "lowercase"),
        ("test=0.1,test=0.2", "given twice"),
        ("validation=0", "at least 1"),
        ("validation=1.5", "between 0 and 1"),
        ("train=2", "train=2 alone"),  # issue 14: was silently ignored (everything in train)
        ("train=0.5", "train=0.5 alone"),
    ],
)
def test_bad_split_specs_say_what_is_wrong(spec, message):
    with pytest.raises(SplitSpecError, match=message):
        Splits.parse(spec)


def test_split_specs_parse_and_print():
    assert str(Splits.parse("train=0.98,validation=0.01,test=0.01")) == "validation=0.01,test=0.01"
    assert str(Splits.parse("validation=500, test=500")) == "validation=500,test=500"
    assert Splits.parse("train").names == ["train"]
    assert Splits.parse("test=0.1,validation=0.1").names == ["train", "test", "validation"]


def test_stats_json(published):
    out, _ = published

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["funnel"] == STATS["funnel"]
    assert stats["rows"] == {"kept": 7, "rejected": 3}
    assert stats["splits"]["rows"] == {
        "default": {"train": 7}, "pairs": {"train": 7}, "translation": {"train": 7}, "rejects": {"train": 3},
    }
    assert [_unhashed(f) for f in stats["files"][:3]] == [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert _unhashed(stats["files"][-1]) == "rejects/train-00000-of-00001.parquet"


def test_card_metadata_and_body(published):
    out, result = published
    card = _card()
    text = (out / "README.md").read_text(encoding="utf-8")

    data = DatasetCard(text).data
    assert DatasetCardData(**data.to_dict()).to_dict() == data.to_dict()  # round-trips
    assert data.language == ["zu", "en"]
    assert data.license == "cc-by-4.0"
    assert data.size_categories == ["n<1K"]
    assert data.task_categories == ["translation", "sentence-similarity"]
    assert data.tags == ["synthetic", "back-translation"]
    assert data.pretty_name
    # Each config lists the exact files of this version (no glob: see test_unattended.py's republish tests).
    assert data.configs == [
        {"config_name": name, "data_files": [{"split": "train", "path": result.config(name).files["train"]}]}
        for name in ("default", "pairs", "translation", "rejects")
    ]

    assert card.summary in text and card.training in text
    assert "| `pairs` | anchor: English, positive: Zulu | 7 |" in text
    assert "| heuristics | 29 | 27 | copy: 1, length_ratio: 1 |" in text
    assert "| read | 30 | 30 | - |" in text
    assert "Zulu (`zu`): **unverified**" in text and "language in `text` was not checked" in text
    assert "English (`en`): `py3langid`" in text
    assert "| `max_rank` | off |" in text
    assert "prompt tokens: 1,234" in text and "completion tokens: 2,345" in text
    assert "`bt-v1`" in text and "intfloat/multilingual-e5-small" in text
    assert card.command in text
    assert 'pairs = load_dataset("path/to/this/folder", "pairs")' in text
    for link in ("plots/funnel.png", "plots/scores.png"):
        assert f"]({link})" in text
        with Image.open(out / link) as image:
            assert image.format == "PNG" and image.width > 500


def test_same_data_publishes_the_same_bytes(published, tmp_path, staged, card):
    """What makes a second push of unchanged data a no-op: no timestamps anywhere."""
    first, second = published[0], tmp_path / "again"
    _publish(second, *staged, card, splits="train", rows_per_shard=3)
    assert _files(first) == _files(second)
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in _files(first))


def test_card_names_the_hub_repo_when_pushed(published, card):
    card.repo_id = "org/zu-en"
    text = render_card(card, STATS, published[1].configs)
    assert 'pairs = load_dataset("org/zu-en", "pairs")' in text
    assert 'data = load_dataset("org/zu-en")' in text


@pytest.mark.parametrize(
    ("rows", "label"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"),
     (100_000, "100K<n<1M"), (2_000_000, "1M<n<10M"), (10**13, "n>1T")],
)
def test_size_category(rows, label):
    assert size_category(rows) == label


def test_hub_language_codes_prefer_639_1():
    assert [hub_language_code(c) for c in ("zul", "zu", "eng", "haw")] == ["zu", "zu", "en", "haw"]


def test_republish_with_fewer_rows_removes_stale_files(tmp_path, staged, card):
    kept, rejects = staged
    out = tmp_path / "out"
    _publish(out, kept, rejects, card, splits="train", rows_per_shard=3)
    (out / "rejects" / "rejects-00000-of-00001.parquet").write_bytes(b"")  # the layout before splits
    _publish(out, kept[:1], [], card, splits="train", rows_per_shard=3)

    assert _names(out) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "pairs/train-00000-of-00001.parquet",
        "plots/funnel.png",
        "plots/scores.png",
        "stats.json",
        "translation/train-00000-of-00001.parquet",
    ]
    assert _load(out, tmp_path / "cache")["train"]["id"] == [f"{i:016x}" for i in range(3)]
    assert json.loads((out / "stats.json").read_text())["rows"] == {"kept": 3, "rejected": 0}


def test_failed_publish_leaves_the_previous_one_intact(tmp_path, staged, card):
    kept, rejects = staged
    out = tmp_path / "out"
    _publish(out, kept, rejects, card, rows_per_shard=3)
    before = {name: (out / name).read_bytes() for name in _files(out)}

    # The first part fills temp shards before the missing one fails the publish.
    with pytest.raises(FileNotFoundError):
        _publish(out, [kept[0], tmp_path / "missing.parquet"], rejects, card)

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
