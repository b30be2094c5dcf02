"""Safe to run unattended (issue 13): one writer per dataset, atomic republish, no secret ever
persisted, a damaged cache never blocks, capped answers, clear errors for bad paths and inputs.

Most runs are the `synth` command as a subprocess against a server, with the model-free filters
only (`--embedder none --lid-detectors none`): what is tested is the machinery around them. The
hostile endpoint (echoes the key, answers with a gzip bomb, ...) is a small aiohttp app on a thread
of the test process.
"""

import asyncio
import gzip
import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from datasets import load_dataset

from synth import redact
from synth.data import udhr_articles
from synth.testing.openai_server import DEFAULT_MODEL
from synth.testing.server_process import ServerProcess, start_server

from conftest import SYNTH_BIN

ZULU = udhr_articles("zul")
QUICK = ["--lang", "zu", "--model", DEFAULT_MODEL, "--embedder", "none", "--lid-detectors", "none", "--splits", "train=1"]
KEY = "sk-test-" + "k3y" * 10             # an OpenAI-shaped key
TOKEN = "hf_" + "T0kenT0ken" * 4           # a Hugging Face-shaped token


def run_synth(args: list[str], env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYNTH_BIN), "backtranslate", *args], env=env, capture_output=True, text=True, timeout=timeout)


def flat(text: str) -> str:
    return " ".join(text.split())


def corpus(tmp_path: Path, lines: int = 10) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(ZULU[:lines]) + "\n", encoding="utf-8")
    return path


def dataset_ids(out: Path, cache: Path, config: str | None = None) -> list[str]:
    rows = load_dataset(str(out), config, cache_dir=str(cache), download_mode="force_redownload")
    return [i for split in rows.values() for i in split["id"]]


def every_byte_under(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())


# --- a hostile endpoint ----------------------------------------------------------------------------

