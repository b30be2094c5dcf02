"""The machinery every generation job shares: read -> generate -> filter -> publish, by chunk.

A task (back-translation, queries, ...) subclasses `ChunkedJob` and says what is particular to it:
the requests a segment makes, the rows an answer gives, its filter chain, its schemas and its card.
The rest is here: `chunks()` streams the corpus in chunks with stable keys; `process_chunk()`
generates and filters one chunk and stages its result under OUT/.synth/chunks (atomically; a
finished chunk is taken as it is on rerun); `publish()` turns the staged chunks into the dataset
folder; `run_async()` is the whole job in one process, generation of the next chunk overlapping
the filtering of the last. The CLI and the Prefect flows drive these same methods.
"""

import asyncio
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path

import pyarrow as pa

from synth.filters.base import FilterChain, FilterStats
from synth.filters.langid import LanguageIdentifier, LanguageIdFilter
from synth.generate.backends import SMOLLM2_MODEL_NAME, Backend, Completion, OpenAIBackend, TransformersBackend
from synth.generate.cache import GenerationCache, cache_key
from synth.generate.runner import GenerationStats, RetryPolicy, generate_all
from synth.publish import CardInfo, PublishResult, atomic_write_json, atomic_write_parquet, publish_dataset
from synth.read import ReadStats, Segment, chunked, read_segments
from synth.schema import table_from_rows

GENERATE_STEP = "generate"


@dataclass
class Chunk:
    index: int
    key: str
    segments: list[Segment]


@dataclass
class Request:
    """One LLM request a segment makes; `meta` travels with it to `rows_from`."""

    messages: list[dict]
    meta: dict = field(default_factory=dict)


@dataclass
class ChunkResult:
    index: int
    key: str
    kept_path: str
    rejects_path: str
    kept: int
    rejected: int
    generation: dict
    filters: dict                    # step name -> {"in": {lang: n}, "out": {...}, "dropped": {lang: {reason: n}}}
    generation_failures: int         # requests with no answer: the chunk is redone on rerun
    lid_unverified: dict = field(default_factory=dict)
    reused: bool = False             # staged by an earlier run and taken as it was

    @classmethod
    def load(cls, path: Path) -> "ChunkResult":
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def _filter_stats_dict(stats: FilterStats) -> dict:
    return {"in": dict(stats.rows_in), "out": dict(stats.rows_out), "dropped": {k: dict(v) for k, v in stats.reasons.items()}}


@lru_cache(maxsize=2)
def _local_backend(model: str | None) -> TransformersBackend:
    # One in-process model per process, shared by every chunk (and by Prefect's task threads).
    return TransformersBackend(model)


