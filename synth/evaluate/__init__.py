"""Evaluate: train a student on a published dataset's pairs and measure the retrieval it gains
on held-out bitext, against the untouched student and a Procrustes baseline."""

from synth.evaluate.dataset import EvaluationError, PublishedDataset
from synth.evaluate.run import Progress, evaluate

__all__ = ["EvaluationError", "Progress", "PublishedDataset", "evaluate"]
