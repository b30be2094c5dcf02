"""prefect.yaml's deployments run for real: a Prefect server on 127.0.0.1 and a process worker
(flows/serve.py's LocalPrefect, what `make serve` starts), `prefect deploy` from prefect.yaml, and
runs started with `prefect deployment run 'backtranslate/nightly' --param ...` against the
OpenAI-compatible test server and a fake Hugging Face Hub, as a user starts them. What a run left
behind is read back over the server's REST API. The last test checks parameter validation in
process, on the session's Prefect test harness.
"""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from flows.serve import LocalPrefect
from synth.data import udhr_articles, udhr_path
from synth.generate.cache import GenerationCache
from synth.read import normalize_text, record_id
from synth.testing.fake_hub import FakeHub
from synth.testing.server_process import ServerProcess, start_server

DEPLOYMENT = "backtranslate/nightly"
MODEL = "udhr-oracle"
# Unique per session, so that any leak is found by a plain substring search.
API_KEY = f"sk-test-{secrets.token_hex(12)}"
HUB_TOKEN = f"hf_test_{secrets.token_hex(12)}"
LIMIT = "llm-endpoint"  # a global concurrency limit of 2 slots
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(local: LocalPrefect, path: str, body: dict | None = None):
    request = urllib.request.Request(
        local.api_url + path, data=None if body is None else json.dumps(body).encode(), method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with _direct.open(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub(token=HUB_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def local_prefect(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub) -> Iterator[LocalPrefect]:
    """Server, pool, deployment, worker, two Secret blocks and a global concurrency limit. Every
    process is stopped at the end, after a failure too."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HF_", "TRANSFORMERS_")) and k != "OPENAI_API_KEY"}
    env.update(
        PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1",
        # Pushes go to the fake Hub on 127.0.0.1, so neither HF_HUB_OFFLINE nor TRANSFORMERS_OFFLINE
        # (which implies it) is set; nothing here loads a model from the Hub.
        HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1",
    )
    with LocalPrefect(free_port(), env=env, log_dir=home) as local:
        local.start_server()
        local.create_pool()
        local.start_worker()
        # Secret blocks saved as a user does (the values travel in the environment, never in argv),
        # while the deployment is made.
        saving = subprocess.Popen(
            [sys.executable, "-c", "import os; from prefect.blocks.system import Secret; "
             "Secret(value=os.environ['LLM_KEY']).save('llm-key'); Secret(value=os.environ['HUB_KEY']).save('hub-token')"],
            env={**local.env, "LLM_KEY": API_KEY, "HUB_KEY": HUB_TOKEN},
        )
        try:
            local.deploy()  # --all, as the README says
        finally:
            assert saving.wait(timeout=120) == 0
        api(local, "/v2/concurrency_limits/", {"name": LIMIT, "limit": 2})
        yield local


def start_run(local: LocalPrefect, watch: bool, **parameters) -> str:
    """`prefect deployment run DEPLOYMENT --param k=v ... [--watch]`; the flow run's id."""
    params = [arg for name, value in parameters.items() for arg in ("--param", f"{name}={json.dumps(value)}")]
    output = local.prefect("deployment", "run", DEPLOYMENT, *params, *(["--watch"] if watch else []), timeout=400)
    return re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)


def what_the_run_left(local: LocalPrefect, flow_run_id: str) -> dict:
    return {
        "flow_run": api(local, f"/flow_runs/{flow_run_id}"),
        "task_runs": api(local, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}),
        "logs": api(local, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}),
        "artifacts": api(local, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}),
    }


def all_rows(out: Path, folder: str) -> list[dict]:
    return [row for file in sorted((out / folder).rglob("*.parquet")) for row in pq.read_table(file).to_pylist()]


def record_ids(count: int) -> list[str]:
    return sorted(record_id(normalize_text(text)) for text in udhr_articles("zul")[:count])


