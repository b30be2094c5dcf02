"""The `synth` console script as a user runs it: a subprocess, its exit code and what it prints.

Bad inputs must fail fast with exit code 2, a message naming the file (and line), and no
traceback. The cases run as concurrent subprocesses (each pays ~2 s of interpreter start-up).
"""

import importlib.util
import inspect
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer

from synth.cli import app
from synth.config import BacktranslateConfig, EvaluateConfig, FilterConfig, QueriesConfig
from synth.options import declared_config
from synth.data import udhr_articles, udhr_path
from synth.read import normalize_text
from synth.testing.server_process import ServerProcess

from conftest import REPO_ROOT, SYNTH_BIN

MODEL = "udhr-oracle"
ZUL = str(udhr_path("zul"))


def run_synth(args: list[str], env: dict, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SYNTH_BIN), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- help ------------------------------------------------------------------------------------------

def test_help_lists_the_commands_and_options(synth_env: dict) -> None:
    with ThreadPoolExecutor(2) as pool:
        top, sub = pool.map(lambda args: run_synth(args, synth_env), [["--help"], ["backtranslate", "--help"]])
    assert top.returncode == 0, top.stderr
    assert "backtranslate" in top.stdout and "languages" in top.stdout
    assert sub.returncode == 0, sub.stderr
    for option in ("--lang", "--pivot", "--out", "--base-url", "--model", "--api-key-env", "--concurrency", "--chunk-size",
                   "--max-attempts", "--min-cosine", "--min-margin", "--max-length-ratio", "--lid-detectors",
                   "--text-field", "--format", "--limit"):
        assert option in sub.stdout, option
    assert "corpus" in sub.stdout.lower()


# --- bad inputs ----------------------------------------------------------------------------------

# name -> (corpus file name and bytes or None for a missing file, extra args, what the message must say)
BAD_INPUTS = {
    "missing file": ("missing.txt", None, [], ["missing.txt", "no such file"]),
    "empty file": ("empty.txt", b"", [], ["empty.txt", "empty file"]),
    "binary file": ("binary.txt", b"PK\x03\x04\x00\x00\x08\x00" + bytes(range(256)), [], ["binary.txt", "binary"]),
    "invalid utf-8": ("latin1.txt", "Umuntu ngamunye\nUbuntu bukhona\nCafé crème\n".encode("latin-1"), [],
                      ["latin1.txt:3", "invalid UTF-8"]),
    "bad jsonl line": ("corpus.jsonl", b'{"text": "Sawubona"}\n{"text": "Yebo"}\n{"text": "broken\n', [],
                       ["corpus.jsonl:3", "not valid JSON"]),
    "jsonl without the field": ("corpus.jsonl", b'{"sentence": "Sawubona"}\n', [],
                                ["corpus.jsonl:1", "no field 'text'", "--text-field"]),
    "unknown language": (None, None, ["--lang", "xx"], ["unknown language code 'xx'"]),
    "lang equals pivot": (None, None, ["--lang", "zu", "--pivot", "zul"], ["lang and pivot are both 'zu'"]),
    "bad url": (None, None, ["--base-url", "notaurl"], ["'notaurl' is not an http(s) URL"]),
    "unknown detector": (None, None, ["--lid-detectors", "pycld2,fasttext9"], ["unknown language detector 'fasttext9'", "pycld2"]),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory: pytest.TempPathFactory, synth_env: dict) -> dict[str, subprocess.CompletedProcess]:
    """Every bad-input case run at once (the machine has 2 cores; each process mostly starts up)."""
    workdir = tmp_path_factory.mktemp("bad-inputs")
    commands = {}
    for name, (file_name, content, extra, _) in BAD_INPUTS.items():
        case_dir = workdir / name.replace(" ", "-")
        case_dir.mkdir()
        corpus = ZUL
        if file_name is not None:
            corpus = file_name  # relative: the message must name it as given
            if content is not None:
                (case_dir / file_name).write_bytes(content)
        args = ["backtranslate", corpus, "--out", str(case_dir / "out"), "--base-url", "http://127.0.0.1:9/v1", "--model", MODEL]
        if "--lang" not in extra:
            args += ["--lang", "zu"]
        commands[name] = (args + extra, case_dir)
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(run_synth, args, synth_env, cwd) for name, (args, cwd) in commands.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error(case: str, bad_input_results: dict) -> None:
    result = bad_input_results[case]
    message = flat(result.stderr)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert message.startswith("error:") or "error:" in message
    for part in BAD_INPUTS[case][3]:
        assert part in message, (part, message)


# --- input formats -------------------------------------------------------------------------------

