"""Bad input to the CLIs: one line naming the problem and the path, exit code 2, nothing left behind."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_cli(script, *args, env_extra=None, cwd=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    env.pop("MUSDB_PATH", None)
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert str(needle) in lines[0]


@pytest.fixture
def env(tmp_path):
    return {"MSS_TF_DATA": str(tmp_path / "data")}


def test_unknown_model(tmp_path, env):
    result = run_cli("train.py", "--model", "transformer", "--run-dir", tmp_path / "run", env_extra=env)
    assert_one_line_error(result, "transformer")
    assert not (tmp_path / "run").exists()


def test_missing_musdb_root(tmp_path, env):
    result = run_cli("train.py", "--model", "unet-tiny", "--musdb-root", tmp_path / "nowhere",
                     "--run-dir", tmp_path / "run", env_extra=env)
    assert_one_line_error(result, tmp_path / "nowhere")
    assert not (tmp_path / "run").exists()


def test_folder_not_in_musdb_layout(tmp_path, env):
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "song.wav").write_bytes(b"RIFF")
    result = run_cli("train.py", "--model", "unet-tiny", "--musdb-root", tmp_path / "music",
                     "--run-dir", tmp_path / "run", env_extra=env)
    assert_one_line_error(result, tmp_path / "music", "layout")


def test_track_with_missing_stem(tone_musdb, tmp_path, env):
    (tone_musdb / "train" / "song 1" / "vocals.wav").unlink()
    result = run_cli("train.py", "--model", "unet-tiny", "--musdb-root", tone_musdb,
                     "--run-dir", tmp_path / "run", env_extra=env)
    assert_one_line_error(result, "vocals.wav")
    assert not (tmp_path / "run").exists()


def test_non_audio_file_leaves_no_shards_or_run(tone_musdb, tmp_path, env):
    (tone_musdb / "train" / "song 1" / "drums.wav").write_text("this is not audio")
    result = run_cli("train.py", "--model", "unet-tiny", "--musdb-root", tone_musdb,
                     "--run-dir", tmp_path / "run", env_extra=env)
    assert_one_line_error(result, "drums.wav")
    assert not (tmp_path / "run").exists()
    shards = tmp_path / "data" / "shards"
    leftovers = [p for p in shards.rglob("*")] if shards.exists() else []
    assert not [p for p in leftovers if p.name == "manifest.json" and "train" in p.parts]
    assert not [p for p in leftovers if ".tmp" in p.name]


def test_evaluate_run_without_checkpoints(tmp_path, env):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "unet-tiny"}')
    result = run_cli("evaluate.py", "--run", run, env_extra=env)
    assert_one_line_error(result, run, "checkpoints")
    assert not (run / "results.json").exists()


def test_evaluate_missing_run_dir(tmp_path, env):
    result = run_cli("evaluate.py", "--run", tmp_path / "nope", env_extra=env)
    assert_one_line_error(result, tmp_path / "nope")


def test_help_explains_flags():
    for script in ("train.py", "evaluate.py", "datasets/make_demo.py"):
        result = run_cli(script, "--help")
        assert result.returncode == 0 and "--" in result.stdout
