"""Search queries for a passage: the passage goes in, a list of queries comes out.

The prompt lives in prompts/queries.toml (one instruction per kind of query); the parser and the
rows sit here beside it (`QueriesTask`: requests, parse, rows). Models wrap the list in chatter
("Sure! Here are 3 queries:", "I hope these help"), number or bullet it, label items ("Query 1:",
"**Keyword query:**") and quote them; the parser keeps the queries only.
"""

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synth.generate.backends import Completion
from synth.generate.prompts import PromptTemplate, load_prompt, prompts_dir
from synth.generate.request import Request, Unusable
from synth.languages import language_name
from synth.read import Segment, record_id

TASK = "queries"

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
# What starts a list item: "1.", "2)", "(3)", "-", "*", "•" ...
_MARKER = re.compile(r"^\s*(?:\d{1,2}\s*[.):]|\(\d{1,2}\)|[-*•])\s*")
# ... and a label before the query: "Query 1:", "Q2 -", "**Keyword query:**".
_LABEL = re.compile(r"^\**\s*(?:(?:search|keyword|long)\s+)?(?:query|question|q)\s*\d{0,2}\s*\**\s*[:.)-]\s*\**\s*", re.I)
# A line that introduces or comments on the list instead of being a query.
_CHATTER = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|below (?:is|are)|the following|these (?:queries|are)|"
    r"i hope|hope (?:this|these)|let me know|notes?)\b|:\s*\**\s*$",
    re.I,
)
_QUOTES = [('"', '"'), ("“", "”"), ("'", "'"), ("«", "»"), ("„", "“"), ("‘", "’"), ("`", "`")]


@dataclass(frozen=True)
class QueryPrompt:
    template: PromptTemplate
    instructions: dict[str, str]  # kind -> what a query of that kind looks like

    @classmethod
    def load(cls, path: str | Path | None = None) -> "QueryPrompt":
        template = load_prompt(TASK, path)
        file = Path(path) if path else prompts_dir() / f"{TASK}.toml"
        kinds = tomllib.loads(file.read_text(encoding="utf-8")).get("kinds") or {}
        instructions = {name: str(table.get("instruction", "")) for name, table in kinds.items()}
        if not instructions:
            raise ValueError(f"prompt template {file} defines no [kinds.NAME] table")
        return cls(template, instructions)

    @property
    def version(self) -> str:
        return self.template.version

    def messages(self, passage: str, kind: str, count: int, lang: str, query_lang: str) -> list[dict]:
        return self.template.messages(
            passage=passage, passage_language=language_name(lang), query_language=language_name(query_lang),
            count=str(count), instruction=self.instructions[kind],
        )


def _clean(line: str) -> str:
    text = line.strip().strip("*_ \t")
    for opening, closing in _QUOTES:
        if len(text) >= 2 and text.startswith(opening) and text.endswith(closing) and text.count(opening) <= 2:
            text = text[len(opening) : -len(closing)].strip()
            break
    return " ".join(text.split())


def parse_queries(answer: str, limit: int | None = None) -> list[str]:
    """The queries in a model's answer, in order (at most `limit`); [] when there are none.

    When some lines are list items, only list items count (what surrounds the list is chatter);
    otherwise every line that is not chatter is a query.
    """
    lines = [line for line in _THINK.sub("", answer or "").splitlines() if line.strip() and not line.lstrip().startswith("#")]
    unmarked = [_MARKER.sub("", line, count=1) for line in lines]
    items = [_LABEL.sub("", line, count=1) for line in unmarked]
    is_item = [item != line for item, line in zip(items, lines)]
    if any(is_item):
        candidates = [item for item, listed in zip(items, is_item) if listed]
    else:
        candidates = [line for line in lines if not _CHATTER.search(line)]
    queries = [query for query in map(_clean, candidates) if query and not _CHATTER.search(query)]
    return queries[:limit]


def query_id(passage_id: str, kind: str, query: str) -> str:
    return record_id(f"{passage_id}\n{kind}\n{query}")


@dataclass(frozen=True)
class QueriesTask:
    """Writing search queries for a passage: one request per kind of query, asking for `per_passage`
    queries; the queries parsed out of its answer, a row each.

    An answer is unusable when none of its queries is worth a row: `chatter(query, passage)` says
    why a query is a refusal or talk about the task (None: it is a query); the job passes the
    chatter filter's rule (synth.filters.retrieval.chatter_reason), so that what is retried is
    what that filter would drop."""

    prompt: QueryPrompt
    kinds: tuple[str, ...]
    per_passage: int
    lang: str
    query_lang: str
    chatter: Callable[[str, str], str | None] = lambda query, passage: None

    def requests(self, segment: Segment) -> list[Request]:
        return [
            Request(
                self.prompt.messages(segment.text, kind, self.per_passage, self.lang, self.query_lang),
                {"kind": kind, "passage": segment.text},
            )
            for kind in self.kinds
        ]

    def parse(self, request: Request, answer: str) -> list[str]:
        """The answer's queries; unusable without one that is not a refusal or talk about the task
        (an empty answer, "Here are some search queries:", "I'm sorry, I cannot...")."""
        queries = parse_queries(answer, self.per_passage)
        passage = request.meta.get("passage", "")
        if not any(self.chatter(query, passage) is None for query in queries):
            raise Unusable("no query in the answer", queries)
        return queries

    def rows(
        self, segment: Segment, request: Request, completion: Completion | None, queries: list[str] | None, *, model: str, params: dict
    ) -> list[dict]:
        """The rows of one answered (or failed: `completion` None) request, a query each; `queries`: `parse`'s."""
        kind = request.meta["kind"]
        common = {
            "passage": segment.text, "passage_id": segment.id, "kind": kind, "query_lang": self.query_lang, "lang": self.lang,
            "source": segment.source, "line": segment.line, "model": model, "prompt_version": self.prompt.version,
            # A resampled retry's own parameters where it wrote the answer (synth.generate.runner).
            "generation_params": json.dumps((completion and completion.sampling) or params, sort_keys=True),
            "raw_answer": completion.text if completion else None,
            "prompt_tokens": completion.prompt_tokens if completion else None,
            "completion_tokens": completion.completion_tokens if completion else None,
        }
        # An answer without a query still makes a row, so that its drop is recorded with a reason.
        queries = (queries if completion else []) or [None]
        return [{"id": query_id(segment.id, kind, query or ""), "query": query, **common} for query in queries]
