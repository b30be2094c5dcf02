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
