"""The dataset card (README.md): Hub YAML metadata plus a body that says how the data was made.

The task describes itself through `CardInfo` (summary, columns, categories, which scores it
plots); this module lays the card out the same way for every task.
"""

import json
from dataclasses import dataclass, field

from huggingface_hub import DatasetCardData

from synth.languages import UnknownLanguageError, language_name, normalize_language

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


@dataclass
class CardInfo:
    lang: str                                # language of the authentic side
    pivot_lang: str                          # language of the synthetic side (the translation; the queries)
    model: str
    generation_params: dict
    prompt_versions: dict[str, str]
    embedder: str
    lid_detectors: dict[str, str | None]     # lang -> chosen detector, or None: not verified
    thresholds: dict[str, float | int | None]
    license: str = "cc-by-4.0"
    pretty_name: str | None = None
    command: str | None = None
    source_files: list[str] = field(default_factory=list)
    # What the task says about itself.
    task: str = "backtranslate"
    summary: str = ""                        # markdown: what a row is and which side is synthetic
    columns: list[tuple[str, str]] = field(default_factory=list)  # (column(s), meaning) of the default config
    task_categories: list[str] = field(default_factory=list)      # Hub task categories
    tags: list[str] = field(default_factory=lambda: ["synthetic"])
    lid_columns: dict[str, str] = field(default_factory=dict)     # lang -> the column checked against it
    score_columns: dict[str, str | None] = field(default_factory=dict)  # plotted score -> its threshold in `thresholds`
    training: str = ""                       # markdown: how the `pairs` config is meant to be trained on
    repo_id: str | None = None               # the Hub repo the folder is pushed to (for the loading examples)
    # Filled in by the job's publish (synth.job), the same for every task:
    source_license: str | None = None        # the source corpus's licence (SourceLicense), None: unknown
    source_name: str | None = None           # where that licence was read
    generator: str = ""                      # how the model was run: "an OpenAI-compatible endpoint", "in-process (transformers)"
    prompt_texts: dict[str, str] = field(default_factory=dict)  # prompt name -> the template file's text
    job_file: str | None = None              # the effective job file (YAML, synth.jobfile `card_job`)
    synth_version: str = ""


