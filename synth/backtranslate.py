"""Back-translation: authentic `lang` text in, a synthetic `pivot` translation out, per segment.

The machinery (chunks, generation, staging, resume, publish) is `synth.job.ChunkedJob`; this
module says what back-translation asks of the model, what rows its answers make, and which
filters judge them.
"""

import json
from collections.abc import Callable

from synth.config import BacktranslateConfig
from synth.filters.base import FilterChain
from synth.filters.embedding import EmbeddingConsistencyFilter, load_embedder
from synth.filters.heuristics import CopyFilter, EmptyAnswerFilter, LengthRatioFilter, RefusalFilter, RepetitionFilter
from synth.filters.langid import LanguageIdFilter
from synth.generate.backends import Completion
from synth.generate.tasks.backtranslate import BacktranslationPrompt, parse_translation
from synth.job import Chunk, ChunkedJob, ChunkResult, Request
from synth.publish import CardInfo, PublishResult
from synth.read import Segment
from synth.schema import BACKTRANSLATION_SCHEMA, REJECT_SCHEMA

__all__ = ["BacktranslateJob", "Chunk", "ChunkResult", "run_backtranslate"]


class BacktranslateJob(ChunkedJob):
    task = "backtranslate"
    kept_schema = BACKTRANSLATION_SCHEMA
    reject_schema = REJECT_SCHEMA

    def __init__(self, config: BacktranslateConfig):
        super().__init__(config)
        self.prompt = BacktranslationPrompt.load(config.prompt_file)

    @property
    def prompt_versions(self) -> dict[str, str]:
        return {self.task: self.prompt.version}

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.config.lang, self.config.pivot)

    def requests_for(self, segment: Segment) -> list[Request]:
        return [Request(self.prompt.messages(segment.text, self.config.lang, self.config.pivot))]

    def is_usable(self, request: Request, text: str) -> bool:
        return bool(parse_translation(text, self.config.lang, self.config.pivot))

    def rows_from(self, segment: Segment, request: Request, completion: Completion | None, error: str | None) -> list[dict]:
        c = self.config
        return [{
            "id": segment.id, "text": segment.text, "lang": c.lang, "pivot_lang": c.pivot,
            "synthetic_side": "translation", "source": segment.source, "line": segment.line,
            "model": self.model_name, "prompt_version": self.prompt.version,
            "generation_params": json.dumps(c.generation_params, sort_keys=True),
            "translation": parse_translation(completion.text, c.lang, c.pivot) if completion else None,
            "raw_answer": completion.text if completion else None,
            "prompt_tokens": completion.prompt_tokens if completion else None,
            "completion_tokens": completion.completion_tokens if completion else None,
        }]

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

    def fingerprint_settings(self) -> dict:
        c = self.config
        return {
            "prompt": self.prompt.template.__dict__, "lang": c.lang, "pivot": c.pivot, "embedder": c.embedder,
            "min_cosine": c.min_cosine, "min_margin": c.min_margin, "max_rank": c.max_rank, "k": c.margin_k,
            "ratio": c.max_length_ratio, "copy": c.max_copy_similarity, "lid": c.lid_detectors, "lid_min": c.lid_min_score,
        }

    def card_info(self, command: str | None = None) -> CardInfo:
        c = self.config
        return CardInfo(
            lang=c.lang, pivot_lang=c.pivot, model=self.model_name, generation_params=c.generation_params,
            prompt_versions=self.prompt_versions, embedder=load_embedder(c.embedder).name,
            lid_detectors=self.lid_detectors_used(),
            thresholds={
                "min_cosine": c.min_cosine, "min_margin": c.min_margin, "margin_k": c.margin_k, "max_rank": c.max_rank,
                "max_length_ratio": c.max_length_ratio, "max_copy_similarity": c.max_copy_similarity,
                "lid_min_score": c.lid_min_score,
            },
            license=c.license, command=command, source_files=[str(p) for p in c.corpus],
        )


def run_backtranslate(
    config: BacktranslateConfig, on_done: Callable[[int], None] | None = None, command: str | None = None
) -> tuple[PublishResult, dict]:
    """The whole job in this process. Returns the publish result and the stats written."""
    return BacktranslateJob(config).run(on_done, command)
