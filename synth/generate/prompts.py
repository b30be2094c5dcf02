"""Prompt templates: one TOML file per task in prompts/, each with a `version`."""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

# Repository layout: synth/generate/prompts.py -> <root>/prompts. SYNTH_PROMPTS_DIR overrides it.
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


def prompts_dir() -> Path:
    return Path(os.environ.get("SYNTH_PROMPTS_DIR", DEFAULT_PROMPTS_DIR))


@dataclass(frozen=True)
class PromptTemplate:
    task: str
    version: str
    system: str
    user: str

    def messages(self, **values: str) -> list[dict]:
        messages = [{"role": "system", "content": self.system.format(**values)}] if self.system else []
        return messages + [{"role": "user", "content": self.user.format(**values)}]


def load_prompt(task: str, path: str | Path | None = None) -> PromptTemplate:
    """The template of `task` (prompts/<task>.toml), or the file at `path`."""
    file = Path(path) if path else prompts_dir() / f"{task}.toml"
    if not file.is_file():
        raise FileNotFoundError(f"prompt template {file} not found (set SYNTH_PROMPTS_DIR or --prompt-file)")
    data = tomllib.loads(file.read_text(encoding="utf-8"))
    missing = {"version", "user"} - data.keys()
    if missing:
        raise ValueError(f"prompt template {file} lacks {sorted(missing)}")
    return PromptTemplate(task=task, version=str(data["version"]), system=data.get("system", ""), user=data["user"])
