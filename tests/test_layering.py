"""The import graph of mss_tf goes one way, bottom to top (docs/architecture.md, "Layers").

Every import of every module under mss_tf/ counts, including those inside functions; only a
module's `if __name__ == "__main__":` block is an entry point and sits with the CLIs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "mss_tf"

# Low to high: a module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    # base: the package's constants, typed errors, small utilities. evaluation.metrics (uSDR) is
    # pure numpy with no mss_tf imports, so the training loop's health check shares its definition
    ("mss_tf", "mss_tf.errors", "mss_tf.utils", "mss_tf.machine", "mss_tf.evaluation.metrics"),
    ("mss_tf.audio",),
    ("mss_tf.data",),
    ("mss_tf.models", "mss_tf.losses"),
    ("mss_tf.config", "mss_tf.checkpoints", "mss_tf.threads"),
    ("mss_tf.training",),
    ("mss_tf.inference",),
    ("mss_tf.export", "mss_tf.portable", "mss_tf.evaluation", "mss_tf.convert"),
    ("mss_tf.study_report", "mss_tf.study_se"),
    # the command-line programs: mss_tf.cli (their plumbing, and one module per command: train,
    # evaluate, separate, export, make_demo, prepare_musdb) and the study, which runs train.py and
    # evaluate.py, and the local separation page (python -m mss_tf.app)
    ("mss_tf.cli", "mss_tf.study", "mss_tf.app"),
]
ENTRY_POINT = len(LAYERS) - 1
ARCHITECTURE = REPO / "docs" / "architecture.md"


def layer_of(module: str) -> int:
    """The layer of the longest prefix of `module` in LAYERS (mss_tf.data.shards -> mss_tf.data)."""
    best, layer = -1, None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, layer = len(name), index
    if layer is None:
        raise KeyError(module)
    return layer


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path = PACKAGE) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = root / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                   for c in test.comparators))


def imports(source: str, module: str, is_package: bool, root: Path = PACKAGE) -> list[tuple[int, str, bool]]:
    """(line, imported mss_tf module, inside the `__main__` block) for every import in `source`."""
    found: list[tuple[int, str, bool]] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, in_main: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, in_main) for alias in node.names if alias.name.split(".")[0] == "mss_tf")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == "mss_tf":
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    found.append((node.lineno, child if is_module(child, root) else base, in_main))
        for child in ast.iter_child_nodes(node):
            visit(child, in_main or _is_main_block(node))

    visit(ast.parse(source), False)
    return found


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """Each import of a higher layer, as `file:line: module (layer) imports module (layer)`."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        here = layer_of(module)
        for line, target, in_main in imports(path.read_text(), module, path.name == "__init__.py", root):
            there = layer_of(target)
            if there > (ENTRY_POINT if in_main else here):
                line_text = (f"{path.relative_to(root.parent)}:{line}: {module} (layer {here}) imports {target} "
                             f"(layer {there})")
                if line_text not in bad:
                    bad.append(line_text)
    return bad


def test_every_module_has_a_layer():
    missing = []
    for path in PACKAGE.rglob("*.py"):
        try:
            layer_of(module_name(path))
        except KeyError:
            missing.append(module_name(path))
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_the_library_never_imports_the_cli_plumbing():
    users = sorted({module_name(path) for path in PACKAGE.rglob("*.py")
                    for _, target, in_main in imports(path.read_text(), module_name(path), path.name == "__init__.py")
                    if (target == "mss_tf.cli" or target.startswith("mss_tf.cli.")) and not in_main
                    and not module_name(path).startswith("mss_tf.cli.")})  # the commands themselves
    assert users == ["mss_tf.study"]  # itself a command-line program (python -m mss_tf.study)


def test_the_oracle_needs_no_model_or_separator():
    """Ideal masks come from the references: evaluation.oracle imports neither the models (the
    registry) nor inference (fit_length lives in audio.waveform)."""
    path = PACKAGE / "evaluation" / "oracle.py"
    targets = {target for _, target, _ in imports(path.read_text(), module_name(path), False)}
    assert targets and not {t for t in targets if layer_of(t) >= layer_of("mss_tf.models")}, targets


@pytest.mark.parametrize("source, caught", [
    ("def f():\n    from mss_tf.training import loop\n", True),  # a function-level import counts
    ("from ..training.loop import Trainer\n", True),  # relative
    ("import mss_tf.cli\n", True),
    ("from mss_tf import cli\n", True),
    ("from mss_tf import TARGETS\nfrom mss_tf.audio import spectrogram\n", False),
    ("if __name__ == '__main__':\n    from mss_tf import cli\n", False),  # the entry point
])
def test_an_upward_import_is_caught(tmp_path, source, caught):
    """A model importing the trainer or the CLI plumbing makes the check fail, wherever the import is."""
    root = tmp_path / "mss_tf"
    for name in ("__init__.py", "cli.py", "audio/__init__.py", "audio/spectrogram.py", "training/__init__.py",
                 "training/loop.py", "models/__init__.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "models" / "bad.py").write_text(source)
    found = upward_imports(root)
    assert bool(found) == caught, found
    assert all("mss_tf.models.bad" in line for line in found)


def documented_layers(text: str) -> list[tuple[str, ...]]:
    """The layers listed between `<!-- layers` and `<!-- /layers -->` in docs/architecture.md,
    one `N  name, name, ...` line per layer, N counting from 0."""
    block = re.search(r"<!-- layers\b[^>]*-->(.*?)<!-- /layers -->", text, re.S)
    assert block, f"{ARCHITECTURE}: no <!-- layers --> ... <!-- /layers --> block"
    layers = []
    for line in block.group(1).splitlines():
        found = re.fullmatch(r"\s*(\d+)\s+(\S.*)", line)
        if found:
            assert int(found.group(1)) == len(layers), f"{ARCHITECTURE}: layer {found.group(1)} out of order"
            layers.append(tuple(name.strip() for name in found.group(2).split(",")))
    return layers


def test_the_architecture_document_lists_the_enforced_layers():
    """docs/architecture.md names the same layers, in the same order, as LAYERS above: change both."""
    assert documented_layers(ARCHITECTURE.read_text()) == LAYERS


def test_a_documented_layer_list_is_parsed_as_written():
    text = "x\n<!-- layers: note -->\n```text\n0  mss_tf, mss_tf.errors\n1  mss_tf.audio\n```\n<!-- /layers -->\n"
    assert documented_layers(text) == [("mss_tf", "mss_tf.errors"), ("mss_tf.audio",)]
    with pytest.raises(AssertionError, match="out of order"):
        documented_layers(text.replace("1  mss_tf.audio", "2  mss_tf.audio"))
