"""Run the OpenAI-compatible test server (synth.testing.openai_server) as a real subprocess.

    with start_server("--fault-plan", "500,429") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        assert server.stats()["requests"] == 3

A separate process, not a thread, so that the server's event loop never competes with the code
under test (which may run its own loop) and so that benchmarks measure a real network hop.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any, NoReturn

SERVER_MODULE = "synth.testing.openai_server"
# The server is always on 127.0.0.1: never route its stats through an HTTP(S)_PROXY from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerProcess:
    """A started server subprocess; also a context manager that stops it on exit."""

    def __init__(self, args: Sequence[str], timeout: float = 30.0) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._stderr_after_stop: str | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._pump_stdout, daemon=True)
        self._pump.start()
        self.base_url = self._wait_until_listening(timeout)
        self.root_url = self.base_url.removesuffix("/v1")

    @property
    def returncode(self) -> int | None:
        """The exit code once stopped (0 after a clean shutdown on SIGTERM), None while running."""
        return self._process.poll()

    def _wait_until_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self._fail("exited before it was listening")
            if line.startswith("LISTENING "):
                return line.split(" ", 1)[1].strip()
        self._fail(f"was not listening after {timeout} s")

    def _pump_stdout(self) -> None:
        # Read to the end, not just to the LISTENING line, so the server can never block on a full pipe.
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _fail(self, what: str) -> NoReturn:
        self.stop()
        raise RuntimeError(
            f"{SERVER_MODULE} {what} (exit code {self._process.returncode}); its stderr:\n{self.stderr_text()}"
        )

    def stderr_text(self) -> str:
        """What the server wrote to stderr (tracebacks of failed handlers end up here)."""
        if self._stderr_after_stop is not None:
            return self._stderr_after_stop
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")

    def _request(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.root_url + path, method=method)
        with _direct.open(request, timeout=10) as response:
            return json.load(response)

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._request("POST", "/stats/reset")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (SIGTERM: the server shuts down cleanly), kill if that takes too long. Idempotent."""
        if self._stderr_after_stop is not None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        # The process is gone, so the pump reaches the end of stdout at once.
        self._pump.join(timeout)
        assert self._process.stdout is not None
        self._process.stdout.close()
        self._stderr_after_stop = self.stderr_text()
        self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def start_server(*args: str, timeout: float = 30.0) -> ServerProcess:
    """Start `python -m synth.testing.openai_server --port 0 *args` and wait until it listens.

    Use it in a `with` block, or call `.stop()` when done. Raises RuntimeError (with the server's
    stderr) if the server exits or is not listening within `timeout` seconds.
    """
    return ServerProcess(args, timeout=timeout)
