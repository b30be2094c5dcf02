"""Command lines derived from a config model's declaration.

A config model (synth/config.py) declares each setting once with `setting`: its type, default,
bounds, help text, help panel and, where it differs from the field's name, its flag. This module
turns those fields into command-line options (`declared_options`), and what a user typed back
into the model (`declared_values`, `config_from_options`, `declared_config`). The `synth` command
(synth/cli.py) and `python flows/NAME.py ARGS` (flows/common.py `main`) both parse with it, so
they take the same options, spelled the same way.

The shape of a field decides its option:

    bool                       --x/--no-x (or the flag's own pair, `--private/--public`)
    list[str]                  repeatable: --base-url A --base-url B
    CommaSeparated             one comma-separated value: --lid-detectors pycld2,langdetect ('none': [])
    dict[str, str] / dict      repeatable KEY=VALUE: --lid-detector zu=py3langid, --vllm-arg tensor_parallel_size=2
                               (values of an untyped dict are read as JSON where they parse)
    number | dict[...] (| None)  per language, repeatable: --min-margin 0.9 --min-margin zu=0.8 ('off': None)
    int | None, float | None   a number or 'off' (None): --max-words off
    anything else              one value (a Literal shows its choices)

An option not given is left out of what `declared_values` returns, so the model's default
applies: defaults live in the model only.
"""

import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel, ValidationError

from synth.config import COMMA_SEPARATED, validation_message

OFF = ("off", "none")
# The help panels of a job's settings in this order (others, as `synth evaluate`'s, follow in declaration order).
PANEL_ORDER = ("Input", "Model and endpoint", "Filters", "Output and Hub", "Evaluation")


def _extra(field) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def flag_of(name: str, field) -> str:
    """The option's declaration: `--text-field`, or the field's own `flag` (`--format`, `--private/--public`)."""
    flag = _extra(field).get("flag") or "--" + name.replace("_", "-")
    if field.annotation is bool and "/" not in flag:
        flag = f"{flag}/--no-{flag.removeprefix('--')}"
    return flag


def _is_dict(annotation) -> bool:
    return annotation is dict or typing.get_origin(annotation) is dict


def field_shape(field) -> tuple[str, type]:
    """(shape, the scalar type typer parses) of a pydantic field: 'bool', 'list', 'comma', 'dict',
    'per_language', 'nullable' (a number or 'off') or 'plain'."""
    return _shape(field.annotation, field.metadata)


def _shape(annotation, metadata: list) -> tuple[str, type]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if any(_is_dict(arg) for arg in rest) and not all(_is_dict(arg) for arg in rest):
            return "per_language", str
        if len(rest) == 1:
            shape, scalar = _shape(rest[0], metadata)
            return ("nullable" if shape == "plain" and scalar in (int, float) else shape), scalar
        return "plain", str
    if origin is list:
        return ("comma" if COMMA_SEPARATED in metadata else "list"), str
    if _is_dict(annotation):
        return "dict", str
    if annotation is bool:
        return "bool", bool
    if annotation in (int, float, str, Path):
        return "plain", annotation
    return "plain", str


def _choices(annotation) -> str | None:
    """'ranking|distill' for a Literal field."""
    return "|".join(map(str, typing.get_args(annotation))) if typing.get_origin(annotation) is typing.Literal else None


def _cli_text(value) -> str:
    return "off" if value is None else str(value)


def _cli_default(field, shape: str):
    """The field's default as the option shows it in `--help` (None: nothing shown)."""
    if field.is_required():
        return None
    default = field.get_default(call_default_factory=True)
    if shape == "comma":
        return ",".join(default) if default else None
    if shape in ("list", "dict"):
        items = [f"{key}={value}" for key, value in default.items()] if isinstance(default, dict) else list(default or [])
        return items or None
    if shape == "per_language":
        if isinstance(default, dict):
            return [f"{key}={_cli_text(value)}" for key, value in default.items()] or None
        return None if default is None else [_cli_text(default)]
    if shape == "nullable":
        return None if default is None else str(default)
    return default


def _metavar(field, shape: str, scalar: type) -> str | None:
    declared = _extra(field).get("metavar")
    if declared:
        return declared
    if shape == "dict":
        return "KEY=VALUE"
    if shape == "nullable":  # 'off' turns off what is on by default
        number = "<int>" if scalar is int else "<float>"
        return number if field.get_default(call_default_factory=True) is None else f"{number}|off"
    return _choices(field.annotation)


def _own_fields(model: type[BaseModel]) -> set[str]:
    """The fields `model` declares itself (not those it inherits): first in their help panel."""
    return set(inspect.get_annotations(model))