@dataclass
class PublishedConfig:
    """One config of the published folder: `folder/{split}-0000i-of-0000n.parquet` per split."""

    name: str
    folder: str
    description: str
    rows: dict[str, int]                     # every split, empty ones too
    files: dict[str, list[str]]              # non-empty splits only, paths relative to the dataset folder

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def data_files(self) -> list[dict]:
        """The card's `data_files`: only splits with rows (`datasets` cannot load an empty split),
        each with the exact files of this version (no glob: while a republish is under way the
        folder also holds the other version's shards, and the card must not read both)."""
        return [{"split": split, "path": list(files)} for split, files in self.files.items()]


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
    configs: list[PublishedConfig],
    plots: dict[str, str] | None = None,
    split_rule: str = "",
) -> str:
    """The README.md text. `configs[0]` is the default config (the kept rows); `plots` maps a
    plot's kind ("funnel", "scores") to its path relative to the dataset folder; `split_rule`
    says how records were split."""
    plots = plots or {}
    name, other = language_name(info.lang), language_name(info.pivot_lang)
    pretty_name = info.pretty_name or f"{name} synthetic {info.task} data ({other} side synthetic)"
    declared = [config for config in configs if config.files]
    sections = [
        _front_matter(info, pretty_name, configs[0].total_rows, declared),
        f"# {pretty_name}",
        info.summary,
        _counts(configs),
        _configs_section(configs, split_rule),
        _training_section(info, configs),
        _columns_section(info),
        _funnel_section(stats.get("funnel") or {}, plots.get("funnel")),
        _thresholds_section(info.thresholds, plots.get("scores"), stats.get("funnel") or {}),
        _decisions_section(stats),
        _lid_section(info, stats.get("lid") or {}),
        _models_section(info, stats.get("generation") or {}),
        _prompts_section(info.prompt_versions, info.prompt_texts),
        _made_section(info, stats.get("read") or {}),
        _license_section(info),
        _limitations_section(info, stats),
        _files_section(configs, plots),
        _loading_section(info, declared),
        _citation_section(info, pretty_name),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(info: CardInfo, pretty_name: str, kept_rows: int, declared: list[PublishedConfig]) -> str:
    languages = list(dict.fromkeys(hub_language_code(c) for c in (info.lang, info.pivot_lang)))
    data = DatasetCardData(
        language=languages,
        license=info.license or "unknown",
        pretty_name=pretty_name,
        size_categories=[size_category(kept_rows)],
        task_categories=info.task_categories or None,
        tags=info.tags,
        configs=[{"config_name": c.name, "data_files": c.data_files()} for c in declared],
    )
    return f"---\n{data.to_yaml()}\n---"


def _counts(configs: list[PublishedConfig]) -> str:
    default, rejects = configs[0], _named(configs, "rejects")
    lines = [f"- kept rows: {default.total_rows:,} (config `{default.name}`)"]
    if rejects is not None:
        lines.append(
            f"- rejected rows: {rejects.total_rows:,} (config `rejects`, with `reject_stage` and `reject_reason`)"
        )
    return "\n".join(lines)


def _configs_section(configs: list[PublishedConfig], split_rule: str) -> str:
    splits = list(dict.fromkeys(split for c in configs for split in c.rows))
    header = "| config | holds | " + " | ".join(splits) + " |\n|---|---|" + "---:|" * len(splits)
    rows = [
        f"| `{c.name}` | {_cell(c.description)} | "
        + " | ".join(f"{c.rows[s]:,}" if s in c.rows else "" for s in splits)
        + " |"
        for c in configs
    ]
    notes = [
        "A split with no rows is not declared in the metadata above and has no files: `datasets` "
        "cannot load an empty split (`load_dataset` would fail), so with few records a small "
        "held-out fraction can be absent."
    ]
    if any(not c.files for c in configs):
        empty = ", ".join(f"`{c.name}`" for c in configs if not c.files)
        notes.append(f"Configs without any row (not declared, no files): {empty}.")
    if split_rule:
        notes.insert(0, split_rule)
    return "## Configs and splits\n\n" + header + "\n" + "\n".join(rows) + "\n\n" + "\n\n".join(notes)


def _training_section(info: CardInfo, configs: list[PublishedConfig]) -> str:
    pairs = _named(configs, "pairs")
    if pairs is None or not pairs.files:
        return ""
    source = info.repo_id or "path/to/this/folder"
    code = (
        "```python\nfrom datasets import load_dataset\n"
        "from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer\n"
        "from sentence_transformers.losses import MultipleNegativesRankingLoss\n\n"
        f'pairs = load_dataset("{source}", "pairs")\n'
        'model = SentenceTransformer("sentence-transformers/LaBSE")\n'
        "trainer = SentenceTransformerTrainer(\n"
        '    model=model, train_dataset=pairs["train"], loss=MultipleNegativesRankingLoss(model)\n'
        ")\ntrainer.train()\n```"
    )
    return "## Training\n\n" + (info.training + "\n\n" if info.training else "") + code


def _columns_section(info: CardInfo) -> str:
    if not info.columns:
        return ""
    rows = [f"| `{name}` | {_cell(text)} |" for name, text in info.columns]
    return (
        "## Columns\n\nThe default config:\n\n| column | meaning |\n|---|---|\n"
        + "\n".join(rows)
        + "\n\nThe `rejects` config has the same columns plus `reject_stage` (the filter that "
        "dropped the row) and `reject_reason`."
    )


def _funnel_section(funnel: dict, plot: str | None) -> str:
    if not funnel:
        return ""
    parts = ["## Filtering funnel"]
    if plot:
        parts.append(f"![Rows in and out of each step, per language]({plot})")
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


def _decisions_section(stats: dict) -> str:
    """The embedding step's decision per language and what it stood on, and a high reject rate
    said out loud (synth.filters.report)."""
    from synth.filters.report import warning_lines

    parts = []
    warnings = (stats.get("warnings") or {}).get("high_reject_rate") or {}
    if warnings:
        parts.append("**Warning: a high reject rate.** " + " ".join(warning_lines(warnings)))
    for lang, d in (stats.get("embedding") or {}).items():
        span = lambda r: "-" if not r else (f"{r['min']:g}" if r["min"] == r["max"] else f"{r['min']:g} to {r['max']:g}")  # noqa: E731
        rows = [
            ("rule", d["rule"]),
            ("pairs in / kept", f"{d['pairs_in']} / {d['pairs_kept']}"),
            ("scored with margins (chunks of 8+ pairs)", d["scored"]),
            ("judged on the cosine alone (smaller chunks)", d["small_chunk_pairs"]),
            ("borderline, left to the round trip", d["borderline"]),
            ("dropped", _dropped(d["dropped"])),
        ]
        if d.get("round_trip"):
            rt = d["round_trip"]
            rows.append(("round trip: pairs in / kept", f"{rt['in']} / {rt['kept']} ({_dropped(rt['dropped'])})"))
        rows += [
            ("null distribution: mean similarity of unrelated pairs, per chunk", span(d["null_mean"])),
            ("null distribution: its standard deviation, per chunk", span(d["null_sd"])),
            ("median null_z of the kept pairs, per chunk", span(d["good_null_z_median"])),
            ("chance level (best of n unrelated pairs), per chunk", span(d["chance_null_z"])),
        ]
        parts.append(
            f"### Embedding step: {language_name(lang)} (`{lang}`)\n\n| | |\n|---|---|\n"
            + "\n".join(f"| {_cell(name)} | {_cell(value)} |" for name, value in rows)
        )
    return "## Filter decisions\n\n" + "\n\n".join(parts) if parts else ""


# Per-chunk statistics of the embedding step, shown by `_decisions_section` rather than as thresholds.
_STATISTICS = ("scored[", "borderline[", "small_chunk_pairs[", "null_mean[", "null_sd[", "kept_null_z_median[", "round_trip_above_null_z")


def _thresholds_section(thresholds: dict, plot: str | None, funnel: dict) -> str:
    if not thresholds:
        return ""
    rows = [f"| `{name}` | {'off' if value is None else _cell(value)} |" for name, value in thresholds.items()]
    # Thresholds given as a percentile ('p5') resolve to a value per chunk: the range they took.
    for steps in funnel.values():
        for step in steps:
            for name, d in (step.get("derived") or {}).items():
                if name.startswith(_STATISTICS):
                    continue
                if name == "paragraphs":  # the heuristics' rule: which pairs were judged per sentence
                    rows.append(f"| `{step['step']}` rule | per sentence for {d.get('sum', 0):g} pairs of paragraphs (several sentences a side); OpusFilter's sentence rule for the other pairs |")
                    continue
                value = f"{d['min']:g}" if d["min"] == d["max"] else f"{d['min']:g} to {d['max']:g}"
                rows.append(f"| `{name}` (derived per chunk) | {value} over {d['batches']} chunk{'s' if d['batches'] != 1 else ''} |")
    text = "## Thresholds\n\n| threshold | value |\n|---|---|\n" + "\n".join(rows)
    if plot:
        text += (
            "\n\nScores of the kept and the rejected rows (rows dropped before the embedding step "
            f"have no score), thresholds as dashed lines:\n\n![Score histograms]({plot})"
        )
    return text


def _lid_section(info: CardInfo, lid_stats: dict) -> str:
    if not info.lid_detectors:
        return "## Language identification\n\nOff (`--lid-detectors none`): no row's language was checked."
    lines = []
    for lang, detector in info.lid_detectors.items():
        label = f"{language_name(lang)} (`{lang}`)"
        if detector:
            lines.append(f"- {label}: `{detector}`")
        else:
            column = f" in `{info.lid_columns[lang]}`" if lang in info.lid_columns else ""
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
    if not info.model:  # nothing generated (a filtered corpus)
        return f"## Models\n\n- embedder (consistency and margin): `{info.embedder}`"
    params = json.dumps(info.generation_params, ensure_ascii=False, sort_keys=True)
    lines = [
        f"- generator: `{info.model}`" + (f", served by {info.generator}" if info.generator else "") + f", parameters `{params}`",
        f"- embedder (consistency and margin): `{info.embedder}`",
    ]
    labels = {
        "requests": "generation requests",
        "cache_hits": "answered from cache",
        "failed": "failed requests",
        "prompt_tokens": "prompt tokens",
        "completion_tokens": "completion tokens",
        "cost_usd": "generation cost in USD (at --price-input/--price-output per million tokens)",
    }
    lines += [f"- {label}: {generation[key]:,}" for key, label in labels.items() if key in generation]
    # Second requests after the filters (the queries' LLM relevance check), included in the figures above.
    for name, stage in (generation.get("stages") or {}).items():
        heard = ", ".join(f"{key} {value:,}" for key, value in stage.items() if key not in labels and key != "asked")
        spent = ", ".join(f"{labels[key]} {stage[key]:,}" for key in labels if key in stage)
        lines.append(f"- of which `{name}` (asked after the filters): {stage.get('asked', 0):,} rows asked ({heard}); {spent}")
    return "## Models\n\n" + "\n".join(lines)


def _prompts_section(prompt_versions: dict[str, str], prompt_texts: dict[str, str]) -> str:
    if not prompt_versions:
        return ""
    rows = [f"| `{name}` | `{version}` |" for name, version in prompt_versions.items()]
    text = "## Prompts\n\n| prompt | version |\n|---|---|\n" + "\n".join(rows)
    for name, template in prompt_texts.items():
        text += f"\n\nThe `{name}` template, as sent (`{{...}}` filled in per request):\n\n```toml\n{template.strip()}\n```"
    return text


def _made_section(info: CardInfo, read: dict) -> str:
    # Nothing that changes from run to run (times, this run's requests: see .synth/runs/): the same
    # data gives the same card, so pushing it again is a no-op. Nothing of the machine it was made
    # on either: file names, not paths; "an OpenAI-compatible endpoint", not its URL.
    lines = []
    if info.source_files:
        lines.append("Source files:\n\n" + "\n".join(f"- `{f}`" for f in info.source_files))
    reading = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in read.items() if isinstance(v, int))
    if reading:
        lines.append(f"Reading: {reading}.")
    if info.command and not info.job_file:
        lines.append(f"Made with:\n\n```bash\n{info.command}\n```")
    if info.job_file:
        version = f" {info.synth_version}" if info.synth_version else ""
        lines.append(
            f"The job, as a job file (`synth {info.task} --config job.yaml`; settings not listed are synth{version}'s "
            f"defaults; the output folder, the endpoint and the key's variable are the runner's own):\n\n```yaml\n{info.job_file.strip()}\n```"
        )
    return "## How it was made\n\n" + "\n\n".join(lines) if lines else ""


