"""Bad inputs the way a user meets them: the `synth` command as a subprocess, its exit code, its
message, and what is left of the work done before the problem. docs/bad-inputs.md lists every case
and where it is tested; the cases already covered elsewhere are not repeated here (missing, empty
and binary files, invalid UTF-8 in the first chunk, an unknown language code: test_cli.py; an
unreachable endpoint, a wrong API key, an unknown model: test_backtranslate.py).

Runs use the model-free filters only (`--embedder none --lid-detectors none`): what is tested is
reading, generating and writing.
"""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.data import udhr_articles
from synth.testing.openai_server import DEFAULT_MODEL
from synth.testing.server_process import ServerProcess, start_server

from conftest import SYNTH_BIN

ZULU = udhr_articles("zul")
QUICK = ["--lang", "zu", "--model", DEFAULT_MODEL, "--embedder", "none", "--lid-detectors", "none", "--splits", "train=1"]


def run_synth(args: list[str], env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYNTH_BIN), "backtranslate", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def flat(text: str) -> str:
    return " ".join(text.split())


def output_texts(out: Path) -> list[str]:
    files = sorted((out / "data").glob("*.parquet")) + sorted((out / "rejects").glob("*.parquet"))
    return [row["text"] for path in files for row in pq.read_table(path, columns=["text"]).to_pylist()]


def test_a_folder_and_a_10_mb_line(openai_server: ServerProcess, tmp_path: Path, synth_env: dict) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("Sawubona\n")
    long_line = " ".join(["umuntu"] * 1_500_000)  # 10.5 MB, one line
    (tmp_path / "corpus.txt").write_text("\n".join([*ZULU[:5], long_line, *ZULU[5:10]]) + "\n", encoding="utf-8")
    runs = [
        ["notes", "--out", "out-folder", "--base-url", openai_server.base_url, *QUICK],
        ["corpus.txt", "--out", "out-long", "--base-url", openai_server.base_url, *QUICK],
    ]
    with ThreadPoolExecutor(2) as pool:
        folder, long = pool.map(lambda args: run_synth(args, synth_env, cwd=tmp_path), runs)

    assert folder.returncode == 2, folder.stderr
    message = flat(folder.stderr)
    assert "notes: a folder, but not a Hugging Face dataset" in message and "'notes/*.txt'" in message
    assert "Traceback" not in folder.stderr

    # The long line is dropped when read (counted, with the reason), the others are translated.
    assert long.returncode == 0, long.stderr
    stats = json.loads((tmp_path / "out-long" / "stats.json").read_text())
    assert stats["read"]["too_long_dropped"] == 1
    assert stats["funnel"]["zu"][0] == {"step": "read", "in": 11, "out": 10, "dropped": {"too_long": 1}}
    assert len(output_texts(tmp_path / "out-long")) == 10


def test_invalid_utf8_deep_in_the_corpus_keeps_what_was_read_before_it(tmp_path: Path, synth_env: dict) -> None:
    corpus = tmp_path / "corpus.txt"
    lines = [line.encode() for line in ZULU]
    lines[22] = "Café crème".encode("latin-1")  # line 23, in the fifth chunk of five
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    with start_server("--latency", "0.1") as server:
        args = [str(corpus), "--out", str(out), "--base-url", server.base_url, "--chunk-size", "5", "--concurrency", "4", *QUICK]
        first = run_synth(args, synth_env)
        assert first.returncode == 2, first.stderr
        assert "corpus.txt:23: invalid UTF-8" in flat(first.stderr) and "Traceback" not in first.stderr
        # The four chunks read before the bad line were generated and staged all the same.
        assert server.stats()["requests"] == 20

        corpus.write_text("\n".join(ZULU) + "\n", encoding="utf-8")  # fixed
        second = run_synth(args, synth_env)
        assert second.returncode == 0, second.stderr
        sent = server.stats()
    assert sent["requests"] == 30 and set(sent["prompts"].values()) == {1}  # nothing asked twice
    assert len(output_texts(out)) == 30


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 64 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_is_a_clear_error_and_the_rerun_resends_nothing_saved(
    openai_server: ServerProcess, tiny_disk: Path, synth_env: dict, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(ZULU) + "\n", encoding="utf-8")
    out = tiny_disk / "out"
    args = [str(corpus), "--out", str(out), "--base-url", openai_server.base_url, "--chunk-size", "5", *QUICK]
    openai_server.reset_stats()
    first = run_synth(args, synth_env)
    assert first.returncode == 2, first.stderr
    message = flat(first.stderr)
    assert "cannot write the output" in message and ("disk is full" in message or "No space left" in message)
    assert "nothing written so far is lost" in message and "Traceback" not in first.stderr
    sent_first = openai_server.stats()["requests"]

    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_disk)], check=True)  # space freed
    second = run_synth(args, synth_env)
    assert second.returncode == 0, second.stderr
    assert sorted(output_texts(out)) == sorted(" ".join(line.split()) for line in ZULU)
    # Answers saved before the disk filled came from the cache; only the others were sent again.
    run = json.loads(max((out / ".synth" / "runs").glob("*.json"), key=lambda path: path.stat().st_mtime).read_text())
    assert run["cache_hits"] + run["requests"] == 30
    assert openai_server.stats()["requests"] == sent_first + run["requests"]
    print(f"full disk: {run['cache_hits']} answers saved before it filled, {run['requests']} sent again")
