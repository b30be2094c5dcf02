"""Issue 15, "each setting declared once": a setting is one field of a config model (synth/config.py
`setting`), and everything else follows from it. A subclass of BacktranslateConfig adds one dummy
field; with nothing else written, the field is an option of the derived command (in its help panel,
with its default, parsed and bounded), a parameter of a flow deployed on a real Prefect server
(default, description and minimum in the deployment's parameter schema), and, when not its
default, a setting of the dataset card's job file.
"""

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import synth.cli
from synth.config import BacktranslateConfig, setting
from synth.data import udhr_path
from synth.jobfile import load_job_file
from synth.options import declared_config
from synth.testing.server_process import ServerProcess

from test_flow import read_back

MODEL = "udhr-oracle"
ZUL = str(udhr_path("zul"))
QUIET_FILTERS = ["--embedder", "none", "--lid-detectors", "none"]


class DummyConfig(BacktranslateConfig):
    """Back-translation with one setting more (defined at module level: the job's filter process
    unpickles the config, so it must find this class by name)."""

    dummy_knob: int = setting(7, "A dummy knob", panel="Filters", ge=1)


# The flow file a deployment's entrypoint names: the knob is not mentioned, the flow takes it.
FLOW_FILE = '''
from flows.common import RunOptions, declared_flow, run_job
from synth.backtranslate import BacktranslateJob
from test_declared import DummyConfig


@declared_flow("dummy", DummyConfig, RunOptions, description="Back-translation with a dummy knob (tests/test_declared.py).")
def dummy(**parameters) -> dict:
    return run_job(BacktranslateJob, DummyConfig, parameters)
'''


@pytest.fixture(scope="module")
def command() -> synth.cli.typer.Typer:
    """`synth backtranslate`'s command (the same body) derived from DummyConfig instead."""
    app = synth.cli.typer.Typer(add_completion=False)
    synth.cli.declared_command("backtranslate", DummyConfig, help="Back-translate, with a dummy knob.", run_options=True, on=app)(synth.cli.backtranslate)
    return app


def test_the_knob_is_an_option_in_its_help_panel(command) -> None:
    result = CliRunner().invoke(command, ["--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    panel = result.output.split("─ Filters ", 1)[1].split("╰", 1)[0]
    [line] = [line for line in panel.splitlines() if "--dummy-knob" in line]
    assert "A dummy knob" in line and "[default: 7]" in line
    assert declared_config(DummyConfig, [ZUL, "--lang", "zu", "--dummy-knob", "9"]).dummy_knob == 9
    assert declared_config(DummyConfig, [ZUL, "--lang", "zu"]).dummy_knob == 7
    bad = CliRunner().invoke(command, [ZUL, "--lang", "zu", "--dummy-knob", "0", "--dry-run"])
    assert bad.exit_code == 2 and "dummy_knob: Input should be greater than or equal to 1" in " ".join(bad.output.split())


def test_the_knob_is_a_parameter_of_a_deployment(prefect_harness: str, tmp_path: Path) -> None:
    from prefect.deployments.runner import RunnerDeployment

    from flows.common import RunOptions

    entrypoint = tmp_path / "dummy_flow.py"
    entrypoint.write_text(FLOW_FILE, encoding="utf-8")
    deployment_id = RunnerDeployment.from_entrypoint(f"{entrypoint}:dummy", name="declared-once").apply()
    deployment = read_back(lambda client: client.read_deployment(deployment_id))
    schema = deployment.parameter_openapi_schema
    knob = schema["properties"]["dummy_knob"]
    assert (knob["default"], knob["description"], knob["minimum"], knob["type"]) == (7, "A dummy knob", 1, "integer")
    assert "dummy_knob" not in schema.get("required", [])
    # Beside it, the settings it inherits, declared once too.
    assert schema["properties"]["max_words"]["default"] == BacktranslateConfig.model_fields["max_words"].default
    assert set(RunOptions.model_fields) <= set(schema["properties"])  # and the run options of flows/common.py


def test_the_knob_is_in_the_cards_job_file(command, openai_server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "zu-en"
    result = CliRunner().invoke(command, [
        ZUL, "--lang", "zu", "--limit", "3", "--out", str(out), "--base-url", openai_server.base_url, "--model", MODEL,
        *QUIET_FILTERS, "--dummy-knob", "9",
    ])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text(encoding="utf-8")
    job = yaml.safe_load(re.search(r"as a job file .*?```yaml\n(.*?)```", card, re.S).group(1))
    assert job["dummy_knob"] == 9 and job["limit"] == 3
    # The card's job file is a job file (with the runner's own corpus path and endpoint): the knob comes back from it.
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**job, "corpus": [ZUL], "base_url": [openai_server.base_url]}), encoding="utf-8")
    assert DummyConfig(**load_job_file(tmp_path / "job.yaml", DummyConfig)).dummy_knob == 9
