"""What every synth flow shares, so that a flow file only declares itself:

    @declared_flow("backtranslate", BacktranslateConfig, RunOptions, description=...)
    def backtranslate(**parameters) -> dict:
        return run_job(BacktranslateJob, BacktranslateConfig, parameters)

`run_job` validates every parameter (the job's pydantic config and `RunOptions`) before any work,
then runs the corpus through synth's engine (`ChunkedJob.run_shard`, the one `synth backtranslate`
runs): one window of requests across chunks, a chunk filtered in the filter process while the next
ones generate. Each shard of the corpus is one Prefect task (one shard here; one per Dask worker
with `dask_workers`/`dask_address`), retried after transient trouble. Resuming is synth's own: a
rerun after a crash (a killed worker) takes the chunks staged under OUT/.synth/chunks as they are,
and the generation cache keeps every request answered before the crash from being sent again.
Each run leaves artifacts: the plan, a progress bar while it works, the funnel per language, the
dataset card and, when pushed, a link to the Hub revision. Secrets (the API key, the Hub token)
come from an environment variable or a Prefect Secret block named by a parameter, never from a
parameter.
"""

import os

# A plain `python flows/...` run starts a temporary Prefect server: it needs 40-60 s to start on 2
# cores (Prefect waits 20 s), and its telemetry fails without internet, logging an ERROR. Set
# before prefect is imported; a value in the environment wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import contextvars  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from contextlib import AbstractContextManager, ExitStack, nullcontext
from functools import partial
from pathlib import Path
from typing import Annotated, Any, get_args

from huggingface_hub.constants import is_offline_mode
from prefect import get_run_logger, runtime, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture, wait
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from synth.config import validation_message
from synth.generate.backends import FatalError
from synth.job import ChunkedJob
from synth.staging import ChunkResult
from synth.plan import plan_job
from synth.progress import RunProgress
from synth.generate.runner import GenerationAborted
from synth.publish.hub import HubPushError
from synth.read import CorpusError, ReadStats
from synth.runlock import OutputError
from synth.redact import install_log_filter

PROGRESS_SECONDS = 0.5  # the progress artifact is updated at most this often
LOG_SECONDS = 30.0  # a progress line in the run's logs this often
# A crashed run's slots return to the global concurrency limit after this long (the lease is renewed while alive).
LEASE_SECONDS = 60


class RunOptions(BaseModel):
    """Flow parameters that are not job settings: how a run is carried out. Every flow takes them
    besides its config's fields."""

    model_config = ConfigDict(extra="forbid")

    shards: int | None = Field(
        None, ge=1, le=1024,
        description="Shards of the corpus, each a task streaming its chunks (every chunk whose index is the shard's modulo shards) "
        "through synth's engine; default: one, or one per Dask worker. Requests in flight: concurrency per shard",
    )
    concurrency_limit_name: str | None = Field(
        None, description="A Prefect global concurrency limit bounding the requests in flight to the endpoint, across chunks and runs"
    )
    api_key_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding the API key (else the variable named by api_key_env)"
    )
    hub_token_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding the Hugging Face token for push_to_hub (else the variable named by hub_token_env)"
    )
    dask_address: str | None = Field(
        None, description="Run the shards on this Dask cluster (tcp://scheduler:8786): reading, filtering and embedding spread over its workers, each sending its shard's requests to the endpoints"
    )
    dask_workers: int | None = Field(None, ge=1, le=256, description="Run the shards on a local Dask cluster of this many worker processes")

    @model_validator(mode="after")
    def _one_dask(self) -> "RunOptions":
        if self.dask_address and self.dask_workers:
            raise ValueError("dask_address and dask_workers exclude each other: a cluster to join, or a local one to start")
        if (self.dask_address or self.dask_workers) and importlib.util.find_spec("prefect_dask") is None:
            raise ValueError("dask_address and dask_workers need prefect-dask: pip install 'synth[dask]'")
        return self

    def shard_count(self) -> int:
        if self.shards:
            return self.shards
        if self.dask_workers:
            return self.dask_workers
        if self.dask_address:  # as many as the cluster has workers now
            from distributed import Client

            with Client(self.dask_address, timeout=30) as client:
                return max(1, len(client.scheduler_info().get("workers", {})))
        return 1

    def task_runner(self):
        """The Dask task runner the shards go to, or None: the flow's own threads."""
        if not (self.dask_address or self.dask_workers):
            return None
        from prefect_dask import DaskTaskRunner

        if self.dask_address:
            return DaskTaskRunner(address=self.dask_address)
        # One thread per process: the embedder and detectors run one chunk at a time per worker.
        # The dashboard on a free local port (prefect-dask logs its address), not on a fixed one.
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": self.dask_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": "127.0.0.1:0",
        })


