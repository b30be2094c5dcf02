"""Soak: `synth backtranslate` killed with -9 at random instants, each kill followed by a rerun, and
every output verified. Not a test (it takes minutes); it prints a table and the figures that
bench/README.md reports.

    .venv/bin/python bench/soak.py --runs 30 --seed 1
    .venv/bin/python bench/soak.py --runs 4 --lines 120          # a quick look

Against the test suite's OpenAI-compatible server (`python -m synth.testing.openai_server`: no
model, no GPU). Each trial is one of:

- **fresh**: a new output folder; the run is killed at an instant drawn uniformly over a measured
  uninterrupted run (start-up and reading, generation, filtering and staging, publishing), or,
  one trial in three, within its publish window;
- **republish**: a finished dataset republished with another --rows-per-shard, killed within the
  publish window: the folder as the kill left it must load as a whole version (the same rows, each
  once);
- **double**: a second run started into the same folder while the first runs (it must stop at once
  with exit 2, leaving the first alone), then the first killed.

Where the kill landed is read off the folder and the server at that instant: `read` (no request
yet), `generate` (requests in flight), `filter` (none in flight, a chunk not staged), `stage` (a
staged file being written), `publish` (every chunk staged). After each kill: if a card exists, the
folder loads with no id twice. After each rerun (which must exit 0): the dataset loads
(`datasets.load_dataset`), no id appears twice, every input line is in the kept rows or the
rejects exactly once, and the requests of kill + rerun are at most records + requests in flight at
the kill (`--concurrency`): nothing answered before the kill is asked again.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throughput import unique_lines  # noqa: E402

from synth.read import read_segments  # noqa: E402
from synth.testing.openai_server import DEFAULT_MODEL  # noqa: E402
from synth.testing.server_process import start_server  # noqa: E402

SYNTH = Path(sys.executable).with_name("synth")
PHASES = ("read", "generate", "filter", "stage", "publish")


def env() -> dict:
    return {
        **{k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "250",
    }


def command(corpus: Path, out: Path, base_url: str, args) -> list[str]:
    return [
        str(SYNTH), "backtranslate", str(corpus), "--out", str(out), "--lang", "zu", "--model", DEFAULT_MODEL,
        "--base-url", base_url, "--embedder", "none", "--lid-detectors", "none", "--chunk-size", str(args.chunk_size),
        "--concurrency", str(args.concurrency),
    ]


def publishing(out: Path, since: float) -> bool:
    """Whether a publish has begun writing: a temp shard, or a published file newer than `since`."""
    if any(out.glob("*/.*.tmp")):
        return True
    return any(
        path.stat().st_mtime > since for path in out.glob("*") if path.name != ".synth"
    ) if out.is_dir() else False


def phase_now(out: Path, server, chunks: int, since: float | None = None) -> str:
    """Where a run is, from the outside: its folder and the server's counters. `since`: the wall
    time the run started, for a folder that was complete before it (a republish)."""
    staged = out / ".synth" / "chunks"
    records = len(list(staged.glob("*.json"))) if staged.is_dir() else 0
    if records >= chunks:
        if since is None or publishing(out, since):
            return "publish"
        return "read"  # start-up and reading, before the republish writes anything
    if staged.is_dir() and any(staged.glob(".*.tmp")):
        return "stage"
    stats = server.stats()
    if stats["requests"] == 0:
        return "read"
    in_flight = stats["requests"] - sum(stats["by_status"].values())
    return "generate" if in_flight > 0 else "filter"


def dataset_ids(out: Path, cache: Path) -> list[str]:
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    ids = []
    for config in ("default", "rejects"):
        try:
            rows = load_dataset(str(out), config, cache_dir=str(cache), download_mode="force_redownload")
        except ValueError as error:  # no kept row at all: only the rejects config is declared
            if config == "default" and "rejects" in str(error):
                continue
            raise
        ids += [i for split in rows.values() for i in split["id"]]
    shutil.rmtree(cache, ignore_errors=True)
    return ids


def timeline(corpus: Path, work: Path, server, args, chunks: int, copy_of: Path | None = None) -> dict[str, float]:
    """Seconds from start to the first request, to every chunk staged, and to the end; of a
    republish of `copy_of` with another --rows-per-shard where given."""
    out = work / "baseline"
    extra = []
    if copy_of is not None:
        shutil.copytree(copy_of, out)
        extra = ["--rows-per-shard", "7"]
    server.reset_stats()
    since = time.time()
    started = time.monotonic()
    process = subprocess.Popen([*command(corpus, out, server.base_url, args), *extra], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marks: dict[str, float] = {}
    while process.poll() is None:
        phase = phase_now(out, server, chunks, since if copy_of is not None else None)
        marks.setdefault(phase, time.monotonic() - started)
        time.sleep(0.02)
    marks["end"] = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"the baseline run failed: {process.stderr.read().decode()[-2000:]}")
    shutil.rmtree(out)
    return marks


def kill_at(process: subprocess.Popen, seconds: float, out: Path, server, chunks: int, since: float | None) -> str | None:
    """kill -9 at `seconds` after start (None: it ended first); returns the phase it was in."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        time.sleep(0.005)
    phase = phase_now(out, server, chunks, since)
    if process.poll() is not None:
        return None
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(0.3)  # the filter process notices its parent is gone and exits
    return phase


