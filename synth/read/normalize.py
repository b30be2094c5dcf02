"""Text normalisation and record ids: the same sentence always gets the same text and id."""

import hashlib
import unicodedata

# Zero-width (non-)joiners are format characters, but Indic, Persian and other scripts need
# them to spell words correctly, so they survive the clean-up.
_KEEP = frozenset("\u200c\u200d")
# Control, format and lone surrogates (the latter come from JSON "\ud800" escapes and
# cannot be encoded as UTF-8).
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def _keep_char(ch: str) -> bool:
    return ch.isspace() or ch in _KEEP or unicodedata.category(ch) not in _DROP_CATEGORIES


def normalize_text(text: str) -> str:
    """NFC, invisible control/format characters removed, every run of whitespace one space, trimmed."""
    # str.split() splits on all Unicode whitespace (NBSP, U+3000, U+2028, tabs, newlines, ...).
    text = " ".join(text.split())
    # Once whitespace is plain spaces, printable text has no control or format character: only
    # the rare other text is filtered character by character (and re-spaced where one went).
    if not text.isprintable():
        text = " ".join("".join(ch for ch in text if _keep_char(ch)).split())
    # Last, as dropping a format character can bring a letter and its combining mark together.
    return unicodedata.normalize("NFC", text)


def record_id(normalized_text: str) -> str:
    """First 16 hex characters of the SHA-256 of the UTF-8 text: stable across runs and machines."""
    return hashlib.sha256(normalized_text.encode("utf-8")).hexdigest()[:16]