def test_jsonl_csv_and_parquet_inputs_with_a_text_field(openai_server: ServerProcess, tmp_path: Path, synth_env: dict) -> None:
    zulu = udhr_articles("zul")
    # Two articles per file, under the field "sentence" beside another column.
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "sentence": zulu[i]}, ensure_ascii=False) + "\n" for i in (2, 3)), encoding="utf-8")
    csv = tmp_path / "b.csv"
    csv.write_text("id,sentence\n" + "".join(f'{i},"{zulu[i]}"\n' for i in (5, 6)), encoding="utf-8")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [8, 9], "sentence": [zulu[8], zulu[9]]}), parquet)
    out = tmp_path / "out"
    result = run_synth(
        ["backtranslate", str(jsonl), str(csv), str(parquet), "--lang", "zu", "--text-field", "sentence",
         "--out", str(out), "--base-url", openai_server.base_url, "--model", MODEL],
        synth_env,
    )
    assert result.returncode == 0, result.stderr
    assert "kept" in result.stderr and "dataset:" in result.stderr
    found = [
        row for folder in ("data", "rejects") for file in sorted((out / folder).glob("*.parquet"))
        for row in pq.read_table(file).to_pylist()
    ]
    where = sorted((Path(row["source"]).name, row["line"], row["text"]) for row in found)
    assert where == [
        ("a.jsonl", 1, normalize_text(zulu[2])), ("a.jsonl", 2, normalize_text(zulu[3])),
        ("b.csv", 2, normalize_text(zulu[5])), ("b.csv", 3, normalize_text(zulu[6])),
        ("c.parquet", 1, normalize_text(zulu[8])), ("c.parquet", 2, normalize_text(zulu[9])),
    ]
    english = [" ".join(line.split()) for line in udhr_articles("eng")]
    articles = {normalize_text(zulu[i]): i for i in (2, 3, 5, 6, 8, 9)}
    assert all(row["translation"] == english[articles[row["text"]]] for row in found)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["read"]["files"] == 3 and stats["read"]["segments"] == 6


# --- languages -----------------------------------------------------------------------------------

def test_languages_table_chooses_pycld2_for_zulu(synth_env: dict) -> None:
    result = run_synth(["languages", "zu", "en"], synth_env)
    assert result.returncode == 0, result.stderr
    table = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]
        if cells and cells[0] in ("zu", "en"):
            table[cells[0]] = cells
    assert set(table) == {"zu", "en"}, result.stdout
    header = next(line for line in result.stdout.splitlines() if "chosen" in line)
    columns = [cell.strip() for cell in header.replace("┃", "│").split("│")[1:-1]]
    zulu = dict(zip(columns, table["zu"]))
    assert zulu["name"] == "Zulu" and zulu["chosen"] == "pycld2" and zulu["pycld2"] == "yes"
    # langdetect has no Zulu profile: it would call Zulu text Swahili.
    assert zulu["langdetect"] == "-"
    assert dict(zip(columns, table["en"]))["chosen"] == "pycld2"


# --- parity: config, CLI, flow ---------------------------------------------------------------------

# Options of how a command runs (a job file, dry run, logging), not settings.
CLI_RUN_OPTIONS = {"config", "dry_run", "verbose", "quiet", "log_format", "log_every"}
# command: (flows/FILE.py, its flow, the config model, the flow's run options in flows/common.py)
PARITY = {
    "backtranslate": ("backtranslate", "backtranslate", BacktranslateConfig, "RunOptions"),
    "queries": ("queries", "queries", QueriesConfig, "RunOptions"),
    "filter": ("filter", "filter_pairs", FilterConfig, "FilterRunOptions"),
    "evaluate": ("evaluate", "evaluate", EvaluateConfig, "EvaluateRunOptions"),
}


def load_flow(file: str, function: str):
    """flows/FILE.py imported from its path (it is not a package); its flow `function`."""
    spec = importlib.util.spec_from_file_location(f"synth_flows_{file}", REPO_ROOT / "flows" / f"{file}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function)


def required_arguments(model: type, tmp_path: Path) -> list[str]:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("Sawubona\tHello\n", encoding="utf-8")
    return {
        BacktranslateConfig: [ZUL, "--lang", "zu"], QueriesConfig: [ZUL, "--lang", "zu"],
        FilterConfig: [str(pairs), "--src-lang", "zu", "--tgt-lang", "en"], EvaluateConfig: ["some/dataset"],
    }[model]


@pytest.mark.parametrize("name", list(PARITY))
def test_every_setting_is_declared_once_for_the_command_and_the_flow(name: str, prefect_home: Path, tmp_path: Path) -> None:
    """Each setting is a field of the command's config model (synth/config.py): the command's option
    (its help the field's description, its shown default the field's) and the flow's parameter
    (the field's type with its bounds, its default, its description) are derived from it."""
    import flows.common
    from pydantic.fields import FieldInfo

    file, function, model, run_model = PARITY[name]
    fields = model.model_fields

    # The command: an option per field, the field's description as its help, and the defaults it
    # shows make the model's defaults when given back.
    command = typer.main.get_command(app).commands[name]
    options = {param.name: param for param in command.params if param.name not in CLI_RUN_OPTIONS}
    assert set(options) == set(fields)
    shown = []
    for field_name, field in fields.items():
        option = options[field_name]
        assert option.help == field.description, field_name
        if option.default is not None and not getattr(option, "is_flag", False):
            shown += [item for value in (option.default if isinstance(option.default, list) else [option.default]) for item in (option.opts[0], str(value))]
    required = required_arguments(model, tmp_path)
    defaults = declared_config(model, required)
    assert defaults == declared_config(model, required + shown)
    assert defaults == model(**{key: getattr(defaults, key) for key, field in fields.items() if field.is_required()})

    # The flow: the config's fields and the run options of flows/common.py, each with the field's
    # type and bounds, default and description.
    flow = load_flow(file, function)
    signature = inspect.signature(flow.fn)
    assert set(signature.parameters) == set(fields) | set(getattr(flows.common, run_model).model_fields)
    for field_name, field in fields.items():
        parameter = signature.parameters[field_name]
        assert parameter.annotation == (Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation), field_name
        assert isinstance(parameter.default, FieldInfo), field_name
        if field.is_required():
            assert parameter.default.is_required(), field_name
        else:
            assert parameter.default.get_default(call_default_factory=True) == field.get_default(call_default_factory=True), field_name
        assert flow.parameters.properties[field_name].get("description") == field.description, field_name
