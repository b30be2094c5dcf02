"""`synth evaluate`: train a student on a dataset's pairs and measure what it gains.

Every evaluation set (the dataset's `test` split, each `--eval` bitext) is first cleared of pairs
that share a text with anything trained on, then scored with each method side by side:
`base` (the student untouched), `procrustes` (an orthogonal map fitted on the training pairs'
base embeddings, applied to the low-resource side), `finetuned` (trained on the kept pairs) and,
with `--ablation`, `finetuned_with_rejects` (kept + rejected pairs) and `finetuned_shuffled`
(the kept pairs shuffled out of alignment: a control that must not gain).
"""

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from synth.config import EvaluateConfig
from synth.evaluate import metrics
from synth.evaluate.dataset import (
    QUERIES,
    EvaluationError,
    Pairs,
    PublishedDataset,
    text_key,
    queries_without_overlap,
    read_eval_set,
    without_overlap,
)

log = logging.getLogger("synth.evaluate")
# The smallest evaluation set worth a number: with fewer pairs top-1 accuracy is mostly luck.
MIN_EVAL_PAIRS = 5
RESULTS_VERSION = 1


@dataclass
class Progress:
    """What a caller shows while an evaluation runs: the stage, and training steps done of planned."""

    stage: Callable[[str], None] = lambda text: None
    step: Callable[[int, int], None] = lambda done, total: None


def evaluate(config: EvaluateConfig, progress: Progress | None = None, hub_token: str | None = None, lock: bool = True) -> dict:
    """Runs the evaluation, writes results.json and retrieval.png (and the card's section); returns
    the results. `hub_token` (else the variable `config.hub_token_env` names) reads a private Hub
    dataset. The writing into a local dataset folder holds its lock, as a job's publish does (one
    writer at a time; evaluations of one dataset may train side by side); `lock=False` for a
    caller that holds it already (a job evaluating what it just published)."""
    from synth.evaluate import report
    from synth.runlock import OutputError, RunLock

    progress = progress or Progress()
    results, dataset = _evaluate(config, progress, hub_token)
    progress.stage("writing the results")
    if not (lock and config.is_local):
        report.write(results, config, dataset)
        return results
    work = dataset.folder / ".synth"
    try:
        work.mkdir(exist_ok=True)
        with RunLock(work, f"the dataset folder {dataset.folder}").acquire(command=f"synth evaluate {config.dataset}"):
            report.write(results, config, dataset)
    except OutputError as error:
        raise EvaluationError(f"{error} (the results were not written)") from None
    return results