def test_prefect_yaml_deploys_every_flow_nightly_on_the_process_pool(local_prefect: LocalPrefect) -> None:
    flows = {flow["id"]: flow["name"] for flow in api(local_prefect, "/flows/filter", {})}
    deployments = {f"{flows[d['flow_id']]}/{d['name']}": d for d in api(local_prefect, "/deployments/filter", {})}
    assert sorted(deployments) == ["backtranslate/nightly", "evaluate/on-demand", "filter/nightly", "queries/nightly"]
    # The evaluation runs when asked (after a dataset changes), with its parameters described in the UI.
    evaluate = deployments.pop("evaluate/on-demand")
    assert evaluate["work_pool_name"] == "synth-pool" and not evaluate["schedules"]
    schema = evaluate["parameter_openapi_schema"]
    assert schema["required"] == ["dataset"] and schema["properties"]["epochs"]["default"] == 8
    assert schema["properties"]["ablation"]["description"].startswith("Also train on the kept pairs plus the rejected ones")
    for deployment in deployments.values():
        assert deployment["work_pool_name"] == "synth-pool"
        [schedule] = deployment["schedules"]
        assert schedule["active"] and schedule["schedule"]["cron"] == "0 2 * * *"
        assert schedule["schedule"]["timezone"] == "Africa/Johannesburg"
        # Runs start in this checkout, where the default corpus lies.
        [pull_step] = deployment["pull_steps"]
        workdir = Path(pull_step["prefect.deployments.steps.set_working_directory"]["directory"])
        parameters = deployment["parameters"]
        assert all((workdir / path).is_file() for path in parameters.get("corpus") or parameters["pairs"])


def test_run_of_a_killed_worker_resumes_without_repeating_requests_and_publishes(
    local_prefect: LocalPrefect, hub: FakeHub, tmp_path: Path
) -> None:
    out, staged = tmp_path / "zu-en", tmp_path / "zu-en" / ".synth" / "chunks"
    repo = "synth-test/zu-en"
    # Slow answers, one at a time per shard, so that the worker is killed with a chunk staged
    # and others not (the filter process loads its models while the first chunks generate).
    with start_server("--api-key", API_KEY, "--latency", "2.5") as llm:
        # The deployment's defaults (a demo: sentences, 24 of them) are overridden as a user would.
        # The API key comes from a Secret block only (the worker has no OPENAI_API_KEY), the Hub token too.
        parameters = dict(
            corpus=[str(udhr_path("zul"))], lang="zu", out=str(out), segment="line", limit=20, max_tokens=256, chunk_size=5,
            base_url=[llm.base_url], model=MODEL, api_key_secret="llm-key", shards=2,
            push_to_hub=repo, hub_token_secret="hub-token",
        )
        first = start_run(local_prefect, watch=False, **parameters, concurrency=1)
        deadline = time.monotonic() + 240
        while not any(staged.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.3)
        progress = [a["data"] for a in what_the_run_left(local_prefect, first)["artifacts"] if a["type"] == "progress"]
        local_prefect.kill_worker()
        assert llm.stats()["answered_ok"] < 20, "the run finished before the worker was killed: raise the latency"
        persisted = len(list(staged.glob("*.json")))
        with closing(GenerationCache(out / ".synth" / "generations.sqlite")) as cache:
            answered_before = len(cache)

        llm.reset_stats()
        local_prefect.start_worker()
        # The rerun, with more requests in flight per shard, behind a global concurrency limit of
        # 2 slots (run options: the job's settings, and so the keys of its chunks, stay the same).
        second = start_run(local_prefect, watch=True, **parameters, concurrency=2, concurrency_limit_name=LIMIT)
        served = llm.stats()

    killed, left = what_the_run_left(local_prefect, first), what_the_run_left(local_prefect, second)
    assert killed["flow_run"]["state"]["type"] != "COMPLETED"
    assert left["flow_run"]["state"]["type"] == "COMPLETED", left["flow_run"]["state"]
    # The progress artifact had advanced while the killed run generated.
    assert len(progress) == 1 and 0 < progress[0] < 100
    # Two shards, each a task streaming its chunks through the engine. Chunks staged before the
    # kill were taken as they were; the rerun sent exactly the requests whose answer had not
    # reached the generation cache: none twice, none lost.
    assert sorted(task["name"] for task in left["task_runs"]) == ["shard-0-of-2", "shard-1-of-2"]
    stats_run = json.loads(max((out / ".synth" / "runs").glob("*.json"), key=lambda path: path.stat().st_mtime).read_text())
    assert stats_run["chunks"] == 4 and stats_run["chunks_reused"] == persisted >= 1
    assert 0 < answered_before < 20
    assert served["requests"] == 20 - answered_before
    assert max(served["prompts"].values()) == 1
    # Two shards of 2 requests each would have 4 in flight; the limit held them to 2 together.
    assert served["peak_in_flight"] <= 2

    # Every record once, kept or rejected; the dataset loads; the card and the Hub agree.
    kept, rejected = all_rows(out, "data"), all_rows(out, "rejects")
    assert sorted(row["id"] for row in kept + rejected) == record_ids(20)
    assert len(kept) >= 18  # the oracle's answers are the real English articles
    assert sum(split.num_rows for split in load_dataset(str(out)).values()) == len(kept)
    artifacts = {artifact["key"].removeprefix("backtranslate-zu-en-"): artifact["data"] for artifact in left["artifacts"]}
    assert sorted(artifacts) == ["card", "funnel-zu", "hub", "plan", "progress"]
    assert artifacts["progress"] == 100
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    funnel = json.loads(artifacts["funnel-zu"])
    assert [(row["step"], row["in"], row["out"]) for row in funnel] == [(s["step"], s["in"], s["out"]) for s in stats["funnel"]["zu"]]
    assert artifacts["card"] == (out / "README.md").read_text(encoding="utf-8")
    assert hub.commits(repo)[-1].oid in artifacts["hub"]
    assert hub.file_bytes(repo, "README.md") == (out / "README.md").read_bytes()

    # Neither secret shows in the parameters, logs or artifacts of either run, the worker's output
    # or the published folder.
    assert left["flow_run"]["parameters"]["api_key_secret"] == "llm-key"
    texts = [json.dumps(killed), json.dumps(left), (local_prefect.log_dir / "worker.log").read_text(errors="replace")]
    texts += [path.read_text(encoding="utf-8") for path in (out / "README.md", out / "stats.json")]
    assert not [text for text in texts if API_KEY in text or HUB_TOKEN in text]


