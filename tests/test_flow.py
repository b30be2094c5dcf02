"""The Prefect flow (flows/backtranslate.py) run through Prefect for real.

In-process tests call the flow inside `prefect_test_harness()` (a temporary Prefect API with its
own SQLite database, shared by the session: it takes 20-40 s to start on 2 cores) against the
OpenAI-compatible test server, and read what the run left behind back through the Prefect client.
The last test runs the flow file as a script, the way a user does, with no endpoint (the packaged
SmolLM2 in-process) and no Prefect API (it starts a temporary one): the slow one.
"""

import asyncio
import json
import subprocess
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from synth.data import udhr_path
from synth.testing.server_process import ServerProcess

from conftest import REPO_ROOT

MODEL = "udhr-oracle"


def read_back(coroutine_function):
    """Run `coroutine_function(client)` with a Prefect client of the harness's API."""
    from prefect.client.orchestration import get_client

    async def main():
        async with get_client() as client:
            return await coroutine_function(client)

    return asyncio.run(main())


def all_rows(out: Path, folder: str) -> list[dict]:
    return [row for file in sorted((out / folder).glob("*.parquet")) for row in pq.read_table(file).to_pylist()]


def test_flow_backtranslates_through_the_engine_and_leaves_artifacts(
    prefect_harness: str, flow_module: types.ModuleType, openai_server: ServerProcess, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    out = tmp_path / "zu-en"
    openai_server.reset_stats()
    state = flow_module.backtranslate(
        corpus=[str(udhr_path("zul"))], lang="zu", out=str(out), base_url=[openai_server.base_url], model=MODEL,
        chunk_size=10, return_state=True,
    )
    assert state.is_completed(), state
    result = state.result()
    assert result["out"] == str(out)
    kept, rejected = all_rows(out, "data"), all_rows(out, "rejects")
    assert (result["kept"], result["rejected"]) == (len(kept), len(rejected))
    assert result["kept"] + result["rejected"] == 30
    # Measured 29 kept (margins taken within chunks of 10).
    assert result["kept"] >= 27
    assert sum(split.num_rows for split in load_dataset(str(out), cache_dir=str(tmp_path / "hf-datasets")).values()) == result["kept"]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    # A request per record, and a round trip per borderline pair.
    assert openai_server.stats()["requests"] == 30 + stats["generation"]["stages"].get("round_trip", {}).get("requests", 0)

    assert stats["rows"] == {"kept": result["kept"], "rejected": result["rejected"]}
    funnel = stats["funnel"]["zu"]
    for previous, step in zip(funnel, funnel[1:]):
        assert step["in"] == previous["out"]
    assert result["stats"]["run"]["chunks"] == 3

    flow_run_id = state.state_details.flow_run_id

    async def what_the_run_left(client):
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts()
        return runs, tasks, artifacts

    runs, tasks, artifacts = read_back(what_the_run_left)
    assert [run.state.type.value for run in runs] == ["COMPLETED"]
    # One task streams the corpus's three chunks through synth's engine (issue 15: the CLI's engine).
    assert [(task.name, task.state.type.value) for task in tasks] == [("shard-0-of-1", "COMPLETED")]

    mine = [artifact for artifact in artifacts if artifact.flow_run_id == flow_run_id]
    by_type = {}
    for artifact in mine:
        by_type.setdefault(artifact.type, []).append(artifact)
    funnel_artifact = next(a for a in by_type["table"] if "funnel" in (a.key or ""))
    table = funnel_artifact.data if isinstance(funnel_artifact.data, list) else json.loads(funnel_artifact.data)
    assert [(row["step"], row["in"], row["out"]) for row in table] == [(s["step"], s["in"], s["out"]) for s in funnel]
    card_artifact = next(a for a in by_type["markdown"] if "card" in (a.key or ""))
    assert card_artifact.data == (out / "README.md").read_text(encoding="utf-8")
    # Issue 14: the plan (the dry run's figures) is the run's first artifact, before any request.
    plan_artifact = next(a for a in by_type["markdown"] if "plan" in (a.key or ""))
    assert min(mine, key=lambda a: a.created) == plan_artifact
    assert "| requests |" in plan_artifact.data and "prompt tokens" in plan_artifact.data


def test_bad_parameter_fails_the_run_before_any_request(
    prefect_harness: str, flow_module: types.ModuleType, openai_server: ServerProcess, tmp_path: Path
) -> None:
    openai_server.reset_stats()
    state = flow_module.backtranslate(
        corpus=[str(udhr_path("zul"))], lang="xx", out=str(tmp_path / "out"), base_url=[openai_server.base_url],
        model=MODEL, return_state=True,
    )
    assert state.is_failed(), state
    with pytest.raises(Exception, match="unknown language code 'xx'"):
        state.result()
    assert openai_server.stats()["requests"] == 0
    assert not (tmp_path / "out" / "README.md").exists()

    flow_run_id = state.state_details.flow_run_id
    run = read_back(lambda client: client.read_flow_run(flow_run_id))
    assert run.state.type.value == "FAILED"
    assert run.parameters["lang"] == "xx"


def test_the_flow_script_ends_bad_input_like_the_command(
    prefect_harness: str, flow_module: types.ModuleType, openai_server: ServerProcess, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`python flows/backtranslate.py` on a corpus with a broken line: the chunks read before it
    are staged (a rerun after the fix resumes), and the command ends with the file, the line and
    what to do, and exit code 2, as `synth backtranslate` does."""
    from flows.common import main
    from synth.config import BacktranslateConfig

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "Sawubona"}\n{"text": "Yebo"}\n{"text": broken\n{"text": "Ngiyabonga"}\n', encoding="utf-8")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "backtranslate.py", str(corpus), "--lang", "zu", "--out", str(out), "--base-url", openai_server.base_url, "--model", MODEL,
        "--chunk-size", "1", "--embedder", "none", "--lid-detectors", "none",
    ])
    with pytest.raises(SystemExit) as stopped:
        main(flow_module.backtranslate, BacktranslateConfig, "pairs")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().endswith("corpus.jsonl:3: not valid JSON (Expecting value at column 10). Each line must hold one JSON object.")
    assert len(list((out / ".synth" / "chunks").glob("*.json"))) == 2  # the two lines before it
    assert not (out / "README.md").exists()


@pytest.mark.slow
def test_flow_script_runs_with_the_in_process_model(tmp_path: Path, synth_env: dict, prefect_home: Path) -> None:
    """`python flows/backtranslate.py` with no --base-url (SmolLM2-135M in-process) and no Prefect API
    configured (Prefect starts a temporary one): the slow test of this file (about a minute)."""
    out = tmp_path / "demo"
    env = {k: v for k, v in synth_env.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "flows" / "backtranslate.py"), str(udhr_path("zul")), "--lang", "zu",
         "--out", str(out), "--limit", "3", "--max-tokens", "24", "--chunk-size", "3"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "kept" in result.stdout and str(out) in result.stdout
    assert (out / "README.md").is_file() and (out / "stats.json").is_file()
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["rows"]["kept"] + stats["rows"]["rejected"] == 3
    assert stats["generation"]["failed"] == 0
    rows = all_rows(out, "data") + all_rows(out, "rejects")
    assert len(rows) == 3
    assert {row["model"] for row in rows} == {"SmolLM2-135M-Instruct-Q4_1"}
    assert all(row["raw_answer"] for row in rows)
