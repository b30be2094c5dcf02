"""Issue 14: a run you can plan, follow and configure (small bugs, the card, job files, the dry run,
progress and logs)."""

import json
import subprocess
from pathlib import Path

import pytest

from conftest import SYNTH_BIN
from synth.data import udhr_path
from synth.testing.server_process import ServerProcess

MODEL = "udhr-oracle"
ZUL = str(udhr_path("zul"))
QUIET_FILTERS = ["--embedder", "none", "--lid-detectors", "none"]


def run_synth(args: list[str], env: dict, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYNTH_BIN), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- the small bugs --------------------------------------------------------------------------------

def test_version(synth_env: dict) -> None:
    from importlib.metadata import version

    result = run_synth(["--version"], synth_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"synth {version('synth')}"


def test_unknown_language_in_languages_is_a_message_not_a_traceback(synth_env: dict) -> None:
    result = run_synth(["languages", "xx"], synth_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "unknown language code 'xx'" in flat(result.stderr)


@pytest.mark.parametrize("spec", ["train=2", "train=0.5"])
def test_a_train_size_alone_is_an_error(spec: str, synth_env: dict, tmp_path: Path) -> None:
    result = run_synth(["backtranslate", ZUL, "--lang", "zu", "--out", str(tmp_path / "out"), "--splits", spec, *QUIET_FILTERS], synth_env)
    assert result.returncode == 2, result.stderr
    assert f"{spec} alone" in flat(result.stderr) and "Traceback" not in result.stderr


# --- the card ---------------------------------------------------------------------------------------

def test_the_card_can_be_published_as_it_is(openai_server: ServerProcess, synth_env: dict, tmp_path: Path) -> None:
    """No path of this machine, no endpoint URL or host; the prompt text, limitations, citation;
    the licence read from the source (the bundled UDHR: MIT) beside the dataset's."""
    out = tmp_path / "zu-en"
    result = run_synth(["backtranslate", ZUL, "--lang", "zu", "--limit", "8", "--out", str(out), "--base-url", openai_server.base_url,
                        "--model", MODEL, *QUIET_FILTERS], synth_env)
    assert result.returncode == 0, result.stderr
    card = (out / "README.md").read_text(encoding="utf-8")
    for leak in (str(tmp_path), str(Path(ZUL).parent), "127.0.0.1", "localhost", "http://", "https://", openai_server.base_url):
        assert leak not in card, leak
    assert "/home/" not in card and "/tmp/" not in card and "/work/" not in card
    assert "an OpenAI-compatible endpoint" in card and f"`{MODEL}`" in card
    assert "Translate the following {source_language} text" in card  # the template itself
    assert "## Limitations" in card and "**Synthetic side.**" in card
    assert "## Citation" in card and "@misc{" in card
    assert "license: mit" in card and "the source text: `mit`" in card
    assert "```yaml\n" in card and "corpus: [zul.txt]" in card


def test_license_from_a_source_card_and_required_to_push(synth_env: dict, tmp_path: Path) -> None:
    from synth.publish.card import source_license

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "zu.txt").write_text("Sawubona\n", encoding="utf-8")
    assert source_license([str(folder / "zu.txt")]).license is None
    (folder / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# A corpus\n", encoding="utf-8")
    assert source_license([str(folder / "zu.txt")]).license == "cc-by-sa-4.0"
    assert source_license([ZUL]).license == "mit"

    bare = tmp_path / "bare.txt"
    bare.write_text("Sawubona\n", encoding="utf-8")
    result = run_synth(["backtranslate", str(bare), "--lang", "zu", "--out", str(tmp_path / "out"), "--push-to-hub", "org/name", *QUIET_FILTERS], synth_env)
    assert result.returncode == 2 and "give --license" in flat(result.stderr), result.stderr


# --- progress and logs of a piped run -------------------------------------------------------------

def test_a_piped_run_logs_its_progress_and_json_lines(synth_env: dict, tmp_path: Path) -> None:
    from synth.testing.server_process import start_server

    with start_server("--latency", "0.25") as slow:
        args = ["backtranslate", ZUL, "--lang", "zu", "--limit", "12", "--base-url", slow.base_url, "--model", MODEL,
                "--concurrency", "1", "--log-every", "0.5", *QUIET_FILTERS]
        text = run_synth([*args, "--out", str(tmp_path / "text")], synth_env)
        as_json = run_synth([*args, "--out", str(tmp_path / "json"), "--log-format", "json", "-v"], synth_env)
    assert text.returncode == 0, text.stderr
    lines = text.stderr.splitlines()
    stages = [line.split(" ", 1)[1].split(":")[0] for line in lines if line[:2].isdigit() and ":" in line[9:]]
    for stage in ("read", "generate", "filter", "publish", "done"):
        assert stage in stages, (stage, text.stderr)
    progress = [line for line in lines if "/12 requests" in line]
    assert len(progress) >= 3, text.stderr  # one every 0.5 s while the 12 requests take >3 s
    assert any("/s" in line and "ETA" in line for line in progress), progress
    assert all("cache hits" in line and "retries" in line for line in progress)

    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stderr.splitlines() if line.startswith("{")]
    assert records and len(records) == len([line for line in as_json.stderr.splitlines() if line.strip()]), as_json.stderr
    assert {"read", "generate", "filter", "publish", "done"} <= {r["stage"] for r in records if r.get("event") == "stage"}
    ticks = [r for r in records if r.get("event") == "progress"]
    assert ticks and all({"done", "total", "rate_per_s", "eta_s", "cache_hits", "retries"} <= r.keys() for r in ticks)
    assert any(r.get("event") == "chunk" for r in records)  # -v: a line per staged chunk
    summary = records[-1]
    assert summary["event"] == "summary" and summary["kept"] + summary["rejected"] == 12


def test_quiet_prints_no_progress(openai_server: ServerProcess, synth_env: dict, tmp_path: Path) -> None:
    result = run_synth(["backtranslate", ZUL, "--lang", "zu", "--limit", "4", "--base-url", openai_server.base_url, "--model", MODEL,
                        "--out", str(tmp_path / "out"), "-q", *QUIET_FILTERS], synth_env)
    assert result.returncode == 0, result.stderr
    assert "generate:" not in result.stderr and "kept 4 pairs" in flat(result.stderr)


# --- dry run ---------------------------------------------------------------------------------------

def test_dry_run_counts_what_the_run_sends(openai_server: ServerProcess, synth_env: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["backtranslate", ZUL, "--lang", "zu", "--segment", "sentence", "--limit", "40", "--chunk-size", "16", "--out", str(out),
            "--base-url", openai_server.base_url, "--model", MODEL, "--price-input", "1", "--price-output", "2", *QUIET_FILTERS]
    openai_server.reset_stats()
    dry = run_synth([*args, "--dry-run", "--log-format", "json"], synth_env)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert openai_server.stats()["requests"] == 0 and not (out / "README.md").exists()  # nothing sent, nothing written
    real = run_synth(args, synth_env)
    assert real.returncode == 0, real.stderr
    generation = json.loads((out / "stats.json").read_text())["generation"]
    assert plan["records"] == 40 and plan["chunks"] == 3
    assert plan["requests"] == generation["requests"] == 40 and plan["cached"] == 0
    # The test server counts whitespace words; the estimate (UTF-8 bytes / 3) errs high, within a few times.
    assert generation["prompt_tokens"] <= plan["prompt_tokens"] <= 5 * generation["prompt_tokens"], (plan, generation)
    assert plan["completion_tokens"] <= plan["completion_tokens_max"] == 40 * 256
    assert plan["cost_usd"] == pytest.approx((plan["prompt_tokens"] + 2 * plan["completion_tokens"]) / 1e6)
    again = json.loads(run_synth([*args, "--dry-run", "--log-format", "json"], synth_env).stdout)
    assert again["cached"] == 40 and again["prompt_tokens"] == 0  # all answered: a rerun sends nothing
    text = run_synth([*args, "--dry-run"], synth_env).stdout
    assert "requests" in text and "40 answered in the cache" in text and "nothing was sent" in text


# --- job files ---------------------------------------------------------------------------------------

def test_a_job_file_is_the_same_job_as_its_flags(synth_env: dict, tmp_path: Path) -> None:
    flags = ["--lang", "zu", "--limit", "7", "--segment", "sentence", "--min-margin", "zu=0.8", "--max-words", "off",
             "--text-field", "text", "--embedder", "none", "--lid-detectors", "none", "--model", MODEL, "--base-url", "http://127.0.0.1:9/v1"]
    (tmp_path / "job.yaml").write_text(
        f"corpus: [{ZUL}]\nlang: zu\nlimit: 7\nsegment: sentence\nmin_margin: {{zu: 0.8}}\nmax-words: null\ntext_field: text\n"
        f"embedder: none\nlid_detectors: []\nmodel: {MODEL}\nbase_url: [http://127.0.0.1:9/v1]\n", encoding="utf-8")
    (tmp_path / "job.toml").write_text(
        f'corpus = ["{ZUL}"]\nlang = "zu"\nlimit = 3\nsegment = "sentence"\nmin_margin = {{zu = 0.8}}\ntext_field = "text"\n'
        f'embedder = "none"\nlid_detectors = []\nmodel = "{MODEL}"\nbase_url = ["http://127.0.0.1:9/v1"]\nmax_words = 100\n', encoding="utf-8")

    def plan(*args: str) -> dict:
        result = run_synth(["backtranslate", *args, "--out", str(tmp_path / "out"), "--dry-run", "--log-format", "json"], synth_env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    by_flags = plan(ZUL, *flags)
    by_yaml = plan("--config", str(tmp_path / "job.yaml"))
    assert by_yaml["fingerprint"] == by_flags["fingerprint"] and by_yaml["requests"] == by_flags["requests"]
    # TOML, and flags on the command line win over the file (limit 3 -> 7, max_words 100 -> off).
    by_toml = plan("--config", str(tmp_path / "job.toml"), "--limit", "7", "--max-words", "off")
    assert by_toml["fingerprint"] == by_flags["fingerprint"]
    assert plan("--config", str(tmp_path / "job.toml"))["fingerprint"] != by_flags["fingerprint"]


def test_a_bad_job_file_names_the_key(synth_env: dict, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(f"corpus: [{ZUL}]\nlang: zu\nmin_margni: 0.8\n", encoding="utf-8")
    result = run_synth(["backtranslate", "--config", str(tmp_path / "job.yaml"), "--dry-run"], synth_env)
    assert result.returncode == 2 and "unknown setting 'min_margni'" in flat(result.stderr), result.stderr
    (tmp_path / "bad.yaml").write_text("lang: zu\nlimit: [\n", encoding="utf-8")
    result = run_synth(["backtranslate", "--config", str(tmp_path / "bad.yaml"), "--dry-run"], synth_env)
    assert result.returncode == 2 and "not valid YAML" in flat(result.stderr)
    (tmp_path / "nocorpus.yaml").write_text("lang: zu\n", encoding="utf-8")
    result = run_synth(["backtranslate", "--config", str(tmp_path / "nocorpus.yaml"), "--dry-run"], synth_env)
    assert result.returncode == 2 and "corpus" in result.stderr and "Traceback" not in result.stderr


def test_job_files_for_filter_queries_and_evaluate(synth_env: dict, tmp_path: Path) -> None:
    from synth.cli import EvaluateConfig
    from synth.jobfile import load_job_file

    (tmp_path / "eval.yaml").write_text("dataset: some/folder\nepochs: 2\nablation: [shuffled]\n", encoding="utf-8")
    assert EvaluateConfig(**load_job_file(tmp_path / "eval.yaml", EvaluateConfig)).epochs == 2
    result = run_synth(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--epochs", "0"], synth_env)
    assert result.returncode == 2 and "epochs" in result.stderr  # the flag wins, and is validated
    (tmp_path / "pairs.tsv").write_text("Sawubona\tHello\n", encoding="utf-8")
    (tmp_path / "filter.toml").write_text(f'pairs = ["{tmp_path / "pairs.tsv"}"]\nsrc_lang = "zu"\ntgt_lang = "en"\nnear_duplicate = 0.9\n', encoding="utf-8")
    result = run_synth(["filter", "--config", str(tmp_path / "filter.toml"), "--dry-run", "--embedder", "none"], synth_env)
    assert result.returncode == 0 and "1 in 1 chunk" in result.stdout, result.stderr
    (tmp_path / "queries.yaml").write_text(f"corpus: [{ZUL}]\nlang: zu\nkinds: [question]\nlimit: 5\nembedder: none\n", encoding="utf-8")
    result = run_synth(["queries", "--config", str(tmp_path / "queries.yaml"), "--dry-run", "--log-format", "json"], synth_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["requests"] == 5


def test_help_is_grouped_in_panels(synth_env: dict) -> None:
    result = run_synth(["backtranslate", "--help"], synth_env)
    for panel in ("Input", "Model and endpoint", "Filters", "Output and Hub", "Run"):
        assert f"─ {panel} " in result.stdout, panel
    assert "--max-tokens" in result.stdout and "part of the cache key" in result.stdout
