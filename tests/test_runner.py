"""The generation runner against real server processes: the window of in-flight requests spans
chunk boundaries, faults are retried (Retry-After honoured, hung requests timed out with their
server slot freed, malformed answers recorded as drops), a dead endpoint stops the job in seconds,
a dead replica is rested, and tokens and cost are accounted for.

Runs use the model-free filters only (`embedder="none"`, no language ID), so they cost server
time, not CPU. End-to-end behaviour with every filter (crash and resume, fatal endpoint errors)
is in test_backtranslate.py.
"""

import asyncio
import json
import socket
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.backtranslate import BacktranslateJob, run_backtranslate
from synth.config import NO_EMBEDDER, BacktranslateConfig
from synth.data import udhr_articles, udhr_path
from synth.generate.backends import Completion, FatalError, OpenAIBackend, TransientError
from synth.generate.cache import GenerationCache, cache_key
from synth.generate.request import Unusable
from synth.generate.runner import GenerationAborted, GenerationStats, PriorityWindow, RequestRunner, RetryPolicy, retry_wait
from synth.generate.tasks.backtranslate import BacktranslationPrompt
from synth.testing.openai_server import DEFAULT_MODEL, collapse_whitespace, count_tokens, message_text
from synth.testing.server_process import ServerProcess, start_server