class ChunkedJob:
    """Subclasses set `task`, `kept_schema`, `reject_schema` and implement the hooks below."""

    task: str
    kept_schema: pa.Schema
    reject_schema: pa.Schema

    def __init__(self, config):
        self.config = config
        self.read_stats = ReadStats()
        self._filter_lock = threading.Lock()  # the embedder and detectors are not shared across threads

    # --- hooks -----------------------------------------------------------------------------------
    @property
    def prompt_versions(self) -> dict[str, str]:
        raise NotImplementedError

    def requests_for(self, segment: Segment) -> list[Request]:
        raise NotImplementedError

    def is_usable(self, request: Request, text: str) -> bool:
        """Whether an answer holds what the task needs (else it is retried)."""
        return bool(text.strip())

    def rows_from(self, segment: Segment, request: Request, completion: Completion | None, error: str | None) -> list[dict]:
        """Rows for one answered (or failed: completion None, error set) request."""
        raise NotImplementedError

    def filter_chain(self) -> FilterChain:
        raise NotImplementedError

    def fingerprint_settings(self) -> dict:
        """Every setting a chunk's result depends on besides its records."""
        raise NotImplementedError

    def card_info(self, command: str | None = None) -> CardInfo:
        raise NotImplementedError

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
        settings = {"task": self.task, "model": self.model_name, "params": self.config.generation_params, **self.fingerprint_settings()}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def chunk_dir(self) -> Path:
        return self.config.work_dir / "chunks"

    def _result_path(self, chunk_key: str) -> Path:
        return self.chunk_dir / f"{chunk_key}.json"

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
        path = self._result_path(chunk.key)
        if not path.exists():
            return None
        result = ChunkResult.load(path)
        result.reused = True
        return result if result.generation_failures == 0 else None

    # --- generate --------------------------------------------------------------------------------
    def open_backend(self) -> Backend:
        """Inside the event loop that will use it."""
        c = self.config
        if self.uses_server:
            return OpenAIBackend(c.base_url, self.model_name, os.environ.get(c.api_key_env), timeout=c.request_timeout)
        return _local_backend(c.model)

    async def generate(
        self, chunk: Chunk, backend: Backend, cache: GenerationCache, on_done: Callable[[int], None] | None = None
    ) -> tuple[list[dict], list[dict], GenerationStats]:
        """(rows to filter, rows whose generation failed, stats)."""
        c = self.config
        params = c.generation_params
        planned = [(segment, request) for segment in chunk.segments for request in self.requests_for(segment)]
        keyed = [(cache_key(backend.model, request.messages, params), request.messages) for _, request in planned]
        stats = GenerationStats()
        outcomes = await generate_all(
            keyed, backend, cache, params,
            concurrency=c.concurrency,
            policy=RetryPolicy(max_attempts=c.max_attempts),
            is_usable=lambda index, text: self.is_usable(planned[index][1], text),
            stats=stats, on_done=on_done,
        )
        answered, failed = [], []
        for (segment, request), outcome in zip(planned, outcomes):
            for row in self.rows_from(segment, request, outcome.completion, outcome.error):
                if outcome.error is None:
                    answered.append(row)
                else:
                    failed.append({**row, "reject_stage": GENERATE_STEP, "reject_reason": outcome.error})
        return answered, failed, stats

    # --- filter ----------------------------------------------------------------------------------
    @cached_property
    def language_identifier(self) -> LanguageIdentifier:
        return LanguageIdentifier(self.config.lid_detectors, min_score=self.config.lid_min_score)

    def lid_detectors_used(self) -> dict[str, str | None]:
        identifier = self.language_identifier
        return {lang: getattr(identifier.detector_for(lang), "name", None) for lang in self.languages}

    def filter_and_stage(self, chunk: Chunk, answered: list[dict], failed: list[dict], generation: GenerationStats) -> ChunkResult:
        lang = self.config.lang
        with self._filter_lock:
            chain = self.filter_chain()
            kept, rejected = chain.run(answered)
        filters = {
            GENERATE_STEP: {
                "in": {lang: len(answered) + len(failed)}, "out": {lang: len(answered)},
                "dropped": {lang: dict(Counter(row["reject_reason"].split(":")[0] for row in failed))} if failed else {},
            }
        }
        filters.update({name: _filter_stats_dict(stats) for name, stats in chain.stats.items()})
        unverified = Counter()
        for block in chain.filters:
            if isinstance(block, LanguageIdFilter):
                unverified.update(block.unverified_counts)
        kept_path = self.chunk_dir / f"{chunk.key}.kept.parquet"
        rejects_path = self.chunk_dir / f"{chunk.key}.rejects.parquet"
        atomic_write_parquet(table_from_rows(kept, self.kept_schema), kept_path)
        atomic_write_parquet(table_from_rows(failed + rejected, self.reject_schema), rejects_path)
        result = ChunkResult(
            index=chunk.index, key=chunk.key, kept_path=str(kept_path), rejects_path=str(rejects_path),
            kept=len(kept), rejected=len(failed) + len(rejected), generation=generation.as_dict(),
            filters=filters, generation_failures=generation.failed, lid_unverified=dict(unverified),
        )
        # Written last: its presence means the chunk's files are complete.
        atomic_write_json(self._result_path(chunk.key), asdict(result))
        return result

    # --- drive -----------------------------------------------------------------------------------
    def process_chunk(self, chunk: Chunk, on_done: Callable[[int], None] | None = None) -> ChunkResult:
        """Generate, filter and stage one chunk (synchronously; used by the Prefect tasks)."""
        done = self.finished(chunk)
        if done is not None:
            return done

        async def generate():
            backend = self.open_backend()
            cache = GenerationCache(self.config.cache_path)
            try:
                return await self.generate(chunk, backend, cache, on_done)
            finally:
                await backend.aclose()
                cache.close()

        answered, failed, stats = asyncio.run(generate())
        return self.filter_and_stage(chunk, answered, failed, stats)

    async def run_async(self, on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        """Every chunk, generation of one overlapping the filtering of the previous on a thread."""
        backend = self.open_backend()
        cache = GenerationCache(self.config.cache_path)
        loop = asyncio.get_running_loop()
        results: list[ChunkResult] = []
        filtering: asyncio.Future | None = None
        try:
            for chunk in self.chunks():
                done = self.finished(chunk)
                if done is not None:
                    results.append(done)
                    if on_done:
                        on_done(len(chunk.segments))
                    continue
                answered, failed, stats = await self.generate(chunk, backend, cache, on_done)
                if filtering is not None:
                    results.append(await filtering)
                filtering = loop.run_in_executor(None, self.filter_and_stage, chunk, answered, failed, stats)
            if filtering is not None:
                results.append(await filtering)
        finally:
            await backend.aclose()
            cache.close()
        return sorted(results, key=lambda result: result.index)

    # --- publish ---------------------------------------------------------------------------------
    def stats(self, results: list[ChunkResult], started: float) -> dict:
        lang = self.config.lang
        read = self.read_stats.as_dict()
        generation, this_run = GenerationStats(), GenerationStats()
        for result in results:
            generation.merge(GenerationStats.from_dict(result.generation))
            if not result.reused:
                this_run.merge(GenerationStats.from_dict(result.generation))
        steps: dict[str, FilterStats] = {}
        for result in results:
            for name, data in result.filters.items():
                part = FilterStats(Counter(data["in"]), Counter(data["out"]))
                for language, reasons in data["dropped"].items():
                    part.reasons[language].update(reasons)
                steps.setdefault(name, FilterStats()).merge(part)
        read_dropped = {
            kind: read[key] for kind, key in
            (("empty", "empty_dropped"), ("duplicate", "duplicates_dropped"), ("too_long", "too_long_dropped"))
            if read.get(key)
        }
        funnel = [{"step": "read", "in": read["lines_read"], "out": read["segments"], "dropped": read_dropped}]
        for name, step in steps.items():
            funnel.append({
                "step": name, "in": step.rows_in.get(lang, 0), "out": step.rows_out.get(lang, 0),
                "dropped": dict(step.reasons.get(lang, {})),
            })
        unverified = Counter()
        for result in results:
            unverified.update(result.lid_unverified)
        finished = time.time()
        return {
            "read": read,
            "generation": generation.as_dict(),
            "funnel": {lang: funnel},
            "lid": {"unverified": dict(unverified), "detectors": self.lid_detectors_used()},
            "run": {
                "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
                "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
                "seconds": round(finished - started, 2),
                "chunks": len(results),
                "chunks_reused": sum(result.reused for result in results),
                # What this run itself sent; "generation" above covers every chunk of the dataset.
                "requests": this_run.requests,
                "cache_hits": this_run.cache_hits,
            },
        }

    def publish(self, results: list[ChunkResult], started: float, command: str | None = None) -> tuple[PublishResult, dict]:
        """Writes the dataset folder; returns what was written and its stats (as in stats.json)."""
        published = publish_dataset(
            self.config.out,
            [Path(r.kept_path) for r in results],
            [Path(r.rejects_path) for r in results],
            self.stats(results, started),
            self.card_info(command),
            rows_per_shard=self.config.rows_per_shard,
        )
        self._remove_stale_chunks({r.key for r in results})
        return published, json.loads((self.config.out / "stats.json").read_text(encoding="utf-8"))

    def _remove_stale_chunks(self, keep: set[str]) -> None:
        """Staged chunks of earlier settings or corpora are no longer part of the dataset."""
        for path in self.chunk_dir.glob("*"):
            if path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)

    def run(self, on_done: Callable[[int], None] | None = None, command: str | None = None) -> tuple[PublishResult, dict]:
        """The whole job in this process."""
        started = time.time()
        results = asyncio.run(self.run_async(on_done))
        return self.publish(results, started, command)
