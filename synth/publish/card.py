"""The dataset card (README.md): Hub YAML metadata plus a body that says how the data was made."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

from huggingface_hub import DatasetCardData

from synth.languages import UnknownLanguageError, language_name, normalize_language

TRAIN_GLOB = "data/train-*.parquet"
REJECTS_GLOB = "rejects/*.parquet"

# The Hub's size_categories buckets, as (exclusive upper bound, label).
_SIZE_BUCKETS = [
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]

_COLUMNS = [
    ("id", "sha256 of the normalised `text`, 16 hex digits"),
    ("text", "the authentic sentence in `lang` (human-written; the target side)"),
    ("translation", "the synthetic translation into `pivot_lang`, written by `model`"),
    ("lang / pivot_lang", "language codes of `text` and `translation`"),
    ("synthetic_side", "which column is machine-written: always `translation`"),
    ("source / line", "the corpus file `text` came from and its 1-based line or row there"),
    ("consistency", "cosine similarity of the two sides' embeddings"),
    ("margin", "ratio margin of that similarity within the batch"),
    ("partner_rank", "the worse of the two retrieval ranks of the pair (1 = best)"),
    ("lid_lang / lid_score / lid_detector / lid_status", "language ID of `translation`"),
    ("text_lid_*", "the same for `text`"),
    ("model / prompt_version / generation_params", "how `translation` was generated"),
    ("prompt_tokens / completion_tokens", "tokens of that generation request"),
    ("raw_answer", "the model's answer before parsing"),
]


@dataclass
class CardInfo:
    lang: str
    pivot_lang: str
    model: str
    generation_params: dict
    prompt_versions: dict[str, str]
    embedder: str
    lid_detectors: dict[str, str | None]  # lang -> chosen detector, or None: not verified
    thresholds: dict[str, float | int | None]
    license: str = "cc-by-4.0"
    pretty_name: str | None = None
    command: str | None = None
    source_files: list[str] = field(default_factory=list)


def size_category(rows: int) -> str:
    for bound, label in _SIZE_BUCKETS:
        if rows < bound:
            return label
    return "n>1T"


def hub_language_code(code: str) -> str:
    """ISO 639-1 where one exists, else 639-3: what the Hub's `language:` field expects."""
    try:
        return normalize_language(code)
    except UnknownLanguageError:
        return code


def render_card(
    info: CardInfo,
    stats: dict,
    kept_rows: int,
    rejected_rows: int,
    train_files: Sequence[str | PurePath],
    reject_files: Sequence[str | PurePath],
) -> str:
    """The README.md text. `train_files` / `reject_files` are names relative to the dataset dir."""
    name, pivot = language_name(info.lang), language_name(info.pivot_lang)
    pretty_name = info.pretty_name or f"{name}-{pivot} back-translation pairs (synthetic {pivot} side)"
    sections = [
        _front_matter(info, pretty_name, kept_rows),
        f"# {pretty_name}",
        _summary(info, name, pivot, kept_rows, rejected_rows),
        _files_section(train_files, reject_files),
        _columns_section(),
        _funnel_section(stats.get("funnel") or {}),
        _thresholds_section(info.thresholds),
        _lid_section(info, stats.get("lid") or {}),
        _models_section(info, stats.get("generation") or {}),
        _prompts_section(info.prompt_versions),
        _run_section(info, stats.get("read") or {}, stats.get("run") or {}),
        _loading_section(),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(info: CardInfo, pretty_name: str, kept_rows: int) -> str:
    languages = list(dict.fromkeys(hub_language_code(c) for c in (info.lang, info.pivot_lang)))
    data = DatasetCardData(
        language=languages,
        license=info.license,
        pretty_name=pretty_name,
        size_categories=[size_category(kept_rows)],
        task_categories=["translation", "sentence-similarity"],
        tags=["synthetic", "back-translation", "low-resource"],
        # Only the kept pairs form the default config; rejects are opt-in via load_dataset(.., "rejects").
        configs=[
            {"config_name": "default", "data_files": [{"split": "train", "path": TRAIN_GLOB}]},
            {"config_name": "rejects", "data_files": [{"split": "train", "path": REJECTS_GLOB}]},
        ],
    )
    return f"---\n{data.to_yaml()}\n---"


def _summary(info: CardInfo, name: str, pivot: str, kept_rows: int, rejected_rows: int) -> str:
    return (
        f"Sentence pairs for training translation into **{name}** (`{info.lang}`), made by "
        f"back-translation: each `text` is an authentic {name} sentence and the target side; "
        f"each `translation` is a **synthetic** {pivot} (`{info.pivot_lang}`) translation of it, "
        f"written by `{info.model}`. The `synthetic_side` column says which side is "
        f"machine-written (always `translation`), so that the two are never mistaken for one "
        f"another when the data is mixed with human translations.\n\n"
        f"- kept pairs: {kept_rows:,} (default config)\n"
        f"- rejected pairs: {rejected_rows:,} (config `rejects`, with `reject_stage` and "
        f"`reject_reason`)"
    )


def _files_section(train_files: Sequence, reject_files: Sequence) -> str:
    listed = [f"- `{PurePath(f).as_posix()}`" for f in [*train_files, *reject_files]]
    return "## Files\n\n" + "\n".join(listed) + "\n- `stats.json`: the run's statistics"


def _columns_section() -> str:
    rows = [f"| `{name}` | {text} |" for name, text in _COLUMNS]
    return (
        "## Columns\n\n| column | meaning |\n|---|---|\n"
        + "\n".join(rows)
        + "\n\nThe `rejects` config has the same columns plus `reject_stage` (the filter that "
        "dropped the pair) and `reject_reason`."
    )


def _funnel_section(funnel: dict) -> str:
    if not funnel:
        return ""
    parts = ["## Filtering funnel"]
    for lang, steps in funnel.items():
        rows = [
            f"| {_cell(s.get('step', ''))} | {s.get('in', '')} | {s.get('out', '')} "
            f"| {_cell(_dropped(s.get('dropped') or {}))} |"
            for s in steps
        ]
        parts.append(
            f"### {language_name(lang)} (`{lang}`)\n\n| step | in | out | dropped |\n|---|---:|---:|---|\n"
            + "\n".join(rows)
        )
    return "\n\n".join(parts)


def _dropped(reasons: dict) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in reasons.items()) or "-"


