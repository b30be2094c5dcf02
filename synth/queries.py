"""Synthetic search queries: authentic `lang` passages in, LLM-written queries for them out (the
recipe of multilingual E5, BGE-M3's MLDR and Promptagator), as (query, passage) training pairs.

Passages are the corpus's documents (a line, row or record each), longer ones split at sentence
boundaries. Each passage gets one request per kind of query (keyword, question, long, or a
template's own) asking for `per_passage` queries, in the passage's language or in `query_lang`
(cross-lingual pairs). The machinery (chunks, generation, staging, resume, publish) is
`synth.job.ChunkedJob`; what a request asks, how its answer is parsed and what rows it makes is the
task's file (synth.generate.tasks.queries, and .relevance for the relevance check); this module
says which filters judge the rows and what the card and views say.
"""

import textwrap
from collections import Counter
from collections.abc import Iterator
from itertools import islice

from synth.config import NO_EMBEDDER, QueriesConfig
from synth.filters.base import FilterChain
from synth.filters.embedding import embedder_description, load_embedder
from synth.filters.retrieval import (
    CopiedSpanFilter,
    DuplicateQueryFilter,
    EmptyQueryFilter,
    PassageIndex,
    QueryChatterFilter,
    QueryConsistencyFilter,
    QueryLanguageFilter,
    RoundTripFilter,
    chatter_reason,
)
from synth.generate.request import Request
from synth.generate.runner import Outcome
from synth.generate.tasks.queries import QueriesTask, QueryPrompt, query_id
from synth.generate.tasks.relevance import RelevancePrompt, RelevanceTask
from synth.job import Chunk, ChunkedJob, FollowupStage
from synth.languages import language_name
from synth.publish import CardInfo, View, pairs_view
from synth.read import ExactDedup, ReadStats, Segment, read_segments, record_id
from synth.read.segment import split_sentences
from synth.schema import QUERY_REJECT_SCHEMA, QUERY_SCHEMA

__all__ = ["QueriesJob", "RelevanceCheck", "passages", "query_filters", "query_id", "split_passage"]

# Documents longer than this are dropped by the reader (counted as too long), not split: 1M
# characters is a book, not a document to query.
MAX_DOCUMENT_CHARS = 1_000_000

QUERY_COLUMNS = [
    ("id", "sha256 of `passage_id`, `kind` and `query`, 16 hex digits"),
    ("query", "the **synthetic** search query, in `query_lang`, written by `model`"),
    ("passage", "the authentic passage in `lang` that the query was written for (the positive)"),
    ("passage_id", "sha256 of the normalised passage, 16 hex digits (its queries share it and a split)"),
    ("kind", "the kind of query asked for: `keyword`, `question`, `long` (or a template's own)"),
    ("query_lang / lang", "language codes of `query` and `passage` (different: a cross-lingual pair)"),
    ("source / line", "the corpus file the passage came from and the 1-based line or row of its document there"),
    ("consistency", "cosine similarity of the query's and the passage's embeddings"),
    ("rank", "rank of the passage among its chunk's passages for the query, on CSLS scores (1 = found first)"),
    ("round_trip", "how likely a rank that good is for a query written for this passage, in its chunk (the round trip keeps it at `round_trip_min_p_good` or more)"),
    ("relevance", "the generator's answer to the relevance check (`yes`, `no`; `unclear` or `failed`: the round trip decided), for a query the round trip could not decide; empty where it was not asked"),
    ("negative / negatives", "hard negatives (with `--negatives`): the best-ranked other passages of the chunk that score below the passage; `negative` is the hardest"),
    ("lid_lang / lid_score / lid_detector / lid_status", "language ID of `query`"),
    ("model / prompt_version / generation_params", "how `query` was generated (an answer that had to be resampled, after an empty or chatty one, has its retry's temperature and seed)"),
    ("prompt_tokens / completion_tokens", "tokens of the request that wrote the query (shared by the queries of one answer)"),
    ("raw_answer", "the model's answer before parsing"),
]


