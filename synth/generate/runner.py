"""Drives a backend: cache first, then requests with retries, never more than `concurrency` in flight.

One `RequestRunner` serves a whole run. Every chunk that is generating sends its requests through
the runner's one window of `concurrency` slots, so the server stays busy across chunk boundaries
(the next chunks' requests fill the slots the last requests of a chunk leave free). Waiting
requests are served oldest chunk first, so chunks finish in about the order they started and the
number of chunks held in memory stays small; within a chunk, retries first (they are late already),
then the longest prompt first (longest-processing-time-first: for a translation the answer's length
follows the source's, so the last requests of a run are short ones and the server's slots do not sit
idle while a few long answers finish).

Every answer is committed to the cache as it arrives (the answers that arrive in one turn of the
event loop in one transaction, right after the requests they make room for are sent), so a crash or
a kill loses at most the requests in flight. A request that keeps failing becomes a recorded failure (its row is dropped
with the reason), never a crash and never a silent loss; an error no retry can fix, or an endpoint
that answers nothing but failures for a while (the circuit), stops the job.
"""

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, retry_if_not_exception_type, stop_after_attempt

from synth.generate.backends import Backend, Completion, FatalError, RequestFailed, TransientError
from synth.generate.cache import GenerationCache
from synth.generate.request import Unusable, nonempty


class GenerationAborted(RuntimeError):
    """The endpoint cannot serve this job (refused key, unknown model, unreachable)."""


@dataclass
class GenerationStats:
    requests: int = 0          # HTTP requests / model calls, retries included
    cache_hits: int = 0
    succeeded: int = 0
    failed: int = 0            # items with no usable answer after every attempt
    retries: int = 0
    # Answers the task could not use (empty, chatter, a refusal): at temperature 0 the same request
    # gives the same answer, so each is retried once only, resampled (RetryPolicy.unusable_attempts);
    # `unusable_fixed` of those retries gave a usable answer, `unusable_kept` did not (the last
    # answer is kept for the filters to drop with its reason).
    unusable_retried: int = 0
    unusable_fixed: int = 0
    unusable_kept: int = 0
    # Tokens of the answers kept, whether fresh or from the cache: what the data took to make.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Tokens of every answer received by the requests sent (retried unusable answers included):
    # what these requests cost.
    spent_prompt_tokens: int = 0
    spent_completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)  # transient error kinds seen

    _COUNTS = (
        "requests", "cache_hits", "succeeded", "failed", "retries", "unusable_retried", "unusable_fixed", "unusable_kept",
        "prompt_tokens", "completion_tokens", "spent_prompt_tokens", "spent_completion_tokens",
    )

    def merge(self, other: "GenerationStats") -> None:
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)

    def as_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self._COUNTS}, "errors": dict(self.errors)}

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationStats":
        known = {name: data[name] for name in cls._COUNTS if name in data}  # a chunk staged by an older version lacks some
        return cls(**known, errors=Counter(data.get("errors", {})))


@dataclass
class Outcome:
    completion: Completion | None
    cached: bool = False
    error: str | None = None   # why there is no completion: "generation_failed:<kind>"
    # What the task's parser made of the answer (of a kept unusable one too: Unusable.value);
    # None without a completion.
    parsed: Any = None


# Failures that say the endpoint itself is broken (a 429 says it is busy: wait, do not give up).
DOWN_KINDS = ("connection", "timeout", "server_error", "malformed")


# Failures after which the server answered, only not usefully: retried at once the first time
# (nothing says the server is busy), then with a growing wait like a 5xx, so an endpoint that
# answers nothing but garbage still reaches the circuit instead of spinning.
ANSWERED_KINDS = ("malformed", "unusable_answer")


@dataclass
class RetryPolicy:
    max_attempts: int = 10
    max_wait: float = 30.0
    # An answer the task cannot use (empty, chatter, a refusal) is no network accident: at
    # temperature 0 the same request gets the same answer, so it is sent at most this many times,
    # and the retry is resampled (`resampled`): at `resample_temperature` where the job samples
    # greedily, with a seed, so that it can change something. The last answer is kept (its rows are
    # dropped by the filters, with the reason). Transient errors (5xx, 429, timeouts) still get
    # `max_attempts`.
    unusable_attempts: int = 2
    resample_temperature: float = 0.7
    # Waits before a retry, drawn from [0, ceiling] (full jitter, at most max_wait). After an HTTP
    # 5xx or an unusable answer the ceiling starts at `server_wait`: while most recent attempts
    # succeed, a failure is that request's bad luck, and a short wait costs the server nothing (the
    # slot is freed meanwhile) while a long one is idle time at the end of a run, so the ceiling
    # doubles a failure (0.05, 0.1, 0.2 s...); once `sick_share` of the last `health_window`
    # attempts failed, the endpoint is in trouble and it grows 4x (0.05, 0.2, 0.8, 3.2 s...), so a
    # server that fails everything gets no more attempts before the circuit opens than a slower
    # start would give it. After a timeout or a refused connection (overloaded, restarting) it
    # starts at `down_wait` and doubles. A 429 waits what its Retry-After says.
    server_wait: float = 0.05
    down_wait: float = 0.25
    sick_share: float = 0.5
    health_window: int = 100
    # The endpoint is taken for down (the job stops) when no request got an answer for
    # `circuit_seconds` while at least `circuit_failures` failed in a row with a DOWN_KINDS error:
    # a short outage is waited out, a dead endpoint is not retried for every record. (An endpoint
    # that never accepted a connection is the backend's to report, at once.)
    circuit_failures: int = 3
    circuit_seconds: float = 10.0