# The filter flow sends no request: of the run options, only these apply to it.
FilterRunOptions = create_model(
    "FilterRunOptions", __config__=ConfigDict(extra="forbid"),
    **{name: (field.annotation, field) for name, field in RunOptions.model_fields.items() if name in ("shards", "hub_token_secret")},
)


def _no_retry_for_hopeless(task, task_run, state) -> bool:
    """Retry a chunk after transient trouble (the endpoint down a while), not after an error that
    would only happen again: bad input, a refused key, an unknown model."""
    error = state.data
    return not (isinstance(error, CorpusError) or isinstance(getattr(error, "__cause__", None), FatalError))


@dataclass
class ShardResult:
    chunks: list[ChunkResult]
    read: dict  # the corpus's reading figures (every shard reads it whole)


@task(
    name="shard",
    task_run_name="shard-{shard}-of-{shards}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_no_retry_for_hopeless,
    # A retry or a rerun resumes from synth's staged chunks and generation cache, not Prefect's.
    cache_policy=NO_CACHE,
)
def process_shard(
    job_class: type[ChunkedJob],
    config: BaseModel,
    shard: int,
    shards: int,
    on_done: Callable[[int], None] | None = None,
    generation_slots: Callable[[], AbstractContextManager] = nullcontext,
    api_key_secret: str | None = None,
) -> ShardResult:
    """One shard of the corpus through the engine (synth.job `run_shard`)."""
    logger = get_run_logger()
    job = _shard_job(job_class, config, api_key_secret)
    if job.progress is None:  # on a Dask worker: the shard's own progress, as a line in its logs every LOG_SECONDS
        job.progress = RunProgress(job.task, "requests" if job.generates else "records")
        job.progress.set_stage("generate" if job.generates else "filter")
        logged = [time.monotonic()]

        def log_now_and_then(progress: RunProgress) -> None:
            if time.monotonic() - logged[0] >= LOG_SECONDS:
                logged[0] = time.monotonic()
                logger.info("shard %d of %d: %s", shard, shards, progress.line())

        job.progress.listeners.append(log_now_and_then)
        on_done = job.progress.advance
    results = job.run_shard(shard, shards, on_done, generation_slots)
    reused = sum(result.reused for result in results)
    logger.info(
        "shard %d of %d: %d chunk%s (%d staged by an earlier run), %d kept, %d rejected; %d requests sent, %d answers from the cache",
        shard, shards, len(results), "s" * (len(results) != 1), reused, sum(r.kept for r in results), sum(r.rejected for r in results),
        sum(r.generation.get("requests", 0) for r in results if not r.reused),
        sum(r.generation.get("cache_hits", 0) for r in results if not r.reused),
    )
    return ShardResult(results, job.read_stats.as_dict())


# The flow's job per config, in this process: a shard task here takes its secrets and progress
# display from it. A shard on a Dask worker (another process) loads the key from its Secret block.
_jobs: dict[tuple[type, str], ChunkedJob] = {}
_jobs_lock = threading.Lock()


def _job_key(job_class: type[ChunkedJob], config: BaseModel) -> tuple[type, str]:
    return job_class, config.model_dump_json()


