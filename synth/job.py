"""The machinery every generation job shares: read -> generate -> filter -> publish, by chunk.

A task (back-translation, queries, ...) subclasses `ChunkedJob` and says what is particular to it:
the requests a segment makes, the rows an answer gives, its filter chain, its schemas and its card.
The rest is here: `chunks()` streams the corpus in chunks with stable keys; `run_async()` is the
engine: several chunks generate at once through one window of requests, a generated chunk is
filtered and staged (synth.staging: atomically; a finished chunk is taken as it is on rerun) in
the filter process (synth.filter_worker) while the next ones generate; `publish()` turns the
staged chunks into the dataset folder, with stats.json summed from their records
(synth.dataset_stats). The CLI (`run`) and the Prefect flows (`run_shard`, one shard of the
corpus per task) drive this same engine.
"""

import asyncio
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from synth import redact
from synth.filter_worker import filter_executor, forget_broken_pool, in_worker, warm_filters_in_worker
from synth.filters.base import FilterChain, FilterStats, reason_kind
from synth.filters.langid import LanguageIdentifier, LanguageIdFilter
from synth.filters.pairs import language_identifier
from synth.generate.backends import SMOLLM2_MODEL_NAME, Backend, FatalError, OpenAIBackend, TransformersBackend
from synth.generate.cache import GenerationCache, cache_key
from synth.generate.request import Request, nonempty
from synth.generate.runner import GenerationAborted, GenerationStats, Outcome, RequestRunner, RetryPolicy
from synth.atomic import atomic_write_json
from synth.dataset_stats import GENERATE_STEP, dataset_stats
from synth.publish import CardInfo, PublishResult, View, publish_dataset
from synth.publish.dataset import DEFAULT_FOLDER, REJECTS
from synth.publish.hub import HubPush, push_folder
from synth.read import CorpusError, ReadStats, Segment, chunked, read_segments
from synth.runlock import locked_output
from synth.staging import ChunkResult, ChunkStore, excerpted

log = logging.getLogger("synth")
@dataclass
class Chunk:
    index: int
    key: str
    segments: list[Segment]


class FollowupStage(Protocol):
    """A second request per row, sent after a chunk's filters, whose answer decides the row: the
    queries' LLM relevance check of the round trip's undecided band (synth.queries); a pairs round
    trip (translate the translation back) would be another. A job lists its stages in
    `ChunkedJob.followups`; the machinery sends their requests through the run's runner and
    generation cache (a rerun sends none again), counts them apart in stats.json (`stages`) and in
    the chunk's generation totals, and moves the rows a stage drops to the rejects under its name."""

    name: str

    def requests(self, rows: list[dict]) -> list[tuple[int, Request]]:
        """(index in `rows`, request) for the rows to ask about; the others pass as they are."""

    def parse(self, request: Request, text: str) -> Any:
        """What an answer says, parsed once; raises synth.generate.request.Unusable when it says
        nothing (it is retried once, resampled; a last unusable one is judged on the exception's value)."""

    def judge(self, rows: list[dict], answers: dict[int, Any], dropped: list[dict]) -> list[str | None]:
        """One verdict per row, as a filter's (None keeps it); `answers`: row index -> what `parse`
        made of the answer (None: no answer, every attempt failed); `dropped`: the chunk's rows the
        filters dropped (context: e.g. the other texts an answer may match better). May add columns to the rows."""

    @property
    def counts(self) -> dict:
        """What the stage's last `judge` saw, for stats.json (e.g. {"yes": 3, "no": 1})."""


@dataclass
class Filtered:
    """A chunk's answered rows after its filters, before its follow-up stages and staging."""

    kept: list[dict]
    rejected: list[dict]
    filters: dict                    # step name -> as ChunkResult.filters
    lid_unverified: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # follow-up stage name -> {"asked", its counts, "generation"}


def _filter_stats_dict(stats: FilterStats) -> dict:
    return {
        "in": dict(stats.rows_in), "out": dict(stats.rows_out), "dropped": {k: dict(v) for k, v in stats.reasons.items()},
        "derived": dict(stats.derived),  # thresholds the filter derived from the chunk (a percentile)
        "seconds": round(stats.seconds, 4),  # the filter's own time on the chunk
    }


