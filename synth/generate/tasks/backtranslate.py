"""Back-translation: the authentic `lang` text goes in, a `pivot` translation comes out.

The prompt lives in prompts/backtranslate.toml; the parser sits here beside it. Small models wrap
their translation in chatter ("Sure! Here is the translation:"), labels ("English:"), quotes and
notes; the parser keeps the translation only.
"""

import re
from dataclasses import dataclass

from synth.generate.prompts import PromptTemplate, load_prompt
from synth.languages import language_name

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
