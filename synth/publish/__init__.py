"""Publishing: atomic writes, the sharded dataset folder and its dataset card."""

from synth.publish.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
)
from synth.publish.card import CardInfo, render_card
from synth.publish.dataset import PublishResult, publish_dataset

__all__ = [
    "CardInfo",
    "PublishResult",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "publish_dataset",
    "render_card",
]