def split_passage(text: str, max_chars: int) -> list[str]:
    """`text` itself if it fits in `max_chars`, else its sentences packed in order into passages of
    at most `max_chars` (a longer sentence is cut between words)."""
    if len(text) <= max_chars:
        return [text]
    pieces = []
    for sentence in split_sentences(text):
        pieces.extend(textwrap.wrap(sentence, max_chars, break_on_hyphens=False) if len(sentence) > max_chars else [sentence])
    passages = [pieces[0]]
    for piece in pieces[1:]:
        if len(passages[-1]) + 1 + len(piece) <= max_chars:
            passages[-1] = f"{passages[-1]} {piece}"
        else:
            passages.append(piece)
    return passages


def passages(documents: Iterator[Segment], max_chars: int, stats: ReadStats) -> Iterator[Segment]:
    """The passages of a stream of documents, each with its own id (the hash of its text) and its
    document's source and line. `stats.segments` counts passages instead of documents; a passage
    seen before (the reader drops repeated documents, not repeated parts of them) is a duplicate."""
    seen = ExactDedup()
    for document in documents:
        stats.segments -= 1  # the reader counted the document: its passages count instead
        for text in split_passage(document.text, max_chars):
            if seen.seen(text):
                stats.duplicates_dropped += 1
                continue
            stats.segments += 1
            yield Segment(record_id(text), text, document.source, document.line)


def query_filters(c: QueriesConfig, passages: dict[str, str], identifier=None, embedder=None) -> list:
    """The filter blocks of one chunk whose passages are `passages` (id -> text), in order: what
    the job runs and bench/queries.py measures. `identifier`: the language identifier (None: no
    language ID); `embedder`: one already loaded (default: `c.embedder`'s)."""
    filters = [EmptyQueryFilter(), QueryChatterFilter(), DuplicateQueryFilter(), CopiedSpanFilter(c.max_copied_span)]
    if identifier is not None:
        filters.append(QueryLanguageFilter(identifier))
    if c.embedder != NO_EMBEDDER:
        index = PassageIndex(embedder or load_embedder(c.embedder), passages)
        filters += [
            QueryConsistencyFilter(index, c.min_cosine),
            RoundTripFilter(
                index, c.round_trip_k, c.negatives, c.round_trip_min_p_good, c.round_trip_min_queries,
                undecided=(c.relevance_low, c.relevance_high) if c.relevance_checking else None,
            ),
        ]
    return filters


class RelevanceCheck:
    """The LLM relevance check (a FollowupStage, Promptagator-style): a query the round trip left
    undecided (`round_trip_undecided`: ranked below the top k, its likelihood in the band) is shown
    to the generator with its passage (prompts/relevance.toml); "yes" keeps it, "no" drops it
    (`relevance:no`). An answer that says neither (after one resampled retry) or none at all leaves
    the round trip's own verdict. Each asked row gets `relevance`: yes, no, unclear or failed."""

    name = "relevance"

    def __init__(self, prompt: RelevancePrompt | None = None):
        self.prompt = prompt or RelevancePrompt.load()
        self.task = RelevanceTask(self.prompt)
        self._counts: Counter = Counter()

    def requests(self, rows: list[dict]) -> list[tuple[int, Request]]:
        return [(i, self.task.request(row)) for i, row in enumerate(rows) if "round_trip_undecided" in row]

    def parse(self, request: Request, text: str) -> str:
        """"yes" or "no"; unusable ("unclear") when the answer says neither."""
        return self.task.parse(request, text)

    def judge(self, rows: list[dict], answers: dict[int, str | None], dropped: list[dict] = ()) -> list[str | None]:
        """`answers`: row index -> `parse`'s label (yes, no, unclear), None where no attempt was answered."""
        self._counts = Counter()
        verdicts = []
        for i, row in enumerate(rows):
            fallback = row.pop("round_trip_undecided", None)
            if fallback is None:  # decided by the round trip: not asked
                verdicts.append(None)
                continue
            row["relevance"] = answers.get(i) or "failed"
            self._counts[row["relevance"]] += 1
            verdicts.append(None if row["relevance"] == "yes" else "relevance:no" if row["relevance"] == "no" else fallback or None)
        return verdicts

    @property
    def counts(self) -> dict:
        return {label: self._counts[label] for label in ("yes", "no", "unclear", "failed")}


