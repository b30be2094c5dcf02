"""Deterministic answers to the prompts of synth's tasks, for the test server
(synth.testing.openai_server), built from the bundled UDHR (30 articles aligned across languages).

`QueryOracle` answers the query prompt of prompts/queries.toml for a passage that is a UDHR article:
`count` search queries in the asked language, each a handful of that article's words in that
language (its translation of the article; the article itself for in-language queries). The words
are taken longest first, so a query is made of the article's most distinctive words, not of a run
copied from it.
"""

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

from synth.data import UDHR_DIR
from synth.languages import UnknownLanguageError, language_name, normalize_language

# What prompts/queries.toml says: "Write search queries in {query_language} that ... Write exactly {count} such search queries".
QUERY_PROMPT = re.compile(r"search queries in (?P<language>[^\n.,]+?) that .*?exactly (?P<count>\d+) such search queries", re.S)
# Words per query by kind, told apart by the kind's instruction in the prompt.
KIND_WORDS = (("keywords", 4), ("question", 7))
LONG_WORDS = 12


def _language_name(code: str) -> str | None:
    try:
        return language_name(normalize_language(code))
    except UnknownLanguageError:
        return None


class QueryOracle:
    """`find_article(prompt)` gives the number (0-based) of the UDHR article a prompt holds, if any."""

    def __init__(self, find_article: Callable[[str], int | None], udhr_dir: Path = UDHR_DIR) -> None:
        self._find_article = find_article
        self._files = {_language_name(path.stem): path for path in sorted(udhr_dir.glob("*.txt"))}

    @cache
    def _words(self, path: Path, number: int) -> list[str]:
        article = path.read_text(encoding="utf-8").splitlines()[number]
        words = dict.fromkeys(word.strip(".,;:!?()\"'«»“”") for word in article.split())
        return sorted((word for word in words if word), key=len, reverse=True)

    def answer(self, prompt: str) -> str | None:
        """A numbered list of queries for a query prompt about a UDHR article; None for any other prompt."""
        asked = QUERY_PROMPT.search(prompt)
        number = self._find_article(prompt) if asked else None
        path = self._files.get(asked["language"].strip()) if asked else None
        if number is None or path is None:
            return None
        size = next((n for marker, n in KIND_WORDS if marker in prompt), LONG_WORDS)
        words = self._words(path, number)
        queries = [" ".join(words[(i * size + j) % len(words)] for j in range(size)) for i in range(int(asked["count"]))]
        return "\n".join(f"{i}. {query}" for i, query in enumerate(queries, 1))
