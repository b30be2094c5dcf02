"""Job files: a command's settings in a versioned YAML or TOML file (`synth backtranslate --config
job.yaml`), as OpusFilter and distilabel users keep theirs.

The keys are the config models' field names (synth/config.py), which are also the flags' names
(`text_field` or `text-field` for `--text-field`; `format`, `vllm_arg` and `script` are accepted for
`input_format`, `vllm_args` and `scripts`). The values are what the model takes: lists for repeatable
options, mappings for per-language ones (`min_margin: {zu: 0.8, "*": 1.0}`), null for 'off'. The
model validates them, so an unknown key is an error that names it, and a flag given on the command
line wins over the file.

The dataset card records the effective job (`card_job`): the settings that differ from the
defaults of this synth version, without paths of this machine or endpoint URLs.
"""

import tomllib
from pathlib import Path

import yaml
from pydantic import BaseModel


def flag_aliases(model: type[BaseModel]) -> dict[str, str]:
    """Keys named as a flag that is not the field's name (synth.config `setting(flag=...)`):
    `format` for input_format, `vllm_arg` for vllm_args, `script` for scripts."""
    aliases = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        alias = (extra.get("flag") or "").split("/")[0].removeprefix("--").replace("-", "_")
        if alias and alias != name:
            aliases[alias] = name
    return aliases


class JobFileError(ValueError):
    """A job file that cannot be read or does not fit the command (the message names the file)."""


def load_job_file(path: str | Path, model: type[BaseModel]) -> dict:
    """The settings of a YAML (.yaml/.yml) or TOML (.toml) file as `model`'s field names."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise JobFileError(f"{path}: no such job file")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise JobFileError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JobFileError(f"{path}: a job file is a mapping of settings (key: value), not a {type(data).__name__}")
    settings = {}
    aliases = flag_aliases(model)
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = aliases.get(name, name)
        if name not in model.model_fields:
            known = ", ".join(sorted(model.model_fields))
            raise JobFileError(f"{path}: unknown setting {key!r} (the settings of this command: {known})")
        if name in settings:
            raise JobFileError(f"{path}: {key!r} is given twice")
        settings[name] = value
    return settings


# Settings that describe this machine or its secrets' places, not the job: left out of the card.
LOCAL_SETTINGS = {"out", "cache_dir", "base_url", "save_model", "api_key_env", "hub_token_env", "dataset"}


def card_job(config: BaseModel) -> dict:
    """The effective job as a job file for the card: every setting that differs from the model's
    default (the others are this synth version's defaults), paths as file names, no endpoint URL."""
    model = type(config)
    values = config.model_dump(mode="json")
    required = {name: values[name] for name, field in model.model_fields.items() if field.is_required()}
    try:
        # The defaults validated the way the config was (a split rule normalised, a language code folded).
        defaults = model.model_validate(required).model_dump(mode="json")
    except ValueError:
        defaults = {name: field.get_default(call_default_factory=True) for name, field in model.model_fields.items() if not field.is_required()}
    job = {}
    for name, value in values.items():
        if name in LOCAL_SETTINGS or (name not in required and name in defaults and defaults[name] == value):
            continue
        if name in ("corpus", "pairs", "eval") and isinstance(value, list):
            value = [_file_name(item) for item in value]
        elif name == "prompt_file" and value:
            value = _file_name(value)
        job[name] = value
    return job


def _file_name(value: str) -> str:
    """A path as its file name (a glob keeps its pattern's last part): nothing of this machine."""
    if value in ("udhr",) or "://" in value:
        return value
    return Path(value).name


def dump_yaml(settings: dict) -> str:
    return yaml.safe_dump(settings, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
