"""What a task asks and how it says an answer is no use: the words the generate layer and every
layer above it share (a task in synth.generate.tasks makes `Request`s and parses their answers;
the runner retries an answer its parser calls `Unusable`; a follow-up stage of the filters asks
its own requests the same way).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """One LLM request a segment makes; `meta` travels with it to the task's parser and rows."""

    messages: list[dict]
    meta: dict = field(default_factory=dict)


class Unusable(Exception):
    """Raised by a parser for an answer that holds nothing the task can use (empty, chatter, a
    refusal). The runner retries it once, resampled (synth.generate.runner.RetryPolicy); when the
    retry is no better, the last answer is kept and `value`, what the parser made of it anyway
    (an empty translation, the chatty queries), goes to the rows, for the filters to drop with
    their reason."""

    def __init__(self, reason: str, value: Any = None):
        super().__init__(reason)
        self.reason = reason
        self.value = value


def nonempty(index: int, text: str) -> str:
    """The default parser: the answer's text; unusable when blank."""
    if not text.strip():
        raise Unusable("empty answer", text)
    return text


def parsed_anyway(parse: Callable[[Request, str], Any], request: Request, text: str | None) -> Any:
    """What `parse` makes of `text`, usable or not (as the runner keeps a last unusable answer);
    None for no answer. For callers that answer a stage's requests themselves (tests, benchmarks)."""
    if text is None:
        return None
    try:
        return parse(request, text)
    except Unusable as unusable:
        return unusable.value
