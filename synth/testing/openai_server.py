"""A real OpenAI-compatible chat-completions server for tests and benchmarks.

Run it as ``python -m synth.testing.openai_server [options]``; it listens on 127.0.0.1 only and,
once ready, prints one line ``LISTENING http://127.0.0.1:PORT/v1`` to stdout.

Answers come from, in order: an ``--answers`` JSON file of substring matches (an entry may add a
``sampled_answer``, given instead when the request samples, temperature > 0: a model whose greedy
answer is chatter but whose sampled one is not), the query oracle
(a search-query prompt of prompts/queries.toml about a UDHR article is answered with queries made
of that article's words in the asked language: synth.testing.oracles), the relevance oracle (a
relevance prompt of prompts/relevance.toml about a UDHR passage is answered yes when the query was
written for that article, no otherwise: an upper bound for a real judge), the UDHR oracle (a prompt
that contains a whole UDHR article in any shipped language is answered with the English article
of the same number, so a translation pipeline gets "perfect" translations), and finally
``--default-answer``. Latency, a bounded number of serving slots and faults
(HTTP 500/429, malformed JSON, empty content, hangs; scripted per prompt or drawn at seeded
random rates) make it behave like a real, imperfect provider. ``GET /stats`` exposes counters
so tests can assert on what the client actually sent. The OpenAI Batch API (/v1/files,
/v1/batches) is served too, by the same oracles: synth.testing.batch_api.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from synth.data import UDHR_DIR
from synth.testing.oracles import QueryOracle, RelevanceOracle, RoundTripOracle

DEFAULT_MODEL = "udhr-oracle"
FAULT_KINDS = ("500", "429", "malformed", "empty", "hang")
# Faults answered with an error instead of a completion.
ERROR_FAULTS = ("500", "429", "malformed")
# What a request whose client went away before the answer counts as in `by_status` (nginx's code).
CLIENT_CLOSED = "499"


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def count_tokens(text: str) -> int:
    """Whitespace words: a stand-in for a tokenizer that is good enough for usage and latency."""
    return len(text.split())


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_key(messages: list[dict[str, Any]]) -> str:
    """Identity of a prompt: the same messages give the same key whatever the key order of the JSON."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class UdhrOracle:
    """Answers a prompt containing any UDHR article (any language) with that article in English.

    Lookup is indexed instead of trying all ~540 texts with `in` (up to a few ms per prompt, which
    would cap a benchmark's throughput): each text is keyed by its 2nd to 4th words, the prompt's
    consecutive word triples pick the candidates, and only those are checked with `in`. The first
    word is skipped because in a prompt it may be glued to punctuation (a quote, a colon) while
    the later words are whitespace-delimited on both sides.
    """

    def __init__(self, udhr_dir: Path = UDHR_DIR) -> None:
        self._english = (udhr_dir / "eng.txt").read_text(encoding="utf-8").splitlines()
        numbers: dict[str, int] = {}
        for path in sorted(udhr_dir.glob("*.txt")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if text := collapse_whitespace(line):
                    numbers.setdefault(text, number)
        self._by_anchor: dict[tuple[str, str, str], list[tuple[str, int]]] = defaultdict(list)
        # Texts of fewer than five space-separated words cannot be anchored safely (their last anchor
        # word might be glued to what follows in the prompt), so they are always checked. Amharic
        # separates words with "፡", not spaces: its 30 articles land here.
        self._unanchored: list[tuple[str, int]] = []
        for text, number in numbers.items():
            words = text.split(" ")
            if len(words) >= 5:
                self._by_anchor[(words[1], words[2], words[3])].append((text, number))
            else:
                self._unanchored.append((text, number))

    def answer(self, prompt: str) -> str | None:
        number = self.find(prompt)
        return None if number is None else self._english[number]

    def find(self, prompt: str) -> int | None:
        """The number (0-based) of the UDHR article the prompt holds, in any language."""
        haystack = collapse_whitespace(prompt)
        words = haystack.split(" ")
        # A set: common openings ("Everyone has the right") recur in a prompt and share a bucket.
        candidates = set(self._unanchored)
        for anchor in zip(words, words[1:], words[2:]):
            candidates.update(self._by_anchor.get(anchor, ()))
        hits = [(text, number) for text, number in candidates if text in haystack]
        if not hits:
            return None
        # The longest hit, so that a prompt holding an article which contains a shorter article's
        # text is answered for the article it actually holds.
        return max(hits, key=lambda hit: len(hit[0]))[1]


def load_answers(path: Path) -> list[tuple[str, str]]:
    """(match, answer) pairs, longest match first; the sort is stable so ties keep file order."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{'match': ..., 'answer': ...}} objects")
    pairs = [(str(entry["match"]), str(entry["answer"])) for entry in entries]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def load_sampled_answers(path: Path) -> list[tuple[str, str]]:
    """(match, sampled_answer) pairs of the entries that have one, longest match first."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    pairs = [(str(entry["match"]), str(entry["sampled_answer"])) for entry in entries if "sampled_answer" in entry]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


class FaultInjector:
    """Chooses the fault (or None) for each request: scripted per prompt first, then random rates."""

    def __init__(self, plan: Sequence[str], rates: dict[str, float], seed: int) -> None:
        self._plan = list(plan)
        self._rates = rates
        self._rng = random.Random(seed)
        # Kept apart from Stats so that resetting the stats does not replay the plan.
        self._seen: Counter[str] = Counter()

    def pick(self, key: str) -> str | None:
        attempt = self._seen[key]
        self._seen[key] += 1
        # One draw per request whether or not the plan decides, so the random sequence of a
        # run with a plan stays the same as without it.
        draw = self._rng.random()
        if attempt < len(self._plan):
            return self._plan[attempt]
        threshold = 0.0
        for kind in FAULT_KINDS:
            threshold += self._rates.get(kind, 0.0)
            if draw < threshold:
                return kind
        return None


@dataclass
class Stats:
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    answered_ok: int = 0
    peak_in_flight: int = 0
    peak_queued: int = 0
    busy_slot_seconds: float = 0.0
    prompts: Counter[str] = field(default_factory=Counter)
    first_request_at: float | None = None
    last_response_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "answered_ok": self.answered_ok,
            "peak_in_flight": self.peak_in_flight,
            "peak_queued": self.peak_queued,
            "busy_slot_seconds": self.busy_slot_seconds,
            "prompts": dict(self.prompts),
            "first_request_at": self.first_request_at,
            "last_response_at": self.last_response_at,
        }


