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
from difflib import SequenceMatcher

import numpy as np

from synth.filters.embedding import Embedder
from synth.filters.heuristics import REFUSAL
from synth.filters.langid import LanguageIdFilter, LanguageIdentifier

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


class EmptyQueryFilter:
    name = "empty"

    def judge(self, rows: list[dict]) -> list[str | None]:
        return [None if (row.get("query") or "").strip() else "empty_query" for row in rows]


def chatter_reason(query: str, passage: str) -> str | None:
    """`refusal:...` or `meta:...` when the query is a refusal or talk about the task, else None."""
    for kind, pattern in (("refusal", REFUSAL), ("meta", META)):
        match = pattern.search(query)
        if match and match.group(0).casefold() not in passage.casefold():
            return f"{kind}:{match.group(0)}"
    return None


class QueryChatterFilter:
    """A refusal or an apology, or talk about the task (`META`), where a query should be. A phrase
    the passage itself holds is content, not chatter ("the passage of the bill")."""

    name = "chatter"

    def judge(self, rows: list[dict]) -> list[str | None]:
        return [chatter_reason(row["query"], row["passage"]) for row in rows]


class DuplicateQueryFilter:
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


class CopiedSpanFilter:
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


class QueryConsistencyFilter:
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


class RoundTripFilter:
    """Keeps a query when its passage ranks in the top `k` of the index's passages for it; gives
    each kept query up to `negatives` hard negatives (`negative`: the hardest, `negatives`: all)."""

    name = "round_trip"

    def __init__(self, index: PassageIndex, k: int = 3, negatives: int = 0):
        self.index = index
        self.k = k
        self.negatives = negatives

    def judge(self, rows: list[dict]) -> list[str | None]:
        similarity = self.index.query_vectors([row["query"] for row in rows]) @ self.index.passage_vectors.T
        verdicts = []
        for row, scores in zip(rows, similarity):
            own = self.index.position(row["passage_id"])
            rank = int((scores > scores[own]).sum()) + 1
            row["rank"] = rank
            if rank > self.k:
                verdicts.append(f"round_trip:rank={rank}")
                continue
            if self.negatives:
                below = [i for i in np.argsort(-scores, kind="stable") if scores[i] < scores[own]][: self.negatives]
                row["negatives"] = [self.index.texts[i] for i in below]
                row["negative"] = row["negatives"][0] if below else None
            verdicts.append(None)
        return verdicts
