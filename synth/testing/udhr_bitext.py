"""Real aligned bitext from the bundled UDHR, for evaluation tests and benchmarks.

The 30 articles align across languages; within an article, sentences align where both languages
split it into the same number of sentences (synth's own segmenter). `sentence_pairs` gives those
sentence pairs, `article_pairs` whole articles, each for chosen article numbers (0-based), so a
test can train on some articles and evaluate on others that no training pair has seen.
"""

import csv
from collections.abc import Iterable
from pathlib import Path

from synth.data import udhr_articles
from synth.read.segment import split_sentences

ARTICLES = 30


def sentence_pairs(lang: str, pivot: str = "eng", articles: Iterable[int] = range(ARTICLES)) -> list[tuple[str, str]]:
    source, target = udhr_articles(lang), udhr_articles(pivot)
    pairs = []
    for number in articles:
        sentences, translations = split_sentences(source[number]), split_sentences(target[number])
        if len(sentences) == len(translations):
            pairs.extend(zip(sentences, translations))
    return pairs


def article_pairs(lang: str, pivot: str = "eng", articles: Iterable[int] = range(ARTICLES)) -> list[tuple[str, str]]:
    source, target = udhr_articles(lang), udhr_articles(pivot)
    return [(source[number], target[number]) for number in articles]


def write_tsv(pairs: Iterable[tuple[str, str]], path: Path) -> Path:
    """A header-less TSV of pairs (what `synth filter` and `synth evaluate --eval` read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerows(pairs)
    return path
