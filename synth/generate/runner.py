"""Drives a backend: cache first, then bounded concurrent requests with retries.

Every answer is written to the cache the moment it arrives, so a crash or a kill loses at most the
requests in flight. A request that keeps failing becomes a recorded failure (its row is dropped
with the reason), never a crash and never a silent loss; an error no retry can fix stops the job.
"""

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)  # transient error kinds seen

    def merge(self, other: "GenerationStats") -> None:
        for name in ("requests", "cache_hits", "succeeded", "failed", "retries", "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "cache_hits": self.cache_hits, "succeeded": self.succeeded,
            "failed": self.failed, "retries": self.retries, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "errors": dict(self.errors),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationStats":
        return cls(**{**data, "errors": Counter(data.get("errors", {}))})


@dataclass
class Outcome:
    completion: Completion | None
    cached: bool = False
    error: str | None = None   # why there is no completion: "generation_failed:<kind>"


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    max_wait: float = 30.0
    # Consecutive connection failures with no success in between that mean "the endpoint is down".
    circuit_threshold: int = 12


def _wait(policy: RetryPolicy) -> Callable:
    exponential = wait_random_exponential(multiplier=0.25, max=policy.max_wait)

    def wait(retry_state) -> float:
        error = retry_state.outcome.exception()
        if isinstance(error, TransientError) and error.retry_after is not None:
            # Honour Retry-After, with jitter so a crowd of clients does not come back in step.
            return min(policy.max_wait, error.retry_after) * random.uniform(1.0, 1.2)
        return exponential(retry_state)

    return wait


class _Circuit:
    def __init__(self, threshold: int):
        self.threshold = threshold
        self.consecutive = 0

    def record(self, error: TransientError | None) -> None:
        if error is None:
            self.consecutive = 0
        elif error.kind in ("connection", "timeout"):
            self.consecutive += 1
            if self.consecutive >= self.threshold:
                raise GenerationAborted(
                    f"the endpoint looks down: {self.consecutive} requests in a row failed ({error}). "
                    "Nothing generated so far is lost: rerun the same command once it is back."
                )


def _answer_dict(completion: Completion) -> dict:
    return {
        "text": completion.text, "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens, "finish_reason": completion.finish_reason,
    }


async def generate_all(
    requests: list[tuple[str, list[dict]]],
    backend: Backend,
    cache: GenerationCache,
    params: dict,
    *,
    concurrency: int = 32,
    policy: RetryPolicy | None = None,
    is_usable: Callable[[int, str], bool] = lambda index, text: bool(text.strip()),
    stats: GenerationStats | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Answers for (cache key, messages) pairs, in order. `is_usable(index, text)` decides whether
    an answer is worth keeping (e.g. the parser finds a translation in it); unusable ones are
    retried and the last one is kept, so the filters record why it was dropped."""
    policy = policy or RetryPolicy()
    stats = stats if stats is not None else GenerationStats()
    outcomes: list[Outcome | None] = [None] * len(requests)
    cached = cache.get_many([key for key, _ in requests])
    pending = []
    for index, (key, messages) in enumerate(requests):
        if key in cached:
            answer = cached[key]
            outcomes[index] = Outcome(Completion(answer["text"], answer["prompt_tokens"], answer["completion_tokens"], answer.get("finish_reason")), cached=True)
            stats.cache_hits += 1
        else:
            pending.append(index)
    if on_done and len(pending) < len(requests):
        on_done(len(requests) - len(pending))

    circuit = _Circuit(policy.circuit_threshold)
    slots = asyncio.Semaphore(concurrency)

    async def attempt(index: int, messages: list[dict], last_attempt: Callable[[], bool]) -> Completion:
        async with slots:
            stats.requests += 1
            try:
                completion = await backend.complete(messages, params)
            except TransientError as error:
                stats.errors[error.kind] += 1
                circuit.record(error)
                raise
        circuit.record(None)
        if not is_usable(index, completion.text) and not last_attempt():
            stats.errors["unusable_answer"] += 1
            raise TransientError("unusable_answer", "the answer holds no usable text")
        return completion

    async def run_one(index: int) -> None:
        key, messages = requests[index]
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=_wait(policy),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
        )
        try:
            async for try_ in retrying:
                with try_:
                    number = try_.retry_state.attempt_number
                    if number > 1:
                        stats.retries += 1
                    completion = await attempt(index, messages, lambda n=number: n >= policy.max_attempts)
        except TransientError as error:
            stats.failed += 1
            outcomes[index] = Outcome(None, error=f"generation_failed:{error.kind}")
        else:
            cache.put(key, backend.model, _answer_dict(completion))
            stats.succeeded += 1
            stats.prompt_tokens += completion.prompt_tokens
            stats.completion_tokens += completion.completion_tokens
            outcomes[index] = Outcome(completion)
        if on_done:
            on_done(1)

    tasks = [asyncio.ensure_future(run_one(index)) for index in pending]
    try:
        await asyncio.gather(*tasks)
    except FatalError as error:
        raise GenerationAborted(str(error)) from error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes  # type: ignore[return-value]
