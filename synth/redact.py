"""The one place that scrubs secrets from text that came from outside.

An endpoint may echo the `Authorization` header in an error body, a model may repeat a key it was
shown, a URL may carry `user:password@`, a Hub error may quote the token. Every such text passes
through `scrub` before synth prints, logs, caches, stages or publishes it:

- the backends' errors (`TransientError`, `FatalError`: what the circuit's "last:" text and every
  exit message quote) and every answer (`Completion.text`, hence the cache, the staged chunks,
  `rejects/` and the dataset) are scrubbed where they are made (synth.generate.backends);
- the generation cache scrubs what it stores (answers imported from batch files included);
- the CLI scrubs every message it prints, and `install_log_filter` every log record (Prefect's
  run logs included) of the process.

What is scrubbed: every secret registered with `register` (the API key, the Hub token, as they
are and JSON- or URL-escaped), the password of `scheme://user:password@host` URLs, bearer
tokens, and the shapes of OpenAI (`sk-...`) and Hugging Face (`hf_...`) keys even when unknown.
"""

import json
import logging
import re
import threading
from urllib.parse import quote

REDACTED = "[REDACTED]"
# Shorter values are not registered: replacing a 4-letter "key" everywhere would corrupt data,
# and a key that short is no secret anyway.
MIN_SECRET_CHARS = 8

_known: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern | None = None

# Secrets recognisable by their shape, registered or not.
_SHAPES = [
    # user:password@ in a URL (http, https, and any other scheme): the password goes, the user stays.
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*:)[^\s/@]+(?=@)"), r"\g<head>" + REDACTED),
    # An Authorization header or bearer token as an echoing server prints it.
    (re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<head>" + REDACTED),
    # OpenAI-style and Hugging Face keys.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),
]


def register(*values: str | None) -> None:
    """Known secrets (API keys, tokens) to scrub from now on; None and short values are ignored."""
    global _pattern
    variants = set()
    for value in values:
        if not value or len(value) < MIN_SECRET_CHARS:
            continue
        variants.update({value, json.dumps(value)[1:-1], quote(value, safe=""), quote(value)})
    with _lock:
        if variants - _known:
            _known.update(variants)
            # Longest first, so that a secret containing another is replaced whole.
            _pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def forget_all() -> None:
    """Drop the registered secrets (tests)."""
    global _pattern
    with _lock:
        _known.clear()
        _pattern = None


def scrub(text: str) -> str:
    """`text` with every known secret and every secret-shaped string replaced by [REDACTED]."""
    if not text or not isinstance(text, str):
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


class ScrubbingFilter(logging.Filter):
    """Scrubs a log record's message (its arguments merged in) and its traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_FILTER = ScrubbingFilter()


def install_log_filter() -> None:
    """Scrub every record of every handler known now (the root logger's, Prefect's, synth's).
    Safe to call again: a handler gets the filter once."""
    loggers = [logging.getLogger(), *(
        logger for logger in list(logging.Logger.manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    )]
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in list(logger.handlers):
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
