"""Retrieval metrics on L2-normalised embeddings.

Bitext (Tatoeba-style): every source text retrieves among all targets of the set and vice versa;
top-1 accuracy per direction, and the mean reciprocal rank over both directions. Queries: every
query retrieves among the set's distinct passages; recall@10 and MRR@10.
"""

import numpy as np


def ranks(similarity: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true column of each row (ties counted against it: a tie is no hit)."""
    true_scores = similarity[np.arange(len(truth)), truth]
    return (similarity >= true_scores[:, None]).sum(axis=1)


def bitext_retrieval(src: np.ndarray, tgt: np.ndarray) -> dict[str, float]:
    similarity = src @ tgt.T
    truth = np.arange(len(src))
    forward, backward = ranks(similarity, truth), ranks(similarity.T, truth)
    return {
        "accuracy_src2tgt": round(float(np.mean(forward == 1)), 4),
        "accuracy_tgt2src": round(float(np.mean(backward == 1)), 4),
        "mrr": round(float(np.mean(np.concatenate([1.0 / forward, 1.0 / backward]))), 4),
    }


def query_retrieval(passages: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int = 10) -> dict[str, float]:
    """`truth[i]`: the row of `passages` that query i was written for."""
    rank = ranks(queries @ passages.T, truth)
    return {
        f"recall_at_{k}": round(float(np.mean(rank <= k)), 4),
        f"mrr_at_{k}": round(float(np.mean(np.where(rank <= k, 1.0 / rank, 0.0))), 4),
    }


def procrustes(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """The orthogonal W minimising ||src W - tgt|| (Schönemann 1966): W = U Vᵀ from the SVD of srcᵀ tgt."""
    u, _, vt = np.linalg.svd(src.T @ tgt)
    return u @ vt


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