def _shard_job(job_class: type[ChunkedJob], config: BaseModel, api_key_secret: str | None = None) -> ChunkedJob:
    """A fresh job for one attempt at a shard (its reading figures start at zero)."""
    with _jobs_lock:
        flows_job = _jobs.get(_job_key(job_class, config))
    job = job_class(config)
    if flows_job is not None:
        job.api_key, job.hub_token, job.progress = flows_job.api_key, flows_job.hub_token, flows_job.progress
    else:
        job.api_key = _secret(api_key_secret) if api_key_secret else None
    return job


def _plan_in_background(job: ChunkedJob, progress: RunProgress, dataset: str, logger) -> threading.Thread:
    """The plan (what `synth ... --dry-run` prints: requests, tokens, cost) as the run's first
    artifact, and the total of its progress bar, counted beside the run rather than before it."""
    context = contextvars.copy_context()  # the flow run's: the artifact belongs to it

    def plan() -> None:
        try:
            planned = plan_job(type(job)(job.config))
        except CorpusError:
            return  # the run itself stops on it, once the chunks read before it are staged
        create_markdown_artifact(
            key=artifact_key(dataset, "plan"), markdown=planned.markdown(), description=f"Plan of this {job.task} run: requests, tokens, cost"
        )
        logger.info("plan: %s", "; ".join(line.strip() for line in planned.lines()[1:]))
        progress.plan(planned.requests if job.generates else planned.records, planned.chunks)

    thread = threading.Thread(target=context.run, args=(plan,), name="synth-plan", daemon=True)
    thread.start()
    return thread


class ProgressArtifact:
    """The run's RunProgress (what the CLI shows) as a Prefect progress artifact, and as a log
    line every `LOG_SECONDS`; created once the plan gives the total."""

    def __init__(self, progress: RunProgress, key: str, logger):
        self.progress, self.key, self.logger = progress, key, logger
        self.artifact_id = None
        self._shown: int | None = None
        self._logged = time.monotonic()

    def show(self, force_line: bool = False) -> None:
        snapshot = self.progress.snapshot()
        total, done = snapshot["total"], snapshot["done"]
        if total is None:
            return
        done = min(done, total)
        description = f"{done} of {total} {self.progress.unit}"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(100.0 * done / max(total, 1), key=self.key, description=description)
        elif done != self._shown:
            update_progress_artifact(self.artifact_id, 100.0 * done / max(total, 1), description=description)
        self._shown = done
        if force_line or time.monotonic() - self._logged >= LOG_SECONDS:
            self._logged = time.monotonic()
            self.logger.info("%s", self.progress.line(snapshot))


