"""Drives a backend: cache first, then requests with retries, never more than `concurrency` in flight.

One `RequestRunner` serves a whole run. Every chunk that is generating sends its requests through
the runner's one window of `concurrency` slots, so the server stays busy across chunk boundaries
(the next chunks' requests fill the slots the last requests of a chunk leave free). Waiting
requests are served oldest chunk first, retries included, so chunks finish in about the order they
started and the number of chunks held in memory stays small.

Every answer is written to the cache the moment it arrives, so a crash or a kill loses at most the
requests in flight. A request that keeps failing becomes a recorded failure (its row is dropped
with the reason), never a crash and never a silent loss; an error no retry can fix, or an endpoint
that answers nothing but failures for a while (the circuit), stops the job.
"""

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from synth.generate.backends import Backend, Completion, FatalError, TransientError
from synth.generate.cache import GenerationCache


class GenerationAborted(RuntimeError):
    """The endpoint cannot serve this job (refused key, unknown model, unreachable)."""


@dataclass
class GenerationStats:
    requests: int = 0          # HTTP requests / model calls, retries included
    cache_hits: int = 0
    succeeded: int = 0
    failed: int = 0            # items with no usable answer after every attempt
    retries: int = 0
    # Tokens of the answers kept, whether fresh or from the cache: what the data took to make.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Tokens of every answer received by the requests sent (retried unusable answers included):
    # what these requests cost.
    spent_prompt_tokens: int = 0
    spent_completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)  # transient error kinds seen

    _COUNTS = (
        "requests", "cache_hits", "succeeded", "failed", "retries", "prompt_tokens", "completion_tokens",
        "spent_prompt_tokens", "spent_completion_tokens",
    )

    def merge(self, other: "GenerationStats") -> None:
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)

    def as_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self._COUNTS}, "errors": dict(self.errors)}

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationStats":
        return cls(**{**data, "errors": Counter(data.get("errors", {}))})


@dataclass
class Outcome:
    completion: Completion | None
    cached: bool = False
    error: str | None = None   # why there is no completion: "generation_failed:<kind>"


# Failures that say the endpoint itself is broken (a 429 says it is busy: wait, do not give up).
DOWN_KINDS = ("connection", "timeout", "server_error", "malformed")


@dataclass
class RetryPolicy:
    max_attempts: int = 10
    max_wait: float = 30.0
    # The endpoint is taken for down (the job stops) when no request got an answer for
    # `circuit_seconds` while at least `circuit_failures` failed in a row with a DOWN_KINDS error:
    # a short outage is waited out, a dead endpoint is not retried for every record. (An endpoint
    # that never accepted a connection is the backend's to report, at once.)
    circuit_failures: int = 3
    circuit_seconds: float = 10.0


def _wait(policy: RetryPolicy) -> Callable:
    exponential = wait_random_exponential(multiplier=0.25, max=policy.max_wait)

    def wait(retry_state) -> float:
        error = retry_state.outcome.exception()
        if isinstance(error, TransientError) and error.retry_after is not None:
            # Honour Retry-After, with jitter so a crowd of clients does not come back in step.
            return min(policy.max_wait, error.retry_after) * random.uniform(1.0, 1.2)
        return exponential(retry_state)

    return wait


class Circuit:
    """Opens (raises GenerationAborted) when the endpoint answers nothing but failures; see RetryPolicy."""

    def __init__(self, failures: int, seconds: float):
        self.failures = failures
        self.seconds = seconds
        self.consecutive = 0
        self.last_success = time.monotonic()  # the run's start counts as one: a slow first answer is no outage

    def record(self, error: TransientError | None) -> None:
        if error is None:
            self.consecutive = 0
            self.last_success = time.monotonic()
            return
        if error.kind not in DOWN_KINDS:
            return
        self.consecutive += 1
        quiet = time.monotonic() - self.last_success
        if self.consecutive >= self.failures and quiet >= self.seconds:
            raise GenerationAborted(
                f"the endpoint looks down: no answer for {quiet:.0f} s, {self.consecutive} requests in a row failed "
                f"(last: {error}). Nothing generated so far is lost: rerun the same command once it is back."
            )