def _thresholds_section(thresholds: dict) -> str:
    if not thresholds:
        return ""
    rows = [
        f"| `{name}` | {'off' if value is None else value} |" for name, value in thresholds.items()
    ]
    return "## Thresholds\n\n| threshold | value |\n|---|---|\n" + "\n".join(rows)


def _lid_section(info: CardInfo, lid_stats: dict) -> str:
    columns = {info.lang: "text", info.pivot_lang: "translation"}
    lines = []
    for lang, detector in info.lid_detectors.items():
        label = f"{language_name(lang)} (`{lang}`)"
        if detector:
            lines.append(f"- {label}: `{detector}`")
        else:
            column = f" in `{columns[lang]}`" if lang in columns else ""
            lines.append(
                f"- {label}: **unverified**. No available language-ID detector covers "
                f"{language_name(lang)}, so its language{column} was not checked."
            )
    unverified = {side: n for side, n in (lid_stats.get("unverified") or {}).items() if n}
    if unverified:
        counts = ", ".join(f"`{side}`: {n:,}" for side, n in unverified.items())
        lines.append(f"\nRows whose language could not be verified, per side: {counts}.")
    if not lines:
        return ""
    return "## Language identification\n\n" + "\n".join(lines)


def _models_section(info: CardInfo, generation: dict) -> str:
    params = json.dumps(info.generation_params, ensure_ascii=False, sort_keys=True)
    lines = [
        f"- generator: `{info.model}`, parameters `{params}`",
        f"- embedder (consistency and margin): `{info.embedder}`",
    ]
    labels = {
        "requests": "generation requests",
        "cache_hits": "answered from cache",
        "failed": "failed requests",
        "prompt_tokens": "prompt tokens",
        "completion_tokens": "completion tokens",
    }
    lines += [f"- {label}: {generation[key]:,}" for key, label in labels.items() if key in generation]
    return "## Models\n\n" + "\n".join(lines)


def _prompts_section(prompt_versions: dict[str, str]) -> str:
    if not prompt_versions:
        return ""
    rows = [f"| `{name}` | `{version}` |" for name, version in prompt_versions.items()]
    return "## Prompt versions\n\n| prompt | version |\n|---|---|\n" + "\n".join(rows)


def _run_section(info: CardInfo, read: dict, run: dict) -> str:
    lines = []
    if info.source_files:
        lines.append("Source files:\n\n" + "\n".join(f"- `{f}`" for f in info.source_files))
    reading = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in read.items() if isinstance(v, int))
    if reading:
        lines.append(f"Reading: {reading}.")
    if run.get("started") and run.get("finished"):
        took = f" ({run['seconds']:.1f} s)" if isinstance(run.get("seconds"), int | float) else ""
        lines.append(f"Run: {run['started']} to {run['finished']}{took}.")
    if info.command:
        lines.append(f"Made with:\n\n```bash\n{info.command}\n```")
    return "## How it was made\n\n" + "\n\n".join(lines) if lines else ""


def _loading_section() -> str:
    return (
        "## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
        'pairs = load_dataset("path/to/this/folder")  # or the Hub repo id\n'
        'rejects = load_dataset("path/to/this/folder", "rejects")\n```'
    )


def _cell(text: str) -> str:
    """Escape what would break a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
