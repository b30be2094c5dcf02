"""The LLM relevance check of a (query, passage) pair: does the passage answer the query? yes/no.

The prompt lives in prompts/relevance.toml; the parser sits here beside it (`RelevanceTask`:
request, parse; the verdicts are the relevance check's, synth.queries.RelevanceCheck). Models
answer "Yes.", "**No**", "Answer: yes", "No, the passage is about ..." or think first
(<think>...</think>): the first yes or no word outside a think block is the verdict; an answer
with neither is unclear (None).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from synth.generate.prompts import PromptTemplate, load_prompt
from synth.generate.request import Request, Unusable
from synth.languages import language_name

TASK = "relevance"

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_VERDICT = re.compile(r"\b(yes|no)\b", re.I)


@dataclass(frozen=True)
class RelevancePrompt:
    template: PromptTemplate

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RelevancePrompt":
        return cls(load_prompt(TASK, path))

    @property
    def version(self) -> str:
        return self.template.version

    def messages(self, query: str, passage: str, query_lang: str, lang: str) -> list[dict]:
        return self.template.messages(
            query=query, query_language=language_name(query_lang), passage=passage, passage_language=language_name(lang),
        )


def parse_relevance(answer: str | None) -> bool | None:
    """True for yes, False for no, None when the answer says neither."""
    match = _VERDICT.search(_THINK.sub("", answer or ""))
    return None if match is None else match.group(1).casefold() == "yes"


@dataclass(frozen=True)
class RelevanceTask:
    """Asking whether a passage answers a query: one request per (query, passage) row, its answer
    parsed into "yes" or "no" (unusable, "unclear", when it says neither)."""

    prompt: RelevancePrompt

    def request(self, row: dict) -> Request:
        """The request about a row with `query`, `passage`, `query_lang` and `lang`."""
        return Request(self.prompt.messages(row["query"], row["passage"], row["query_lang"], row["lang"]))

    def parse(self, request: Request, answer: str) -> str:
        relevant = parse_relevance(answer)
        if relevant is None:
            raise Unusable("neither yes nor no", "unclear")
        return "yes" if relevant else "no"
