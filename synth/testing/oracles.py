"""Deterministic answers to the prompts of synth's tasks, for the test server
(synth.testing.openai_server), built from the bundled UDHR (30 articles aligned across languages).

`QueryOracle` answers the query prompt of prompts/queries.toml for a passage that is a UDHR article:
`count` search queries in the asked language, each a handful of that article's words in that
language (its translation of the article; the article itself for in-language queries). The words
are taken longest first, so a query is made of the article's most distinctive words, not of a run
copied from it.

`RelevanceOracle` answers the relevance prompt of prompts/relevance.toml (does this passage answer
this query?) truthfully for a UDHR passage: it finds the article the query was written for, the one
whose words (in any shipped language) cover most of the query's, rare words weighing more, and
answers yes when that is the passage's article. A judge that knows where every query came from: an
upper bound for a real LLM's.
"""

import math
import re
from collections import Counter
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


# What prompts/relevance.toml says: "Search query (LANG):\n{query}\n\nPassage (LANG):\n{passage}\n\nDoes this passage answer".
RELEVANCE_PROMPT = re.compile(r"Search query \([^)]*\):\n(?P<query>.*?)\n\nPassage \([^)]*\):\n(?P<passage>.*?)\n\nDoes this passage answer", re.S)
_WORD_SPLIT = re.compile(r"[\W_]+")
# The share of a query's weight (idf) the best article must cover for the query to be that article's.
MIN_COVER = 0.5


def _words(text: str) -> set[str]:
    return {word for word in _WORD_SPLIT.split(text.casefold()) if word}


class RelevanceOracle:
    """`find_article(prompt)` gives the number (0-based) of the UDHR article a text holds, if any."""

    def __init__(self, find_article: Callable[[str], int | None], udhr_dir: Path = UDHR_DIR) -> None:
        self._find_article = find_article
        # Per language: each article's words, and each word's idf over the 30 articles.
        self._languages = []
        for path in sorted(udhr_dir.glob("*.txt")):
            articles = [_words(line) for line in path.read_text(encoding="utf-8").splitlines()]
            documents = Counter(word for article in articles for word in article)
            idf = {word: math.log(1 + len(articles) / n) for word, n in documents.items()}
            self._languages.append((articles, idf))

    def article_of(self, query: str) -> int | None:
        """The article the query was written for: the one covering most of its words' weight, in the
        language that covers most; None when no article covers MIN_COVER or two tie (a vague query)."""
        words = _words(query)
        best: tuple[float, list[int]] = (0.0, [])
        for articles, idf in self._languages:
            unknown = max(idf.values(), default=1.0)  # a word no article has weighs as the rarest
            total = sum(idf.get(word, unknown) for word in words)
            if not total:
                continue
            covers = [sum(idf[word] for word in words & article) / total for article in articles]
            top = max(covers)
            if top > best[0] + 1e-9:
                best = (top, [i for i, cover in enumerate(covers) if cover >= top - 1e-9])
        cover, winners = best
        return winners[0] if cover >= MIN_COVER and len(winners) == 1 else None

    def answer(self, prompt: str) -> str | None:
        """"yes" or "no" for a relevance prompt about a UDHR passage; None for any other prompt."""
        asked = RELEVANCE_PROMPT.search(prompt)
        number = self._find_article(asked["passage"]) if asked else None
        if number is None:
            return None
        return "Yes" if self.article_of(asked["query"]) == number else "No"


# What prompts/backtranslate.toml says: "Translate the following {source} text into {target}."
TRANSLATE_PROMPT = re.compile(r"Translate the following (?P<source>[^\n.]+?) text into (?P<target>[^\n.]+?)\.")


class RoundTripOracle:
    """Answers a translation prompt (prompts/backtranslate.toml) whose text is a UDHR article, when
    it asks for a language other than English: with that article in the asked language. The round
    trip of back-translation (the synthetic English side translated back into the source language)
    then comes back as the authentic article when the English was that article's translation, and
    as another article when it was not. Prompts into English are left to the UDHR oracle."""

    def __init__(self, find_article: Callable[[str], int | None], udhr_dir: Path = UDHR_DIR) -> None:
        self._find_article = find_article
        self._files = {_language_name(path.stem): path for path in sorted(udhr_dir.glob("*.txt"))}

    @cache
    def _articles(self, path: Path) -> list[str]:
        return path.read_text(encoding="utf-8").splitlines()

    def answer(self, prompt: str) -> str | None:
        asked = TRANSLATE_PROMPT.search(prompt)
        if not asked:
            return None
        path = self._files.get(asked["target"].strip())
        if path is None or path.stem == "eng":
            return None
        number = self._find_article(prompt[asked.end():])
        return None if number is None else self._articles(path)[number]