def declared_options(model: type[BaseModel], required: bool = True) -> list[inspect.Parameter]:
    """typer parameters for every field of `model`: the arguments, then the options by help panel
    (PANEL_ORDER, then the others in declaration order); within a panel the required ones, the
    model's own fields, then the inherited ones in declaration order. `required=False`: the
    required fields are optional here (a job file may give them; the model still requires them)."""
    arguments, options = [], []
    own = _own_fields(model)
    panels: list[str] = []
    for index, (name, field) in enumerate(model.model_fields.items()):
        extra = _extra(field)
        shape, scalar = field_shape(field)
        help_text = field.description or ""
        panel = extra.get("panel")
        if panel not in panels:
            panels.append(panel)
        needed = field.is_required() and required
        if extra.get("cli") == "argument":
            kind = list[str] if shape in ("list", "comma") else scalar
            # In typer's own "Arguments" panel: rich prints argument panels before `--help`'s
            # "Options", so an "Input" panel here would show twice, split by it.
            info = typer.Argument(help=help_text, metavar=extra.get("metavar") or name.upper(), show_default=False)
            default = inspect.Parameter.empty if needed else None
            arguments.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[Optional[kind], info]))
            continue
        kind = {"list": list[str], "dict": list[str], "per_language": list[str], "comma": str, "nullable": str}.get(shape, scalar)
        default = _cli_default(field, shape)
        info = typer.Option(
            flag_of(name, field), help=help_text, metavar=_metavar(field, shape, scalar),
            show_default=default is not None, rich_help_panel=panel,
        )
        order = (field.is_required(), name in own, index)
        parameter = inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=... if needed else default, annotation=Annotated[Optional[kind], info],
        )
        options.append((panel, order, parameter))

    def place(item) -> tuple:
        panel, (is_required, is_own, index), _ = item
        rank = PANEL_ORDER.index(panel) if panel in PANEL_ORDER else len(PANEL_ORDER) + panels.index(panel)
        return rank, not is_required, not is_own, index

    return arguments + [parameter for *_, parameter in sorted(options, key=place)]


def context_parameter() -> inspect.Parameter:
    """The `ctx` parameter a command function takes for `given_values`."""
    return inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)


def given_values(context: typer.Context, values: dict) -> dict:
    """Of a command's parsed values, those the user gave (not the defaults `--help` shows), as its
    context says: only these go to the model, whose defaults apply to the rest."""
    given = {}
    for name, value in values.items():
        # By name: typer may hand over its own copy of click's ParameterSource.
        source = getattr(context.get_parameter_source(name), "name", "DEFAULT")
        if source not in ("DEFAULT", "DEFAULT_MAP") and value is not None:
            given[name] = value
    return given


def declared_values(model: type[BaseModel], values: dict) -> dict:
    """What the user gave of `model`'s declared options (`given_values`), as the model takes it."""
    converted = {}
    for name, value in values.items():
        field = model.model_fields[name]
        shape, _ = field_shape(field)
        option = flag_of(name, field).split("/")[0]
        if shape == "per_language":
            value = per_language(value, option)
        elif shape == "dict":
            if typing.get_args(field.annotation)[1:] == (str,):
                value = assignments(value, option, _extra(field).get("metavar") or "KEY=VALUE")
            else:
                value = engine_args(value, option)
        elif shape == "nullable":
            value = _value(value)
        converted[name] = value
    return converted


def config_from_options(model: type[BaseModel], values: dict):
    """`model` from the options the user gave; raises ValidationError (or click's BadParameter)."""
    return model(**declared_values(model, values))


def declared_config(model: type[BaseModel], argv: list[str]):
    """`model` from a command line of its declared options (`python flows/NAME.py ARGS`), or exit 2 with the reason."""

    def command(ctx: typer.Context, **values):
        return config_from_options(model, given_values(ctx, values))

    command.__signature__ = inspect.Signature([context_parameter(), *declared_options(model)])
    command.__doc__ = model.__doc__
    return parse_config(command, argv)


def parse_config(command: Callable, argv: list[str]):
    """Run a typer command function as a command line parser: its return value, or exit with a message."""
    single = typer.Typer(add_completion=False)
    single.command()(command)
    try:
        result = typer.main.get_command(single).main(argv, standalone_mode=False)
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except typer.TyperException as error:  # a usage error (click's, as typer vendors it): shown as the command shows it
        if hasattr(error, "show"):
            error.show()
        else:
            print(f"Error: {error.format_message()}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    except ValidationError as error:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {validation_message(error)}", highlight=False)
        raise SystemExit(2) from None
    if isinstance(result, int) and not isinstance(result, bool):  # --help: its exit code, nothing parsed
        raise SystemExit(result)
    return result


# --- the values of options --------------------------------------------------------------------------


def _value(text: Any):
    """'0.5' -> 0.5, '2' -> 2, 'p5' -> 'p5', 'off' -> None."""
    if not isinstance(text, str):
        return text
    if text.strip().lower() in OFF:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def per_language(values: list[str], option: str):
    """An option given as VALUE and/or LANG=VALUE (repeatable): the value alone, or {lang: value,
    '*': value for the others}. 'off' (None) turns the filter off."""
    by_lang = {}
    for item in values:
        lang, sep, value = item.partition("=")
        if not sep:
            lang, value = "*", item
        elif not lang.strip() or not value.strip():
            raise typer.BadParameter(f"{item!r} is not LANG=VALUE", param_hint=option)
        by_lang[lang.strip()] = _value(value)
    return by_lang["*"] if list(by_lang) == ["*"] else by_lang


def assignments(values: list[str] | None, option: str, what: str = "LANG=VALUE") -> dict[str, str]:
    """KEY=VALUE options (repeatable) as a dict of strings."""
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"{item!r} is not {what}", param_hint=option)
        pairs[key.strip()] = value.strip()
    return pairs


def engine_args(items: list[str], option: str = "--vllm-arg") -> dict:
    """KEY=VALUE strings as keyword arguments (gpu-memory-utilization: gpu_memory_utilization); a
    VALUE that reads as JSON (2, 0.9, true) is taken as such."""
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        try:
            args[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            args[key.replace("-", "_")] = value
    return args
