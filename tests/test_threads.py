"""--threads: TensorFlow's CPU pools chosen per model family, set before TensorFlow starts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from mss_tf.errors import ConfigError
from mss_tf.threads import intra_op_threads, model_class_at, parse_threads
from tests.conftest import checkout_env
from tests.test_cli import assert_one_line_error, run_main
from tests.test_export import fake_run


@pytest.mark.parametrize("cores, bsrnn_threads", [(8, 4), (6, 3), (3, 1), (1, 1), (None, 1)])
def test_thread_choices(monkeypatch, cores, bsrnn_threads):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)  # None: Python cannot tell
    assert [parse_threads(v) for v in ("auto", "default", "3")] == ["auto", "default", 3]
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="--threads"):
            parse_threads(bad)
    assert intra_op_threads("auto", "BSRNN") == bsrnn_threads  # a BLSTM direction per two cores
    assert intra_op_threads("auto", "UNet") is None  # convolutions want every core in one op
    assert intra_op_threads("auto", None) is None
    assert intra_op_threads("default", "BSRNN") is None
    assert intra_op_threads(3, "UNet") == 3


def test_model_class_is_read_from_a_run_or_an_export_without_tensorflow(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "bsrnn-se-small"}))
    (tmp_path / "export" / "assets.extra").mkdir(parents=True)
    (tmp_path / "export" / "assets.extra" / "mss_tf.json").write_text(json.dumps({"model": "unet"}))
    assert model_class_at(tmp_path / "run") == "BSRNN"
    assert model_class_at(tmp_path / "export") == "UNet"
    assert model_class_at(tmp_path) is None


# separate.py's main on a machine of 6 cores, with configure_threads wrapped to report what it set
# and the pools TensorFlow ends up with (in a fresh process: the pools can only be set before the
# first op)
_HARNESS = """
import json, os, sys
sys.argv = sys.argv[1:]
os.cpu_count = lambda: 6
import mss_tf.threads as threads
set_to = []
original = threads.configure_threads
threads.configure_threads = lambda *a: set_to.append(original(*a)) or set_to[-1]
from mss_tf.cli import separate
try:
    separate.main()
finally:
    import tensorflow as tf
    print(json.dumps({"set": set_to, "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                      "inter": tf.config.threading.get_inter_op_parallelism_threads()}))
"""


@pytest.mark.parametrize("preset, threads, intra", [("bsrnn-tiny", "auto", 3), ("unet-tiny", "auto", None),
                                                     ("unet-tiny", "2", 2)])
def test_separate_sets_the_pools_before_tensorflow_starts(tmp_path, preset, threads, intra):
    run = fake_run(tmp_path / "run", preset)
    song = tmp_path / "song.wav"
    soundfile.write(song, 0.1 * np.random.default_rng(0).standard_normal((22050, 2)).astype(np.float32), 22050)
    result = subprocess.run([sys.executable, "-c", _HARNESS, "separate.py", str(song), "--model", str(run),
                             "--out", str(tmp_path / "out"), "--quiet", "--threads", threads], capture_output=True,
                            text=True, env=checkout_env({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["set"] == [intra]  # None: TensorFlow's default pools
    if intra is None:
        assert report["intra"] == 0
    else:
        assert (report["intra"], report["inter"] >= 2) == (intra, True)
    assert (tmp_path / "out" / "song").is_dir()


def test_bad_threads_value_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    assert_one_line_error(run_main("separate.py", [tmp_path / "x.wav", "--model", tmp_path, "--out", tmp_path / "o",
                                                   "--threads", "0"], monkeypatch, capsys), "--threads")
    assert_one_line_error(run_main("evaluate.py", ["--run", tmp_path, "--threads", "lots"], monkeypatch, capsys),
                          "--threads")