def error_response(
    status: int, message: str, type_: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class FakeOpenAI:
    """The request handlers and their shared state (stats, slots, faults)."""

    def __init__(
        self,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        api_key: str | None = None,
        answers: Sequence[tuple[str, str]] = (),
        sampled_answers: Sequence[tuple[str, str]] = (),
        default_answer: str = "I do not know.",
        latency: float = 0.0,
        per_token_latency: float = 0.0,
        slots: int = 0,
        faults: FaultInjector | None = None,
        retry_after: float = 0.05,
        hang_seconds: float = 30.0,
    ) -> None:
        self.models = list(models)
        self.api_key = api_key
        self.answers = list(answers)
        self.sampled_answers = list(sampled_answers)
        self.default_answer = default_answer
        self.latency = latency
        self.per_token_latency = per_token_latency
        self.semaphore = asyncio.Semaphore(slots) if slots > 0 else None
        self.faults = faults or FaultInjector((), {}, seed=0)
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.oracle = UdhrOracle()
        self.query_oracle = QueryOracle(self.oracle.find)
        self.relevance_oracle = RelevanceOracle(self.oracle.find)
        self.round_trip_oracle = RoundTripOracle(self.oracle.find)
        self.stats = Stats()
        # Current counts survive a stats reset (requests in progress still finish); peaks restart from them.
        self.in_flight = 0
        self.queued = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/stats/reset", self.reset_stats)
        from synth.testing.batch_api import BatchApi  # imported here: it imports this module

        BatchApi(self).add_routes(app)
        return app

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return error_response(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

    async def list_models(self, request: web.Request) -> web.Response:
        if denied := self._unauthorized(request):
            return denied
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "synth"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats = Stats(peak_in_flight=self.in_flight, peak_queued=self.queued)
        return web.json_response(self.stats.as_json())

    async def chat_completions(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        if self.stats.first_request_at is None:
            self.stats.first_request_at = time.monotonic()
        try:
            response = await self._chat_completions(request)
        except asyncio.CancelledError:
            # The client went away (say its timeout fired during a hang) and aiohttp cancelled us.
            self.stats.by_status[CLIENT_CLOSED] += 1
            raise
        self.stats.by_status[str(response.status)] += 1
        self.stats.last_response_at = time.monotonic()
        return response

    async def _chat_completions(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(400, "The request body is not valid JSON.", "invalid_request_error")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
            return error_response(400, "`messages` must be a list of objects.", "invalid_request_error")
        key = prompt_key(messages)
        self.stats.prompts[key] += 1

        if denied := self._unauthorized(request):
            return denied
        model = body.get("model")
        if model not in self.models:
            return error_response(404, f"The model `{model}` does not exist.", "NotFoundError", "model_not_found")
        if body.get("stream"):
            return error_response(400, "This server does not support streaming.", "invalid_request_error")
        if body.get("n") not in (None, 1):
            return error_response(400, "Only n=1 is supported.", "invalid_request_error")

        fault = self.faults.pick(key)
        async with self._slot():
            if fault == "hang":
                # Meant to outlast the client's timeout; a patient client still gets a normal answer.
                await asyncio.sleep(self.hang_seconds)
            if fault in ERROR_FAULTS:
                # A failing provider fails before generating: only the base latency is spent.
                await asyncio.sleep(self.latency)
                return self._fault_response(fault)
            sampling = isinstance(body.get("temperature"), (int, float)) and body["temperature"] > 0
            content = "" if fault == "empty" else self._answer(messages, sampling)
            await asyncio.sleep(self.latency + self.per_token_latency * count_tokens(content))
        self.stats.answered_ok += 1
        return web.json_response(self._completion(model, messages, content))

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """Hold one serving slot; with all slots busy, wait (counted as queued) for one to free."""
        if self.semaphore is not None:
            if self.semaphore.locked():
                self.queued += 1
                self.stats.peak_queued = max(self.stats.peak_queued, self.queued)
                try:
                    await self.semaphore.acquire()
                finally:
                    self.queued -= 1
            else:
                await self.semaphore.acquire()
        self.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.in_flight)
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.stats.busy_slot_seconds += time.monotonic() - started
            if self.semaphore is not None:
                self.semaphore.release()

    def _answer(self, messages: list[dict[str, Any]], sampling: bool = False) -> str:
        user_messages = [message for message in messages if message.get("role") == "user"]
        prompt = message_text(user_messages[-1]) if user_messages else ""
        for match, answer in self.sampled_answers if sampling else ():
            if match in prompt:
                return answer
        for match, answer in self.answers:
            if match in prompt:
                return answer
        queries = self.query_oracle.answer(prompt)
        if queries is not None:
            return queries
        # A translation into another language than English (the round trip): the article in that language.
        round_trip = self.round_trip_oracle.answer(prompt)
        if round_trip is not None:
            return round_trip
        # Before the UDHR oracle: a relevance prompt holds a whole article too.
        verdict = self.relevance_oracle.answer(prompt)
        if verdict is not None:
            return verdict
        english = self.oracle.answer(prompt)
        return english if english is not None else self.default_answer

    def _fault_response(self, fault: str) -> web.Response:
        if fault == "500":
            return error_response(
                500, "The server had an error while processing your request.", "server_error", "server_error"
            )
        if fault == "429":
            return error_response(
                429,
                "Rate limit reached for requests.",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
                headers={"Retry-After": str(self.retry_after)},
            )
        # "malformed": a truncated body that still claims to be JSON, as from a proxy cutting a response.
        return web.Response(text='{"choices": [', content_type="application/json")

    @staticmethod
    def _completion(model: str, messages: list[dict[str, Any]], content: str) -> dict[str, Any]:
        prompt_tokens = sum(count_tokens(message_text(message)) for message in messages)
        completion_tokens = count_tokens(content)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def rate(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate must lie in [0, 1], not {value}")
    return number


def fault_plan(value: str) -> list[str]:
    plan = [item.strip() for item in value.split(",") if item.strip()]
    if unknown := [item for item in plan if item not in FAULT_KINDS]:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
    return plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m synth.testing.openai_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one (default)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help=f"a served model name, repeatable (default: {DEFAULT_MODEL})")
    parser.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: no check)")
    parser.add_argument("--answers", type=Path, metavar="FILE.json",
                        help='JSON list of {"match": substring, "answer": text}, checked before the oracle')
    parser.add_argument("--default-answer", default="I do not know.", help="answer when nothing else matches")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="base delay per request")
    parser.add_argument("--per-token-latency", type=float, default=0.0, metavar="SECONDS",
                        help="extra delay per completion token (whitespace word)")
    parser.add_argument("--slots", type=int, default=0, help="requests served at once; the rest queue (0: unlimited)")
    parser.add_argument("--fault-plan", type=fault_plan, default=[], metavar="KIND,KIND,...",
                        help=f"the k-th request of each distinct prompt gets the k-th fault ({', '.join(FAULT_KINDS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random fault draws")
    for kind in FAULT_KINDS:
        parser.add_argument(f"--rate-{kind}", type=rate, default=0.0, metavar="P",
                            help=f"probability of a `{kind}` fault per request")
    parser.add_argument("--retry-after", type=float, default=0.05, metavar="SECONDS",
                        help="Retry-After header of 429 answers")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a `hang` fault sleeps")
    args = parser.parse_args(argv)
    if sum(getattr(args, f"rate_{kind}") for kind in FAULT_KINDS) > 1.0:
        parser.error("the fault rates add up to more than 1")
    return args


async def serve(args: argparse.Namespace) -> None:
    handlers = FakeOpenAI(
        models=args.models or [DEFAULT_MODEL],
        api_key=args.api_key,
        answers=load_answers(args.answers) if args.answers else (),
        sampled_answers=load_sampled_answers(args.answers) if args.answers else (),
        default_answer=args.default_answer,
        latency=args.latency,
        per_token_latency=args.per_token_latency,
        slots=args.slots,
        faults=FaultInjector(args.fault_plan, {kind: getattr(args, f"rate_{kind}") for kind in FAULT_KINDS}, args.seed),
        retry_after=args.retry_after,
        hang_seconds=args.hang_seconds,
    )
    # handler_cancellation: a client that times out on a hung request frees its slot, as with
    # real inference servers. A short shutdown grace: at exit, what is still in flight is
    # typically a `hang` nobody waits for. No access log: a benchmark sends thousands of requests.
    runner = web.AppRunner(handlers.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.25)
    # Signal handlers first: whoever reads LISTENING may signal at once and must get a clean shutdown.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        print(f"LISTENING http://127.0.0.1:{port}/v1", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
