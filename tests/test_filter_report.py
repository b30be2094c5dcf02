"""Issue 12: a high reject rate said out loud (CLI, stats.json, card), and the embedding step's
decision and statistics per language in stats.json and the card."""

import json

from typer.testing import CliRunner

from synth.cli import app
from synth.data import udhr_articles
from synth.filters.report import reject_warnings, warning_lines

ZU, EN = udhr_articles("zul"), udhr_articles("eng")


def write(path, pairs) -> list[str]:
    (path / "c.zu").write_text("\n".join(zu for zu, _ in pairs) + "\n", encoding="utf-8")
    (path / "c.en").write_text("\n".join(en for _, en in pairs) + "\n", encoding="utf-8")
    return [str(path / "c.zu"), str(path / "c.en")]


def run_filter(tmp_path, pairs, *options) -> tuple[object, dict, str]:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["filter", *write(tmp_path, pairs), "--src-lang", "zu", "--tgt-lang", "en", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "stats.json").read_text(encoding="utf-8")), (out / "README.md").read_text(encoding="utf-8")


def test_a_high_reject_rate_is_said_out_loud_with_the_reasons_and_options(tmp_path):
    # 24 good article pairs, 10 of them turned into copies of their source: 42% dropped.
    pairs = [(ZU[i], ZU[i] if i % 12 < 5 else EN[i]) for i in range(24)]
    result, stats, card = run_filter(tmp_path, pairs, "--embedder", "none")
    warning = stats["warnings"]["high_reject_rate"]["zu"]
    assert warning["in"] == 24 and warning["kept"] == 14 and warning["dropped_share"] > 0.25
    assert warning["top_reasons"][0] == {"reason": "copy", "step": "copy", "count": 10, "option": "--max-copy-similarity, --max-lcs-ratio"}
    assert "warning:" in result.output and "42% of 24 pairs" in result.output and "--max-copy-similarity" in result.output
    assert "Warning: a high reject rate" in card and "--max-copy-similarity" in card


def test_no_warning_under_a_quarter(tmp_path):
    # The control: 5 copies of 24 (21%) is no high reject rate.
    pairs = [(ZU[i], ZU[i] if i < 5 else EN[i]) for i in range(24)]
    result, stats, card = run_filter(tmp_path, pairs, "--embedder", "none")
    assert stats["warnings"]["high_reject_rate"] == {}
    assert "warning:" not in result.output and "high reject rate" not in card


def test_the_warning_counts_every_filter_and_names_each_option():
    funnel = {"wo": [
        {"step": "read", "in": 100, "out": 100, "dropped": {}},
        {"step": "generate", "in": 100, "out": 98, "dropped": {"generation_failed": 2}},
        {"step": "language_id", "in": 98, "out": 80, "dropped": {"lid_mismatch": 18}},
        {"step": "embedding", "in": 80, "out": 60, "dropped": {"null_z": 12, "low_margin": 8}},
        {"step": "round_trip", "in": 60, "out": 55, "dropped": {"round_trip": 5}},
    ]}
    warning = reject_warnings(funnel)["wo"]
    assert warning["kept"] == 55 and warning["dropped_share"] == 0.45
    assert [(r["reason"], r["option"]) for r in warning["top_reasons"]] == [
        ("lid_mismatch", "--lid-min-score, --lid-detector"), ("null_z", "--min-null-z"), ("low_margin", "--min-margin"),
    ]
    assert "Wolof (wo): the filters dropped 45% of 100 pairs" in warning_lines({"wo": warning})[0]
    funnel["wo"][-1]["out"] = 76  # 24% dropped: said nothing
    assert reject_warnings(funnel) == {}


def test_the_embedding_decision_and_its_statistics_are_in_stats_and_card(tmp_path):
    pairs = [(ZU[i], EN[i]) for i in range(20)] + [(ZU[20 + i], EN[(i + 1) % 5 + 20]) for i in range(5)]  # 5 swapped
    _, stats, card = run_filter(tmp_path, pairs)
    decision = stats["embedding"]["zu"]
    assert decision["pairs_in"] >= 20 and decision["scored"] == decision["pairs_in"] and decision["small_chunk_pairs"] == 0
    assert decision["min_margin"] == 0.9 and decision["min_null_z"] == 1.0
    assert decision["pairs_kept"] + sum(decision["dropped"].values()) == decision["pairs_in"]
    # The 20 good pairs kept, the swapped ones that reached the step dropped (two went on length_ratio).
    assert decision["pairs_kept"] == 20 and decision["dropped"] == {"null_z": decision["pairs_in"] - 20}
    assert -1 < decision["null_mean"]["min"] < 1 and decision["null_sd"]["min"] > 0
    assert decision["good_null_z_median"]["min"] > decision["min_null_z"]
    assert "### Embedding step: Zulu (`zu`)" in card and "null distribution" in card
    assert "`scored[zu]`" not in card  # statistics, not thresholds
