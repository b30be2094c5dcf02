"""Module boundaries read one way: read → generate → filters → publish → evaluate; the library never
imports Prefect or the CLI; the flows depend on the library, never on the CLI; the settings'
declaration (synth.config) depends on nothing that runs a job.

Every import statement is read, function-level ones included (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package (a folder or module under the repository root) -> modules it must never import
FORBIDDEN = {
    "synth/read": ["synth.generate", "synth.filters", "synth.publish", "synth.evaluate", "synth.job", "synth.config"],
    "synth/generate": ["synth.filters", "synth.publish", "synth.evaluate", "synth.job", "synth.config"],
    "synth/filters": ["synth.publish", "synth.evaluate", "synth.job", "synth.config", "synth.filter_job"],
    "synth/publish": ["synth.evaluate", "synth.job", "synth.config"],
    # the staged chunks and the stats summed from them: below the job that writes them
    "synth/staging.py": ["synth.evaluate", "synth.job", "synth.config", "synth.filters", "synth.generate"],
    "synth/dataset_stats.py": ["synth.evaluate", "synth.job", "synth.config", "synth.publish"],
    "synth/config.py": ["synth.job", "synth.filter_job", "synth.backtranslate", "synth.queries", "synth.options", "synth.evaluate"],
    "synth": ["synth.cli", "prefect", "prefect_dask", "flows"],
    "flows": ["synth.cli"],
}


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            # `from synth import cli` imports synth.cli
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def violations(source: str, forbidden: list[str]) -> list[str]:
    return sorted(
        module for module in imported_modules(source)
        if any(module == banned or module.startswith(banned + ".") for banned in forbidden)
    )


def sources(package: str) -> list[Path]:
    path = ROOT / package
    files = [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
    return [file for file in files if file.name != "cli.py" or package != "synth"]


@pytest.mark.parametrize("package", FORBIDDEN)
def test_no_module_imports_a_layer_above_it(package: str) -> None:
    found = {
        str(file.relative_to(ROOT)): bad
        for file in sources(package)
        if (bad := violations(file.read_text(), FORBIDDEN[package]))
    }
    assert not found, found


def test_the_check_finds_an_import_upward_even_inside_a_function() -> None:
    # control: the checker is not blind to the shapes of import the tree uses
    planted = "def f():\n    from synth.publish.dataset import publish_dataset\n    from synth import cli\n"
    assert "synth.publish.dataset" in violations(planted, FORBIDDEN["synth/generate"])
    assert violations(planted, FORBIDDEN["synth"]) == ["synth.cli"]
    assert violations("import prefect.artifacts\n", FORBIDDEN["synth"]) == ["prefect.artifacts"]
    assert violations("from synth.publishing import x\n", FORBIDDEN["synth/generate"]) == []
