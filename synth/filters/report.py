"""What a run's filters decided, said out loud: a high reject rate per language (with the top
reasons and the option that governs each), and the embedding step's decision and statistics per
language. Both are computed from the funnel of stats.json (synth.job `stats`), so a run, a
resumed run and a republish say the same, and the CLI, the Prefect flows and the card share them.
"""

from collections import Counter

# More than this share of a language's pairs dropped by the filters: the run ends with a warning.
HIGH_REJECT_SHARE = 0.25
TOP_REASONS = 3

# The option that governs each reject reason (its kind, before the colon), as the CLI spells it.
REASON_OPTIONS = {
    "empty_translation": "--max-tokens (an empty answer), the model",
    "generation_failed": "--request-timeout, --max-attempts, --max-answer-bytes",
    "refusal": "the model or --prompt-file (refusals and chatter)",
    "prompt_echo": "--max-prompt-echo",
    "truncation": "--truncation/--no-truncation, --max-tokens",
    "copy": "--max-copy-similarity, --max-lcs-ratio",
    "length": "--min-words, --max-words, --max-chars, --per-sentence/--whole-segment",
    "length_ratio": "--max-length-ratio",
    "repetition": "--max-repeats",
    "numerals": "--min-numeral-similarity",
    "terminal_punctuation": "--min-terminal-punctuation, --per-sentence/--whole-segment",
    "script": "--min-script-share, --script",
    "lid_mismatch": "--lid-min-score, --lid-detector",
    "lid_low_score": "--lid-min-score, --lid-detector",
    "low_consistency": "--min-cosine (a chunk under 8 pairs: a 0.80 floor unless --min-cosine is set)",
    "low_margin": "--min-margin",
    "null_z": "--min-null-z",
    "partner_rank": "--max-rank",
    "round_trip": "--round-trip, --round-trip-min-chrf",
    "duplicate": "--near-duplicate",
    "near_duplicate": "--near-duplicate",
}
# Steps that are not filters: their rows are not the language's pairs being judged.
NOT_FILTERS = ("read",)


def option_for(reason: str) -> str:
    return REASON_OPTIONS.get(reason.split(":", 1)[0], "see `synth backtranslate --help`")


def reject_warnings(funnel: dict[str, list[dict]], share: float = HIGH_REJECT_SHARE) -> dict[str, dict]:
    """Per language whose filters dropped more than `share` of the pairs they were given: how many
    came in and went out, the share dropped, and the top reasons with the step and option of each."""
    warnings = {}
    for lang, steps in funnel.items():
        steps = [step for step in steps if step.get("step") not in NOT_FILTERS]
        if not steps or not steps[0].get("in"):
            continue
        pairs_in, pairs_out = steps[0]["in"], steps[-1]["out"]
        dropped = 1 - pairs_out / pairs_in
        if dropped <= share:
            continue
        reasons = Counter()
        where = {}
        for step in steps:
            for reason, count in (step.get("dropped") or {}).items():
                reasons[reason] += count
                where.setdefault(reason, step["step"])
        warnings[lang] = {
            "in": pairs_in, "kept": pairs_out, "dropped_share": round(dropped, 4),
            "top_reasons": [
                {"reason": reason, "step": where[reason], "count": count, "option": option_for(reason)}
                for reason, count in reasons.most_common(TOP_REASONS)
            ],
        }
    return warnings


def warning_lines(warnings: dict[str, dict]) -> list[str]:
    """One line per language, for the terminal and the logs."""
    from synth.languages import language_name

    lines = []
    for lang, w in warnings.items():
        reasons = "; ".join(f"{r['reason']} {r['count']} ({r['step']}; {r['option']})" for r in w["top_reasons"])
        lines.append(
            f"{language_name(lang)} ({lang}): the filters dropped {100 * w['dropped_share']:.0f}% of {w['in']} pairs "
            f"(more than {100 * HIGH_REJECT_SHARE:.0f}%). Top reasons: {reasons}. The rejects/ config has every dropped "
            f"pair with its reason."
        )
    return lines


def embedding_decisions(funnel: dict[str, list[dict]], settings) -> dict[str, dict]:
    """Per language, what the embedding step decided and on what statistics (summed or ranged over
    the chunks): the cuts used, the pairs scored, sent to the round trip (borderline) and dropped
    per reason, chunks too small for margins, and the null distribution (the centred similarity of
    unrelated pairs: mean and standard deviation, per chunk) that null_z is measured against."""
    decisions = {}
    if not hasattr(settings, "min_null_z"):  # not the pair filters (the queries job has its own round trip)
        return decisions
    for lang, steps in funnel.items():
        step = next((s for s in steps if s.get("step") == "embedding"), None)
        if step is None:
            continue
        derived = step.get("derived") or {}

        def ranged(name: str):
            d = derived.get(f"{name}[{lang}]")
            return None if d is None else {"min": d["min"], "max": d["max"], "chunks": d["batches"]}

        def summed(name: str) -> int:
            d = derived.get(f"{name}[{lang}]")
            return int(d["sum"]) if d else 0

        round_trip = next((s for s in steps if s.get("step") == "round_trip"), None)
        decisions[lang] = {
            "rule": _rule(settings, lang),
            "pairs_in": step.get("in", 0), "pairs_kept": step.get("out", 0),
            "scored": summed("scored"),
            "small_chunk_pairs": summed("small_chunk_pairs"),
            "borderline": summed("borderline"),
            "dropped": dict(step.get("dropped") or {}),
            "round_trip": None if round_trip is None else {
                "in": round_trip.get("in", 0), "kept": round_trip.get("out", 0), "dropped": dict(round_trip.get("dropped") or {}),
            },
            "null_mean": ranged("null_mean"), "null_sd": ranged("null_sd"),
            "good_null_z_median": ranged("kept_null_z_median"),
            "min_margin": ranged("min_margin") or _fixed(settings, "min_margin", lang),
            "min_null_z": _fixed(settings, "min_null_z", lang),
            "chance_null_z": (lambda d: None if d is None else {"min": d["min"], "max": d["max"]})(derived.get("round_trip_above_null_z")),
        }
    return decisions


def _fixed(settings, name: str, lang: str):
    from synth.filters.base import PerLanguage

    value = PerLanguage.of(getattr(settings, name, None))(lang)
    return value if value is None or isinstance(value, int | float) else str(value)


def _rule(settings, lang: str) -> str:
    """The embedding step's rule for `lang`, in words."""
    margin, z = _fixed(settings, "min_margin", lang), _fixed(settings, "min_null_z", lang)
    rule = f"kept when margin >= {margin} and null_z >= {z}" if margin is not None and z is not None else (
        f"kept when margin >= {margin}" if margin is not None else f"kept when null_z >= {z}" if z is not None else "no margin or null_z cut"
    )
    if getattr(settings, "round_trip", "off") == "borderline":
        rule += (
            "; a pair short of that but above the average unrelated pair (null_z >= 0), or at the cut but not beyond "
            "chance (null_z under sqrt(2 ln n)), is borderline and its round trip decides"
        )
    return rule + "; a chunk under 8 pairs: cosine only (0.80 unless --min-cosine)"
