"""Filter blocks for (query, passage) rows: is there a query (not chatter), is it new, is it more
than a copy of the passage, is it in its language, does it stand for its passage and find it again?

Rows carry `query`, `query_lang`, `passage`, `passage_id` (and `lang`, the passage's). The
embedding-based blocks share a `PassageIndex` of the chunk, so each text is embedded once:

- consistency: cosine of query and passage, with the embedder's one ("query: ") side for both, as
  in synth.filters.embedding. On UDHR Swahili and Zulu, e5's asymmetric "passage: " side for the
  passages ranked in-language keyword queries better but English ones worse; symmetric is what
  cross-lingual pairs need. e5 cosines are compressed (unrelated English queries scored 0.72-0.79
  against Swahili and Zulu passages, their own ~0.81-0.88), so this only catches the unrelated.
- round trip (Promptagator, Dai et al. 2022; Alberti et al. 2019): the passage must rank in the
  top k of the chunk's passages for its own query. The discriminating check.
- hard negatives: for a kept query, the best-ranked passages of the chunk that score below its own
  (a passage ranked above it may well answer it too: a likely false negative).
"""

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from synth.filters.embedding import Embedder
from synth.filters.heuristics import REFUSAL
from synth.filters.langid import LanguageIdFilter, LanguageIdentifier
from synth.filters.base import BaseFilter

_NOT_WORD = re.compile(r"[\W_]+")
# A "query" that talks about the task instead of searching: it points at the passage or the list,
# echoes the prompt's instructions, or waits for orders. Small models do this; the words are the
# English of the prompt, whatever the query language.
META = re.compile(
    r"\b(?:(?:this|the|above|given|following) (?:passage|paragraph)|search quer(?:y|ies)|each (?:query|question)|"
    r"(?:list|set) of (?:\d+ )?(?:search )?(?:queries|questions)|ready to help|what(?:'s| is) your (?:query|question))\b",
    re.I,
)


def query_key(query: str) -> str:
    """What two queries that are 'the same' share: case, punctuation and spacing ignored."""
    return _NOT_WORD.sub(" ", query.casefold()).strip()


class EmptyQueryFilter(BaseFilter):
    name = "empty"

    def judge_row(self, row: dict) -> str | None:
        return None if (row.get("query") or "").strip() else "empty_query"


def chatter_reason(query: str, passage: str) -> str | None:
    """`refusal:...` or `meta:...` when the query is a refusal or talk about the task, else None."""
    for kind, pattern in (("refusal", REFUSAL), ("meta", META)):
        match = pattern.search(query)
        if match and match.group(0).casefold() not in passage.casefold():
            return f"{kind}:{match.group(0)}"
    return None


class QueryChatterFilter(BaseFilter):
    """A refusal or an apology, or talk about the task (`META`), where a query should be. A phrase
    the passage itself holds is content, not chatter ("the passage of the bill")."""

    name = "chatter"

    def judge_row(self, row: dict) -> str | None:
        return chatter_reason(row["query"], row["passage"])


class DuplicateQueryFilter(BaseFilter):
    """The same query again in the chunk (for its passage or another): the first one stays."""

    name = "duplicate"

    def judge(self, rows: list[dict]) -> list[str | None]:
        first: dict[str, str] = {}
        verdicts = []
        for row in rows:
            key = query_key(row["query"])
            verdicts.append(f"duplicate:of={first[key]}" if key in first else None)
            first.setdefault(key, row["id"])
        return verdicts


class CopiedSpanFilter(BaseFilter):
    """Too easy: the query is mostly one run of the passage's words, copied (a lexical match any
    BM25 finds teaches a retriever nothing). Measured in words, case and punctuation ignored: the
    longest run of consecutive words the query shares with the passage, over the query's words.
    Runs shorter than `min_words` never count, so short keyword queries may reuse a name or a
    term of the passage."""

    name = "copied_span"

    def __init__(self, max_share: float = 0.75, min_words: int = 3):
        self.max_share = max_share
        self.min_words = min_words

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            query, passage = query_key(row["query"]).split(), query_key(row["passage"]).split()
            run = SequenceMatcher(None, query, passage, autojunk=False).find_longest_match(0, len(query), 0, len(passage)).size
            copied = run >= self.min_words and run / max(1, len(query)) > self.max_share
            verdicts.append(f"copied_span:{run}/{len(query)}" if copied else None)
        return verdicts


class QueryLanguageFilter(LanguageIdFilter):
    """The query must read as `query_lang`. Only the query: the passage is the corpus's own text.
    A language no detector covers passes as unverified and is counted (`unverified_counts`)."""

    name = "language_id"

    def __init__(self, identifier: LanguageIdentifier):
        super().__init__(identifier, translation_key="query", translation_lang_key="query_lang")

    def judge(self, rows: list[dict]) -> list[str | None]:
        verdicts = []
        for row in rows:
            result = self.identifier.identify(row[self.translation_key], row[self.translation_lang_key])
            row.update(lid_lang=result.lang, lid_score=result.score, lid_detector=result.detector, lid_status=result.status)
            if result.status == "unverified":
                self.unverified_counts["query"] += 1
            verdicts.append(f"lid_mismatch:query={result.lang or 'unknown'}" if result.status == "failed" else None)
        return verdicts


