"""Sentence segmentation for corpora that hold paragraphs or documents per line.

A rule-based splitter on sentence-final punctuation across scripts (Latin, Ethiopic '።',
Devanagari '।', Arabic '؟', CJK '。'); it does not split after a lone initial ("J. Smith").
"""

import re

# End punctuation, closing quotes/brackets (kept with the sentence), then a space; Ethiopic
# '።' ends a sentence even without one (words there are separated by '፡').
_BOUNDARY = re.compile(r"(?:[.!?;।؟。！？][\"'”’»)\]]*\s+|።፡?\s*)(?=\S)")
_INITIAL = re.compile(r"(?:^|\s)\w\.$")

SEGMENTERS = ("line", "sentence")


def split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for boundary in _BOUNDARY.finditer(text):
        piece = text[start : boundary.end()].strip()
        if _INITIAL.search(piece):
            continue  # "J. Smith": an initial, not the end of a sentence
        if piece:
            sentences.append(piece)
        start = boundary.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences
