"""The Read stage: monolingual corpora in, normalised and deduplicated segments out."""

from synth.read.dedup import ExactDedup
from synth.read.normalize import normalize_text, record_id
from synth.read.readers import (
    FORMATS,
    CorpusError,
    ReadStats,
    Segment,
    chunked,
    expand_inputs,
    read_segments,
)

__all__ = [
    "FORMATS",
    "CorpusError",
    "ExactDedup",
    "ReadStats",
    "Segment",
    "chunked",
    "expand_inputs",
    "normalize_text",
    "read_segments",
    "record_id",
]