# Rows generated ahead of the filter process at most (a few MB): enough that a filter slower than
# the server does not hold generation up over a typical job, little enough for any corpus size.
BUFFERED_ROWS = 4096


@lru_cache(maxsize=2)
def _local_backend(model: str | None) -> TransformersBackend:
    # One in-process model per process, shared by every chunk (and by Prefect's task threads).
    return TransformersBackend(model)


@lru_cache(maxsize=1)
def _vllm_backend(model: str, engine_args_json: str):
    # vLLM takes the whole GPU: one engine per process, like the transformers model.
    from synth.generate.vllm_backend import VLLMBackend

    return VLLMBackend(model, json.loads(engine_args_json))


class ChunkedJob:
    """Subclasses set `task`, `kept_schema`, `reject_schema` and implement the hooks below."""

    task: str
    kept_schema: pa.Schema
    reject_schema: pa.Schema
    # The column whose hash puts a kept row into train/validation/test: rows sharing it (e.g. the
    # queries of one passage) always land in the same split.
    split_key: str = "id"
    # False for a job whose records arrive with both sides (synth.filter_job): a pipeline without a
    # generate stage (no model, no generation step in the funnel, no cost); `rows_to_filter` gives
    # what its filters see.
    generates: bool = True

    def __init__(self, config):
        self.config = config
        self.read_stats = ReadStats()
        self._filter_lock = threading.Lock()  # the embedder and detectors are not shared across threads
        # A key held elsewhere than in `api_key_env` (e.g. a Prefect Secret block); it wins over the variable.
        self.api_key: str | None = None
        # Likewise a Hugging Face token for `push()`; it wins over `hub_token_env`.
        self.hub_token: str | None = None
        # What the run is doing (synth.progress), when someone follows it: `run(progress=...)`.
        self.progress = None

    # --- hooks -----------------------------------------------------------------------------------
    @property
    def prompt_versions(self) -> dict[str, str]:
        raise NotImplementedError

    def rows_to_filter(self, chunk: Chunk) -> list[dict]:
        """A job that generates nothing (`generates = False`): the rows its filters see."""
        raise NotImplementedError

    def requests_for(self, segment: Segment) -> list[Request]:
        raise NotImplementedError

    def work_of(self, segments: list[Segment]) -> int:
        """What progress counts for these records: the requests a generating job makes (what
        `on_done` reports as they are answered), the records of one that only filters."""
        return sum(len(self.requests_for(segment)) for segment in segments) if self.generates else len(segments)

    def parse(self, request: Request, text: str) -> Any:
        """What an answer holds for the task, parsed once (the outcome's `parsed`, given to
        `rows_from`); raises synth.generate.request.Unusable when it holds nothing the task needs
        (it is retried once, resampled). By default the text, unusable when blank."""
        return nonempty(0, text)

    def rows_from(self, segment: Segment, request: Request, outcome: Outcome) -> list[dict]:
        """Rows for one answered (or failed: `outcome.completion` None, `outcome.error` set)
        request; `outcome.parsed` is what `parse` made of the answer."""
        raise NotImplementedError

    def filter_chain(self, chunk: Chunk) -> FilterChain:
        """The filters of one chunk (some compare a row with the chunk's other records)."""
        raise NotImplementedError

    def followups(self, chunk: Chunk) -> list[FollowupStage]:
        """Second-request stages run on the rows the filters kept, in order (see FollowupStage)."""
        return []

    @property
    def asks_after_filtering(self) -> bool:
        """Whether `followups` may return a stage (False: filtering and staging are one step)."""
        return False

    def fingerprint_settings(self) -> dict:
        """Every setting a chunk's result depends on besides its records."""
        raise NotImplementedError

    def completion_estimate(self, segment: Segment, request: Request) -> int:
        """Completion tokens a request is expected to take (`--dry-run`; bounded by --max-tokens)."""
        from synth.plan import estimate_tokens

        return estimate_tokens(segment.text)

    def uncounted_requests(self) -> list[str]:
        """Requests `--dry-run` cannot count up front (sent after the filters), as notes."""
        return []

    def card_info(self, command: str | None = None) -> CardInfo:
        raise NotImplementedError

    def views(self) -> list[View]:
        """Configs published besides the full rows (e.g. the `pairs` training view)."""
        return []

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages whose detectors the card reports."""
        raise NotImplementedError

    # --- identity --------------------------------------------------------------------------------
    @property
    def uses_server(self) -> bool:
        return bool(self.config.base_url)

    @property
    def model_name(self) -> str:
        if self.uses_server:
            if not self.config.model:
                raise ValueError("--model is required with --base-url (the name the server serves)")
            return self.config.model
        return self.config.model or SMOLLM2_MODEL_NAME

    @cached_property
    def fingerprint(self) -> str:
        """Change a setting, and chunks are redone (answers still come from the generation cache)."""
        generation = {"model": self.model_name, "params": self.config.generation_params} if self.generates else {}
        settings = {"task": self.task, **generation, **self.fingerprint_settings()}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @cached_property
    def staged(self) -> ChunkStore:
        return ChunkStore(self.config.work_dir)

    # --- read ------------------------------------------------------------------------------------
    def segments(self) -> Iterator[Segment]:
        c = self.config
        return read_segments(
            c.corpus, text_field=c.text_field, fmt=c.input_format, stats=self.read_stats, limit=c.limit, segment=c.segment
        )

    def chunks(self) -> Iterator[Chunk]:
        for index, batch in enumerate(chunked(self.segments(), self.config.chunk_size)):
            digest = hashlib.sha256(self.fingerprint.encode())
            for segment in batch:
                digest.update(segment.id.encode())
            yield Chunk(index, f"{index:06d}-{digest.hexdigest()[:16]}", batch)

    def finished(self, chunk: Chunk) -> ChunkResult | None:
        """The staged result of a chunk done before (with every answer in hand), if any."""
        return self.staged.finished(chunk.key)

    # --- generate --------------------------------------------------------------------------------
    def register_secrets(self) -> None:
        """The job's API key and Hub token, wherever they come from, scrubbed from every text."""
        c = self.config
        redact.register(
            self.api_key, self.hub_token, os.environ.get(getattr(c, "api_key_env", "") or ""),
            os.environ.get(getattr(c, "hub_token_env", "") or ""),
        )

    def exclusive(self, run_id: str | None = None, command: str | None = None):
        """A context that checks the output folder (and a separate --cache-dir) and holds their
        locks: one run at a time per dataset. Raises synth.runlock.OutputError (RunLocked when
        another run holds them) with a message that says what to do."""
        c = self.config
        self.register_secrets()
        return locked_output(
            c.out, getattr(c, "cache_dir", None),
            files=["README.md", "stats.json"],
            folders=[DEFAULT_FOLDER, REJECTS, "plots", *(view.name for view in self.views())],
            run_id=run_id, command=redact.scrub(command) if command else None,
        )

    def open_backend(self) -> Backend:
        """Inside the event loop that will use it."""
        c = self.config
        self.register_secrets()
        if self.uses_server:
            api_key = self.api_key if self.api_key is not None else os.environ.get(c.api_key_env)
            return OpenAIBackend(
                c.base_url, self.model_name, api_key, timeout=c.request_timeout, max_connections=c.concurrency,
                max_answer_bytes=c.max_answer_bytes,
            )
        if c.backend == "vllm":
            try:
                return _vllm_backend(self.model_name, json.dumps(c.vllm_args, sort_keys=True))
            except FatalError as error:
                raise GenerationAborted(str(error)) from error
        if _local_backend.cache_info().currsize == 0:
            log.info("loading the in-process model %s (transformers, CPU; the first run converts the packaged GGUF: about a minute)", c.model or SMOLLM2_MODEL_NAME)
        return _local_backend(c.model)

    def planned_requests(self, chunk: Chunk) -> list[tuple[Segment, Request, str]]:
        """(segment, request, cache key) of every request a chunk makes."""
        params = self.config.generation_params
        return [
            (segment, request, cache_key(self.model_name, request.messages, params))
            for segment in chunk.segments for request in self.requests_for(segment)
        ]

    def pending_requests(self, cache: GenerationCache) -> Iterator[tuple[str, list[dict]]]:
        """(cache key, messages) of every request the job would still send: those of unfinished
        chunks whose answer is not in the cache (what `synth batch export` writes)."""
        for chunk in self.chunks():
            if self.finished(chunk) is not None:
                continue
            planned = self.planned_requests(chunk)
            cached = cache.get_many([key for _, _, key in planned])
            for _, request, key in planned:
                if key not in cached:
                    yield key, request.messages

    @asynccontextmanager
    async def generation(self) -> AsyncIterator[RequestRunner]:
        """The backend, cache and window of in-flight requests of one event loop, closed on exit."""
        c = self.config
        backend = self.open_backend()
        cache = GenerationCache(c.cache_path)
        try:
            yield RequestRunner(
                backend, cache, c.generation_params, concurrency=c.concurrency, policy=RetryPolicy(max_attempts=c.max_attempts)
            )
        finally:
            await backend.aclose()
            cache.close()

    async def generate(
        self, chunk: Chunk, runner: RequestRunner, on_done: Callable[[int], None] | None = None
    ) -> tuple[list[dict], list[dict], GenerationStats]:
        """(rows to filter, rows whose generation failed, stats)."""
        planned = self.planned_requests(chunk)
        stats = GenerationStats()
        if self.progress is not None:
            self.progress.stats_sources.append(stats)  # cache hits and retries, live
        outcomes = await runner.generate(
            [(key, request.messages) for _, request, key in planned],
            priority=chunk.index,
            parse=lambda index, text: self.parse(planned[index][1], text),
            stats=stats, on_done=on_done,
        )
        answered, failed = [], []
        for (segment, request, _), outcome in zip(planned, outcomes):
            for row in self.rows_from(segment, request, outcome):
                if outcome.error is None:
                    answered.append(row)
                else:
                    failed.append({**row, "reject_stage": GENERATE_STEP, "reject_reason": outcome.error})
        return answered, failed, stats

    # --- filter ----------------------------------------------------------------------------------
    @cached_property
    def language_identifier(self) -> LanguageIdentifier:
        return language_identifier(self.config)

    def lid_detectors_used(self) -> dict[str, str | None]:
        """lang -> the detector that checks it (None: no detector knows it); empty with LID off."""
        if not self.config.lid_detectors:
            return {}
        identifier = self.language_identifier
        return {lang: getattr(identifier.detector_for(lang), "name", None) for lang in self.languages}

    def filter_and_stage(self, chunk: Chunk, answered: list[dict], failed: list[dict], generation: GenerationStats) -> ChunkResult:
        return self.stage(chunk, self.filter_rows(chunk, answered, failed), failed, generation)

    def filter_rows(self, chunk: Chunk, answered: list[dict], failed: list[dict]) -> Filtered:
        """The chunk's filter chain over its answered rows (`failed`: the rows generation lost)."""
        lang = self.config.lang
        with self._filter_lock:
            chain = self.filter_chain(chunk)
            kept, rejected = chain.run(answered)
        filters = {
            GENERATE_STEP: {
                "in": {lang: len(answered) + len(failed)}, "out": {lang: len(answered)},
                "dropped": {lang: dict(Counter(row["reject_reason"].split(":")[0] for row in failed))} if failed else {},
            }
        } if self.generates else {}
        filters.update({name: _filter_stats_dict(stats) for name, stats in chain.stats.items()})
        unverified = Counter()
        for block in chain.filters:
            if isinstance(block, LanguageIdFilter):
                unverified.update(block.unverified_counts)
        return Filtered(kept, rejected, filters, dict(unverified))

    async def ask(self, chunk: Chunk, filtered: Filtered, runner: RequestRunner, generation: GenerationStats) -> None:
        """The chunk's follow-up stages (`followups`) on its kept rows: their requests go through
        `runner` (cache first), their verdicts move rows to the rejects; their requests and tokens
        are added to `generation` (a request no attempt answered leaves the chunk to redo)."""
        lang, params = self.config.lang, self.config.generation_params
        for stage in self.followups(chunk):
            asked = stage.requests(filtered.kept)
            stats = GenerationStats()
            if self.progress is not None:
                self.progress.stats_sources.append(stats)
            outcomes = await runner.generate(
                [(cache_key(self.model_name, request.messages, params), request.messages) for _, request in asked],
                priority=chunk.index, parse=lambda index, text: stage.parse(asked[index][1], text), stats=stats,  # noqa: B023
            ) if asked else []
            answers = {index: outcome.parsed if outcome.completion else None for (index, _), outcome in zip(asked, outcomes)}
            verdicts = stage.judge(filtered.kept, answers, filtered.rejected)
            kept = [row for row, verdict in zip(filtered.kept, verdicts) if verdict is None]
            dropped = [
                {**row, "reject_stage": stage.name, "reject_reason": verdict}
                for row, verdict in zip(filtered.kept, verdicts) if verdict is not None
            ]
            filtered.filters[stage.name] = {
                "in": {lang: len(filtered.kept)}, "out": {lang: len(kept)},
                "dropped": {lang: dict(Counter(reason_kind(row["reject_reason"]) for row in dropped))} if dropped else {},
                "derived": {},
            }
            filtered.kept, filtered.rejected = kept, filtered.rejected + dropped
            filtered.stages[stage.name] = {"asked": len(asked), **stage.counts, "generation": stats.as_dict()}
            generation.merge(stats)

    def stage(self, chunk: Chunk, filtered: Filtered, failed: list[dict], generation: GenerationStats) -> ChunkResult:
        """Writes the chunk's kept rows and rejects, then its record (the chunk is done)."""
        # Generated columns of rejects are cut to an excerpt (a job that generates nothing keeps its input whole).
        rejects = [excerpted(row) for row in failed + filtered.rejected] if self.generates else failed + filtered.rejected
        return self.staged.write(
            chunk.index, chunk.key, filtered.kept, rejects, self.kept_schema, self.reject_schema,
            generation=generation.as_dict(), filters=filtered.filters, generation_failures=generation.failed,
            lid_unverified=dict(filtered.lid_unverified), stages=filtered.stages,
        )

    def warm_filters(self) -> None:
        """Loads the filters' models (detectors, embedder) before the first chunk needs them."""
        chain = self.filter_chain(Chunk(-1, "warm-up", []))
        for block in chain.filters:
            embedder = getattr(block, "embedder", None)
            if embedder is not None and hasattr(embedder, "encode"):
                embedder.encode(["warm-up"])

    # --- drive -----------------------------------------------------------------------------------
    def run_shard(
        self,
        shard: int = 0,
        shards: int = 1,
        on_done: Callable[[int], None] | None = None,
        generation_slots: Callable[[], AbstractContextManager] = nullcontext,
    ) -> list[ChunkResult]:
        """The engine (`run_async`) over one shard of the corpus: the chunks whose index is
        `shard` modulo `shards` (synchronously; what a Prefect task runs, on this machine or a Dask
        worker). Every shard reads the whole corpus, so that chunks keep their index and key
        whatever the number of shards (a dataset staged with 1 shard resumes with 4), and
        `read_stats` holds the corpus's figures afterwards. `generation_slots()` is held while the
        shard runs (e.g. a Prefect global concurrency limit on the endpoint)."""
        with generation_slots():
            return asyncio.run(self.run_async(on_done, shard=(shard, shards)))

    @property
    def chunks_in_memory(self) -> int:
        """Chunks read but not yet staged: enough waiting requests to keep every slot of
        `concurrency` busy while the oldest chunk finishes, or BUFFERED_ROWS ahead of the filters."""
        c = self.config
        return max(2 + math.ceil(2 * c.concurrency / c.chunk_size), math.ceil(BUFFERED_ROWS / c.chunk_size))

    async def run_async(self, on_done: Callable[[int], None] | None = None, shard: tuple[int, int] = (0, 1)) -> list[ChunkResult]:
        """Every chunk (of `shard`: (index, count), see `run_shard`). Several chunks generate at
        once through one window of `concurrency` requests (oldest chunk first), so the server never
        drains at a chunk boundary; a generated chunk is filtered and staged in the filter process
        while the next ones generate. At most `chunks_in_memory` chunks are held at once, so a
        corpus of any size streams through."""
        loop = asyncio.get_running_loop()
        results: list[ChunkResult] = []
        room = asyncio.Semaphore(self.chunks_in_memory)
        filters = filter_executor()
        # The detectors and the embedder load while the first chunks generate, not after.
        loop.run_in_executor(filters, warm_filters_in_worker, type(self), self.config)

        async def process(chunk: Chunk, runner: RequestRunner) -> None:
            try:
                if self.generates:
                    answered, failed, stats = await self.generate(chunk, runner, on_done)
                else:  # a pipeline without a generate stage: the chunk's records are the rows to filter
                    answered, failed, stats = self.rows_to_filter(chunk), [], GenerationStats()
                    if on_done:
                        on_done(len(answered))
                if not self.asks_after_filtering:
                    results.append(await loop.run_in_executor(
                        filters, in_worker, type(self), self.config, "filter_and_stage", chunk, answered, failed, stats
                    ))
                    return
                # Filtered in the filter process, asked here (the runner is this loop's), staged there.
                filtered = await loop.run_in_executor(filters, in_worker, type(self), self.config, "filter_rows", chunk, answered, failed)
                await self.ask(chunk, filtered, runner, stats)
                results.append(await loop.run_in_executor(
                    filters, in_worker, type(self), self.config, "stage", chunk, filtered, failed, stats
                ))
            except BrokenProcessPool:
                forget_broken_pool()  # the worker died (killed, out of memory): the next job starts another
                raise
            finally:
                room.release()
                if self.progress is not None and results and results[-1].index == chunk.index:
                    self.progress.chunk_staged(chunk.index, results[-1].kept, results[-1].rejected)

        bad_input: CorpusError | None = None
        try:
            async with (self.generation() if self.generates else nullcontext()) as runner, asyncio.TaskGroup() as group:
                try:
                    for chunk in self.chunks():
                        if chunk.index % shard[1] != shard[0]:
                            continue  # another shard's
                        done = self.finished(chunk)
                        if done is not None:
                            results.append(done)
                            if on_done:
                                on_done(self.work_of(chunk.segments))
                            if self.progress is not None:
                                self.progress.chunk_staged(chunk.index, done.kept, done.rejected, reused=True)
                            continue
                        await room.acquire()
                        group.create_task(process(chunk, runner))
                except CorpusError as error:
                    bad_input = error  # raised once the chunks read before it are generated and staged
        except ExceptionGroup as errors:
            # The first cause is the one to report: chunks that fail together fail for one reason.
            raise errors.exceptions[0] from None
        if bad_input is not None:
            raise bad_input
        return sorted(results, key=lambda result: result.index)

    # --- publish ---------------------------------------------------------------------------------
    def stats(self, results: list[ChunkResult], started: float) -> dict:
        return dataset_stats(
            results, config=self.config, read=self.read_stats.as_dict(), lid_detectors=self.lid_detectors_used(),
            generates=self.generates, started=started,
        )

    def publish(
        self, results: list[ChunkResult], started: float, command: str | None = None, run_id: str | None = None
    ) -> tuple[PublishResult, dict]:
        """Writes the dataset folder; returns what was written and its stats: stats.json's plus "run".

        The run's own record (times, what this run sent) goes to .synth/runs/RUN_ID.json, not into
        the published folder: the same data publishes the same bytes, so pushing it again is a no-op.
        """
        c = self.config
        command = redact.scrub(command) if command else command  # a URL in it may carry user:password@
        stats = self.stats(results, started)
        run = {"id": run_id or new_run_id(), **stats.pop("run")}
        card = self.card_info(command)
        card.repo_id = card.repo_id or c.push_to_hub
        self.complete_card(card)
        published = publish_dataset(
            c.out,
            [Path(r.kept_path) for r in results],
            [Path(r.rejects_path) for r in results],
            stats,
            card,
            kept_schema=self.kept_schema,
            reject_schema=self.reject_schema,
            views=self.views(),
            splits=c.splits,
            split_key=self.split_key,
            rows_per_shard=c.rows_per_shard,
        )
        atomic_write_json(c.work_dir / "runs" / f"{run['id']}.json", run)
        self.staged.remove_stale({r.key for r in results})
        return published, {**json.loads((c.out / "stats.json").read_text(encoding="utf-8")), "run": run}

    def complete_card(self, card: CardInfo) -> None:
        """What every task's card says the same way, and nothing of this machine: the licence (given,
        else the source's), file names instead of paths, "an OpenAI-compatible endpoint" instead of
        its URL, the prompt templates' text, the effective job file instead of the command line."""
        from synth import synth_version
        from synth.generate.prompts import prompts_dir
        from synth.jobfile import card_job, dump_yaml
        from synth.publish.card import source_license

        c = self.config
        source = source_license(getattr(c, "corpus", None) or getattr(c, "pairs", None) or [])
        card.source_license, card.source_name = source.license, source.name
        card.license = c.license or source.license
        card.source_files = [Path(f).name for f in card.source_files]
        card.command = None  # paths and URLs: the job file below says the same without them
        if self.generates:
            card.generator = (
                "an OpenAI-compatible endpoint" if self.uses_server
                else "vLLM in-process" if c.backend == "vllm" else "transformers in-process"
            )
            local = Path(card.model).expanduser()
            if card.model and (local.is_absolute() or local.exists()):  # a local model folder or file: its name
                card.summary = card.summary.replace(card.model, local.name)
                card.model = local.name
            for name in self.prompt_versions:
                file = Path(c.prompt_file) if (c.prompt_file and name == self.task) else prompts_dir() / f"{name}.toml"
                if file.is_file():
                    card.prompt_texts[name] = file.read_text(encoding="utf-8")
        if card.embedder and Path(card.embedder).expanduser().is_absolute():
            card.embedder = Path(card.embedder).name
        card.job_file = dump_yaml(card_job(c))
        card.synth_version = synth_version()

    def push(self, published: PublishResult, run_id: str, token: str | None = None) -> HubPush:
        """Uploads the published folder to `config.push_to_hub` (one commit, none if the Hub already
        has these files). The token: `token`, else `self.hub_token`, else the `hub_token_env` variable."""
        c = self.config
        token = token or self.hub_token or os.environ.get(c.hub_token_env)
        redact.register(token)
        message = f"synth {self.task} run {run_id}: {published.kept_rows} kept, {published.rejected_rows} rejected"
        return push_folder(c.out, c.push_to_hub, token=token, private=c.private, message=message)

    def run(
        self, on_done: Callable[[int], None] | None = None, command: str | None = None, run_id: str | None = None,
        after_publish: Callable[[PublishResult], None] | None = None,
    ) -> tuple[PublishResult, dict]:
        """The whole job in this process, then `after_publish` (an evaluation: its files go with
        the push), then the push if `config.push_to_hub` names a repo."""
        started = time.time()
        run_id = run_id or new_run_id()
        progress = self.progress
        stage = progress.set_stage if progress is not None else (lambda name: None)
        # Held until the push is done: a second run into the same folder stops at once.
        with self.exclusive(run_id, command):
            counting, stop_counting = None, threading.Event()
            if progress is not None:
                # The total of the progress display, counted in a pass over the corpus beside the
                # run (not before it: the first requests go out at once).
                stage("read")
                work = "generate" if self.generates else "filter"

                def count() -> None:
                    reader = type(self)(self.config)
                    records = total = 0
                    try:
                        for segment in reader.segments():
                            if stop_counting.is_set():
                                return  # the run stopped (an error, Ctrl-C)
                            records += 1
                            total += self.work_of([segment])
                    except CorpusError:
                        # Raised by the run itself, once the chunks read before it are staged: the
                        # total is theirs, and there is none to show when the first line is bad.
                        if not records:
                            return
                    progress.plan(total, math.ceil(records / self.config.chunk_size))
                    if progress.stage == "read":
                        stage(work)
                    filtering_once_answered()

                def filtering_once_answered() -> None:
                    if progress.stage == "generate" and progress.total is not None and progress.done >= progress.total:
                        stage("filter")  # every answer in: the filters finish the last chunks

                counting = threading.Thread(target=count, name="synth-count", daemon=True)
                counting.start()

                def on_done(count: int, forward=on_done) -> None:
                    progress.advance(count)
                    if forward is not None:
                        forward(count)
                    filtering_once_answered()

            try:
                results = asyncio.run(self.run_async(on_done))
            except BaseException:
                stop_counting.set()
                raise
            finally:
                if counting is not None:
                    counting.join()  # its last line before the run's error or the publish
            stage("publish")
            published, stats = self.publish(results, started, command, run_id)
            if after_publish is not None:
                stage("evaluate")
                after_publish(published)
            if self.config.push_to_hub:
                stage("push")
                published.hub = self.push(published, run_id)
            stage("done")
        return published, stats


def new_run_id() -> str:
    """When the run started (UTC) and a random suffix: sorts by time, unique across machines."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
