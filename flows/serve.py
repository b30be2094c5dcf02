"""The local deployment sequence in one step (`make serve`): a Prefect server on 127.0.0.1, the
process work pool, every deployment in prefect.yaml, and a worker, until Ctrl-C stops them all.

    python flows/serve.py [--port 4200] [--pool synth-pool]

README.md ("Scheduled and on-demand runs") gives the same steps by hand; tests/test_deployments.py
drives them through `LocalPrefect`.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))  # the one installed beside this interpreter
# The server is on 127.0.0.1: never route its health checks through an HTTP(S)_PROXY.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalPrefect:
    """A Prefect server on 127.0.0.1:`port` and a process worker for `pool`, started as their own
    process groups, so that stopping them (on exit, or `kill_worker`) reaches every process they
    started. `env` is the environment of every command (PREFECT_API_URL is set to this server);
    `log_dir` gets server.log and worker.log (default: this process's stdout and stderr)."""

    def __init__(self, port: int, pool: str = "synth-pool", env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.port = port
        self.pool = pool
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.env = {**(os.environ if env is None else env), "PREFECT_API_URL": self.api_url}
        self.log_dir = log_dir
        self.server: psutil.Popen | None = None
        self.worker: psutil.Popen | None = None
        self._logs: list[IO] = []

    def _spawn(self, name: str, *args: str) -> psutil.Popen:
        output = None
        if self.log_dir is not None:
            output = open(self.log_dir / f"{name}.log", "ab")
            self._logs.append(output)
        return psutil.Popen(
            [PREFECT, *args], cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True,
        )

    def prefect(self, *args: str, timeout: float = 300) -> str:
        """Run a `prefect` command against this server; its output (RuntimeError with it if it fails)."""
        done = subprocess.run(
            [PREFECT, *args], cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`prefect {' '.join(args)}` exited with code {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        return done.stdout

    def start_server(self, timeout: float = 180) -> None:
        with socket.socket() as probe:  # else the health check below could be answered by another server
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is taken (another Prefect server?): pick another port")
        self.server = self._spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with code {self.server.returncode}")
            try:
                with _direct.open(f"{self.api_url}/health", timeout=2) as response:
                    if json.load(response) is True:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Prefect server did not answer on {self.api_url} within {timeout} s")

    def create_pool(self) -> None:
        self.prefect("work-pool", "create", self.pool, "--type", "process", "--overwrite")

    def deploy(self, *names: str) -> str:
        """Every deployment in prefect.yaml, or those named (`backtranslate/nightly`)."""
        selection = [arg for name in names for arg in ("--name", name)] or ["--all"]
        return self.prefect("--no-prompt", "deploy", *selection)

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", "worker", "start", "--pool", self.pool)

    def kill_worker(self) -> None:
        """As if the machine died: SIGKILL to the worker and the flow runs it started."""
        _stop(self.worker, grace=0)

    def __enter__(self) -> "LocalPrefect":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        _stop(self.worker, grace=10)
        _stop(self.server, grace=10)
        for log in self._logs:
            log.close()


def _stop(process: psutil.Popen | None, grace: float) -> None:
    """SIGTERM to the process group, twice (a worker ignores the first), then SIGKILL to whatever is
    left, the processes it started in sessions of their own (a worker's flow runs) included."""
    if process is None or process.poll() is not None:
        return
    descendants = process.children(recursive=True)
    if grace > 0:
        for _ in range(2):
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(grace / 2)
                break
            except psutil.TimeoutExpired:
                pass
    _signal_group(process.pid, signal.SIGKILL)
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4200, help="the server's port on 127.0.0.1 (default 4200)")
    parser.add_argument("--pool", default="synth-pool", help="the process work pool named in prefect.yaml")
    args = parser.parse_args(argv)
    # Ctrl-C even when started with SIGINT ignored (in the background); `kill` or a closed terminal
    # stops everything as Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    with LocalPrefect(args.port, args.pool) as local:
        try:
            print(f"starting the Prefect server on {local.api_url} ...", flush=True)
            local.start_server()
            local.create_pool()
            print("deploying prefect.yaml ...", flush=True)
            print(local.deploy(), flush=True)
            local.start_worker()
            print(
                f"ready: UI http://127.0.0.1:{args.port}, worker on pool {args.pool!r}. In another terminal:\n"
                f"  export PREFECT_API_URL={local.api_url}\n"
                "  prefect deployment run 'backtranslate/nightly' --param lang=zu --watch\n"
                "Ctrl-C stops the worker and the server.\n",
                flush=True,
            )
            local.worker.wait()
        except KeyboardInterrupt:
            pass
        finally:
            # Stopping takes seconds (a worker ignores the first SIGTERM): a second Ctrl-C must not cut it short.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            print("stopping the worker and the server ...", flush=True)

if __name__ == "__main__":
    main()
