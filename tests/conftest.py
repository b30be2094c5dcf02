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


# --- subprocess environment, Prefect ---------------------------------------------------------------

import importlib.util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# The console script installed beside this interpreter (the venv's bin/).
SYNTH_BIN = Path(sys.executable).with_name("synth")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="session")
def synth_env() -> dict[str, str]:
    """Environment for `synth` subprocesses: offline, wide enough that rich does not wrap messages,
    and no API key inherited from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(OFFLINE, COLUMNS="250", NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prefect settings for the session, set before anything imports prefect: a throwaway PREFECT_HOME,
    no analytics, and time enough for a temporary server to start on a busy 2-core machine."""
    home = tmp_path_factory.mktemp("prefect-home")
    if "prefect" not in sys.modules:
        os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return Path(os.environ.get("PREFECT_HOME", home))


@pytest.fixture(scope="session")
def flow_module(prefect_home: Path) -> ModuleType:
    """flows/backtranslate.py imported from its path (it is not a package); `.backtranslate` is the flow."""
    path = REPO_ROOT / "flows" / "backtranslate.py"
    spec = importlib.util.spec_from_file_location("synth_flows_backtranslate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def prefect_harness(flow_module: ModuleType) -> Iterator[str]:
    """A temporary Prefect API (its own SQLite database) for the session; yields its URL."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])):
        yield prefect.settings.PREFECT_API_URL.value()


class Memo:
    """An embedder's encodings remembered: each text embedded once for the module that holds it
    (the pair filters' tests give the real packaged embedder to several filters)."""

    def __init__(self, inner):
        self.inner, self.name, self.vectors = inner, inner.name, {}

    def encode(self, texts: list[str]):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.inner.encode(missing)))
        return np.stack([self.vectors[t] for t in texts])