def _license_section(info: CardInfo) -> str:
    dataset = f"`{info.license}`" if info.license else "**not set** (`unknown`): set it with `--license` before sharing the data"
    if info.source_license:
        source = f"`{info.source_license}`" + (f" ({info.source_name})" if info.source_name else "")
    else:
        source = "unknown: no dataset card of the source says it"
    return (
        f"## Licence\n\n- this dataset: {dataset}\n- the source text: {source}\n\n"
        "The authentic side is the source's text and stays under its terms; the synthetic side was written by "
        f"`{info.model}`, whose terms of use may also apply." if info.model else
        f"## Licence\n\n- this dataset: {dataset}\n- the source text: {source}\n\nThe text is the source's and stays under its terms."
    )


def _limitations_section(info: CardInfo, stats: dict) -> str:
    name = language_name(info.lang)
    lines = []
    if info.model:
        lines.append(
            f"- **Synthetic side.** Every `{info.lid_columns.get(info.pivot_lang, 'generated')}` value was written by `{info.model}`, "
            "not by a person: it carries the model's errors and biases, and the filters only drop what they can see "
            "(wrong language, copies, loops, unrelated answers), not a fluent mistranslation."
        )
    unverified = [language_name(lang) for lang, detector in info.lid_detectors.items() if not detector]
    if not info.lid_detectors:
        lines.append("- **Language ID off.** No row's language was checked.")
    elif unverified:
        lines.append(
            f"- **Unverified language ID.** No available detector covers {', '.join(unverified)}: those sides were not "
            "checked for language, so text in a neighbouring language can have passed."
        )
    else:
        lines.append(
            f"- **Language ID is a statistical guess.** The detectors are least accurate on short texts and on "
            f"low-resource languages; {name} is covered by `{info.lid_detectors.get(info.lang)}`, with an unknown error rate here."
        )
    if not info.embedder or info.embedder.split()[0] == "none":
        lines.append("- **No embedding check.** Nothing verified that the two sides mean the same.")
    else:
        lines.append(
            f"- **Filter coverage.** The embedding checks use `{info.embedder}`, whose quality for {name} may be poor "
            "(docs/languages.md of synth has measurements): a bad pair can pass and a good one be dropped."
        )
    read = (stats.get("read") or {}).get("segments")
    if read:
        lines.append(f"- **Size and domain.** Made from {read:,} segments of the source files above; it covers their domain only.")
    return "## Limitations\n\n" + "\n".join(lines) if lines else ""