class QueriesJob(ChunkedJob):
    task = "queries"
    kept_schema = QUERY_SCHEMA
    reject_schema = QUERY_REJECT_SCHEMA
    # The queries of a passage share its split: no passage is trained on and tested on.
    split_key = "passage_id"

    def __init__(self, config: QueriesConfig):
        super().__init__(config)
        self.prompt = QueryPrompt.load(config.prompt_file)
        # What is retried is what the chatter filter would drop (a refusal, talk about the task).
        self.llm_task = QueriesTask(
            self.prompt, tuple(config.kinds), config.per_passage, config.lang, config.query_lang, chatter=chatter_reason
        )
        self.relevance_prompt = RelevancePrompt.load() if config.relevance_checking else None

    @property
    def prompt_versions(self) -> dict[str, str]:
        relevance = {RelevanceCheck.name: self.relevance_prompt.version} if self.relevance_prompt else {}
        return {self.task: self.prompt.version, **relevance}

    @property
    def asks_after_filtering(self) -> bool:
        return self.relevance_prompt is not None

    def followups(self, chunk: Chunk) -> list[FollowupStage]:
        return [RelevanceCheck(self.relevance_prompt)] if self.relevance_prompt else []

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.config.query_lang,)  # only queries are checked

    def segments(self) -> Iterator[Segment]:
        c = self.config
        documents = read_segments(
            c.corpus, text_field=c.text_field, fmt=c.input_format, stats=self.read_stats, segment=c.segment,
            max_chars=MAX_DOCUMENT_CHARS,
        )
        return islice(passages(documents, c.max_passage_chars, self.read_stats), c.limit)

    def requests_for(self, segment: Segment) -> list[Request]:
        return self.llm_task.requests(segment)

    def parse(self, request: Request, text: str) -> list[str]:
        """The answer's queries; unusable without one that is not a refusal or talk about the task
        (an empty answer, "Here are some search queries:", "I'm sorry, I cannot..." are retried once, resampled)."""
        return self.llm_task.parse(request, text)

    def rows_from(self, segment: Segment, request: Request, outcome: Outcome) -> list[dict]:
        return self.llm_task.rows(
            segment, request, outcome.completion, outcome.parsed, model=self.model_name, params=self.config.generation_params
        )

    def filter_chain(self, chunk: Chunk) -> FilterChain:
        return FilterChain(query_filters(
            self.config, {segment.id: segment.text for segment in chunk.segments},
            self.language_identifier if self.config.lid_detectors else None,
        ))

    def completion_estimate(self, segment, request) -> int:
        return 24 * self.config.per_passage  # a few short queries

    def uncounted_requests(self) -> list[str]:
        if not self.config.relevance_checking:
            return []
        return ["the relevance check's requests (--relevance-check): one for each query the round trip cannot decide, after the filters"]

    def fingerprint_settings(self) -> dict:
        c = self.config
        return {
            "prompt": self.prompt.template.__dict__, "instructions": self.prompt.instructions, "kinds": c.kinds,
            "lang": c.lang, "query_lang": c.query_lang, "per_passage": c.per_passage,
            "max_passage_chars": c.max_passage_chars, "embedder": c.embedder, "min_cosine": c.min_cosine,
            "round_trip_k": c.round_trip_k, "round_trip_min_p_good": c.round_trip_min_p_good,
            "round_trip_min_queries": c.round_trip_min_queries, "max_copied_span": c.max_copied_span, "negatives": c.negatives,
            "lid": c.lid_detectors, "lid_detector": c.lid_detector, "lid_min": c.lid_min_score,
            **({"relevance": [self.relevance_prompt.template.__dict__, c.relevance_low, c.relevance_high]} if self.relevance_prompt else {}),
        }

    def views(self) -> list[View]:
        c = self.config
        negative = ", `negative`: a hard negative passage" if c.negatives else ""
        return [pairs_view(
            anchor="query", positive="passage", negative="negative" if c.negatives else None,
            description=f"`anchor`: the synthetic {language_name(c.query_lang)} query, `positive`: its authentic {language_name(c.lang)} passage{negative}",
        )]

    def card_info(self, command: str | None = None) -> CardInfo:
        c = self.config
        name, query_name = language_name(c.lang), language_name(c.query_lang)
        crossing = f"{query_name}-{name}" if c.query_lang != c.lang else name
        negatives = (
            f" Each kept query also has up to {c.negatives} hard negatives: the best-ranked other passages of its chunk "
            f"that score below its own passage (`negative`, the hardest, and `negatives`)."
            if c.negatives else ""
        )
        round_trip = (
            f"its passage ranks in the top {c.round_trip_k} on CSLS scores (hubs discounted), or a rank that good "
            f"is at least {c.round_trip_min_p_good:g} likely for a query of that passage in its chunk (`round_trip`): each "
            f"chunk's ranks, per kind of query, fit a model of how far its good queries fall and how many queries look "
            f"like another passage's (the `round_trip_max_rank`, `good_rank_mean` and `bad_share` it derived are under "
            f"Thresholds; a kind with fewer than {c.round_trip_min_queries} queries in a chunk shares one model)"
            if c.round_trip_min_p_good is not None
            else f"its passage ranks in the top {c.round_trip_k} of the passages of its chunk (`rank`)"
        )
        if self.relevance_prompt:
            round_trip += (
                f". A query ranked below the top {c.round_trip_k} whose likelihood lies between {c.relevance_low:g} and "
                f"{c.relevance_high:g} (the band the embedder cannot decide) was shown to `{self.model_name}` with its "
                f"passage and kept only if it answered that the passage answers the query (`relevance`; the prompt "
                f"`{self.relevance_prompt.version}`; its requests are counted under Models)"
            )
        return CardInfo(
            task=self.task,
            pretty_name=f"{crossing} search queries for {name} passages (synthetic queries)",
            summary=(
                f"(query, passage) pairs for training {name} retrievers and embedding models: each `passage` is "
                f"authentic {name} (`{c.lang}`) text from the corpus (documents longer than {c.max_passage_chars} "
                f"characters split at sentence boundaries), each `query` a **synthetic** {query_name} "
                f"(`{c.query_lang}`) search query for it, written by `{self.model_name}`: {c.per_passage} per passage "
                f"for each kind of query ({', '.join(f'`{kind}`' for kind in c.kinds)}). Only the queries are "
                f"machine-written. A query is kept when it is in {query_name}, is not a copy of a long span of its "
                f"passage nor a duplicate, and finds its passage again among the passages of its chunk, judged against "
                f"that chunk's difficulty: {round_trip}.{negatives}"
            ),
            columns=QUERY_COLUMNS,
            task_categories=["text-retrieval", "sentence-similarity"],
            tags=["synthetic", "synthetic-queries", "retrieval", "low-resource"],
            lid_columns={c.query_lang: "query"},
            score_columns={"consistency": "min_cosine", "rank": None, "round_trip": "round_trip_min_p_good"},
            training=(
                "The `pairs` config feeds sentence-transformers' `MultipleNegativesRankingLoss` as it is: `anchor` is "
                "the query, `positive` its passage" + (", `negative` a hard negative" if c.negatives else "") + "; "
                "every other passage of a batch is a negative too. A passage with several queries appears in several "
                "rows: train with `batch_sampler=BatchSamplers.NO_DUPLICATES` so that it is never a negative for its "
                "own query. Splits go by `passage_id`: a passage and all its queries are in one split."
            ),
            lang=c.lang, pivot_lang=c.query_lang, model=self.model_name, generation_params=c.generation_params,
            prompt_versions=self.prompt_versions,
            embedder=embedder_description(c.embedder) if c.embedder != NO_EMBEDDER else "none (consistency and round trip not checked)",
            lid_detectors=self.lid_detectors_used(),
            thresholds={
                "min_cosine": c.min_cosine, "round_trip_k": c.round_trip_k, "round_trip_min_p_good": c.round_trip_min_p_good,
                "round_trip_min_queries": c.round_trip_min_queries, "max_copied_span": c.max_copied_span,
                "lid_min_score": c.lid_min_score,
                **({"relevance_low": c.relevance_low, "relevance_high": c.relevance_high} if self.relevance_prompt else {}),
            },
            license=c.license, command=command, source_files=[str(p) for p in c.corpus],
        )
