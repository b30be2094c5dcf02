"""The card's plots (PNG): the funnel per language and histograms of the scores with their thresholds.

Drawn with matplotlib's object API on the Agg canvas (no display, no pyplot global state, safe in
worker threads). The same data gives the same bytes, so a republish changes no plot needlessly.
"""

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from synth.languages import language_name
from synth.atomic import atomic_write_bytes

PLOTS_FOLDER = "plots"
KEPT_COLOUR, DROPPED_COLOUR, THRESHOLD_COLOUR = "#2b6cb0", "#e07b67", "#222222"
_MAX_REASONS = 3


def write_plots(
    out_dir: Path,
    funnel: dict[str, list[dict]],
    scores: dict[str, dict[str, Sequence[float]]],
    thresholds: dict[str, float | int | None],
    score_columns: dict[str, str | None],
) -> dict[str, str]:
    """Writes out_dir/plots/{funnel,scores}.png (those it has data for, removing the others);
    returns {kind: path relative to out_dir}."""
    figures = {}
    if any(funnel.values()):
        figures["funnel"] = funnel_figure(funnel)
    if any(len(values) for sides in scores.values() for values in sides.values()):
        # A threshold given otherwise than as a number (a percentile, resolved per chunk) is not drawn.
        drawn = {c: thresholds.get(t) for c, t in score_columns.items() if isinstance(thresholds.get(t), int | float)}
        figures["scores"] = scores_figure(scores, drawn)
    written = {}
    for kind, figure in figures.items():
        path = out_dir / PLOTS_FOLDER / f"{kind}.png"
        atomic_write_bytes(path, _png(figure))
        written[kind] = path.relative_to(out_dir).as_posix()
    for kind in ("funnel", "scores"):
        if kind not in figures:
            (out_dir / PLOTS_FOLDER / f"{kind}.png").unlink(missing_ok=True)
    return written


def funnel_figure(funnel: dict[str, list[dict]]) -> Figure:
    """Per language, a bar per step: the rows it passed on, and the rows it dropped (top reasons)."""
    languages = [lang for lang, steps in funnel.items() if steps]
    height = sum(0.55 * len(funnel[lang]) + 1.1 for lang in languages)
    figure = Figure(figsize=(10, max(height, 2.5)), layout="constrained")
    axes = figure.subplots(len(languages), 1, squeeze=False)[:, 0]
    for ax, lang in zip(axes, languages):
        steps = funnel[lang]
        names = [s["step"] for s in steps]
        rows_in = np.array([s["in"] for s in steps])
        rows_out = np.array([s["out"] for s in steps])
        y = np.arange(len(steps))
        ax.barh(y, rows_out, color=KEPT_COLOUR, label="passed on")
        ax.barh(y, rows_in - rows_out, left=rows_out, color=DROPPED_COLOUR, label="dropped")
        widest = max(rows_in.max(initial=0), 1)
        for i, step in enumerate(steps):
            ax.text(rows_in[i] + widest * 0.01, i, _step_label(step), va="center", fontsize=9)
        ax.set_yticks(y, names)
        ax.invert_yaxis()  # the first step on top
        ax.set_xlim(0, widest * 1.75)  # room for the labels on the right
        ax.set_xlabel("rows")
        ax.set_title(f"{language_name(lang)} ({lang}): rows in and out of each step", loc="left", fontsize=11)
        ax.legend(loc="lower right", fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    return figure


def _step_label(step: dict) -> str:
    label = f"{step['out']:,} of {step['in']:,}"
    reasons = sorted((step.get("dropped") or {}).items(), key=lambda item: -item[1])
    if reasons:
        shown = ", ".join(f"{reason} {count:,}" for reason, count in reasons[:_MAX_REASONS])
        more = f", +{len(reasons) - _MAX_REASONS} more" if len(reasons) > _MAX_REASONS else ""
        label += f"  (dropped: {shown}{more})"
    return label


def scores_figure(scores: dict[str, dict[str, Sequence[float]]], thresholds: dict[str, float | None]) -> Figure:
    """A histogram per score: kept and rejected rows on the same bins, the threshold dashed."""
    columns = [c for c, sides in scores.items() if any(len(values) for values in sides.values())]
    figure = Figure(figsize=(5.2 * len(columns), 3.8), layout="constrained")
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns):
        kept, rejected = (np.asarray(scores[column][side], dtype=float) for side in ("kept", "rejected"))
        threshold = thresholds.get(column)
        every = np.concatenate([kept, rejected, [threshold] if threshold is not None else []])
        bins = _bins(every)
        for values, colour, name in ((kept, KEPT_COLOUR, "kept"), (rejected, DROPPED_COLOUR, "rejected")):
            if values.size:
                ax.hist(values, bins=bins, rwidth=0.9, color=colour, alpha=0.65, label=f"{name} ({values.size:,})")
        if threshold is not None:
            ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2, label=f"threshold {threshold:g}")
        ax.set_title(column, loc="left", fontsize=11)
        ax.set_xlabel(column)
        ax.set_ylabel("rows")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    return figure


def _bins(values: np.ndarray) -> np.ndarray:
    """One bin per value for small integer scores (ranks), else 30 even bins."""
    if values.size and np.all(values == np.round(values)) and values.max() - values.min() <= 60:
        return np.arange(values.min() - 0.5, values.max() + 1.5)
    return np.histogram_bin_edges(values, bins=30)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    # Fast zlib level: the plots are small either way, and every publish draws them.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None}, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()