def _citation_section(info: CardInfo, pretty_name: str) -> str:
    key = f"synth_{info.task}_{info.lang}_{info.pivot_lang}".replace("-", "_")
    where = info.repo_id or "a dataset folder made with synth"
    version = f" {info.synth_version}" if info.synth_version else ""
    return (
        "## Citation\n\nIf you use this dataset, cite it and its source:\n\n```bibtex\n"
        f"@misc{{{key},\n  title = {{{pretty_name}}},\n  note = {{{where}; made with synth{version}"
        + (f", generator {info.model}" if info.model else "") + "},\n}\n```"
    )


@dataclass
class SourceLicense:
    license: str | None                      # a Hub licence id, None: unknown
    name: str | None = None                  # what the licence was read from


def source_license(paths) -> SourceLicense:
    """The licence of the source corpus: the bundled UDHR's (MIT, synth/data/udhr/README.md), or the
    `license:` of the dataset card (README.md with YAML front matter) of a Hugging Face dataset
    folder or of the folder a file is in. Several sources must agree; otherwise unknown."""
    from pathlib import Path

    from synth.data import UDHR_DIR

    found: set[tuple[str | None, str | None]] = set()
    for raw in paths:
        path = Path(str(raw)).expanduser()
        if "*" in str(raw) or "?" in str(raw):
            path = path.parent
        try:
            path = path.resolve()
        except OSError:
            return SourceLicense(None)
        if path == UDHR_DIR or UDHR_DIR in path.parents:
            found.add(("mit", "the UDHR extract of the npm package udhr@6.0.0, MIT"))
            continue
        folder = path if path.is_dir() else path.parent
        card = next((folder / name for name in ("README.md", "readme.md") if (folder / name).is_file()), None)
        license = _card_license(card) if card else None
        found.add((license, f"the source's dataset card ({card.parent.name}/README.md)" if license else None))
    if len(found) != 1:
        return SourceLicense(None)
    license, name = found.pop()
    return SourceLicense(license, name)


