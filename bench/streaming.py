"""Does synth stream? Peak memory (RSS) of `synth backtranslate` on a corpus of a million lines.

Writes N unique lines (bundled UDHR articles of every language but English, tagged), starts the
simulated OpenAI-compatible server with no latency, runs `synth backtranslate` on them with the
model-based filters off (`--embedder none --lid-detectors none`: models aside, and embedding a
million lines on 2 cores would take hours), and prints the synth process's peak resident memory
(the kernel's ru_maxrss for that process) and of its filter worker process (VmHWM, sampled), the
time taken, and that every line is accounted for (kept + rejected = read).

    .venv/bin/python bench/streaming.py                    # 1,000,000 lines (hours on 2 cores)
    .venv/bin/python bench/streaming.py --light-filters    # without the two costliest heuristics
    .venv/bin/python bench/streaming.py --lines 100000     # a quicker look

`--light-filters` turns off the copy and repetition filters (difflib and regexes: about 6 of the
7 ms of filter CPU per row on 2 cores). Like every filter they judge one row at a time and keep
nothing across rows, so what they change is the time, not the memory.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.testing.openai_server import DEFAULT_MODEL  # noqa: E402
from synth.testing.server_process import start_server  # noqa: E402
from throughput import unique_lines  # noqa: E402  (bench/, beside this script)

LIMIT_BYTES = 1.5 * 2**30


def write_corpus(path: Path, lines: int) -> int:
    with open(path, "w", encoding="utf-8") as out:
        for line in unique_lines(lines):
            out.write(line + "\n")
    return path.stat().st_size


def descendants_peak_rss(pid: int, peaks: dict[int, int]) -> None:
    """Record the peak RSS (VmHWM) so far of every process below `pid` (the filter worker)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    below = {child for child, parent in parents.items() if parent == pid}
    while grown := {child for child, parent in parents.items() if parent in below} - below:
        below |= grown
    for child in below:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[child] = max(peaks.get(child, 0), int(line.split()[1]) * 1024)


def resident(pid: int) -> int:
    """The process's resident memory now (VmRSS), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(command: list[str], env: dict, log: Path, timeline: list | None = None) -> tuple[int, int, int, float]:
    """(exit code, peak RSS of the process, the largest peak RSS among its children, seconds),
    from the kernel's own accounting; `timeline` gets (seconds, RSS now) samples of the process."""
    started = time.monotonic()
    children: dict[int, int] = {}
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        while (done := os.wait4(process.pid, os.WNOHANG))[0] == 0:
            descendants_peak_rss(process.pid, children)
            if timeline is not None:
                timeline.append((time.monotonic() - started, resident(process.pid)))
            time.sleep(0.5)
    _, status, usage = done
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen
    return process.returncode, usage.ru_maxrss * 1024, max(children.values(), default=0), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--light-filters", action="store_true", help="copy and repetition filters off (see above)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="synth-streaming-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus, out = work / "corpus.txt", work / "out"
        size = write_corpus(corpus, args.lines)
        print(f"corpus: {args.lines:,} lines, {size / 2**20:,.0f} MiB; chunks of {args.chunk_size}, {args.concurrency} requests in flight"
              f"{'; copy and repetition filters off' if args.light_filters else ''}; load {os.getloadavg()[0]:.1f}", flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1"}
        with start_server() as server:
            command = [
                str(Path(sys.executable).with_name("synth")), "backtranslate", str(corpus), "--lang", "zu", "--out", str(out),
                "--base-url", server.base_url, "--model", DEFAULT_MODEL, "--embedder", "none", "--lid-detectors", "none",
                "--concurrency", str(args.concurrency), "--chunk-size", str(args.chunk_size),
                *(["--max-copy-similarity", "off", "--max-repeats", "off"] if args.light_filters else []),
            ]
            timeline: list[tuple[float, int]] = []
            code, peak, worker_peak, seconds = run_measured(command, env, work / "synth.log", timeline)
            served = server.stats()["answered_ok"]
        if code != 0:
            sys.exit(f"synth exited {code}; see the end of its log:\n{(work / 'synth.log').read_text()[-3000:]}")
        stats = json.loads((out / "stats.json").read_text())
        rows = stats["rows"]
        read = stats["read"]
        print(f"synth: {seconds:,.0f} s ({args.lines / seconds:,.0f} lines/s), {served:,} requests answered")
        print(f"read {read['lines_read']:,} lines -> {read['segments']:,} segments; kept {rows['kept']:,} + rejected {rows['rejected']:,}")
        print(f"peak RSS of the synth process: {peak / 2**20:,.0f} MiB ({'under' if peak < LIMIT_BYTES else 'OVER'} the 1.5 GiB target); "
              f"of its filter worker: {worker_peak / 2**20:,.0f} MiB")
        # Flat memory: the synth process's RSS at each tenth of the run.
        tenths = [max((rss for t, rss in timeline if seconds * i / 10 <= t < seconds * (i + 1) / 10), default=0) for i in range(10)]
        print("synth process RSS by tenth of the run (MiB, the largest sample of each): " + " ".join(f"{rss / 2**20:.0f}" for rss in tenths))
        if rows["kept"] + rows["rejected"] != read["segments"]:
            sys.exit("records were lost or duplicated")


if __name__ == "__main__":
    main()