class Hostile:
    """An OpenAI-compatible endpoint on a thread whose behaviour is the first part of the path:
    http://127.0.0.1:PORT/MODE/v1, MODE one of
      echo400, echo404, echo500  the Authorization header echoed in an error body of that status
      echo-answer                a completion whose text holds the Authorization header
      bomb                       a 200 KB gzip body that expands to 200 MB
      huge                       a plain 300 KB answer
      long-words                 an answer of 20,000 words (under the caps, dropped by the filters)
    """

    def __init__(self) -> None:
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(10)
        self.bomb = gzip.compress(json.dumps(self._completion("x" * 200_000_000)).encode(), compresslevel=9)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    @staticmethod
    def _completion(text: str) -> dict:
        return {
            "id": "x", "object": "chat.completion", "model": DEFAULT_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10},
        }

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        mode = request.match_info["mode"]
        auth = request.headers.get("Authorization", "")
        if mode.startswith("echo") and mode[4:].isdigit():
            body = {"error": {"message": f"bad request, you sent Authorization: {auth}", "code": None}}
            return web.json_response(body, status=int(mode[4:]))
        if mode == "echo-answer":
            return web.json_response(self._completion(f"Everyone has the right to life. (your header was {auth})"))
        if mode == "bomb":
            return web.Response(body=self.bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        if mode == "huge":
            return web.json_response(self._completion("word " * 60_000))
        if mode == "long-words":
            return web.json_response(self._completion("Everyone " * 20_000))
        return web.Response(status=500)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=1 << 24)
        app.router.add_post("/{mode}/v1/chat/completions", self._handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.loop.run_until_complete(web.SockSite(runner, sock).start())
        self.ready.set()
        self.loop.run_forever()


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    yield Hostile()


# --- 1. one writer per dataset folder ----------------------------------------------------------------

def test_a_second_run_into_the_same_folder_stops_at_once_naming_the_first(tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    with start_server("--latency", "0.3") as server:
        args = [str(corpus(tmp_path, 12)), "--out", str(out), "--base-url", server.base_url, "--concurrency", "2", *QUICK]
        first = subprocess.Popen([str(SYNTH_BIN), "backtranslate", *args], env=synth_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (out / ".synth" / "run.lock.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        holder = json.loads((out / ".synth" / "run.lock.json").read_text())
        started = time.monotonic()
        second = run_synth(args, synth_env)
        took = time.monotonic() - started
        _, first_err = first.communicate(timeout=120)
        requests = server.stats()["requests"]

    assert second.returncode == 2, second.stderr
    message = flat(second.stderr)
    assert f"is in use by another synth run (pid {first.pid} on {holder['host']}, started {holder['started']}" in message
    assert "Traceback" not in second.stderr and took < 30
    # The first run was left alone: it finished, its dataset is whole, and nothing was asked twice.
    assert first.returncode == 0, first_err
    assert sorted(dataset_ids(out, tmp_path / "hf")) == sorted(set(dataset_ids(out, tmp_path / "hf2")))
    assert len(dataset_ids(out, tmp_path / "hf3")) + json.loads((out / "stats.json").read_text())["rows"]["rejected"] == 12
    assert requests == 12
    assert not (out / ".synth" / "run.lock.json").exists()  # released


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    from synth.runlock import RunLock, RunLocked

    folder = tmp_path / "work"
    folder.mkdir()
    holder = subprocess.Popen([
        sys.executable, "-c",
        "import sys, time; from synth.runlock import RunLock; held = RunLock(sys.argv[1], 'x').acquire('dead-run', 'synth ...'); "
        "print('held', flush=True); time.sleep(600)", str(folder),
    ], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=f"pid {holder.pid} on .*run dead-run"):
        RunLock(folder, "the dataset folder X").acquire()
    holder.kill()  # kill -9: no chance to release anything
    holder.wait()

    lock = RunLock(folder, "the dataset folder X").acquire("next-run")
    try:
        assert lock.taken_over["pid"] == holder.pid and lock.taken_over["run_id"] == "dead-run"
        assert json.loads((folder / "run.lock.json").read_text())["run_id"] == "next-run"
    finally:
        lock.release()


# --- 2. atomic republish -------------------------------------------------------------------------------

def test_every_instant_of_a_republish_loads_the_old_or_the_new_version(
    openai_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file operation of a republish (another --rows-per-shard, more rows) is followed by a
    load: the rows are exactly the old version's or the new one's, never both, never neither."""
    import synth.publish.dataset as dataset
    from synth.backtranslate import BacktranslateJob
    from synth.config import BacktranslateConfig

    def config(limit: int, rows_per_shard: int) -> BacktranslateConfig:
        return BacktranslateConfig(
            corpus=[str(corpus(tmp_path, 10))], lang="zu", out=tmp_path / "out", base_url=[openai_server.base_url],
            model=DEFAULT_MODEL, embedder="none", lid_detectors=[], splits="train=1", limit=limit,
            rows_per_shard=rows_per_shard, chunk_size=4,
        )

    out = tmp_path / "out"
    BacktranslateJob(config(6, 3)).run()
    old = sorted(dataset_ids(out, tmp_path / "hf-old"))
    seen: list[list[str]] = []
    loads = iter(range(1000))

    def check() -> None:
        ids = dataset_ids(out, tmp_path / f"hf-{next(loads)}")
        assert len(ids) == len(set(ids)), "a row twice: both versions read"
        seen.append(sorted(ids))

    def checked(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            check()
            return result
        return wrapper

    monkeypatch.setattr(dataset, "replace_durably", checked(dataset.replace_durably))
    monkeypatch.setattr(dataset, "atomic_write_text", checked(dataset.atomic_write_text))
    monkeypatch.setattr(dataset, "atomic_write_json", checked(dataset.atomic_write_json))
    original_remove = dataset._remove_stale

    def remove_one_by_one(out_dir, folders, keep):
        for folder in folders:
            for path in sorted((out_dir / folder).glob(dataset._SHARD_GLOB)):
                if path not in keep:
                    path.unlink()
                    check()
        original_remove(out_dir, folders, keep)

    monkeypatch.setattr(dataset, "_remove_stale", remove_one_by_one)
    BacktranslateJob(config(10, 2)).run()
    new = sorted(dataset_ids(out, tmp_path / "hf-new"))

    assert len(old) < len(new) and set(old) < set(new)
    assert len(seen) > 10
    assert all(ids in (old, new) for ids in seen), [len(ids) for ids in seen]
    assert seen[-1] == new and seen[0] == old


def test_a_publish_cut_short_after_its_shards_leaves_the_old_version_loadable(
    openai_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill -9 of the issue, mid-republish, after the new shards and before the card."""
    import synth.publish.dataset as dataset
    from synth.backtranslate import BacktranslateJob
    from synth.config import BacktranslateConfig

    def job(rows_per_shard: int) -> BacktranslateJob:
        return BacktranslateJob(BacktranslateConfig(
            corpus=[str(corpus(tmp_path, 10))], lang="zu", out=tmp_path / "out", base_url=[openai_server.base_url],
            model=DEFAULT_MODEL, embedder="none", lid_detectors=[], splits="train=1", rows_per_shard=rows_per_shard,
        ))

    out = tmp_path / "out"
    job(3).run()
    old = sorted(dataset_ids(out, tmp_path / "hf-old"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the plots come after every new shard is in place

    monkeypatch.setattr("synth.publish.plots.write_plots", killed)
    with pytest.raises(KeyboardInterrupt):
        job(2).run()
    assert len(list((out / "data").glob("*.parquet"))) > 4  # both versions' shards are there
    assert sorted(dataset_ids(out, tmp_path / "hf-mid")) == old
    monkeypatch.undo()
    job(2).run()
    assert sorted(dataset_ids(out, tmp_path / "hf-new")) == old
    assert len(list((out / "data").glob("*.parquet"))) == (len(old) + 1) // 2
    assert dataset.SHARD_HASH_CHARS == 16


# --- 3. secrets --------------------------------------------------------------------------------------

def test_scrub_finds_keys_tokens_and_url_passwords() -> None:
    redact.register("s3cret-value-123", None, "short")
    try:
        text = (
            'key s3cret-value-123, json "s3cret-value-123", url-escaped s3cret-value-123 '
            "http://alice:pa55word@host:8000/v1 Authorization: Bearer abcdefgh12345678 "
            f"{KEY} {TOKEN} short"
        )
        cleaned = redact.scrub(text)
        for secret in ("s3cret-value-123", "pa55word", "abcdefgh12345678", KEY, TOKEN):
            assert secret not in cleaned
        assert "http://alice:[REDACTED]@host:8000/v1" in cleaned
        assert "short" in cleaned  # too short to be registered: data is not mangled for it
        assert redact.scrub("http://127.0.0.1:8000/v1 is fine") == "http://127.0.0.1:8000/v1 is fine"
    finally:
        redact.forget_all()


@pytest.mark.parametrize("mode", ["echo400", "echo404"])
def test_an_endpoint_echoing_the_key_in_an_error_never_gets_it_printed(mode: str, hostile: Hostile, tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    result = run_synth(
        [str(corpus(tmp_path, 3)), "--out", str(out), "--base-url", hostile.url(mode), *QUICK],
        {**synth_env, "OPENAI_API_KEY": KEY},
    )
    assert result.returncode == 3, result.stderr
    assert "you sent Authorization: Bearer [REDACTED]" in flat(result.stderr)
    assert KEY not in result.stderr + result.stdout
    assert KEY.encode() not in every_byte_under(out)


def test_a_5xx_echoing_the_key_is_scrubbed_from_the_circuits_last_error() -> None:
    from synth.generate.backends import OpenAIBackend

    redact.register(KEY)
    try:
        backend = OpenAIBackend(["http://127.0.0.1:9/v1"], DEFAULT_MODEL, KEY)
        error = backend._status_error("http://u:pw123456@h/v1", 503, {}, json.dumps({"error": {"message": f"echo Bearer {KEY}"}}).encode())
        assert KEY not in str(error) and "pw123456" not in str(error)
    finally:
        redact.forget_all()


def test_an_answer_holding_the_key_is_scrubbed_from_cache_chunks_and_dataset(hostile: Hostile, tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    result = run_synth(
        [str(corpus(tmp_path, 3)), "--out", str(out), "--base-url", hostile.url("echo-answer"), *QUICK],
        {**synth_env, "OPENAI_API_KEY": KEY},
    )
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stderr + result.stdout
    everything = every_byte_under(out)
    assert KEY.encode() not in everything  # dataset, rejects, staged chunks, SQLite cache and its WAL
    assert b"[REDACTED]" in everything


def test_a_hub_error_echoing_the_token_is_not_printed(hostile: Hostile, openai_server: ServerProcess, tmp_path: Path, synth_env: dict) -> None:
    env = {k: v for k, v in synth_env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_TOKEN=TOKEN, HF_ENDPOINT=f"http://127.0.0.1:{hostile.port}/echo400", HF_HUB_DISABLE_XET="1")
    out = tmp_path / "out"
    result = run_synth([str(corpus(tmp_path, 3)), "--out", str(out), "--base-url", openai_server.base_url, "--push-to-hub", "org/name", "--license", "cc-by-4.0", *QUICK], env)
    assert result.returncode == 4, result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert TOKEN.encode() not in every_byte_under(out)


# --- 4. self-healing state -----------------------------------------------------------------------------

def test_a_damaged_cache_and_staged_chunks_are_set_aside_and_redone(openai_server: ServerProcess, tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    args = [str(corpus(tmp_path, 12)), "--out", str(out), "--base-url", openai_server.base_url, "--chunk-size", "4", *QUICK]
    assert run_synth(args, synth_env).returncode == 0
    expected = sorted(dataset_ids(out, tmp_path / "hf1"))
    work = out / ".synth"
    # Garbage in one chunk's record, another chunk's kept part, and the cache cut to half.
    records = sorted((work / "chunks").glob("*.json"))
    records[0].write_text("{not json")
    parts = sorted((work / "chunks").glob("*.kept.parquet"))
    parts[1].write_bytes(b"PAR1 garbage")
    cache = work / "generations.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])

    openai_server.reset_stats()
    rerun = run_synth(args, synth_env)
    assert rerun.returncode == 0, rerun.stderr
    message = flat(rerun.stderr)
    assert "warning:" in message and "is damaged" in message and "set aside" in message
    assert "Traceback" not in rerun.stderr
    assert sorted(dataset_ids(out, tmp_path / "hf2")) == expected
    aside = sorted(p.name for p in (work / "damaged").iterdir())
    assert any(name.startswith("generations.sqlite.") for name in aside)
    assert any(name.startswith(records[0].name) for name in aside) and any(name.startswith(parts[1].name) for name in aside)
    # Two chunks redone: at most their 8 requests (fewer when their answers survived in the cache).
    assert openai_server.stats()["requests"] <= 8


def test_a_damaged_cache_entry_is_moved_aside_and_asked_again(tmp_path: Path) -> None:
    from synth.generate.cache import GenerationCache

    cache = GenerationCache(tmp_path / "generations.sqlite")
    cache.put_many([("good", "m", {"text": "ok", "prompt_tokens": 1, "completion_tokens": 1}), ("bad", "m", {"text": "x"})])
    cache._db.execute("UPDATE generations SET answer = '{garbage' WHERE key = 'bad'")
    assert set(cache.get_many(["good", "bad"])) == {"good"}
    assert cache._db.execute("SELECT key FROM damaged_generations").fetchall() == [("bad",)]
    assert len(cache) == 1 and cache.repairs
    cache.close()


def test_a_cache_file_that_is_not_a_database_is_set_aside(tmp_path: Path) -> None:
    from synth.generate.cache import GenerationCache

    path = tmp_path / "generations.sqlite"
    path.write_bytes(b"this is not SQLite" * 1000)
    cache = GenerationCache(path)
    cache.put("k", "m", {"text": "t", "prompt_tokens": 0, "completion_tokens": 0})
    assert cache.get("k")["text"] == "t" and "set aside" in cache.repairs[0]
    assert len(list((tmp_path / "damaged").iterdir())) == 1
    cache.close()


# --- 5. caps ---------------------------------------------------------------------------------------------

def test_a_gzip_bomb_fails_its_request_as_too_large_quickly(hostile: Hostile, tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    hostile.requests = 0
    started = time.monotonic()
    result = run_synth([str(corpus(tmp_path, 2)), "--out", str(out), "--base-url", hostile.url("bomb"), *QUICK], synth_env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    rejects = pq.read_table(next((out / "rejects").glob("*.parquet"))).to_pylist()
    assert [row["reject_reason"] for row in rejects] == ["generation_failed:too_large"] * 2
    assert hostile.requests == 2  # not retried: asking again pays again


def test_an_answer_longer_than_max_tokens_allows_is_too_large(hostile: Hostile, tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    result = run_synth([str(corpus(tmp_path, 1)), "--out", str(out), "--base-url", hostile.url("huge"), *QUICK], synth_env)
    assert result.returncode == 0, result.stderr
    rejects = pq.read_table(next((out / "rejects").glob("*.parquet"))).to_pylist()
    assert [row["reject_reason"] for row in rejects] == ["generation_failed:too_large"]


def test_rejects_keep_a_bounded_excerpt_of_a_long_answer(hostile: Hostile, tmp_path: Path, synth_env: dict) -> None:
    from synth.staging import REJECT_EXCERPT_CHARS

    out = tmp_path / "out"
    result = run_synth(
        [str(corpus(tmp_path, 1)), "--out", str(out), "--base-url", hostile.url("long-words"), "--max-tokens", "8192", *QUICK], synth_env
    )
    assert result.returncode == 0, result.stderr
    [row] = pq.read_table(next((out / "rejects").glob("*.parquet"))).to_pylist()
    assert row["reject_stage"] != "generate"
    for column in ("raw_answer", "translation"):
        assert len(row[column]) < REJECT_EXCERPT_CHARS + 100 and row[column].endswith("more characters cut]")


# --- 6. clear errors -------------------------------------------------------------------------------------

def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments before the common ones, a part of the message)."""
    good = corpus(tmp)
    (tmp / "a-file").write_text("x")
    (tmp / "data-is-file" / "data").parent.mkdir()
    (tmp / "data-is-file" / "data").write_text("x")
    (tmp / "card-is-folder" / "README.md").mkdir(parents=True)
    (tmp / "big.jsonl").write_text('{"n": ' + "9" * 5000 + ', "text": "Sawubona"}\n')
    (tmp / "deep.jsonl").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + ', "text": "Sawubona"}\n')
    os.mkfifo(tmp / "fifo.txt")
    os.symlink(tmp / "loop.txt", tmp / "loop.txt")
    (tmp / "quote.csv").write_text('text\nSawubona\n"Unclosed quote, Yebo\nSalani kahle\n')
    return {
        "out is a file": ([str(good), "--out", str(tmp / "a-file")], "a-file is a file, not a folder"),
        "out is /dev/null": ([str(good), "--out", "/dev/null"], "/dev/null is a device, not a folder"),
        "out under a file": ([str(good), "--out", str(tmp / "a-file" / "out")], "is inside"),
        "out in /proc": ([str(good), "--out", "/proc/synth-out"], "virtual filesystem"),
        "cache-dir is a file": ([str(good), "--out", str(tmp / "o1"), "--cache-dir", str(tmp / "a-file")], "--cache-dir"),
        "OUT/data is a file": ([str(good), "--out", str(tmp / "data-is-file")], "data is a file, but synth writes a folder there"),
        "OUT/README.md is a folder": ([str(good), "--out", str(tmp / "card-is-folder")], "README.md is a folder"),
        "a 5,000-digit number": ([str(tmp / "big.jsonl"), "--out", str(tmp / "o2")], "big.jsonl:1: a number too long to read"),
        "deep nesting": ([str(tmp / "deep.jsonl"), "--out", str(tmp / "o3")], "deep.jsonl:1: JSON nested too deeply"),
        "a FIFO": ([str(tmp / "fifo.txt"), "--out", str(tmp / "o4")], "a named pipe (FIFO), not a file"),
        "a symlink loop": ([str(tmp / "loop.txt"), "--out", str(tmp / "o5")], "a loop of symbolic links"),
        "an unclosed CSV quote": ([str(tmp / "quote.csv"), "--out", str(tmp / "o6")], "quote.csv:3: a quoted cell opens on line 3 and is never closed"),
    }


@pytest.fixture(scope="module")
def bad_case_results(tmp_path_factory: pytest.TempPathFactory, synth_env: dict, openai_server: ServerProcess) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("bad-cases")
    cases = _bad_cases(tmp)
    with ThreadPoolExecutor(3) as pool:
        futures = {
            name: pool.submit(run_synth, [*args, "--base-url", openai_server.base_url, *QUICK], synth_env, 60)
            for name, (args, _) in cases.items()
        }
        return {name: (future.result(), cases[name][1]) for name, future in futures.items()}


@pytest.mark.parametrize("case", [
    "out is a file", "out is /dev/null", "out under a file", "out in /proc", "cache-dir is a file", "OUT/data is a file",
    "OUT/README.md is a folder", "a 5,000-digit number", "deep nesting", "a FIFO", "a symlink loop", "an unclosed CSV quote",
])
def test_bad_paths_and_inputs_are_exit_2_with_one_clear_line(case: str, bad_case_results: dict) -> None:
    result, expected = bad_case_results[case]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    # A piped run logs its stages (synth.progress) before it meets a bad line: the error is the
    # run's one "error:" line, its last, and says what to do.
    lines = [line for line in result.stderr.split("\n") if line.strip()]
    errors = [index for index, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    message = flat("\n".join(lines[errors[0]:]))
    assert expected in message, message
    assert all(re.match(r"\d\d:\d\d:\d\d (read|generate):", line) for line in lines[: errors[0]]), result.stderr


def test_ctrl_c_in_a_terminal_stops_the_run_and_its_filter_process_quietly(tmp_path: Path, synth_env: dict) -> None:
    # A terminal sends SIGINT to the whole process group: the filter process too, not only synth.
    out = tmp_path / "out"
    with start_server("--latency", "0.2") as server:
        args = [str(corpus(tmp_path, 40)), "--out", str(out), "--base-url", server.base_url, "--concurrency", "2", "--chunk-size", "4", *QUICK]
        run = subprocess.Popen([str(SYNTH_BIN), "backtranslate", *args], env=synth_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < 12 and time.monotonic() < deadline:  # chunks filtered in the filter process
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=60)

    assert run.returncode == 130, stderr
    assert "stopped by Ctrl-C" in flat(stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


def test_ctrl_c_once_the_run_is_done_ends_it_without_a_traceback(tmp_path: Path, synth_env: dict) -> None:
    # The run is over (published, summary printed): Ctrl-C takes the signal's own action, like any
    # program's, rather than a KeyboardInterrupt amid the summary or in the interpreter's exit,
    # which waits for the filter process ("Exception ignored in threading._shutdown" and a traceback).
    out = tmp_path / "out"
    with start_server() as server:
        args = [str(corpus(tmp_path, 8)), "--out", str(out), "--base-url", server.base_url, "--chunk-size", "4", *QUICK]
        run = subprocess.Popen([str(SYNTH_BIN), "backtranslate", *args], env=synth_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines = []
        for line in run.stderr:  # the stages, the funnel, then the summary
            lines.append(line)
            if line.startswith("dataset: "):  # the last line but hints: the process is on its way out
                os.killpg(run.pid, signal.SIGINT)
                break
        _, rest = run.communicate(timeout=60)
        stderr = "".join(lines) + rest

    assert any(line.startswith("dataset: ") for line in lines), stderr
    assert run.returncode in (0, -signal.SIGINT), stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "stopped by" not in stderr  # the run is complete: nothing to go on with
    rows = json.loads((out / "stats.json").read_text())["rows"]
    assert rows["kept"] + rows["rejected"] == 8


def test_sigterm_stops_with_a_message_exit_143_and_the_rerun_goes_on(tmp_path: Path, synth_env: dict) -> None:
    out = tmp_path / "out"
    with start_server("--latency", "0.4") as server:
        args = [str(corpus(tmp_path, 16)), "--out", str(out), "--base-url", server.base_url, "--concurrency", "2", "--chunk-size", "4", *QUICK]
        run = subprocess.Popen([str(SYNTH_BIN), "backtranslate", *args], env=synth_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
        sent = server.stats()["requests"]
        rerun = run_synth(args, synth_env)
        resent = server.stats()["requests"] - sent

    assert run.returncode == 143, stderr
    assert "stopped by SIGTERM" in flat(stderr) and "rerun the same command" in flat(stderr)
    assert "Traceback" not in stderr
    assert rerun.returncode == 0, rerun.stderr
    assert sent + resent <= 16 + 2  # every answer received before the signal was kept (2 in flight at most)
    assert len(dataset_ids(out, tmp_path / "hf")) + json.loads((out / "stats.json").read_text())["rows"]["rejected"] == 16


def test_bad_input_docs_name_every_new_case() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    for name in ("a file as `--out`", "/dev/null", "/proc", "--cache-dir", "README.md", "5,000-digit", "nested", "FIFO",
                 "symbolic links", "unclosed quote", "SIGTERM", "two runs", "gzip", "damaged"):
        assert name in docs, name
