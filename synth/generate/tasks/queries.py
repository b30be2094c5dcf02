"""Search queries for a passage: the passage goes in, a list of queries comes out.

The prompt lives in prompts/queries.toml (one instruction per kind of query); the parser sits here
beside it. Models wrap the list in chatter ("Sure! Here are 3 queries:", "I hope these help"),
number or bullet it, label items ("Query 1:", "**Keyword query:**") and quote them; the parser
keeps the queries only.
"""

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from synth.generate.prompts import PromptTemplate, load_prompt, prompts_dir
from synth.languages import language_name

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