class PassageIndex:
    """A chunk's passages (id -> text) and the embeddings of passages and queries, each text
    embedded once, when first needed (rows the cheap filters drop cost no embedding)."""

    def __init__(self, embedder: Embedder, passages: dict[str, str]):
        self.embedder = embedder
        self.ids = list(passages)
        self.texts = list(passages.values())
        self._positions = {passage_id: i for i, passage_id in enumerate(self.ids)}
        self._passages: np.ndarray | None = None
        self._queries: dict[str, np.ndarray] = {}

    def position(self, passage_id: str) -> int:
        return self._positions[passage_id]

    @property
    def passage_vectors(self) -> np.ndarray:
        if self._passages is None:
            self._passages = self.embedder.encode(self.texts)
        return self._passages

    def query_vectors(self, queries: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(query for query in queries if query not in self._queries))
        if new:
            self._queries.update(zip(new, self.embedder.encode(new)))
        return np.stack([self._queries[query] for query in queries])


class QueryConsistencyFilter(BaseFilter):
    name = "embedding"

    def __init__(self, index: PassageIndex, min_cosine: float = 0.75):
        self.index = index
        self.min_cosine = min_cosine

    def judge(self, rows: list[dict]) -> list[str | None]:
        queries = self.index.query_vectors([row["query"] for row in rows])
        passages = self.index.passage_vectors[[self.index.position(row["passage_id"]) for row in rows]]
        verdicts = []
        for row, cosine in zip(rows, (queries * passages).sum(axis=1)):
            row["consistency"] = round(float(cosine), 6)
            verdicts.append(f"low_consistency:{cosine:.3f}" if cosine < self.min_cosine else None)
        return verdicts


def csls(scores: np.ndarray, k: int = 3) -> np.ndarray:
    """Scores of queries (rows) against passages (columns) less each side's hubness: CSLS (Conneau
    et al. 2018), 2 cos(q, p) - r(q) - r(p), r the mean score of the k best of the other side. A
    passage that every query scores high (a long one, or one close to the query language) stops
    outranking the passage a query was written for, and a vague query's scores are all shifted
    alike. A side with fewer than k items on the other is left as it is."""
    rows, columns = scores.shape
    adjusted = 2 * scores
    if columns >= k:
        adjusted = adjusted - np.sort(scores, axis=1)[:, -k:].mean(axis=1, keepdims=True)
    if rows >= k:
        adjusted = adjusted - np.sort(scores, axis=0)[-k:, :].mean(axis=0, keepdims=True)
    return adjusted


@dataclass
class RankModel:
    """What the ranks of a chunk's queries say about its difficulty: the ranks of queries written
    for their passage follow a geometric law of mean `good_mean` (about 1 where the embedder knows
    the language and the passages differ; several where the passages look alike or the embedder
    knows the language a little), a query of another passage ranks its claimed passage anywhere in
    1..`passages` alike, and `bad_share` of the chunk's queries are of that kind. Fitted by EM."""

    passages: int
    good_mean: float
    bad_share: float

    def p_good(self, rank: np.ndarray) -> np.ndarray:
        """P(the query is its passage's | its passage's rank), in the chunk this was fitted on."""
        theta = 1.0 / self.good_mean
        good = (1 - self.bad_share) * theta * (1 - theta) ** (np.asarray(rank, dtype=float) - 1)
        good /= 1 - (1 - theta) ** self.passages
        return good / (good + self.bad_share / self.passages)

    def max_rank(self, min_p_good: float) -> int:
        """The worst rank that still counts as found in this chunk (0: none)."""
        ranks = np.arange(1, self.passages + 1)
        found = ranks[self.p_good(ranks) >= min_p_good]
        return int(found.max()) if found.size else 0

    @classmethod
    def fit(
        cls, ranks: np.ndarray, passages: int, prior_bad: float = 0.1, prior_mean: float = 2.0, prior_weight: float = 10.0,
        iterations: int = 100,
    ) -> "RankModel":
        """EM, with priors worth `prior_weight` queries on both figures: a bad share of `prior_bad`
        and a mean good rank of `prior_mean`. Without them a small or clean chunk concludes that
        nothing is bad (every rank passes) or that good queries always rank first (none below does)."""
        ranks = np.asarray(ranks, dtype=float)
        model = cls(passages, good_mean=max(1.0, float(np.median(ranks))), bad_share=prior_bad)
        for _ in range(iterations):
            good = model.p_good(ranks)
            bad_share = float(np.clip((np.sum(1 - good) + prior_weight * prior_bad) / (len(ranks) + prior_weight), 0.01, 0.5))
            good_mean = (np.sum(good * ranks) + prior_weight * prior_mean) / (np.sum(good) + prior_weight)
            good_mean = float(np.clip(good_mean, 1.0, passages / 2))
            if abs(good_mean - model.good_mean) < 1e-4 and abs(bad_share - model.bad_share) < 1e-5:
                break
            model = cls(passages, good_mean, bad_share)
        return model


