"""The installable package (pyproject.toml): its console scripts, the thin top-level scripts that
run the same mains, and dependencies that agree with the pinned requirements.txt.

A real `pip install` is too slow for the suite; these checks fail whenever an install would give
a broken command, a missing subpackage or an undeclared import.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
# DESIGN.md's command-line contract: these names run the same mains as the scripts beside them
WRAPPERS = {"train.py": "mss-train", "evaluate.py": "mss-evaluate", "separate.py": "mss-separate",
            "datasets/make_demo.py": "mss-make-demo", "datasets/prepare_musdb.py": "mss-prepare"}


def _entry(script: str):
    module, _, attribute = SCRIPTS[script].partition(":")
    return importlib.import_module(module), attribute


def test_the_contract_commands_are_console_scripts():
    assert {"mss-train", "mss-evaluate", "mss-separate", "mss-export"} <= set(SCRIPTS)
    assert set(WRAPPERS.values()) <= set(SCRIPTS)
    assert all(target.startswith("mss_tf.cli.") for target in SCRIPTS.values()), SCRIPTS


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_runs_its_programs_main(script, monkeypatch, capsys):
    """`SCRIPT --help` as the installed command calls it: the entry point exists and parses its
    program's own flags (exit 0, the usage of that parser)."""
    module, attribute = _entry(script)
    entry = getattr(module, attribute)
    assert callable(entry) and callable(module.main)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exited:
        entry()
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--verbose" in out
    parser = (module.build_parser() if hasattr(module, "build_parser") else
              importlib.import_module("mss_tf.export").build_parser())
    flags = {a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags and all(flag in out for flag in flags)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_top_level_scripts_are_thin_wrappers_of_the_console_scripts(wrapper):
    """train.py etc. import the function the console script names and call it, nothing else."""
    path = REPO / wrapper
    tree = ast.parse(path.read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert [type(node) for node in body] == [ast.ImportFrom, ast.If], ast.dump(tree)
    spec = importlib.util.spec_from_file_location(f"wrapper_{path.stem}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)  # not as __main__: imports only
    module, attribute = _entry(WRAPPERS[wrapper])
    assert getattr(loaded, attribute) is getattr(module, attribute)
    call = body[1].body
    assert len(call) == 1 and ast.unparse(call[0]) == f"{attribute}()"
    assert "sys.path" not in path.read_text()


def test_no_program_puts_the_repository_on_sys_path():
    """The package is installed (make setup), so no script, benchmark or module edits sys.path."""
    folders = ("mss_tf", "datasets", "benchmarks")
    sources = [*REPO.glob("*.py"), *(p for folder in folders for p in (REPO / folder).rglob("*.py"))]
    assert sources and [str(p) for p in sources if "sys.path.insert" in p.read_text()] == []


def test_python_m_export_and_study_stay_commands():
    """`python -m mss_tf.export` and `python -m mss_tf.study` keep their `__main__` blocks."""
    for name in ("export", "study"):
        assert 'if __name__ == "__main__":' in (REPO / "mss_tf" / f"{name}.py").read_text(), name


def test_every_package_folder_is_installed():
    """setuptools' find includes folders with an __init__.py only: one without would be left out."""
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["mss_tf", "mss_tf.*"]
    folders = {path.parent for path in (REPO / "mss_tf").rglob("*.py") if "__pycache__" not in path.parts}
    assert [f for f in folders if not (f / "__init__.py").is_file()] == []
    data = [p for p in (REPO / "mss_tf").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data == [], "files the package reads at run time need [tool.setuptools.package-data]"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[_normal(requirement.name)] = specifier.version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_dependency_ranges_admit_the_pinned_versions():
    """Each dependency of pyproject.toml (and of the dev extra) is pinned in requirements.txt at a
    version its range admits, so `pip install --no-deps -e .` after the pins is consistent."""
    pins = _pins()
    declared = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]
    for line in declared:
        requirement = Requirement(line)
        if requirement.name == "pyflakes":  # the lint tool: not part of the tested set
            continue
        name = _normal(requirement.name)
        assert name in pins, f"{line}: not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{line}: excludes the pinned {pins[name]}"


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in (REPO / "mss_tf").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found |= {name.split(".")[0] for name in names if name.split(".")[0] not in stdlib | {"mss_tf", ""}}
    return found


def test_every_import_of_the_package_is_a_declared_dependency():
    project = PYPROJECT["project"]
    declared = {_normal(Requirement(line).name) for line in project["dependencies"]}
    extras = project["optional-dependencies"].values()
    declared |= {_normal(Requirement(line).name) for lines in extras for line in lines}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_third_party_imports()):
        distributions = {_normal(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            undeclared[module] = sorted(distributions)
    assert undeclared == {}, f"imported by mss_tf but not in pyproject.toml: {undeclared}"