ENGLISH = [collapse_whitespace(line) for line in udhr_articles("eng")]
ZULU = udhr_articles("zul")
PROMPT = BacktranslationPrompt.load()
PARAMS = {"max_tokens": 256, "temperature": 0.0, "top_p": 1.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requests_for(texts: list[str]) -> list[tuple[str, list[dict]]]:
    messages = [PROMPT.messages(text, "zu", "en") for text in texts]
    return [(cache_key(DEFAULT_MODEL, m, PARAMS), m) for m in messages]


def generate(
    tmp_path: Path, base_urls: list[str], texts: list[str], *, concurrency: int = 8, timeout: float = 30.0,
    policy: RetryPolicy | None = None, **backend_options,
):
    """Runs one RequestRunner over `texts`; returns (outcomes, stats, seconds)."""

    async def main():
        backend = OpenAIBackend(base_urls, DEFAULT_MODEL, None, timeout=timeout, **backend_options)
        cache = GenerationCache(tmp_path / "cache.sqlite")
        stats = GenerationStats()
        started = time.monotonic()
        try:
            runner = RequestRunner(backend, cache, PARAMS, concurrency=concurrency, policy=policy)
            outcomes = await runner.generate(requests_for(texts), stats=stats)
            return outcomes, stats, time.monotonic() - started
        finally:
            await backend.aclose()
            cache.close()

    return asyncio.run(main())


def quick_config(corpus: list[Path], out: Path, server: ServerProcess, **options) -> BacktranslateConfig:
    """A job with the model-free filters only: what it measures is generation."""
    return BacktranslateConfig(
        corpus=[str(path) for path in corpus], lang="zu", out=out, base_url=[server.base_url], model=DEFAULT_MODEL,
        embedder=NO_EMBEDDER, lid_detectors=[], splits="train=1", **options,
    )


def answered_rows(out: Path) -> list[dict]:
    """Kept rows and rows a filter dropped: every row whose answer arrived."""
    files = sorted((out / "data").glob("*.parquet")) + sorted((out / "rejects").glob("*.parquet"))
    return [row for path in files for row in pq.read_table(path).to_pylist() if row.get("reject_stage") != "generate"]


# --- the window ----------------------------------------------------------------------------------

def test_priority_window_serves_the_lowest_priority_first_and_survives_cancellation() -> None:
    async def main() -> list[int]:
        window, order = PriorityWindow(1), []

        async def take(priority: int) -> None:
            async with window.slot(priority):
                order.append(priority)
                await asyncio.sleep(0.01)

        async with window.slot(0):  # held while the others queue up
            tasks = [asyncio.create_task(take(p)) for p in (5, 1, 3, 2)]
            await asyncio.sleep(0.01)
            tasks[3].cancel()  # a waiter that gives up must not take a slot with it
        await asyncio.gather(*tasks, return_exceptions=True)
        async with asyncio.timeout(1):  # the one slot is free again
            async with window.slot(0):
                pass
        return order

    assert asyncio.run(main()) == [1, 3, 5]


def test_priority_window_serves_retries_then_the_largest_first_within_a_priority() -> None:
    async def main() -> list[str]:
        window, order = PriorityWindow(1), []

        async def take(name: str, priority: int, size: float, retry: bool = False) -> None:
            async with window.slot(priority, size, retry):
                order.append(name)

        async with window.slot(0):  # held while the others queue up
            tasks = [
                asyncio.create_task(take(*args)) for args in (
                    ("small", 1, 10), ("later chunk, large", 2, 999), ("large", 1, 50), ("retry, small", 1, 5, True),
                    ("medium", 1, 20), ("medium, second", 1, 20), ("earlier chunk, small", 0, 1),
                )
            ]
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [
        "earlier chunk, small", "retry, small", "large", "medium", "medium, second", "small", "later chunk, large",
    ]


class ScriptedBackend:
    """A backend that answers each prompt with itself, after failing it as `script` says; it records
    the order of the calls."""

    model = "scripted"

    def __init__(self, script: dict[str, list[str]]):
        self.script = {prompt: list(kinds) for prompt, kinds in script.items()}
        self.calls: list[str] = []

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        prompt = messages[-1]["content"]
        self.calls.append(prompt)
        await asyncio.sleep(0.001)
        if self.script.get(prompt):
            kind = self.script[prompt].pop(0)
            if kind == "empty":
                return Completion("")
            raise TransientError(kind, f"scripted {kind}")
        return Completion(prompt, 1, 1, "stop")

    async def aclose(self) -> None:
        pass


def run_scripted(tmp_path: Path, backend: ScriptedBackend, prompts: list[str], **options) -> list:
    async def main():
        cache = GenerationCache(tmp_path / "cache.sqlite")
        try:
            runner = RequestRunner(backend, cache, {}, concurrency=1, policy=RetryPolicy(server_wait=0.0))
            return await runner.generate(
                [(prompt, [{"role": "user", "content": prompt}]) for prompt in prompts], **options
            )
        finally:
            cache.close()

    return asyncio.run(main())


def test_a_retry_goes_before_the_requests_not_yet_sent_and_the_longest_prompt_first(tmp_path: Path) -> None:
    backend = ScriptedBackend({"a": ["server_error"], "ccc": ["empty"]})
    outcomes = run_scripted(tmp_path, backend, ["a", "bbbb", "ccc", "dd"])
    assert [outcome.completion.text for outcome in outcomes] == ["a", "bbbb", "ccc", "dd"]
    # "a" finds the slot free and fails; the longest waiting prompt takes the slot it frees; then
    # the retry, ahead of the longer prompts not yet sent. The empty answer to "ccc" frees its slot
    # for "dd" (nothing else waits), and is retried after it.
    assert backend.calls == ["a", "bbbb", "a", "ccc", "dd", "ccc"]

    # Sizes given by the caller win over the prompts' lengths.
    backend = ScriptedBackend({})
    run_scripted(tmp_path / "sizes", backend, ["a", "bbbb", "cc", "ddd", "e"], sizes=[0, 1, 2, 3, 4])
    assert backend.calls == ["a", "e", "ddd", "cc", "bbbb"]


def test_each_answer_is_parsed_once_and_the_outcome_carries_what_the_parser_made_of_it(tmp_path: Path) -> None:
    seen: list[str] = []

    def parse(index: int, text: str) -> str:
        seen.append(text)
        if not text or text.startswith("?"):
            raise Unusable("empty, or a question", text.upper())
        return text.upper()

    # "a" is empty at first, fixed by its retry; "?b" stays unusable after its resampled retry:
    # kept, with the parser's value for it.
    backend = ScriptedBackend({"a": ["empty"]})
    stats = GenerationStats()
    outcomes = run_scripted(tmp_path, backend, ["a", "?b"], parse=parse, stats=stats)
    assert [(outcome.parsed, outcome.error) for outcome in outcomes] == [("A", None), ("?B", None)]
    assert sorted(seen) == ["", "?b", "?b", "a"]  # every answer once, the unusable ones included
    assert (stats.unusable_retried, stats.unusable_fixed, stats.unusable_kept) == (2, 1, 1)
    # A cached answer is parsed once too, and sends nothing.
    seen.clear()
    backend = ScriptedBackend({})
    outcomes = run_scripted(tmp_path, backend, ["a", "?b"], parse=parse)
    assert [(outcome.parsed, outcome.cached) for outcome in outcomes] == [("A", True), ("?B", True)]
    assert sorted(seen) == ["?b", "a"] and backend.calls == []
    # No answer: nothing parsed, the failure's reason as before.
    backend = ScriptedBackend({"c": ["server_error"]})
    policy = RetryPolicy(server_wait=0.0, max_attempts=1)

    async def main():
        cache = GenerationCache(tmp_path / "other.sqlite")
        try:
            return await RequestRunner(backend, cache, {}, concurrency=1, policy=policy).generate(
                [("c", [{"role": "user", "content": "c"}])], parse=parse
            )
        finally:
            cache.close()

    [failed] = asyncio.run(main())
    assert (failed.completion, failed.parsed, failed.error) == (None, None, "generation_failed:server_error")


def test_retry_waits_honour_retry_after_and_back_off_faster_when_most_attempts_fail() -> None:
    policy = RetryPolicy()
    rate_limited = TransientError("rate_limited", "429", retry_after=0.5)
    assert all(0.5 <= retry_wait(policy, 3, rate_limited) <= 0.6 for _ in range(100))
    # A bad answer from a server that answers: retried at once, then like a server error.
    assert retry_wait(policy, 1, TransientError("malformed", "cut")) == 0.0
    assert retry_wait(policy, 1, TransientError("unusable_answer", "empty")) == 0.0
    server_error = TransientError("server_error", "500")
    healthy = [retry_wait(policy, 4, server_error, sick=False) for _ in range(300)]
    sick = [retry_wait(policy, 4, server_error, sick=True) for _ in range(300)]
    assert max(healthy) <= 0.05 * 2**3 < max(sick) <= 0.05 * 4**3
    # A timeout or a refused connection starts slower.
    assert max(retry_wait(policy, 1, TransientError("timeout", "slow")) for _ in range(300)) > 0.05


def test_http_error_answers_map_like_the_openai_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = OpenAIBackend(["http://127.0.0.1:9/v1"], DEFAULT_MODEL, None)
    url = backend.base_urls[0]
    quota = json.dumps({"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}).encode()
    assert isinstance(backend._status_error(url, 429, {}, quota), FatalError)
    busy = backend._status_error(url, 429, {"retry-after-ms": "250", "retry-after": "1"}, b"{}")
    assert isinstance(busy, TransientError) and busy.kind == "rate_limited" and busy.retry_after == 0.25
    unavailable = backend._status_error(url, 503, {"retry-after": "2"}, b"<html>overloaded</html>")
    assert (unavailable.kind, unavailable.retry_after) == ("server_error", 2.0) and "overloaded" in str(unavailable)
    assert "refused the API key" in str(backend._status_error(url, 401, {}, b""))
    assert "does not serve model" in str(backend._status_error(url, 404, {}, b""))
    assert "HTTP 400" in str(backend._status_error(url, 400, {}, json.dumps({"error": {"message": "bad"}}).encode()))
    # Proxies come from the environment as httpx takes them, NO_PROXY included.
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxied = OpenAIBackend(["http://llm.invalid/v1", "http://127.0.0.1:8000/v1"], DEFAULT_MODEL, None)
    assert [str(proxy) if proxy else None for proxy, _ in proxied._proxies] == ["http://proxy.invalid:3128", None]


def test_requests_stay_in_flight_across_chunk_boundaries(tmp_path: Path) -> None:
    # Chunks of 4 records with 16 slots: a chunk-at-a-time loop never has more than 4 requests out.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(ZULU + udhr_articles("xho")[:18]) + "\n")
    out = tmp_path / "out"
    with start_server("--slots", "16", "--latency", "0.3") as server:
        config = quick_config([corpus], out, server, concurrency=16, chunk_size=4)
        assert BacktranslateJob(config).chunks_in_memory * 4 >= 2 * 16
        published, stats = run_backtranslate(config)
        server_stats = server.stats()
    assert server_stats["peak_in_flight"] == 16
    assert server_stats["requests"] == 48 and stats["run"]["chunks"] == 12
    rows = answered_rows(out)
    assert len(rows) == 48 and len({row["id"] for row in rows}) == 48
    assert all(row["translation"] in ENGLISH for row in rows)


# --- faults --------------------------------------------------------------------------------------

def test_retry_after_is_honoured_and_frees_the_slot_meanwhile(tmp_path: Path) -> None:
    with start_server("--fault-plan", "429", "--retry-after", "1.0") as server:
        outcomes, stats, seconds = generate(tmp_path, [server.base_url], ZULU[:8], concurrency=8)
    assert all(outcome.completion is not None for outcome in outcomes)
    assert stats.requests == 16 and stats.errors == {"rate_limited": 8}
    assert seconds >= 1.0  # nobody came back before the server said so


def test_a_hung_request_times_out_and_its_server_slot_is_freed(tmp_path: Path) -> None:
    # One slot: if a timed-out request kept it, the retries would queue behind 30 s hangs.
    with start_server("--slots", "1", "--fault-plan", "hang", "--hang-seconds", "30") as server:
        outcomes, stats, seconds = generate(tmp_path, [server.base_url], ZULU[:3], concurrency=1, timeout=0.5)
        time.sleep(0.2)
        server_stats = server.stats()
    assert [collapse_whitespace(o.completion.text) for o in outcomes] == ENGLISH[:3]
    assert stats.errors == {"timeout": 3}
    assert server_stats["by_status"] == {"499": 3, "200": 3}
    assert seconds < 10


def test_malformed_answers_are_retried_then_recorded_as_a_drop(tmp_path: Path) -> None:
    with start_server("--fault-plan", "malformed,malformed,malformed,empty,empty") as server:
        policy = RetryPolicy(max_attempts=3)
        outcomes, stats, _ = generate(tmp_path, [server.base_url], ZULU[:2], policy=policy)
        # The same two prompts again: attempts 4 and 5 are empty answers; the last is kept for the
        # filters to drop (an `empty` reason), the first one retried.
        again, stats_again, _ = generate(tmp_path / "again", [server.base_url], ZULU[:2], policy=RetryPolicy(max_attempts=2))
    assert [o.error for o in outcomes] == ["generation_failed:malformed"] * 2
    assert stats.failed == 2 and stats.errors == {"malformed": 6}
    assert [(o.error, o.completion.text) for o in again] == [(None, ""), (None, "")]
    assert stats_again.errors == {"unusable_answer": 2}


# --- the circuit ---------------------------------------------------------------------------------

def test_a_closed_port_stops_the_job_at_once_even_for_one_record(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(GenerationAborted, match="endpoint looks down: cannot connect"):
        generate(tmp_path, [f"http://127.0.0.1:{free_port()}/v1"], ZULU[:1], concurrency=32)
    assert time.monotonic() - started < 5  # not 10 attempts of backoff


def test_a_server_that_fails_everything_stops_the_job_without_spinning(tmp_path: Path) -> None:
    policy = RetryPolicy(circuit_seconds=1.5)
    started = time.monotonic()
    with start_server("--rate-500", "1.0") as server:
        with pytest.raises(GenerationAborted, match="endpoint looks down: no answer for"):
            generate(tmp_path, [server.base_url], ZULU * 4, concurrency=8, policy=policy)
        sent = server.stats()["requests"]
    assert time.monotonic() - started < 15
    assert sent < 600  # it stopped after 1.5 s of failures, not after 120 records x 10 attempts


def test_an_outage_after_answers_is_waited_out_for_circuit_seconds(tmp_path: Path) -> None:
    async def main(server: ServerProcess) -> float:
        backend = OpenAIBackend([server.base_url], DEFAULT_MODEL, None, timeout=5)
        cache = GenerationCache(tmp_path / "cache.sqlite")
        runner = RequestRunner(backend, cache, PARAMS, concurrency=4, policy=RetryPolicy(circuit_seconds=1.5))
        try:
            await runner.generate(requests_for(ZULU[:4]))
            last_answer = time.monotonic()
            server.stop()
            with pytest.raises(GenerationAborted, match="no answer for"):
                await runner.generate(requests_for(ZULU[4:30]))
            return time.monotonic() - last_answer
        finally:
            await backend.aclose()
            cache.close()

    with start_server() as server:
        seconds = asyncio.run(main(server))
    assert 1.5 <= seconds < 10


def test_a_dead_replica_is_rested_while_the_live_one_serves(tmp_path: Path) -> None:
    with start_server("--latency", "0.05") as live:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        outcomes, stats, _ = generate(tmp_path, [dead, live.base_url], ZULU, concurrency=8, rest_seconds=30)
        live_stats = live.stats()
    assert [collapse_whitespace(o.completion.text) for o in outcomes] == ENGLISH
    assert live_stats["answered_ok"] == 30
    assert stats.errors["connection"] <= 8  # the first wave's share, then the dead one rests


# --- accounting ----------------------------------------------------------------------------------

def test_tokens_requests_and_cost_per_run_and_per_dataset(openai_server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = quick_config([udhr_path("zul")], out, openai_server, limit=12, price_input=0.5, price_output=2.0)
    messages = [PROMPT.messages(text, "zu", "en") for text in ZULU[:12]]
    prompt_tokens = sum(count_tokens(message_text(m)) for ms in messages for m in ms)
    completion_tokens = sum(count_tokens(text) for text in ENGLISH[:12])
    cost = round((prompt_tokens * 0.5 + completion_tokens * 2.0) / 1e6, 6)

    _, stats = run_backtranslate(config)
    run, generation = stats["run"], stats["generation"]
    assert (run["requests"], run["prompt_tokens"], run["completion_tokens"], run["cost_usd"]) == (12, prompt_tokens, completion_tokens, cost)
    assert (generation["prompt_tokens"], generation["completion_tokens"], generation["cost_usd"]) == (prompt_tokens, completion_tokens, cost)
    assert json.loads((out / "stats.json").read_text())["generation"]["cost_usd"] == cost
    card = (out / "README.md").read_text()
    assert "generation cost in USD" in card and f"prompt tokens: {prompt_tokens:,}" in card
    assert "Off (`--lid-detectors none`)" in card

    # Refiltered from the cache: this run costs nothing, the dataset still took the same tokens.
    _, stats = run_backtranslate(config.model_copy(update={"max_length_ratio": 2.5}))
    run, generation = stats["run"], stats["generation"]
    assert (run["requests"], run["cache_hits"], run["prompt_tokens"], run["cost_usd"]) == (0, 12, 0, 0.0)
    assert (generation["prompt_tokens"], generation["completion_tokens"], generation["cost_usd"]) == (prompt_tokens, completion_tokens, cost)
