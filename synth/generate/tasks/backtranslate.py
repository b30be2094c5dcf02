"""Back-translation: the authentic `lang` text goes in, a `pivot` translation comes out.

The prompt lives in prompts/backtranslate.toml; the parser and the rows sit here beside it
(`BacktranslateTask`: requests, parse, rows). Small models wrap their translation in chatter
("Sure! Here is the translation:"), labels ("English:"), quotes and notes; the parser keeps the
translation only. The round trip (synth.filters.roundtrip) asks the same task the other way.
"""

import json
import re
from dataclasses import dataclass

from synth.generate.backends import Completion
from synth.generate.prompts import PromptTemplate, load_prompt
from synth.generate.request import Request, Unusable
from synth.languages import language_name
from synth.read import Segment

TASK = "backtranslate"

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|below is|the translation)[^\n]*?:\s*(?:\n|$)", re.I
)
_NOTE = re.compile(r"\n\s*(?:\(?\s*(?:note|notes|explanation|translation notes?|this translation|i translated|i have translated)\b|\*\*note)", re.I)
_QUOTES = [('"', '"'), ("“", "”"), ("'", "'"), ("«", "»"), ("„", "“"), ("‘", "’"), ("`", "`")]


@dataclass(frozen=True)
class BacktranslationPrompt:
    template: PromptTemplate

    @classmethod
    def load(cls, path: str | None = None) -> "BacktranslationPrompt":
        return cls(load_prompt(TASK, path))

    @property
    def version(self) -> str:
        return self.template.version

    def messages(self, text: str, lang: str, pivot: str) -> list[dict]:
        return self.template.messages(source_language=language_name(lang), target_language=language_name(pivot), text=text)


def parse_translation(answer: str, lang: str, pivot: str) -> str:
    """The translation inside a model's answer, or "" when there is none."""
    text = _THINK.sub("", answer or "").strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    note = _NOTE.search(text)
    if note:
        text = text[: note.start()].strip()
    # Labels the prompt invites ("English: ...") or models add ("Translation: ...").
    labels = {language_name(pivot), pivot, "translation", f"{language_name(pivot)} translation"}
    label = re.match(r"^\**\s*(" + "|".join(re.escape(l) for l in labels) + r")\s*\**\s*:\s*\**", text, re.I)
    if label:
        text = text[label.end() :].strip()
    # An echoed source line ("Zulu: ...") before the translation goes too.
    source_label = re.match(r"^" + re.escape(language_name(lang)) + r"\s*:[^\n]*\n+", text, re.I)
    if source_label:
        text = text[source_label.end() :].strip()
        label = re.match(r"^\**\s*(" + "|".join(re.escape(l) for l in labels) + r")\s*\**\s*:\s*\**", text, re.I)
        if label:
            text = text[label.end() :].strip()
    text = text.strip("* \n\t")
    for opening, closing in _QUOTES:
        if len(text) >= 2 and text.startswith(opening) and text.endswith(closing) and text.count(opening) <= 2:
            text = text[len(opening) : -len(closing)].strip()
            break
    return " ".join(text.split())


@dataclass(frozen=True)
class BacktranslateTask:
    """Translating `lang` text into `pivot`: one request per text, the translation parsed out of its
    answer (unusable when there is none), one row per segment."""

    prompt: BacktranslationPrompt
    lang: str
    pivot: str

    def request(self, text: str) -> Request:
        return Request(self.prompt.messages(text, self.lang, self.pivot))

    def requests(self, segment: Segment) -> list[Request]:
        return [self.request(segment.text)]

    def parse(self, request: Request, answer: str) -> str:
        translation = parse_translation(answer, self.lang, self.pivot)
        if not translation:
            raise Unusable("no translation in the answer", translation)
        return translation

    def rows(
        self, segment: Segment, request: Request, completion: Completion | None, translation: str | None, *, model: str, params: dict
    ) -> list[dict]:
        """The row of one answered (or failed: `completion` None) request; `translation`: `parse`'s."""
        return [{
            "id": segment.id, "text": segment.text, "lang": self.lang, "pivot_lang": self.pivot,
            "synthetic_side": "translation", "source": segment.source, "line": segment.line,
            "model": model, "prompt_version": self.prompt.version,
            "generation_params": json.dumps(params, sort_keys=True),
            "translation": translation if completion else None,
            "raw_answer": completion.text if completion else None,
            "prompt_tokens": completion.prompt_tokens if completion else None,
            "completion_tokens": completion.completion_tokens if completion else None,
        }]
