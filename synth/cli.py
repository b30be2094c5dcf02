"""The `synth` command."""

import contextlib
import dataclasses
import errno
import inspect
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

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from synth import synth_version
from synth.progress import JsonFormatter, RunProgress, TextFormatter, _duration
from synth.config import BacktranslateConfig, EvaluateConfig, FilterConfig, JobConfig, QueriesConfig, validation_message
from synth.options import assignments, config_from_options, context_parameter, declared_options, declared_values, given_values

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
    """SIGTERM stops a run as Ctrl-C does, so that it unwinds the same way (answers flushed to the
    cache, locks released); `signal` says which one it was."""

    signal: str | None = None

    @classmethod
    def install(cls) -> None:
        import signal
        import threading

        def on_term(number, frame):
            cls.signal = "SIGTERM"
            if _in_finalizer(frame):
                # Python swallows an exception raised in a __del__ ("Exception ignored in"), and the
                # stop would be lost: the signal comes again a moment later, outside it.
                threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
                return
            # Whatever handles Ctrl-C now: inside asyncio.run, its handler cancels the main task, so
            # the run unwinds through its own awaits (a KeyboardInterrupt raised inside a task would
            # escape it and be logged as "Task exception was never retrieved"); else KeyboardInterrupt.
            on_int = signal.getsignal(signal.SIGINT)
            if callable(on_int) and on_int is not on_term:
                on_int(signal.SIGINT, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)

    @classmethod
    def run_over(cls) -> None:
        """The run is published: a SIGTERM or Ctrl-C from now on ends the process as it would any
        program (the dataset is complete), rather than a KeyboardInterrupt amid the summary or in
        the interpreter's exit ("Exception ignored in threading._shutdown")."""
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


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
# A config model declares each setting once (synth.config `setting`): its type, default, bounds,
# help and help panel. synth.options derives the command's options from those fields (the same
# parser makes `python flows/NAME.py ARGS`); here they become `synth` commands, with the run
# options (`_run_options`: --config JOB.yaml, and for a job --dry-run, -v/-q, --log-format).


def _settings(model: type, values: dict, job_file: Path | None):
    """`model` from the options given (`given_values`), over a job file's settings where there is
    one: a flag given on the command line wins over the file. Exits 2 with what is wrong."""
    try:
        if job_file is None:
            return config_from_options(model, values)
        from synth.jobfile import JobFileError, load_job_file

        try:
            settings = load_job_file(job_file, model)
        except JobFileError as error:
            _fail(str(error))
        return model(**{**settings, **declared_values(model, values)})
    except ValidationError as error:
        _fail(validation_message(error))


def declared_command(name: str, model: type, help: str, run_options: bool = False, on: typer.Typer | None = None) -> Callable:
    """Registers `synth NAME` (on `on`, default the `synth` app) with `model`'s declared options
    and --config JOB.yaml; with `run_options` those of a job too (--dry-run, -v/-q, --log-format,
    --log-every). The decorated function gets the validated config (and `RunOptions`)."""

    def register(run: Callable) -> Callable:
        run_parameters = _run_options() if run_options else _run_options()[:1]

        def command(ctx: typer.Context, **values) -> None:
            given = {parameter.name: values.pop(parameter.name) for parameter in run_parameters}
            if given.get("log_format", "text") not in ("text", "json"):
                _fail(f"--log-format {given['log_format']!r}: text or json")
            config = _settings(model, given_values(ctx, values), given["config"])
            if run_options:
                run(config, RunOptions(**given))
            else:
                run(config)

        # A job file may give the arguments too: the required settings are optional here (the model requires them).
        command.__signature__ = inspect.Signature([context_parameter(), *declared_options(model, required=False), *run_parameters])
        command.__name__ = run.__name__
        command.__doc__ = help
        (on or app).command(name, help=help)(command)
        return run

    return register


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


# --- the options of a run ---------------------------------------------------------------------------


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


@dataclasses.dataclass
class RunOptions:
    """How a job command runs, beside its settings: --config, --dry-run, -v/-q, --log-format."""

    config: Path | None = None
    dry_run: bool = False
    verbose: int = 0
    quiet: bool = False
    log_format: str = "text"
    log_every: float = 10.0


@declared_command("backtranslate", BacktranslateConfig, run_options=True, help=(
    "Back-translate a monolingual corpus into training pairs (authentic text + synthetic translation)."
))
def backtranslate(config: BacktranslateConfig, run: RunOptions) -> None:
    from synth.backtranslate import BacktranslateJob

    _run_job(
        BacktranslateJob, config, "back-translating", "pairs", run,
        " The in-process default (SmolLM2-135M) is far too small to translate from most languages: it shows the"
        " pipeline end to end; point --base-url/--model at a real model (vLLM, OpenAI) for data.",
    )


@declared_command("queries", QueriesConfig, run_options=True, help=(
    "Write search queries for the passages of a corpus: (query, passage) pairs for training retrievers."
))
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


@declared_command("filter", FilterConfig, run_options=True, help=(
    "Filter an existing parallel corpus with the pair filters and publish it like a generated dataset (rejects and funnel included)."
))
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
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
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
    from synth.filter_worker import stop_filter_process
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
    _Stopped.run_over()
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


def _add_batch_task(name: str, model: type, job_class: str) -> None:
    """`synth batch export NAME` and `synth batch submit NAME`, taking the options of `synth NAME`
    (`model`'s, and --config). `job_class` is "module:Class", imported when the command runs."""

    def job(context: typer.Context, values: dict):
        job_file = values.pop("config")
        module, _, class_name = job_class.partition(":")
        return getattr(importlib.import_module(module), class_name)(_settings(model, given_values(context, values), job_file))

    def export(ctx: typer.Context, **values) -> None:
        to_answer = job(ctx, values)
        if _export(to_answer):
            c = to_answer.config
            console.print(
                f"answer them with `synth batch submit {name}` (the same options), or with vLLM:\n"
                f"  python -m vllm.entrypoints.openai.run_batch -i FILE -o results.jsonl --model {c.model}\n"
                f"then `synth batch import results.jsonl --out {c.out}` and run the job: it sends nothing already answered",
                highlight=False,
            )

    def submit(ctx: typer.Context, **values) -> None:
        _submit(job(ctx, values))

    for command, typer_app, help in (
        (export, export_app, f"The requests `synth {name}` with these options would still send."),
        (submit, submit_app, f"Submit the requests `synth {name}` with these options would still send."),
    ):
        command.__signature__ = inspect.Signature([context_parameter(), *declared_options(model, required=False), _run_options()[0]])
        typer_app.command(name, help=help)(command)


_add_batch_task("backtranslate", BacktranslateConfig, "synth.backtranslate:BacktranslateJob")
_add_batch_task("queries", QueriesConfig, "synth.queries:QueriesJob")


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
