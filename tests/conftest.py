"""Shared pytest fixtures."""

from collections.abc import Iterator

import pytest

from synth.testing.server_process import ServerProcess, start_server


@pytest.fixture(scope="session")
def openai_server() -> Iterator[ServerProcess]:
    """A real OpenAI-compatible server process (UDHR oracle, model `udhr-oracle`, no faults, no key).

    Shared by the whole session: point a client at `openai_server.base_url` (any api_key), and call
    `openai_server.reset_stats()` first if the test asserts on `openai_server.stats()`. Tests that
    need other options (faults, latency, slots) start their own with `start_server(...)`.
    """
    with start_server() as server:
        yield server
