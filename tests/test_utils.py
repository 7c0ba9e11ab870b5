"""mss_tf.utils: atomic writes and one-line messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mss_tf.utils import atomic_path, atomic_write, one_line, temporary_path
from tests.conftest import REPO


def test_atomic_write_text_and_bytes(tmp_path):
    atomic_write(tmp_path / "a.json", '{"x": 1}')
    atomic_write(tmp_path / "b.bin", b"\x00\xff")
    atomic_write(tmp_path / "a.json", "replaced")
    assert (tmp_path / "a.json").read_text() == "replaced"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            assert temporary.parent == tmp_path and temporary.suffix == ".png"  # the writer sees the format
            assert temporary.name.startswith(".") and temporary != target
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x.txt", 3)  # neither text nor bytes
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_temporary_path_is_hidden_beside_the_target(tmp_path):
    temporary = temporary_path(tmp_path / "sub" / "mixture.wav")
    assert temporary.parent == tmp_path / "sub"
    assert temporary.name.startswith(".mixture.tmp-") and temporary.name.endswith(".wav")


def test_one_line():
    assert one_line("a\n  b\tc\n") == "a b c"
    assert one_line(ValueError("bad\nvalue")) == "bad value"
    cut = one_line("x" * 500, limit=20)
    assert cut == "x" * 17 + "..." and len(cut) == 20
    assert one_line("y" * 300) == "y" * 300


def test_utils_imports_no_tensorflow():
    code = "import sys, mss_tf.utils; assert 'tensorflow' not in sys.modules and 'numpy' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
