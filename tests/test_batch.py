"""Batch files end to end: `synth batch export` writes a job's pending requests as Batch API JSONL,
something answers them (the `vllm run_batch` stand-in, or the test server's Batch API through
`synth batch submit`/`status`), the answers go into the cache, and the job then runs without
sending a single request to the endpoint. The main `synth` commands run as subprocesses, as a user
runs them; error paths run the same CLI in-process, and the job itself runs in-process (the
embedder is loaded once per session)."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
from typer.testing import CliRunner

from synth.backtranslate import BacktranslateJob, run_backtranslate
from synth.config import BacktranslateConfig
from synth.data import udhr_articles, udhr_path
from synth.cli import app
from synth.generate.batch import ENDPOINT, export_requests, import_results, load_records, refresh_batches
from synth.generate.cache import GenerationCache, cache_key
from synth.testing.batch_api import answer_lines
from synth.testing.openai_server import FakeOpenAI
from synth.testing.server_process import start_server

from conftest import SYNTH_BIN

MODEL = "udhr-oracle"
RECORDS = 5
ENGLISH = {" ".join(line.split()) for line in udhr_articles("eng")}


def synth(env: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([str(SYNTH_BIN), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == code, f"synth {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    return done


def job_args(out: Path, *extra: str) -> list[str]:
    return [str(udhr_path("zul")), "--lang", "zu", "--out", str(out), "--model", MODEL, "--limit", str(RECORDS), *extra]


def config(out: Path, base_url: str) -> BacktranslateConfig:
    return BacktranslateConfig(corpus=[str(udhr_path("zul"))], lang="zu", out=out, model=MODEL, limit=RECORDS, base_url=[base_url])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_job_sending_nothing(out: Path, server) -> dict:
    """Runs the job against `server`: every answer must come from the cache."""
    server.reset_stats()
    published, stats = run_backtranslate(config(out, server.base_url))
    assert server.stats()["requests"] == 0
    assert stats["run"]["requests"] == 0 and stats["run"]["cache_hits"] == RECORDS
    return stats


def test_export_answer_import_then_the_job_sends_nothing(tmp_path, openai_server, synth_env):
    out = tmp_path / "out"
    synth(synth_env, "batch", "export", "backtranslate", *job_args(out))
    requests_file = out / ".synth" / "batch" / "requests-00000.jsonl"
    lines = read_jsonl(requests_file)
    assert len(lines) == RECORDS
    # Each line is a Batch API request whose custom_id is the job's own cache key for it.
    job = BacktranslateJob(config(out, openai_server.base_url))
    planned = [(request, key) for chunk in job.chunks() for _, request, key in job.planned_requests(chunk)]
    for line, (request, key) in zip(lines, planned):
        assert line == {
            "custom_id": key, "method": "POST", "url": ENDPOINT,
            "body": {"model": MODEL, "messages": request.messages, **job.config.generation_params},
        }
        assert key == cache_key(MODEL, request.messages, job.config.generation_params)

    # Answered offline as `vllm run_batch -i ... -o ...` would; one answer is lost on the way.
    results = tmp_path / "results.jsonl"
    subprocess.run([sys.executable, "-m", "synth.testing.batch_api", "-i", str(requests_file), "-o", str(results)], check=True, timeout=60)
    answered = read_jsonl(results)
    assert [r["custom_id"] for r in answered] == [line["custom_id"] for line in lines]
    assert {r["response"]["body"]["choices"][0]["message"]["content"] for r in answered} <= ENGLISH
    lost = answered[-1]
    results.write_text("".join(json.dumps(r) + "\n" for r in answered[:-1]) + json.dumps(
        {**lost, "response": {"status_code": 500, "request_id": "req_x", "body": {"error": {"message": "boom"}}}}
    ) + "\n", encoding="utf-8")

    imported = synth(synth_env, "batch", "import", str(results), "--out", str(out))
    assert f"imported {RECORDS - 1} answers" in imported.stderr and "1 lines without an answer" in imported.stderr

    # Only the lost one is still pending; exported again and answered, the job needs nothing more.
    cache = GenerationCache(job.config.cache_path)
    try:
        (again,) = export_requests(job, cache, tmp_path / "again")
        assert [line["custom_id"] for line in read_jsonl(again)] == [lost["custom_id"]]
        output, errors = answer_lines(FakeOpenAI(), again.read_text(encoding="utf-8"))
        assert not errors
        results.write_text("".join(output), encoding="utf-8")
        assert import_results([results], cache).imported == 1
        assert export_requests(job, cache, tmp_path / "again") == []
    finally:
        cache.close()
    run_job_sending_nothing(out, openai_server)

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"custom_id": "a", "response": null}\nnot json\n', encoding="utf-8")
    refused = CliRunner().invoke(app, ["batch", "import", str(garbage), "--out", str(out)])
    assert refused.exit_code == 2
    # rich wraps long lines (a long tmp path may break anywhere): compare without whitespace.
    assert f"{garbage}:2:notaBatchAPIresultline" in "".join(refused.output.split())


def test_submit_and_status_through_the_batch_api(tmp_path, synth_env):
    """Submission is resumable (the same requests reuse their batch), `status` follows the batch
    and imports its answers once it has ended, and the API key never lands in a file."""
    key = "sk-batch-test-secret"
    out = tmp_path / "out"
    env = {**synth_env, "OPENAI_API_KEY": key}
    # The server's latency is spent in each of validating, in_progress and finalizing: 4.5 s a batch.
    with start_server("--api-key", key, "--latency", "1.5") as server:
        submitted = synth(env, "batch", "submit", "backtranslate", *job_args(out, "--base-url", server.base_url))
        (record,) = load_records(out / ".synth")
        assert f"submitted: batch {record.batch_id}" in submitted.stderr

        # Not ended yet: nothing is imported.
        client = openai.OpenAI(base_url=server.base_url, api_key=key)
        records, imported = refresh_batches(lambda url: client, out / ".synth")
        assert records[0].status in ("validating", "in_progress", "finalizing") and not records[0].imported
        assert imported.imported == 0

        again = CliRunner().invoke(app, ["batch", "submit", "backtranslate", *job_args(out, "--base-url", server.base_url)], env=env)
        assert again.exit_code == 0, again.output
        assert f"already submitted: batch {record.batch_id}" in " ".join(again.output.split())
        listing = urllib.request.Request(server.base_url + "/batches", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(listing, timeout=10) as response:
            assert [batch["id"] for batch in json.load(response)["data"]] == [record.batch_id]

        status = synth(env, "batch", "status", "--out", str(out), "--wait", "--poll-seconds", "0.5")
        assert f"imported {RECORDS} answers" in status.stderr
        assert "completed" in status.stdout
        (record,) = load_records(out / ".synth")
        assert record.imported and record.request_counts == {"total": RECORDS, "completed": RECORDS, "failed": 0}
        assert server.stats()["requests"] == 0  # the batch never went through chat completions

        for path in (out / ".synth").rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl"):
                assert key not in path.read_text(encoding="utf-8"), path
    # Every request of the job is answered in its cache: there is nothing left to send.
    job = BacktranslateJob(config(out, "http://127.0.0.1:9/v1"))
    cache = GenerationCache(job.config.cache_path)
    try:
        assert export_requests(job, cache, tmp_path / "left") == []
    finally:
        cache.close()


def test_status_without_a_batch_says_so(tmp_path):
    refused = CliRunner().invoke(app, ["batch", "status", "--out", str(tmp_path)])
    assert refused.exit_code == 2 and "no batch was submitted" in refused.output
