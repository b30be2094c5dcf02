"""Scale-out: the Prefect flow runs a shard of the corpus per Dask worker (here a local cluster of
two worker processes), each shard streaming its chunks through synth's engine on its worker:
reading, filtering and embedding them there, and sending its requests to two OpenAI-compatible
endpoints at once (two test server processes). Every record comes out once, both endpoints
served requests, and no chunk was worked in the flow's own process."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.data import udhr_path
from synth.job import ChunkedJob
from synth.testing.server_process import start_server

RECORDS = 12
CHUNK = 6  # two chunks: one per shard, a shard per worker


def ids(out: Path, kind: str) -> list[str]:
    return [row["id"] for file in sorted((out / kind).glob("*.parquet")) for row in pq.read_table(file, columns=["id"]).to_pylist()]


def test_shards_run_on_dask_workers_against_two_endpoints(tmp_path, flow_module, prefect_harness, monkeypatch):
    def not_here(*args, **kwargs):
        raise AssertionError("a chunk was filtered in the flow's process, not on a Dask worker")

    # Only this process is patched: the Dask workers are fresh interpreters with the real method.
    monkeypatch.setattr(ChunkedJob, "filter_and_stage", not_here)
    monkeypatch.setattr(ChunkedJob, "run_shard", not_here)
    out = tmp_path / "out"
    with start_server("--latency", "0.05") as first, start_server("--latency", "0.05") as second:
        result = flow_module.backtranslate(
            corpus=[str(udhr_path("zul"))], lang="zu", out=str(out), base_url=[first.base_url, second.base_url],
            model="udhr-oracle", limit=RECORDS, chunk_size=CHUNK, concurrency=4, dask_workers=2,
        )
        served = [first.stats()["answered_ok"], second.stats()["answered_ok"]]
    assert all(count > 0 for count in served), served
    assert sum(served) == RECORDS  # every request answered once: no chunk was redone
    kept, rejected = ids(out, "data"), ids(out, "rejects")
    assert len(kept) + len(rejected) == RECORDS
    assert len(set(kept + rejected)) == RECORDS  # each record once
    assert result["kept"] == len(kept) >= RECORDS - 2
    assert result["stats"]["run"]["chunks"] == RECORDS // CHUNK


def test_dask_options_are_checked_before_any_work(tmp_path, flow_module, prefect_harness):
    with pytest.raises(ValueError, match="dask_address and dask_workers exclude each other"):
        flow_module.backtranslate(
            corpus=[str(udhr_path("zul"))], lang="zu", out=str(tmp_path / "out"), dask_address="tcp://127.0.0.1:8786", dask_workers=2,
        )