def retry_wait(policy: RetryPolicy, attempt: int, error: TransientError, sick: bool = True) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based) before the next one; `sick`:
    most recent attempts failed (see RetryPolicy)."""
    if error.retry_after is not None:
        # Honour Retry-After, with jitter so a crowd of clients does not come back in step.
        return min(policy.max_wait, error.retry_after) * random.uniform(1.0, 1.2)
    growth = 4 if sick else 2
    if error.kind in ANSWERED_KINDS:
        if attempt == 1:
            return 0.0
        ceiling = policy.server_wait * growth ** (attempt - 2)
    elif error.kind in ("server_error", "rate_limited"):
        ceiling = policy.server_wait * growth ** (attempt - 1)
    else:
        ceiling = policy.down_wait * 2 ** (attempt - 1)
    return random.uniform(0, min(policy.max_wait, ceiling))


def resampled(params: dict, policy: RetryPolicy, retry: int) -> dict:
    """The sampling of retry number `retry` (1-based) after an unusable answer: greedy decoding
    (temperature 0) would give that answer again, so the temperature is raised to
    `resample_temperature`; a seed makes the retry reproducible on servers that honour one
    (vLLM, llama.cpp, OpenAI) and differ from any earlier one."""
    temperature = float(params.get("temperature") or 0.0)
    return {**params, "temperature": temperature if temperature > 0 else policy.resample_temperature, "seed": retry}


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
    """At most `size` holders at once. Waiters get a slot lowest `priority` first; among equal
    priorities, retries first, then the largest `size` (the expected work: longest first), then
    first come first served."""

    def __init__(self, size: int):
        self._free = size
        self._waiters: list[tuple[int, bool, float, int, asyncio.Future]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int, size: float = 0.0, retry: bool = False) -> AsyncIterator[None]:
        if self._free > 0:  # free slots imply no one is waiting: a release hands its slot over
            self._free -= 1
        else:
            future = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, not retry, -size, next(self._order), future))
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
            future = heapq.heappop(self._waiters)[-1]
            if not future.done():  # skip waiters that were cancelled
                future.set_result(None)
                return
        self._free += 1


def prompt_size(messages: list[dict]) -> int:
    """Characters of a request's messages: what its answer's length is expected to follow."""
    return sum(len(content) for message in messages if isinstance(content := message.get("content"), str))


def _answer_dict(completion: Completion) -> dict:
    answer = {
        "text": completion.text, "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens, "finish_reason": completion.finish_reason,
    }
    if completion.sampling is not None:  # answered by a resampled retry: with other parameters than the job's
        answer["sampling"] = completion.sampling
    return answer


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
        # Answers received in this turn of the event loop, committed together at its end.
        self._unsaved: list[tuple[str, str, dict]] = []
        self._save_error: Exception | None = None
        # Whether each of the last `health_window` attempts failed, and how many did.
        self._recent: deque[bool] = deque(maxlen=self.policy.health_window)
        self._recent_failures = 0

    def _save(self, key: str, completion: Completion) -> None:
        if self._save_error is not None:  # the cache cannot be written (a full disk): stop
            raise self._save_error
        if not self._unsaved:
            asyncio.get_running_loop().call_soon(self._flush_soon)
        self._unsaved.append((key, self.backend.model, _answer_dict(completion)))

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except Exception as error:  # raised by the next answer, and by `generate`'s own flush
            self._save_error = error

    def flush(self) -> None:
        """Commit the answers received but not yet in the cache."""
        if self._unsaved:
            self.cache.put_many(self._unsaved)
            self._unsaved = []

    def _attempted(self, failed: bool) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_failures -= self._recent[0]
        self._recent.append(failed)
        self._recent_failures += failed

    @property
    def sick(self) -> bool:
        """Whether at least `sick_share` of the recent attempts failed."""
        return self._recent_failures >= self.policy.sick_share * max(1, len(self._recent))

    async def generate(
        self,
        requests: list[tuple[str, list[dict]]],
        *,
        priority: int = 0,
        parse: Callable[[int, str], Any] = nonempty,
        stats: GenerationStats | None = None,
        on_done: Callable[[int], None] | None = None,
        sizes: list[float] | None = None,
    ) -> list[Outcome]:
        """Answers for (cache key, messages) pairs, in order. Lower `priority` goes first (give
        the chunk index). `parse(index, text)` is the task's parser, called once per answer kept
        (a cached one too): what it returns is the outcome's `parsed`; it raises
        synth.generate.request.Unusable for an answer not worth keeping (e.g. no translation in it),
        which is retried once, resampled (see RetryPolicy.unusable_attempts), and the last one is
        kept with the exception's `value`, so the filters record why it was dropped. By default an
        answer's text, unusable when blank. `sizes` are the expected lengths of the answers (larger
        goes first within a priority); by default the prompts' lengths."""
        stats = stats if stats is not None else GenerationStats()
        outcomes: list[Outcome | None] = [None] * len(requests)
        cached = self.cache.get_many([key for key, _ in requests])
        pending = []
        for index, (key, _) in enumerate(requests):
            if key in cached:
                answer = cached[key]
                completion = Completion(
                    answer["text"], answer["prompt_tokens"], answer["completion_tokens"], answer.get("finish_reason"), answer.get("sampling")
                )
                outcomes[index] = Outcome(completion, cached=True, parsed=_parsed(parse, index, completion.text)[0])
                stats.cache_hits += 1
                stats.prompt_tokens += completion.prompt_tokens
                stats.completion_tokens += completion.completion_tokens
            else:
                pending.append(index)
        if on_done and len(pending) < len(requests):
            on_done(len(requests) - len(pending))

        async def answer(index: int) -> None:
            key, messages = requests[index]
            size = sizes[index] if sizes is not None else prompt_size(messages)
            outcomes[index] = await self._answer(key, messages, priority, size, lambda text: parse(index, text), stats)
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
            self.flush()  # whatever happens next to these outcomes, their answers are in the cache
        return outcomes  # type: ignore[return-value]

    async def _answer(
        self, key: str, messages: list[dict], priority: int, size: float, parse: Callable[[str], Any], stats: GenerationStats
    ) -> Outcome:
        last = self.policy.max_attempts
        params, unusable = self.params, 0  # the sampling of the next attempt; unusable answers so far
        retrying = AsyncRetrying(
            stop=stop_after_attempt(last),
            # The slot is free while a retry waits: the backoff costs the server nothing.
            wait=lambda state: retry_wait(self.policy, state.attempt_number, state.outcome.exception(), self.sick),
            # A RequestFailed (an answer too large) fails the request at once: asking again pays again.
            retry=retry_if_exception_type(TransientError) & retry_if_not_exception_type(RequestFailed),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number > 1:
                        stats.retries += 1
                    # A retry comes back ahead of the first attempts of its chunk and of later ones.
                    async with self.window.slot(priority, size, retry=number > 1):
                        stats.requests += 1
                        try:
                            completion = await self.backend.complete(messages, params)
                        except TransientError as error:
                            stats.errors[error.kind] += 1
                            self._attempted(failed=True)
                            self.circuit.record(error)
                            raise
                    self.circuit.record(None)
                    stats.spent_prompt_tokens += completion.prompt_tokens
                    stats.spent_completion_tokens += completion.completion_tokens
                    if params is not self.params:
                        completion = replace(completion, sampling=params)
                    parsed, reason = _parsed(parse, completion.text)
                    usable = reason is None
                    if unusable:
                        stats.unusable_fixed += usable
                    if not usable and (number == last or unusable + 1 >= self.policy.unusable_attempts):
                        stats.unusable_kept += 1  # kept as it is: its rows are dropped with a reason
                        usable = True
                    self._attempted(failed=not usable)
                    if not usable:
                        stats.errors["unusable_answer"] += 1
                        stats.unusable_retried += 1
                        unusable += 1
                        params = resampled(self.params, self.policy, unusable)
                        raise TransientError("unusable_answer", f"the answer holds no usable text ({reason})")
        except TransientError as error:
            stats.failed += 1
            return Outcome(None, error=f"generation_failed:{error.kind}")
        self._save(key, completion)
        stats.succeeded += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        return Outcome(completion, parsed=parsed)


def _parsed(parse: Callable[..., Any], *args) -> tuple[Any, str | None]:
    """(what `parse(*args)` made of an answer, None or why the answer is unusable)."""
    try:
        return parse(*args), None
    except Unusable as unusable:
        return unusable.value, unusable.reason or "unusable"
