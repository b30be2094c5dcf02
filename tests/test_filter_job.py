"""`synth filter`: an existing parallel corpus in every input format, filtered and published as a
dataset folder that `datasets` loads, rejects and funnel included."""

import json

import polars as pl
import pytest
from datasets import load_dataset
from typer.testing import CliRunner

from synth.cli import app
from synth.config import FilterConfig
from synth.data import udhr_articles
from synth.filter_job import FilterJob, read_pairs
from synth.read import CorpusError

ZU, EN, FR = (udhr_articles(code) for code in ("zul", "eng", "fra"))
SHORT = [2, 4, 5, 7, 8, 9, 21, 23, 27, 29]  # one sentence in Zulu and in English
GOOD = [(ZU[i], EN[i]) for i in SHORT]
FAULTS = {
    "duplicate": (ZU[2].upper(), EN[2]),       # the first pair again, in capitals
    "copy": (ZU[4], ZU[4]),
    "language_id": (ZU[5], FR[5]),              # the target side in French
    "refusal": (ZU[7], "I'm sorry, but I can't translate this text."),
}
PAIRS = GOOD + list(FAULTS.values())


def load(out, config: str | None = None):
    """Every split of a config as one Dataset (small datasets have held-out splits of a few rows).
    A cache of its own: `datasets` keys its cache of a local folder by the folder's name, so two
    folders called "out" would otherwise share one."""
    from datasets import concatenate_datasets

    splits = load_dataset(str(out), config, cache_dir=str(out.parent / "hf-cache"))
    return concatenate_datasets([splits[name] for name in sorted(splits)])


def write(path, fmt: str) -> list[str]:
    """The corpus in `fmt`; returns the paths to give `synth filter`."""
    if fmt == "text":
        (path / "corpus.zu").write_text("\n".join(zu for zu, _ in PAIRS) + "\n", encoding="utf-8")
        (path / "corpus.en").write_text("\n".join(en for _, en in PAIRS) + "\n", encoding="utf-8")
        return [str(path / "corpus.zu"), str(path / "corpus.en")]
    if fmt == "tsv":  # header-less, as bitext TSV mostly is; a quote is text, not quoting
        lines = [f"{zu}\t{en}" for zu, en in PAIRS]
        (path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [str(path / "pairs.tsv")]
    if fmt == "jsonl":  # Hugging Face translation format
        lines = [json.dumps({"translation": {"zu": zu, "en": en}}, ensure_ascii=False) for zu, en in PAIRS]
        (path / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [str(path / "pairs.jsonl")]
    pl.DataFrame({"zul_text": [zu for zu, _ in PAIRS], "eng_text": [en for _, en in PAIRS]}).write_parquet(path / "pairs.parquet")
    return [str(path / "pairs.parquet")]


@pytest.mark.parametrize("fmt", ["text", "tsv", "jsonl", "parquet"])
def test_each_format_is_filtered_and_published(tmp_path, fmt):
    fields = {"src_field": "zul_text", "tgt_field": "eng_text"} if fmt == "parquet" else {}
    out = tmp_path / "out"
    config = FilterConfig(pairs=write(tmp_path, fmt), src_lang="zul", tgt_lang="en", out=out, embedder="none", **fields)
    published, stats = FilterJob(config).run()

    kept, rejects = load(out), load(out, "rejects")
    assert published.kept_rows == kept.num_rows == len(GOOD)
    assert sorted(zip(kept["text"], kept["translation"])) == sorted(GOOD)
    assert set(kept["lang"]) == {"zu"} and set(kept["pivot_lang"]) == {"en"}
    assert {row["reject_stage"] for row in rejects} == set(FAULTS)
    assert dict(zip(rejects["reject_stage"], rejects["reject_reason"]))["duplicate"] == "duplicate:exact"
    funnel = {step["step"]: step for step in stats["funnel"]["zu"]}
    assert "generate" not in funnel and funnel["read"]["out"] == len(PAIRS)
    assert funnel["duplicate"]["dropped"] == {"duplicate": 1} and funnel["language_id"]["dropped"] == {"lid_mismatch": 1}
    translation = load(out, "translation")
    assert translation[0]["translation"].keys() == {"zu", "en"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "parallel corpus, filtered" in card and "generator" not in card


def test_the_command_with_embeddings_and_per_language_settings(tmp_path):
    paths = write(tmp_path, "text")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "filter", *paths, "--src-lang", "zu", "--tgt-lang", "en", "--out", str(out),
        "--min-margin", "p20", "--lid-detector", "zu=py3langid", "--lid-min-score", "en=0.6",
    ])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    embedding = next(step for step in stats["funnel"]["zu"] if step["step"] == "embedding")
    assert embedding["in"] == len(GOOD) and embedding["dropped"] == {"low_margin": 2}  # p20 of the ten good ones
    assert embedding["derived"]["min_margin[zu]"]["batches"] == 1
    assert stats["lid"]["detectors"] == {"zu": "py3langid", "en": "pycld2"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "`min_margin[zu]` (derived per chunk)" in card and "| `min_margin` | p20 |" in card
    kept = load(out)
    assert all(row["margin"] is not None and row["text_lid_detector"] == "py3langid" for row in kept)
    # Every filter's own time (issue 15), the embedder by far the dearest; recorded with the staged
    # chunks, so publishing them again writes the same stats.json.
    seconds = stats["filter_seconds"]
    assert list(seconds) == [step["step"] for step in stats["funnel"]["zu"][1:]]
    assert seconds["embedding"] == max(seconds.values()) > 0
    before = (out / "stats.json").read_bytes()
    again = CliRunner().invoke(app, [
        "filter", *paths, "--src-lang", "zu", "--tgt-lang", "en", "--out", str(out),
        "--min-margin", "p20", "--lid-detector", "zu=py3langid", "--lid-min-score", "en=0.6",
    ])
    assert again.exit_code == 0, again.output
    assert (out / "stats.json").read_bytes() == before


def test_misaligned_files_and_missing_fields_fail_with_what_to_do(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("uno\ndos\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="2 lines, but .*a.txt has 3"):
        list(read_pairs([tmp_path / "a.txt", tmp_path / "b.txt"], src_lang="en", tgt_lang="es"))
    (tmp_path / "p.jsonl").write_text('{"english": "one", "spanish": "uno"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="no fields 'src' and 'tgt' .*'english', 'spanish'.*--src-field"):
        list(read_pairs([tmp_path / "p.jsonl"], src_lang="en", tgt_lang="es"))
    with pytest.raises(CorpusError, match="one text file holds one side only"):
        list(read_pairs([tmp_path / "a.txt"], src_lang="en", tgt_lang="es"))


def test_empty_lines_keep_the_files_aligned(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\nthree\n\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("uno\ndos\n\n\n", encoding="utf-8")
    pairs = list(read_pairs([tmp_path / "a.txt", tmp_path / "b.txt"], src_lang="en", tgt_lang="es"))
    assert [(line, text, translation) for _, line, text, translation in pairs] == [(1, "one", "uno"), (2, "", "dos"), (3, "three", "")]