def artifact_key(*parts: str) -> str:
    """Artifact keys hold lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _validated(config_class: type[BaseModel], parameters: dict) -> tuple[RunOptions, BaseModel]:
    fields = {**config_class.model_fields, **RunOptions.model_fields}
    # None stands for "the default" where a setting cannot be None (base_url, lid_detectors), and
    # means None where it can (min_margin=None turns the margin filter off).
    given = {
        name: value for name, value in parameters.items()
        if value is not None or name not in fields or type(None) in get_args(fields[name].annotation)
    }
    try:
        options = RunOptions(**{name: value for name, value in given.items() if name in RunOptions.model_fields})
        config = config_class(**{name: value for name, value in given.items() if name not in RunOptions.model_fields})
    except ValidationError as error:
        raise ValueError(f"invalid parameters: {validation_message(error)}") from None
    return options, config


def _secret(name: str) -> str:
    try:
        return Secret.load(name).get()
    except ValueError:
        raise ValueError(
            f"no Prefect Secret block named {name!r}: create it (UI: Blocks, or `Secret(value=...).save({name!r})`)"
        ) from None


def _generation_slots(name: str | None, config: BaseModel) -> tuple[BaseModel, Callable[[], AbstractContextManager]]:
    """The config to run with (its concurrency within the limit) and what a shard holds while it runs."""
    if not name:
        return config, nullcontext
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ValueError(
                f"no global concurrency limit named {name!r}: create it with `prefect gcl create {name} --limit N`, "
                "or leave concurrency_limit_name unset"
            ) from None
    if limit.limit < 1:
        raise ValueError(f"the global concurrency limit {name!r} has {limit.limit} slots: no request could ever be sent")
    occupy = min(config.concurrency, limit.limit)
    if occupy < config.concurrency:
        get_run_logger().info(
            "concurrency %d lowered to %d: the global concurrency limit %r has %d slots", config.concurrency, occupy, name, limit.limit
        )
        config = config.model_copy(update={"concurrency": occupy})
    return config, partial(concurrency, name, occupy=occupy, strict=True, lease_duration=LEASE_SECONDS)


def _reproduce_command(parameters: dict) -> str:
    given = json.dumps({name: value for name, value in parameters.items() if value is not None}, sort_keys=True, default=str)
    if runtime.deployment.name:
        return f"prefect deployment run '{runtime.flow_run.flow_name}/{runtime.deployment.name}' --params {shlex.quote(given)}"
    return f"# Prefect flow {runtime.flow_run.flow_name!r} with parameters {given}"


def run_job(job_class: type[ChunkedJob], config_class: type[BaseModel], parameters: dict) -> dict:
    """The body of every synth flow: `parameters` are the flow's (its `locals()`). The run holds
    its dataset folder's lock (synth.runlock) from validation to the push: a second run into the
    same folder fails at once, naming the first."""
    with ExitStack() as held:
        return _run_job(job_class, config_class, parameters, held)


def _run_job(job_class: type[ChunkedJob], config_class: type[BaseModel], parameters: dict, held: ExitStack) -> dict:
    logger = get_run_logger()
    options, config = _validated(config_class, parameters)  # bad parameters fail here, before any work
    # A job that sends no requests (filtering a corpus) has no endpoint to bound.
    config, generation_slots = _generation_slots(options.concurrency_limit_name if job_class.generates else None, config)
    api_key = _secret(options.api_key_secret) if options.api_key_secret else None
    hub_token = _secret(options.hub_token_secret) if options.hub_token_secret else None
    if config.push_to_hub and not (hub_token or os.environ.get(config.hub_token_env)):
        raise ValueError(
            f"push_to_hub needs a Hugging Face token: name a Secret block holding it with hub_token_secret, "
            f"or set ${config.hub_token_env} in the worker's environment"
        )
    if config.push_to_hub and is_offline_mode():
        raise ValueError("push_to_hub needs the Hub, but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set in the worker's environment")
    started = time.time()

    job = job_class(config)
    job.api_key, job.hub_token = api_key, hub_token
    held.enter_context(job.exclusive(command=_reproduce_command(parameters)))  # registers the secrets too
    install_log_filter()  # no key or token in Prefect's logs, whatever an endpoint echoes
    key = _job_key(job_class, config)
    dataset = artifact_key(job.task, config.out.name)
    progress = RunProgress(job.task, "requests" if job.generates else "records")
    job.progress = progress
    with _jobs_lock:
        _jobs[key] = job
    try:
        planning = _plan_in_background(job, progress, dataset, logger)
        shown = ProgressArtifact(progress, artifact_key(dataset, "progress"), logger)
        shards = options.shard_count()
        logger.info(
            "%d shard%s of the corpus, chunks of %d records%s", shards, "s" * (shards != 1), config.chunk_size,
            f", {config.concurrency} requests in flight per shard" if job.generates else "",
        )
        progress.set_stage("generate" if job.generates else "filter")
        dask = options.task_runner()
        in_flight: dict[PrefectFuture, int] = {}
        with dask or nullcontext():
            for shard in range(shards):
                if dask is None:  # in this process: progress as requests are answered
                    future = process_shard.submit(job_class, config, shard, shards, progress.advance, generation_slots)
                else:  # in another process, maybe on another machine: progress as shards finish
                    future = dask.submit(process_shard, {
                        "job_class": job_class, "config": config, "shard": shard, "shards": shards,
                        "generation_slots": generation_slots, "api_key_secret": options.api_key_secret,
                    })
                in_flight[future] = shard
            finished: list[ShardResult] = []
            while in_flight:
                done, _ = wait(list(in_flight), timeout=PROGRESS_SECONDS)
                for future in done:
                    in_flight.pop(future)
                    finished.append(future.result())
                    if dask is not None:
                        planning.join()
                        if progress.total is not None:
                            progress.advance(progress.total * len(finished) // shards - progress.done)
                shown.show()
        planning.join()
        progress.set_stage("publish")
        shown.show(force_line=True)
        job.read_stats = ReadStats(**finished[0].read)
        results = sorted((chunk for shard in finished for chunk in shard.chunks), key=lambda r: r.index)
        published, stats = job.publish(results, started, command=_reproduce_command(parameters))
    finally:
        with _jobs_lock:
            if _jobs.get(key) is job:
                del _jobs[key]

    for lang, steps in stats["funnel"].items():
        create_table_artifact(
            key=artifact_key(dataset, "funnel", lang),
            table=[
                {"step": s["step"], "in": s["in"], "out": s["out"], "dropped": ", ".join(f"{k}: {v}" for k, v in s["dropped"].items())}
                for s in steps
            ],
            description=f"{job.task} funnel ({lang}): rows into and out of every step, and why rows were dropped. {config.out}",
        )
    from synth.filters.report import warning_lines

    for line in warning_lines((stats.get("warnings") or {}).get("high_reject_rate") or {}):
        logger.warning(line)  # a language that lost more than a quarter of its pairs, and what to change
    create_markdown_artifact(
        key=artifact_key(dataset, "card"), markdown=(config.out / "README.md").read_text(encoding="utf-8"),
        description=f"Dataset card of {config.out}",
    )
    this_run = stats["run"]
    evaluation = None
    if getattr(config, "evaluate", False):  # before the push: the results go with the dataset
        evaluation = run_evaluation({"dataset": str(config.out), "eval": config.evaluate_on}, lock=False)
    if config.push_to_hub:
        published.hub = job.push(published, this_run["id"])
        create_link_artifact(
            key=artifact_key(dataset, "hub"), link=published.hub.commit_url,
            link_text=f"{published.hub.repo_id} at {published.hub.revision[:12]}",
            description="The dataset on the Hugging Face Hub" + ("" if published.hub.changed else " (unchanged: no new commit)"),
        )
        logger.info("%s: %s", published.hub.repo_id, published.hub.commit_url)
    logger.info(
        "kept %d rows, rejected %d: %s (this run sent %d requests, %d answers from the cache, %d of %d chunks done before)",
        published.kept_rows, published.rejected_rows, config.out,
        this_run["requests"], this_run["cache_hits"], this_run["chunks_reused"], this_run["chunks"],
    )
    return {
        "out": str(config.out), "kept": published.kept_rows, "rejected": published.rejected_rows, "stats": stats,
        "hub": published.hub.commit_url if published.hub else None, "evaluation": evaluation,
    }


def main(flow_function: Callable[..., dict], model: type[BaseModel], noun: str) -> None:
    """`python flows/NAME.py ARGS`: the options `model` declares (synth.options: the parser and
    spellings of the `synth` command), then the flow with every value of the config, None included
    (None turns a filter off; leaving it out would bring the flow's default back)."""
    import sys

    from synth.options import declared_config

    config = declared_config(model, sys.argv[1:])
    try:
        result = flow_function(**config.model_dump(mode="json"))
    except (CorpusError, OutputError, ValueError, GenerationAborted, HubPushError) as error:
        # The flow run's logs above hold the details; the command ends as `synth` does (README: exit codes).
        code = 3 if isinstance(error, GenerationAborted) else 4 if isinstance(error, HubPushError) else 2
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(code) from None
    print(f"kept {result['kept']} {noun}, rejected {result['rejected']}: {result['out']}")



# --- flows derived from a config's declaration -----------------------------------------------------


def declared_signature(*models: type[BaseModel]) -> inspect.Signature:
    """The flow parameters of every field of `models` (synth.config `setting`s): the field's type,
    and its pydantic Field as the default, which Prefect turns into the parameter's default and its
    description in the UI (`prefect deploy` reads the signature of the loaded flow)."""
    from pydantic import Field

    required, optional = [], []
    for model in models:
        for name, field in model.model_fields.items():
            default = Field(
                default=... if field.is_required() else field.get_default(call_default_factory=True),
                description=field.description,
            )
            # The field's bounds and validators with its type: the schema shows them (minimum, ...) and Prefect checks them.
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            parameter = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            (required if field.is_required() else optional).append(parameter)
    return inspect.Signature(required + optional)


def declared_flow(name: str, *models: type[BaseModel], description: str) -> Callable[[Callable[..., dict]], Any]:
    """`@declared_flow("evaluate", EvaluateConfig, ...)` over `def body(**parameters) -> dict`: a
    Prefect flow whose parameters are the models' fields, declared once in synth.config."""
    from prefect import flow

    def decorate(body: Callable[..., dict]):
        @functools.wraps(body)
        def function(**parameters) -> dict:
            # A parameter not given may arrive as its declared Field: the field's default then.
            return body(**{k: v.get_default(call_default_factory=True) if isinstance(v, FieldInfo) else v for k, v in parameters.items()})

        function.__signature__ = declared_signature(*models)
        function.__doc__ = description
        return flow(name=name, description=description)(function)

    return decorate


class EvaluateRunOptions(BaseModel):
    """Flow parameters of the evaluate flow that are not evaluation settings."""

    model_config = ConfigDict(extra="forbid")

    hub_token_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding the Hugging Face token, for a private Hub dataset (else the variable named by hub_token_env)"
    )