class PriorityWindow:
    """At most `size` holders at once; waiters get a slot lowest `priority` first (FIFO among equals)."""

    def __init__(self, size: int):
        self._free = size
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free > 0:  # free slots imply no one is waiting: a release hands its slot over
            self._free -= 1
        else:
            future = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():  # handed a slot just as we were cancelled
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():  # skip waiters that were cancelled
                future.set_result(None)
                return
        self._free += 1


def _answer_dict(completion: Completion) -> dict:
    return {
        "text": completion.text, "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens, "finish_reason": completion.finish_reason,
    }


class RequestRunner:
    """Answers requests through one backend and cache for a whole run; see the module docstring.

    Create it inside the event loop that uses it; call `generate` from as many tasks as there are
    chunks generating.
    """

    def __init__(
        self, backend: Backend, cache: GenerationCache, params: dict, *, concurrency: int = 32, policy: RetryPolicy | None = None
    ):
        self.backend = backend
        self.cache = cache
        self.params = params
        self.policy = policy or RetryPolicy()
        self.window = PriorityWindow(concurrency)
        self.circuit = Circuit(self.policy.circuit_failures, self.policy.circuit_seconds)
        self._wait = _wait(self.policy)

    async def generate(
        self,
        requests: list[tuple[str, list[dict]]],
        *,
        priority: int = 0,
        is_usable: Callable[[int, str], bool] = lambda index, text: bool(text.strip()),
        stats: GenerationStats | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Answers for (cache key, messages) pairs, in order. Lower `priority` goes first (give
        the chunk index). `is_usable(index, text)` decides whether an answer is worth keeping
        (e.g. the parser finds a translation in it); unusable ones are retried and the last one is
        kept, so the filters record why it was dropped."""
        stats = stats if stats is not None else GenerationStats()
        outcomes: list[Outcome | None] = [None] * len(requests)
        cached = self.cache.get_many([key for key, _ in requests])
        pending = []
        for index, (key, _) in enumerate(requests):
            if key in cached:
                answer = cached[key]
                completion = Completion(answer["text"], answer["prompt_tokens"], answer["completion_tokens"], answer.get("finish_reason"))
                outcomes[index] = Outcome(completion, cached=True)
                stats.cache_hits += 1
                stats.prompt_tokens += completion.prompt_tokens
                stats.completion_tokens += completion.completion_tokens
            else:
                pending.append(index)
        if on_done and len(pending) < len(requests):
            on_done(len(requests) - len(pending))

        async def answer(index: int) -> None:
            outcomes[index] = await self._answer(requests[index], priority, lambda text: is_usable(index, text), stats)
            if on_done:
                on_done(1)

        tasks = [asyncio.ensure_future(answer(index)) for index in pending]
        try:
            await asyncio.gather(*tasks)
        except FatalError as error:
            raise GenerationAborted(str(error)) from error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes  # type: ignore[return-value]

    async def _answer(self, request: tuple[str, list[dict]], priority: int, is_usable: Callable[[str], bool], stats: GenerationStats) -> Outcome:
        key, messages = request
        last = self.policy.max_attempts
        retrying = AsyncRetrying(
            stop=stop_after_attempt(last), wait=self._wait, retry=retry_if_exception_type(TransientError), reraise=True
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number > 1:
                        stats.retries += 1
                    async with self.window.slot(priority):
                        stats.requests += 1
                        try:
                            completion = await self.backend.complete(messages, self.params)
                        except TransientError as error:
                            stats.errors[error.kind] += 1
                            self.circuit.record(error)
                            raise
                    self.circuit.record(None)
                    stats.spent_prompt_tokens += completion.prompt_tokens
                    stats.spent_completion_tokens += completion.completion_tokens
                    if number < last and not is_usable(completion.text):
                        stats.errors["unusable_answer"] += 1
                        raise TransientError("unusable_answer", "the answer holds no usable text")
        except TransientError as error:
            stats.failed += 1
            return Outcome(None, error=f"generation_failed:{error.kind}")
        self.cache.put(key, self.backend.model, _answer_dict(completion))
        stats.succeeded += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        return Outcome(completion)