def _card_license(card) -> str | None:
    import yaml

    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError:
        return None
    value = data.get("license") if isinstance(data, dict) else None
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    return str(value) if value else None


def _files_section(configs: list[PublishedConfig], plots: dict[str, str]) -> str:
    lines = []
    for config in configs:
        for split, files in config.files.items():
            shards = f"{len(files)} shard" + ("s" if len(files) != 1 else "")
            lines.append(f"- `{config.folder}/{split}-*.parquet`: config `{config.name}`, split `{split}` ({shards})")
    lines += [f"- `{path}`: plot" for path in plots.values()]
    lines.append("- `stats.json`: the funnel, reading and generation counters, rows per config and split")
    return "## Files\n\n" + "\n".join(lines)


def _loading_section(info: CardInfo, declared: list[PublishedConfig]) -> str:
    source = info.repo_id or "path/to/this/folder"
    lines = [
        f'data = load_dataset("{source}")' if c.name == "default" else f'{c.name} = load_dataset("{source}", "{c.name}")'
        for c in declared
    ]
    return "## Loading\n\n```python\nfrom datasets import load_dataset\n\n" + "\n".join(lines) + "\n```"


def _named(configs: list[PublishedConfig], name: str) -> PublishedConfig | None:
    return next((c for c in configs if c.name == name), None)


def _cell(text: str) -> str:
    """Escape what would break a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