def _evaluate(config: EvaluateConfig, progress: Progress, hub_token: str | None) -> tuple[dict, PublishedDataset]:
    started = time.perf_counter()
    progress.stage("reading the dataset")
    dataset = PublishedDataset.open(config.dataset, hub_token or os.environ.get(config.hub_token_env) or None)
    train_pairs = dataset.pairs("train")
    variants = {"finetuned": train_pairs}
    if "shuffled" in config.ablation:
        variants["finetuned_shuffled"] = shuffled(train_pairs, config.seed)
    trained_texts = train_pairs.texts()  # the shuffled control holds the same texts

    clear = queries_without_overlap if dataset.kind == QUERIES else without_overlap
    eval_sets = []
    for raw in [dataset.pairs("test"), *(read_eval_set(spec, dataset, config.eval_src_field, config.eval_tgt_field) for spec in config.eval)]:
        if not len(raw):
            continue
        cleared = clear(raw, trained_texts)
        if len(cleared) < MIN_EVAL_PAIRS:
            log.warning(
                "evaluation set %s: %d pairs left of %d after removing %d that share a text with the training pairs "
                "and %d repeats; fewer than %d: left out", raw.name, len(cleared), len(raw), cleared.excluded_overlap,
                cleared.excluded_duplicates, MIN_EVAL_PAIRS,
            )
            continue
        eval_sets.append(cleared)
    rejects_left_out = 0
    if "rejects" in config.ablation and eval_sets:
        # Rejects are not split (a rejected query of a held-out passage is in `rejects`): those that
        # share a text with an evaluation set stay out of the ablation's training, never in it.
        held_out = set().union(*(pairs.texts() for pairs in eval_sets))
        rejects = dataset.rejected_pairs()
        kept = [(s, t) for s, t in zip(rejects.src, rejects.tgt) if not {text_key(s), text_key(t)} & held_out]
        rejects_left_out = len(rejects) - len(kept)
        if not kept:
            log.warning("--ablation rejects: the dataset has no rejected pair with both sides (apart from held-out texts); that ablation is left out")
        else:
            variants["finetuned_with_rejects"] = Pairs(
                "kept+rejects", train_pairs.src + [s for s, _ in kept], train_pairs.tgt + [t for _, t in kept]
            )
    if not eval_sets:
        raise EvaluationError(
            f"{dataset.name}: no evaluation set with at least {MIN_EVAL_PAIRS} pairs: the dataset's test split is "
            f"{'empty' if not len(dataset.pairs('test')) else 'too small once pairs seen in training are removed'}. "
            f"Give held-out bitext with --eval FILE (or --eval udhr), or publish with a larger test split (--splits test=N)"
        )

    from synth.evaluate import student as students

    device = students.pick_device(config.device)
    progress.stage(f"loading the student ({config.student}) on {device}")
    base = students.load_model(config.student, device, config.max_seq_length)
    teacher = None
    if config.objective == "distill" and config.teacher:
        teacher = students.load_model(config.teacher, device, config.max_seq_length)

    timing = {"read_and_load": round(time.perf_counter() - started, 2)}
    mark = time.perf_counter()
    progress.stage("scoring the untouched student and Procrustes")
    score = _scorer(dataset.kind)
    embedded = {pairs.name: (students.encode(base, pairs.src), students.encode(base, pairs.tgt)) for pairs in eval_sets}
    methods = {pairs.name: {"base": score(*embedded[pairs.name], pairs)} for pairs in eval_sets}
    rotation = metrics.procrustes(students.encode(base, train_pairs.src), students.encode(base, train_pairs.tgt))
    for pairs in eval_sets:
        src, tgt = embedded[pairs.name]
        methods[pairs.name]["procrustes"] = score(metrics.normalized(src @ rotation), tgt, pairs)

    timing["base_and_procrustes"] = round(time.perf_counter() - mark, 2)
    training, scoring = {}, 0.0
    for name, pairs in variants.items():
        progress.stage(f"training {name} on {len(pairs)} pairs")
        model = base if name == "finetuned" and len(variants) == 1 else students.load_model(config.student, device, config.max_seq_length)
        training[name] = students.train(
            model, pairs, kind=dataset.kind, objective=config.objective, epochs=config.epochs, batch_size=config.batch_size,
            learning_rate=config.learning_rate, seed=config.seed, teacher=teacher or (base if model is not base else None),
            on_step=progress.step,
        )
        progress.stage(f"scoring {name}")
        mark = time.perf_counter()
        for evaluation in eval_sets:
            methods[evaluation.name][name] = score(students.encode(model, evaluation.src), students.encode(model, evaluation.tgt), evaluation)
        scoring += time.perf_counter() - mark
        if name == "finetuned" and config.save_model:
            model.save(str(config.save_model))
        if model is not base:
            del model

    results = {
        "version": RESULTS_VERSION,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "kind": dataset.kind,
        "lang": dataset.lang,
        "pivot_lang": dataset.pivot,
        "student": config.student,
        "objective": config.objective,
        "teacher": (config.teacher or config.student) if config.objective == "distill" else None,
        "settings": {
            "epochs": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "max_seq_length": config.max_seq_length, "seed": config.seed, "device": device,
        },
        "train_pairs": len(train_pairs),
        **({"rejects_added": len(variants["finetuned_with_rejects"]) - len(train_pairs), "rejects_left_out": rejects_left_out}
           if "finetuned_with_rejects" in variants else {}),
        "training": training,
        "seconds": round(time.perf_counter() - started, 1),
        # Where the time went: reading (and downloading) and loading the student, the base and Procrustes scores, training, scoring the students.
        "timing": {**timing, "training": round(sum(t["seconds"] for t in training.values()), 2), "scoring": round(scoring, 2)},
        "eval": [
            {"name": pairs.name, "pairs": len(pairs), "excluded_overlap": pairs.excluded_overlap,
             "excluded_duplicates": pairs.excluded_duplicates, **methods[pairs.name]}
            for pairs in eval_sets
        ],
    }
    return results, dataset


def _scorer(kind: str) -> Callable[[np.ndarray, np.ndarray, Pairs], dict]:
    if kind != QUERIES:
        return lambda src, tgt, pairs: metrics.bitext_retrieval(src, tgt)

    def queries(src: np.ndarray, tgt: np.ndarray, pairs: Pairs) -> dict:
        # Several queries may share a passage: retrieve among the distinct passages.
        rows = {}
        truth = np.array([rows.setdefault(text, len(rows)) for text in pairs.src])
        first = [pairs.src.index(text) for text in rows]
        return metrics.query_retrieval(src[first], tgt, truth)

    return queries


def shuffled(pairs: Pairs, seed: int) -> Pairs:
    """The same texts, each low-resource side paired with another pair's pivot side (a derangement)."""
    order = list(range(len(pairs)))
    rng = random.Random(seed)
    rng.shuffle(order)
    rotated = order[1:] + order[:1]  # every pair moves: i goes to where the next shuffled one was
    tgt = [None] * len(pairs)
    for source, target in zip(order, rotated):
        tgt[source] = pairs.tgt[target]
    return Pairs("shuffled", list(pairs.src), tgt)
