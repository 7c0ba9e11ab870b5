"""Shared benchmark plumbing: machine description, JSON results and RESULTS.md sections.

The benchmarks import the installed package (`make bench` runs `make setup`, which installs this
checkout into .venv in editable mode)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mss_tf  # noqa: F401  (before TensorFlow: sets the suite's TensorFlow defaults, e.g. oneDNN)
from mss_tf.machine import machine, machine_line  # noqa: F401  (re-exported for the benchmarks)
from mss_tf.utils import atomic_write

del mss_tf  # imported above for its side effect only
HERE = Path(__file__).resolve().parent
__all__ = ["HERE", "RESULTS_DIR", "RESULTS_MD", "machine", "machine_line", "markdown_table", "write_json",
           "write_readme_block", "write_section"]

RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    atomic_write(path, json.dumps(data, indent=2))
    return path


def write_section(heading: str, body: str) -> Path:
    """Replace (or append) the `## heading` section of benchmarks/RESULTS.md."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else (
        "# Benchmark results\n\nEvery section is written by the benchmark script it names "
        "(`make bench` runs them all); nothing here is edited by hand.\n"
    )
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write(RESULTS_MD, text)
    return RESULTS_MD


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_readme_block(name: str, body: str) -> None:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in README.md."""
    from mss_tf.study_report import replace_block

    replace_block(HERE.parent / "README.md", name, body)
