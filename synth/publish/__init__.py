"""Publishing: atomic writes, the sharded dataset folder (configs, splits, views), its card and plots,
and pushes to the Hugging Face Hub."""

from synth.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
)
from synth.publish.card import CardInfo, PublishedConfig, render_card
from synth.publish.dataset import PublishResult, publish_dataset
from synth.publish.views import DEFAULT_SPLITS, Splits, SplitSpecError, View, bitext_views, pairs_view, translation_view

__all__ = [
    "DEFAULT_SPLITS",
    "CardInfo",
    "PublishResult",
    "PublishedConfig",
    "SplitSpecError",
    "Splits",
    "View",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "bitext_views",
    "pairs_view",
    "publish_dataset",
    "render_card",
    "translation_view",
]