def run_evaluation(parameters: dict, lock: bool = True) -> dict:
    """The body of the evaluate flow: validates, trains and scores (synth.evaluate), and leaves the
    results table, the training progress and the plot's path as artifacts."""
    from synth.config import EvaluateConfig
    from synth.evaluate import EvaluationError, Progress as Stages, evaluate
    from synth.evaluate.report import METHOD_LABELS, METHODS, metric_columns

    logger = get_run_logger()
    run_fields = set(EvaluateRunOptions.model_fields)
    try:
        options = EvaluateRunOptions(**{k: v for k, v in parameters.items() if k in run_fields})
        config = EvaluateConfig(**{k: v for k, v in parameters.items() if k not in run_fields})
    except ValidationError as error:
        raise ValueError(f"invalid parameters: {validation_message(error)}") from None
    token = _secret(options.hub_token_secret) if options.hub_token_secret else None
    key = artifact_key("evaluate", Path(config.dataset).name or config.dataset)
    progress_id = create_progress_artifact(0.0, key=artifact_key(key, "training"), description="training steps")
    shown = [0.0]

    def step(done: int, total: int) -> None:
        if time.monotonic() - shown[0] >= PROGRESS_SECONDS or done == total:
            shown[0] = time.monotonic()
            update_progress_artifact(progress_id, 100.0 * done / max(total, 1), description=f"{done} of {total} training steps")

    try:
        results = evaluate(config, Stages(stage=lambda text: logger.info("%s", text), step=step), hub_token=token, lock=lock)
    except EvaluationError as error:
        raise ValueError(str(error)) from None
    columns = metric_columns(results["kind"])
    rows = [
        {"evaluation set": e["name"], "pairs": e["pairs"], "method": METHOD_LABELS[m], **{label: e[m][k] for k, label in columns}}
        for e in results["eval"] for m in METHODS if m in e
    ]
    create_table_artifact(
        key=artifact_key(key, "results"), table=rows,
        description=f"Retrieval of {results['dataset']} ({results['lang']}-{results['pivot_lang']}), student {results['student']}, "
        f"{results['train_pairs']} training pairs; {config.results_dir}/results.json",
    )
    for e in results["eval"]:
        logger.info(
            "%s (%d pairs, %d left out for sharing a text with the training pairs): %s", e["name"], e["pairs"], e["excluded_overlap"],
            "; ".join(f"{METHOD_LABELS[m]} " + ", ".join(f"{label} {e[m][k]:.3f}" for k, label in columns) for m in METHODS if m in e),
        )
    return results
