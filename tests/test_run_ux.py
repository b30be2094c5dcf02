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