class RoundTripFilter(BaseFilter):
    """Keeps a query when it finds its passage again among the chunk's passages, judged against
    the chunk's own difficulty rather than a fixed top k.

    Passages that look alike (every UDHR article is about rights) or a language the embedder knows
    a little put a query's own passage 5th or 9th where a person would call the query perfect,
    while in a chunk of distinct passages 5th is suspicious. So: ranks are taken on CSLS scores
    (`csls`: hubs discounted); the ranks of all the chunk's queries fit a `RankModel` (how far good
    queries fall in this chunk, and how many queries look like another passage's); a query is
    kept when its passage ranks in the top `k` (always) or when a rank that good is at least
    `min_p_good` likely to come from a query of that passage (`round_trip` column). Each kind of
    query with `min_rows` queries in the chunk gets its own model (the others share one); with
    fewer queries, or `k` covering the chunk, the fixed top k alone decides. The derived figures
    of each chunk (means over its models) go to stats.json: `round_trip_max_rank`,
    `good_rank_mean`, `bad_share`.

    Gives each kept query up to `negatives` hard negatives (`negative`: the hardest, `negatives`:
    all): the passages scored below its own on the raw cosine.

    `undecided` (low, high): a query ranked below the top k whose likelihood lies in [low, high) is
    not judged here: it passes, with `round_trip_undecided` holding the verdict the round trip alone
    would give ("" to keep), for a later judge (the LLM relevance check, synth.queries.RelevanceCheck)."""

    name = "round_trip"

    def __init__(
        self, index: PassageIndex, k: int = 1, negatives: int = 0, min_p_good: float | None = 0.5, min_rows: int = 20,
        undecided: tuple[float, float] | None = None,
    ):
        self.index = index
        self.undecided = undecided
        self.k = k
        self.negatives = negatives
        self.min_p_good = min_p_good
        self.min_rows = min_rows
        self.derived_thresholds: dict[str, float] = {}
        self.models: dict[str, RankModel] = {}  # kind ('*': the kinds pooled) -> the chunk's fitted model

    def judge(self, rows: list[dict]) -> list[str | None]:
        self.derived_thresholds = {}
        similarity = self.index.query_vectors([row["query"] for row in rows]) @ self.index.passage_vectors.T
        own = np.array([self.index.position(row["passage_id"]) for row in rows])
        adjusted = csls(similarity) if self.min_p_good is not None else similarity
        at = np.arange(len(rows))
        ranks = (adjusted > adjusted[at, own][:, None]).sum(axis=1) + 1
        passages = similarity.shape[1]
        # Kinds of query differ in difficulty (four keywords find their passage less often than a
        # question): each kind with queries enough gets its own model, the others share one.
        p_good = np.full(len(rows), np.nan)
        max_rank = np.full(len(rows), self.k)
        self.models = {}
        if self.min_p_good is not None and passages > self.k:
            kinds = np.array([row.get("kind") or "" for row in rows])
            names, counts = np.unique(kinds, return_counts=True)
            own_model = {name for name, count in zip(names, counts) if count >= self.min_rows}
            groups = [(name, kinds == name) for name in sorted(own_model)]
            rest = ~np.isin(kinds, list(own_model))
            if rest.sum() >= self.min_rows:
                groups.append(("*", rest))
            for name, members in groups:
                model = self.models[name] = RankModel.fit(ranks[members], passages)
                p_good[members] = model.p_good(ranks[members])
                max_rank[members] = max(self.k, model.max_rank(self.min_p_good))
            if self.models:
                fitted = list(self.models.values())
                self.derived_thresholds = {
                    "round_trip_max_rank": float(np.mean([max(self.k, m.max_rank(self.min_p_good)) for m in fitted])),
                    "good_rank_mean": round(float(np.mean([m.good_mean for m in fitted])), 3),
                    "bad_share": round(float(np.mean([m.bad_share for m in fitted])), 3),
                }
        verdicts = []
        for i, (row, scores) in enumerate(zip(rows, similarity)):
            rank = int(ranks[i])
            row["rank"] = rank
            if not np.isnan(p_good[i]):
                row["round_trip"] = round(float(p_good[i]), 4)
            verdict = None
            if rank > max_rank[i]:
                verdict = f"round_trip:rank={rank}>{max_rank[i]}" + (f",p={p_good[i]:.2f}" if not np.isnan(p_good[i]) else "")
            if self.undecided is not None and rank > self.k and self.undecided[0] <= p_good[i] < self.undecided[1]:
                row["round_trip_undecided"] = verdict or ""  # NaN (no model) compares False: never undecided
            elif verdict is not None:
                verdicts.append(verdict)
                continue
            if self.negatives:
                mine = scores[own[i]]
                below = [j for j in np.argsort(-scores, kind="stable") if scores[j] < mine][: self.negatives]
                row["negatives"] = [self.index.texts[j] for j in below]
                row["negative"] = row["negatives"][0] if below else None
            verdicts.append(None)
        return verdicts
