"""What an evaluation leaves: `eval/results.json` (the contract below), `eval/retrieval.png`, and
an "Evaluation" section in the dataset card.

results.json (version 1):
    {"version": 1, "dataset": ..., "dataset_fingerprint": ..., "kind": "bitext" | "queries",
     "lang": "zu", "pivot_lang": "en", "student": ..., "objective": "ranking" | "distill",
     "teacher": ... | null, "settings": {...}, "train_pairs": 120, "seconds": 95.2,
     "training": {"finetuned": {"steps", "seconds", "loss", "pairs_per_second"}, ...},
     "eval": [{"name": "test", "pairs": 27, "excluded_overlap": 0, "excluded_duplicates": 0,
               "base": {...}, "procrustes": {...}, "finetuned": {...},
               "finetuned_with_rejects": {...}, "finetuned_shuffled": {...}}]}
Bitext metrics: accuracy_src2tgt, accuracy_tgt2src (top-1, `src` the low-resource side), mrr
(both directions). Queries: recall_at_10, mrr_at_10 (query -> passage).
"""

import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from synth.config import EvaluateConfig
from synth.evaluate.dataset import QUERIES, PublishedDataset
from synth.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

METHODS = ("base", "procrustes", "finetuned", "finetuned_with_rejects", "finetuned_shuffled")
METHOD_LABELS = {
    "base": "base (untouched)", "procrustes": "Procrustes", "finetuned": "fine-tuned",
    "finetuned_with_rejects": "fine-tuned on kept + rejected", "finetuned_shuffled": "fine-tuned on shuffled pairs",
}
BEGIN, END = "<!-- synth:evaluation -->", "<!-- /synth:evaluation -->"


def metric_columns(kind: str) -> list[tuple[str, str]]:
    if kind == QUERIES:
        return [("recall_at_10", "recall@10"), ("mrr_at_10", "MRR@10")]
    return [("accuracy_src2tgt", "top-1 src→tgt"), ("accuracy_tgt2src", "top-1 tgt→src"), ("mrr", "MRR")]


def write(results: dict, config: EvaluateConfig, dataset: PublishedDataset) -> dict[str, Path]:
    out = config.results_dir
    written = {"results": out / "results.json", "plot": out / "retrieval.png"}
    atomic_write_json(written["results"], results)
    atomic_write_bytes(written["plot"], plot(results))
    if config.card and config.is_local:
        card = dataset.folder / "README.md"
        relative = out.resolve().relative_to(dataset.folder.resolve()) if out.resolve().is_relative_to(dataset.folder.resolve()) else None
        atomic_write_text(card, with_section(card.read_text(encoding="utf-8"), section(results, relative)))
        written["card"] = card
    return written


def table(results: dict) -> str:
    """The results as a markdown table: a row per evaluation set and method."""
    columns = metric_columns(results["kind"])
    lines = ["| evaluation set | pairs | method | " + " | ".join(label for _, label in columns) + " |",
             "|---|---:|---|" + "---:|" * len(columns)]
    for evaluation in results["eval"]:
        for method in METHODS:
            if method in evaluation:
                cells = " | ".join(f"{evaluation[method][key]:.3f}" for key, _ in columns)
                lines.append(f"| {evaluation['name']} | {evaluation['pairs']} | {METHOD_LABELS[method]} | {cells} |")
    return "\n".join(lines)


def section(results: dict, folder: Path | None) -> str:
    s = results["settings"]
    training = results["training"]
    excluded = "; ".join(
        f"{e['name']}: {e['excluded_overlap']} sharing a text with the training pairs, {e['excluded_duplicates']} repeats"
        for e in results["eval"]
    )
    trained = "; ".join(f"{name}: {t['steps']} steps in {t['seconds']:.0f} s ({t['pairs_per_second']:.0f} pairs/s)" for name, t in training.items())
    objective = (
        "the in-batch ranking loss in both directions (translation ranking)" if results["objective"] == "ranking"
        else f"multilingual knowledge distillation from {results['teacher']}"
    )
    if results["kind"] == QUERIES:
        objective = "the in-batch ranking loss, query to passage" if results["objective"] == "ranking" else objective
        metric = "recall@10 and MRR@10 of each query's passage among the set's passages"
    else:
        metric = (
            f"top-1 accuracy of bitext retrieval in both directions ({results['lang']}→{results['pivot_lang']} is src→tgt) "
            "and the mean reciprocal rank over both"
        )
    plot_line = f"\n\n![retrieval]({(folder / 'retrieval.png').as_posix()})" if folder is not None else ""
    return (
        f"{BEGIN}\n## Evaluation\n\n"
        f"What these pairs are worth downstream: the student `{results['student']}` trained on the `pairs` train split "
        f"({results['train_pairs']} pairs) with {objective}, {s['epochs']} epoch{'s' * (s['epochs'] != 1)}, batch {s['batch_size']}, learning rate "
        f"{s['learning_rate']}, max length {s['max_seq_length']}, seed {s['seed']}, on the {s['device'].upper()} "
        f"({trained}). Methods: the student untouched, an orthogonal Procrustes map fitted on the training pairs' "
        f"embeddings, and the fine-tuned student. Metrics: {metric}. Every evaluation pair that shares a text with "
        f"anything trained on was removed first ({excluded}).\n\n"
        f"{table(results)}{plot_line}\n\n"
        f"Made with `synth evaluate` in {results['seconds']:.0f} s; the figures are in `eval/results.json`.\n{END}"
    )


def with_section(card: str, block: str) -> str:
    """The card with its Evaluation section replaced (or appended)."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if pattern.search(card):
        return pattern.sub(lambda _: block, card)
    return card.rstrip("\n") + "\n\n" + block + "\n"


def plot(results: dict) -> bytes:
    """Grouped bars: a panel per evaluation set, a group per metric, a bar per method."""
    import io

    import numpy as np

    columns = metric_columns(results["kind"])
    sets = results["eval"]
    figure = Figure(figsize=(max(5.0, 4.2 * len(sets)), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(sets), squeeze=False)[0]
    colours = {"base": "#9aa5b1", "procrustes": "#e0a458", "finetuned": "#2b6cb0", "finetuned_with_rejects": "#e07b67", "finetuned_shuffled": "#6b7280"}
    for ax, evaluation in zip(axes, sets):
        methods = [m for m in METHODS if m in evaluation]
        width = 0.8 / len(methods)
        x = np.arange(len(columns))
        for i, method in enumerate(methods):
            values = [evaluation[method][key] for key, _ in columns]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=METHOD_LABELS[method], color=colours[method])
        ax.set_xticks(x, [label for _, label in columns], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{evaluation['name']} ({evaluation['pairs']} pairs)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score")
    axes[-1].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"{results['lang']}–{results['pivot_lang']} retrieval, student {results['student'].split('/')[-1]}", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