def test_an_evaluation_runs_as_a_deployment_and_leaves_its_results_table(local_prefect: LocalPrefect, tmp_path: Path) -> None:
    from synth.testing.udhr_bitext import article_pairs, sentence_pairs, write_tsv

    # A small real dataset: Zulu and Xhosa sentence pairs of 10 articles; held out: 12 other Zulu articles.
    tsv = write_tsv(sentence_pairs("zul", articles=range(10)) + sentence_pairs("xho", articles=range(10)), tmp_path / "pairs.tsv")
    held_out = write_tsv(article_pairs("zul", articles=range(18, 30)), tmp_path / "held-out.tsv")
    dataset = tmp_path / "zu-en"
    made = subprocess.run(
        [str(Path(sys.executable).with_name("synth")), "filter", str(tsv), "--src-lang", "zu", "--tgt-lang", "en", "--out", str(dataset),
         "--embedder", "none", "--lid-detectors", "none", "--max-words", "off", "--min-terminal-punctuation", "off", "--splits", "train"],
        env={**local_prefect.env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert made.returncode == 0, made.stderr
    output = local_prefect.prefect(
        "deployment", "run", "evaluate/on-demand", "--param", f"dataset={dataset}", "--param", f"eval={json.dumps([str(held_out)])}",
        "--param", "epochs=1", "--param", "max_seq_length=32", "--watch", timeout=600,
    )
    run = what_the_run_left(local_prefect, re.search(r"UUID: ([0-9a-f-]{36})", output).group(1))
    assert run["flow_run"]["state"]["type"] == "COMPLETED", run["flow_run"]["state"]
    results = json.loads((dataset / "eval" / "results.json").read_text(encoding="utf-8"))
    assert results["settings"]["epochs"] == 1 and results["settings"]["max_seq_length"] == 32
    artifacts = {artifact["key"]: artifact for artifact in run["artifacts"]}
    table = json.loads(artifacts["evaluate-zu-en-results"]["data"])
    assert [(row["evaluation set"], row["method"]) for row in table] == [
        ("held-out", "base (untouched)"), ("held-out", "Procrustes"), ("held-out", "fine-tuned"),
    ]
    assert table[2]["MRR"] == results["eval"][0]["finetuned"]["mrr"]
    assert artifacts["evaluate-zu-en-training"]["data"] == 100
    assert any("held-out" in log["message"] and "fine-tuned" in log["message"] for log in run["logs"])


def test_bad_parameters_fail_the_run_at_once_with_every_reason(
    prefect_harness: str, flow_module: types.ModuleType, openai_server: ServerProcess, tmp_path: Path
) -> None:
    openai_server.reset_stats()
    started = time.monotonic()
    state = flow_module.backtranslate(
        corpus=[str(tmp_path / "missing.txt")], lang="xx", out=str(tmp_path / "out"), base_url=["127.0.0.1:8000/v1"],
        model=MODEL, return_state=True,
    )
    assert state.is_failed(), state
    assert time.monotonic() - started < 30
    for reason in ("missing.txt: no such file or folder", "unknown language code 'xx'", "'127.0.0.1:8000/v1' is not an http(s) URL"):
        assert reason in state.message
    assert openai_server.stats()["requests"] == 0
    assert not (tmp_path / "out").exists()
