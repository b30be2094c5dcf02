"""Back-translation: authentic `lang` text in, a synthetic `pivot` translation out, per segment.

The machinery (chunks, generation, staging, resume, publish) is `synth.job.ChunkedJob`; what
back-translation asks of the model, how its answers are parsed and what rows they make is the
task's file (synth.generate.tasks.backtranslate); this module says which filters judge the rows
and what the card and views say.
"""

from collections.abc import Callable

from synth.config import BacktranslateConfig
from synth.filters.base import FilterChain
from synth.filters.pairs import card_thresholds, embedder_name, filter_settings, pair_filter_chain, score_columns
from synth.filters.heuristics import instruction_texts
from synth.filters.roundtrip import RoundTripStage
from synth.generate.request import Request
from synth.generate.runner import Outcome
from synth.generate.tasks.backtranslate import BacktranslateTask, BacktranslationPrompt
from synth.job import Chunk, ChunkedJob
from synth.languages import language_name
from synth.publish import CardInfo, PublishResult, View, bitext_views
from synth.read import Segment
from synth.schema import BACKTRANSLATION_SCHEMA, REJECT_SCHEMA

__all__ = ["BacktranslateJob", "Chunk", "run_backtranslate"]

BACKTRANSLATION_COLUMNS = [
    ("id", "sha256 of the normalised `text`, 16 hex digits"),
    ("text", "the authentic sentence in `lang` (human-written; the target side)"),
    ("translation", "the **synthetic** translation into `pivot_lang`, written by `model`"),
    ("lang / pivot_lang", "language codes of `text` and `translation`"),
    ("synthetic_side", "which column is machine-written: always `translation`"),
    ("source / line", "the corpus file `text` came from and its 1-based line or row there"),
    ("consistency", "cosine similarity of the two sides' embeddings"),
    ("margin", "ratio margin of that similarity within the batch"),
    ("partner_rank", "the worse of the two retrieval ranks of the pair (1 = best)"),
    ("null_z", "how far the pair's similarity stands above the chunk's unrelated pairs, in their standard deviations"),
    ("round_trip_chrf", "chrF of `translation` translated back into `lang` against `text`, where the round trip was asked"),
    ("lid_lang / lid_score / lid_detector / lid_status", "language ID of `translation`"),
    ("text_lid_*", "the same for `text`"),
    ("model / prompt_version / generation_params", "how `translation` was generated"),
    ("prompt_tokens / completion_tokens", "tokens of that generation request"),
    ("raw_answer", "the model's answer before parsing"),
]


class BacktranslateJob(ChunkedJob):
    task = "backtranslate"
    kept_schema = BACKTRANSLATION_SCHEMA
    reject_schema = REJECT_SCHEMA

    def __init__(self, config: BacktranslateConfig):
        super().__init__(config)
        self.prompt = BacktranslationPrompt.load(config.prompt_file)
        self.llm_task = BacktranslateTask(self.prompt, config.lang, config.pivot)

    @property
    def prompt_versions(self) -> dict[str, str]:
        return {self.task: self.prompt.version}

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.config.lang, self.config.pivot)

    def requests_for(self, segment: Segment) -> list[Request]:
        return self.llm_task.requests(segment)

    def parse(self, request: Request, text: str) -> str:
        return self.llm_task.parse(request, text)

    def rows_from(self, segment: Segment, request: Request, outcome: Outcome) -> list[dict]:
        return self.llm_task.rows(
            segment, request, outcome.completion, outcome.parsed, model=self.model_name, params=self.config.generation_params
        )

    def filter_chain(self, chunk: Chunk) -> FilterChain:
        # The translation is the synthetic side: chatter, truncation and an echo of the prompt are looked for there.
        c = self.config
        instructions = instruction_texts(
            self.prompt.template, source_language=language_name(c.lang), target_language=language_name(c.pivot)
        )
        return pair_filter_chain(c, instructions=instructions)

    @property
    def asks_after_filtering(self) -> bool:
        c = self.config
        return c.round_trip == "all" or (c.round_trip == "borderline" and c.embedder != "none")

    def followups(self, chunk: Chunk) -> list:
        """The round trip (synth.filters.roundtrip) on the pairs the embedding step left undecided, or on all."""
        if not self.asks_after_filtering:
            return []
        c = self.config
        return [RoundTripStage(self.prompt, c.lang, c.pivot, c.round_trip, c.round_trip_min_chrf)]

    def uncounted_requests(self) -> list[str]:
        if not self.asks_after_filtering:
            return []
        which = "every pair the filters keep" if self.config.round_trip == "all" else "the pairs the embedding step cannot decide"
        return [f"the round trip's requests (--round-trip {self.config.round_trip}): one for {which}, decided after the filters"]

    def fingerprint_settings(self) -> dict:
        c = self.config
        return {
            "prompt": self.prompt.template.__dict__, "lang": c.lang, "pivot": c.pivot, **filter_settings(c),
            "round_trip": c.round_trip, "round_trip_min_chrf": c.round_trip_min_chrf,
        }

    def views(self) -> list[View]:
        c = self.config
        # LaBSE-style bitext training: the pivot sentence retrieves its low-resource partner among
        # the batch's; the positive is the authentic (human-written) side.
        return bitext_views(
            c.lang, c.pivot,
            f"`anchor`: the synthetic {language_name(c.pivot)} translation, `positive`: the authentic {language_name(c.lang)} text",
        )

    def card_info(self, command: str | None = None) -> CardInfo:
        c = self.config
        name, pivot = language_name(c.lang), language_name(c.pivot)
        return CardInfo(
            task=self.task,
            pretty_name=f"{name}-{pivot} back-translation pairs (synthetic {pivot} side)",
            summary=(
                f"Sentence pairs for training translation into **{name}** (`{c.lang}`) and {name} sentence "
                f"embeddings, made by back-translation: each `text` is an authentic {name} sentence and the "
                f"target side; each `translation` is a **synthetic** {pivot} (`{c.pivot}`) translation of it, "
                f"written by `{self.model_name}`. The `synthetic_side` column says which side is machine-written "
                f"(always `translation`), so that the two are never mistaken for one another when the data is "
                f"mixed with human translations."
            ),
            columns=BACKTRANSLATION_COLUMNS,
            task_categories=["translation", "sentence-similarity"],
            tags=["synthetic", "back-translation", "low-resource", "bitext"],
            lid_columns={c.lang: "text", c.pivot: "translation"},
            score_columns=score_columns(c),
            training=(
                f"The `pairs` config is the usual setup for LaBSE-style bitext (translation-ranking) training with "
                f"in-batch negatives: `anchor` is the {pivot} sentence, `positive` its authentic {name} partner, "
                f"and every other `positive` of the batch is a negative. `MultipleNegativesSymmetricRankingLoss` "
                f"trains both directions. The anchor is synthetic: the model learns to find real {name} text from "
                f"machine-written {pivot}."
            ),
            lang=c.lang, pivot_lang=c.pivot, model=self.model_name, generation_params=c.generation_params,
            prompt_versions=self.prompt_versions,
            embedder=embedder_name(c),
            lid_detectors=self.lid_detectors_used(),
            thresholds=card_thresholds(c),
            license=c.license, command=command, source_files=[str(p) for p in c.corpus],
        )


def run_backtranslate(
    config: BacktranslateConfig, on_done: Callable[[int], None] | None = None, command: str | None = None
) -> tuple[PublishResult, dict]:
    """The whole job in this process. Returns the publish result and the stats written."""
    return BacktranslateJob(config).run(on_done, command)
