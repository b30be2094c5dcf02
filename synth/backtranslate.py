"""The back-translation job: read -> generate -> filter -> publish, chunk by chunk.

`BacktranslateJob` is what both the `synth backtranslate` command and the Prefect flow drive:
`chunks()` streams the corpus in chunks with stable keys, `process_chunk()` generates and filters
one chunk and stages its result under OUT/.synth/chunks (atomically; a finished chunk is skipped
on rerun), `publish()` turns the staged chunks into the dataset folder. `run()` is the whole job
in one process, with generation of the next chunk overlapping the filtering of the last.
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

from synth.config import BacktranslateConfig
from synth.filters.base import FilterChain, FilterStats
from synth.filters.embedding import EmbeddingConsistencyFilter, load_embedder
from synth.filters.heuristics import CopyFilter, EmptyAnswerFilter, LengthRatioFilter, RefusalFilter, RepetitionFilter
from synth.filters.langid import LanguageIdentifier, LanguageIdFilter
from synth.generate.backends import SMOLLM2_MODEL_NAME, OpenAIBackend, TransformersBackend
from synth.generate.cache import GenerationCache, cache_key
from synth.generate.runner import GenerationStats, RetryPolicy, generate_all
from synth.generate.tasks.backtranslate import BacktranslationPrompt, parse_translation
from synth.publish import CardInfo, PublishResult, atomic_write_json, atomic_write_parquet, publish_dataset
from synth.read import ReadStats, Segment, chunked, read_segments
from synth.schema import BACKTRANSLATION_SCHEMA, REJECT_SCHEMA, table_from_rows

GENERATE_STEP = "generate"


@dataclass
class Chunk:
    index: int
    key: str
    segments: list[Segment]


@dataclass
class ChunkResult:
    index: int
    key: str
    kept_path: str
    rejects_path: str
    kept: int
    rejected: int
    generation: dict
    filters: dict                    # filter name -> {"in": {lang: n}, "out": {...}, "dropped": {lang: {reason: n}}}
    generation_failures: int         # rows with no answer: the chunk is redone on rerun
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


class BacktranslateJob:
    def __init__(self, config: BacktranslateConfig):
        self.config = config
        self.prompt = BacktranslationPrompt.load(config.prompt_file)
        self.read_stats = ReadStats()
        self._filter_lock = threading.Lock()  # the embedder and detectors are not shared across threads

    # --- identity ------------------------------------------------------------------------------
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
        """What a chunk's result depends on besides its records: change any, and chunks are redone
        (answers still come from the generation cache)."""
        c = self.config
        settings = {
            "model": self.model_name, "prompt": self.prompt.template.__dict__, "params": c.generation_params,
            "lang": c.lang, "pivot": c.pivot, "embedder": c.embedder, "min_cosine": c.min_cosine,
            "min_margin": c.min_margin, "max_rank": c.max_rank, "k": c.margin_k, "ratio": c.max_length_ratio,
            "copy": c.max_copy_similarity, "lid": c.lid_detectors, "lid_min": c.lid_min_score,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def chunk_dir(self) -> Path:
        return self.config.work_dir / "chunks"

    def _result_path(self, chunk_key: str) -> Path:
        return self.chunk_dir / f"{chunk_key}.json"

    # --- read ----------------------------------------------------------------------------------
    def chunks(self) -> Iterator[Chunk]:
        c = self.config
        segments = read_segments(
            c.corpus, text_field=c.text_field, fmt=c.input_format, stats=self.read_stats, limit=c.limit, segment=c.segment
        )
        for index, batch in enumerate(chunked(segments, c.chunk_size)):
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

    # --- generate ------------------------------------------------------------------------------
    def open_backend(self):
        """Inside the event loop that will use it."""
        c = self.config
        if self.uses_server:
            return OpenAIBackend(c.base_url, self.model_name, os.environ.get(c.api_key_env), timeout=c.request_timeout)
        return _local_backend(c.model)

    async def generate(
        self, chunk: Chunk, backend, cache: GenerationCache, on_done: Callable[[int], None] | None = None
    ) -> tuple[list[dict], GenerationStats]:
        c = self.config
        params = c.generation_params
        requests = []
        for segment in chunk.segments:
            messages = self.prompt.messages(segment.text, c.lang, c.pivot)
            requests.append((cache_key(backend.model, messages, params), messages))
        stats = GenerationStats()
        outcomes = await generate_all(
            requests, backend, cache, params,
            concurrency=c.concurrency,
            policy=RetryPolicy(max_attempts=c.max_attempts),
            is_usable=lambda text: bool(parse_translation(text, c.lang, c.pivot)),
            stats=stats, on_done=on_done,
        )
        rows = []
        params_json = json.dumps(params, sort_keys=True)
        for segment, outcome in zip(chunk.segments, outcomes):
            completion = outcome.completion
            rows.append({
                "id": segment.id, "text": segment.text, "lang": c.lang, "pivot_lang": c.pivot,
                "synthetic_side": "translation", "source": segment.source, "line": segment.line,
                "model": backend.model, "prompt_version": self.prompt.version, "generation_params": params_json,
                "translation": parse_translation(completion.text, c.lang, c.pivot) if completion else None,
                "raw_answer": completion.text if completion else None,
                "prompt_tokens": completion.prompt_tokens if completion else None,
                "completion_tokens": completion.completion_tokens if completion else None,
                "generation_error": outcome.error,
            })
        return rows, stats

    # --- filter --------------------------------------------------------------------------------
    @cached_property
    def language_identifier(self) -> LanguageIdentifier:
        return LanguageIdentifier(self.config.lid_detectors, min_score=self.config.lid_min_score)

    def filter_chain(self) -> FilterChain:
        c = self.config
        return FilterChain([
            EmptyAnswerFilter(),
            RefusalFilter(),
            CopyFilter(c.max_copy_similarity),
            LengthRatioFilter(c.max_length_ratio),
            RepetitionFilter(),
            LanguageIdFilter(self.language_identifier),
            EmbeddingConsistencyFilter(load_embedder(c.embedder), c.min_cosine, c.min_margin, c.max_rank, c.margin_k),
        ])

    def filter_and_stage(self, chunk: Chunk, rows: list[dict], generation: GenerationStats) -> ChunkResult:
        lang = self.config.lang
        answered = [row for row in rows if row["generation_error"] is None]
        failed = [
            {**row, "reject_stage": GENERATE_STEP, "reject_reason": row["generation_error"]}
            for row in rows if row["generation_error"] is not None
        ]
        with self._filter_lock:
            chain = self.filter_chain()
            kept, rejected = chain.run(answered)
        lid_filter = next(f for f in chain.filters if isinstance(f, LanguageIdFilter))
        filters = {
            GENERATE_STEP: {
                "in": {lang: len(rows)}, "out": {lang: len(answered)},
                "dropped": {lang: dict(Counter(row["generation_error"].split(":")[0] for row in failed))} if failed else {},
            }
        }
        filters.update({name: _filter_stats_dict(stats) for name, stats in chain.stats.items()})
        kept_path = self.chunk_dir / f"{chunk.key}.kept.parquet"
        rejects_path = self.chunk_dir / f"{chunk.key}.rejects.parquet"
        atomic_write_parquet(table_from_rows(kept, BACKTRANSLATION_SCHEMA), kept_path)
        atomic_write_parquet(table_from_rows(failed + rejected, REJECT_SCHEMA), rejects_path)
        result = ChunkResult(
            index=chunk.index, key=chunk.key, kept_path=str(kept_path), rejects_path=str(rejects_path),
            kept=len(kept), rejected=len(failed) + len(rejected), generation=generation.as_dict(),
            filters=filters, generation_failures=len(failed), lid_unverified=dict(lid_filter.unverified_counts),
        )
        # Written last: its presence means the chunk's files are complete.
        atomic_write_json(self._result_path(chunk.key), asdict(result))
        return result

    def process_chunk(self, chunk: Chunk, on_done: Callable[[int], None] | None = None) -> ChunkResult:
        """Generate, filter and stage one chunk (synchronously; used by the Prefect tasks)."""
        done = self.finished(chunk)
        if done is not None:
            return done

        async def generate() -> tuple[list[dict], GenerationStats]:
            backend = self.open_backend()
            cache = GenerationCache(self.config.cache_path)
            try:
                return await self.generate(chunk, backend, cache, on_done)
            finally:
                await backend.aclose()
                cache.close()

        rows, stats = asyncio.run(generate())
        return self.filter_and_stage(chunk, rows, stats)

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
                rows, stats = await self.generate(chunk, backend, cache, on_done)
                if filtering is not None:
                    results.append(await filtering)
                filtering = loop.run_in_executor(None, self.filter_and_stage, chunk, rows, stats)
            if filtering is not None:
                results.append(await filtering)
        finally:
            await backend.aclose()
            cache.close()
        return sorted(results, key=lambda result: result.index)

    # --- publish -------------------------------------------------------------------------------
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
            "lid": {
                "unverified": {"text": unverified.get("text", 0), "translation": unverified.get("translation", 0)},
                "detectors": self.lid_detectors_used(),
            },
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

    def lid_detectors_used(self) -> dict[str, str | None]:
        identifier = self.language_identifier
        return {lang: getattr(identifier.detector_for(lang), "name", None) for lang in (self.config.lang, self.config.pivot)}

    def card_info(self, command: str | None = None) -> CardInfo:
        c = self.config
        embedder = load_embedder(c.embedder)
        return CardInfo(
            lang=c.lang, pivot_lang=c.pivot, model=self.model_name, generation_params=c.generation_params,
            prompt_versions={"backtranslate": self.prompt.version}, embedder=embedder.name,
            lid_detectors=self.lid_detectors_used(),
            thresholds={
                "min_cosine": c.min_cosine, "min_margin": c.min_margin, "margin_k": c.margin_k, "max_rank": c.max_rank,
                "max_length_ratio": c.max_length_ratio, "max_copy_similarity": c.max_copy_similarity,
                "lid_min_score": c.lid_min_score,
            },
            license=c.license, command=command, source_files=[str(p) for p in c.corpus],
        )

    def publish(self, results: list[ChunkResult], started: float, command: str | None = None) -> tuple[PublishResult, dict]:
        """Writes the dataset folder; returns what was written and its stats."""
        stats = self.stats(results, started)
        published = publish_dataset(
            self.config.out,
            [Path(r.kept_path) for r in results],
            [Path(r.rejects_path) for r in results],
            stats,
            self.card_info(command),
            rows_per_shard=self.config.rows_per_shard,
        )
        self._remove_stale_chunks({r.key for r in results})
        written = json.loads((self.config.out / "stats.json").read_text(encoding="utf-8"))  # with the row counts
        return published, written

    def _remove_stale_chunks(self, keep: set[str]) -> None:
        """Staged chunks of earlier settings or corpora are no longer part of the dataset."""
        for path in self.chunk_dir.glob("*"):
            if path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)


def run_backtranslate(
    config: BacktranslateConfig, on_done: Callable[[int], None] | None = None, command: str | None = None
) -> tuple[PublishResult, dict]:
    """The whole job in this process. Returns the publish result and the stats written."""
    started = time.time()
    job = BacktranslateJob(config)
    results = asyncio.run(job.run_async(on_done))
    return job.publish(results, started, command)