def verify(out: Path, segments: set[str], cache: Path) -> list[str]:
    """What is wrong with a finished dataset (empty: nothing)."""
    problems = []
    ids = dataset_ids(out, cache)
    counts = Counter(ids)
    twice = [i for i, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} ids twice")
    if set(ids) != segments:
        problems.append(f"{len(segments - set(ids))} lines missing, {len(set(ids) - segments)} unknown")
    stats = json.loads((out / "stats.json").read_text())
    files = [out / f for f in stats["files"]]
    if sum(pq.read_metadata(f).num_rows for f in files if "/data/" in f"/{f.relative_to(out)}") != stats["rows"]["kept"]:
        problems.append("stats.json disagrees with the shards")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="trials (each a kill -9 and a rerun)")
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="synth-soak-"))
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(unique_lines(args.lines)) + "\n", encoding="utf-8")
    segments = {s.id for s in read_segments([corpus])}
    chunks = -(-len(segments) // args.chunk_size)
    trials, failures = [], []
    with start_server("--latency", "0.05", "--per-token-latency", "0.002", "--slots", str(args.concurrency)) as server:
        marks = timeline(corpus, work, server, args, chunks)
        print(f"{len(segments)} records in {chunks} chunks; an uninterrupted run: " + ", ".join(f"{k} at {v:.1f} s" for k, v in marks.items()))
        publish_from = marks.get("publish", marks["end"] * 0.9)
        finished = work / "finished"  # a complete dataset, copied for each republish trial
        subprocess.run(command(corpus, finished, server.base_url, args), env=env(), check=True, capture_output=True)
        again = timeline(corpus, work, server, args, chunks, copy_of=finished)
        print("a republish (--rows-per-shard 7): " + ", ".join(f"{k} at {v:.1f} s" for k, v in again.items()))
        for trial in range(args.runs):
            kind = ("fresh", "fresh", "republish", "double")[trial % 4]
            out = work / f"trial-{trial:03d}"
            base = command(corpus, out, server.base_url, args)
            since = None
            if kind == "republish":
                shutil.copytree(finished, out)
                base += ["--rows-per-shard", str(rng.choice([7, 13, 50]))]
                at = rng.uniform(again.get("publish", again["end"] * 0.5) * 0.9, again["end"])
                since = time.time()
            elif rng.random() < 1 / 3:
                at = rng.uniform(publish_from, marks["end"])
            else:
                at = rng.uniform(0.5, marks["end"])
            server.reset_stats()
            started = time.monotonic()
            process = subprocess.Popen(base, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            second = None
            if kind == "double":
                while not (out / ".synth" / "run.lock.json").exists() and process.poll() is None:
                    time.sleep(0.01)
                second = subprocess.run(base, env=env(), capture_output=True, text=True)
                at = max(at, time.monotonic() - started)
            phase = kill_at(process, at - (time.monotonic() - started), out, server, chunks, since)
            problems = []
            if second is not None and (second.returncode != 2 or "in use by another synth run" not in second.stderr):
                problems.append(f"the second run: exit {second.returncode}: {second.stderr[-300:]}")
            if phase is not None and (out / "README.md").exists():
                mid = dataset_ids(out, work / "hf-mid")
                if len(mid) != len(set(mid)):
                    problems.append("after the kill: an id twice")
                if kind == "republish" and set(mid) != segments:
                    problems.append("after the kill: not a whole version")
            sent = server.stats()["requests"]
            rerun = subprocess.run(base, env=env(), capture_output=True, text=True)
            total = server.stats()["requests"]
            if rerun.returncode != 0:
                problems.append(f"rerun exit {rerun.returncode}: {rerun.stderr[-500:]}")
            else:
                problems += verify(out, segments, work / "hf")
            fresh = kind != "republish"
            limit = (len(segments) if fresh else 0) + args.concurrency
            if total > limit:
                problems.append(f"{total} requests (kill {sent} + rerun {total - sent}) > {limit}")
            trials.append({"trial": trial, "kind": kind, "phase": phase or "ended first", "at": round(at, 2),
                           "requests": total, "rerun_requests": total - sent, "problems": problems})
            failures += problems
            print(f"{trial:3d} {kind:9s} killed at {at:5.2f} s in {phase or 'ended first':11s} requests {sent:4d} + {total - sent:4d}"
                  f"  {'OK' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
            shutil.rmtree(out, ignore_errors=True)

    killed = [t for t in trials if t["phase"] != "ended first"]
    by_phase = Counter(t["phase"] for t in killed)
    summary = {
        "records": len(segments), "chunks": chunks, "trials": len(trials), "kills": len(killed),
        "kills_by_phase": {p: by_phase.get(p, 0) for p in PHASES},
        "double_starts_refused": sum(1 for t in trials if t["kind"] == "double" and not any("second run" in p for p in t["problems"])),
        "republish_kills": sum(1 for t in killed if t["kind"] == "republish"),
        "trials_failed": sum(1 for t in trials if t["problems"]),
        "max_requests_fresh": max((t["requests"] for t in trials if t["kind"] != "republish"), default=0),
        "max_requests_republish": max((t["requests"] for t in trials if t["kind"] == "republish"), default=0),
        "baseline_seconds": round(marks["end"], 1),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "trials": trials}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
