"""Bad input to the CLIs: one line naming the problem and the path, exit code 2, nothing left behind."""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mss_tf import cli
from tests.conftest import REPO, checkout_env

# What TensorFlow's C++ side prints at start-up (and later) unless --verbose: every line of its log
# format (`2026-01-01 00:00:00.000000: I tensorflow/...`), and the bits of the known messages
TF_NOISE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |cuFFT|cuDNN|cuBLAS|TensorRT|oneDNN|"
                      r"cpu_feature_guard|rebuild TensorFlow|cuda drivers", re.MULTILINE)


def program(script):
    """The command line of a CLI: `train.py` etc. by path, `mss_tf.study` etc. with `python -m`."""
    return [sys.executable, "-m", script] if script.startswith("mss_tf.") else [sys.executable, str(REPO / script)]


def run_cli(script, *args, env_extra=None, cwd=None, timeout=300):
    env = checkout_env({**os.environ, **(env_extra or {})})
    env.pop("MUSDB_PATH", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLIs quiet TensorFlow themselves
    return subprocess.run(
        [*program(script), *map(str, args)],
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


def test_unknown_model(tmp_path, env, monkeypatch, capsys):
    result = run_main("train.py", ["--model", "transformer", "--run-dir", tmp_path / "run"], monkeypatch, capsys, env_extra=env)
    assert_one_line_error(result, "transformer")
    assert not (tmp_path / "run").exists()


def assert_refused_in_silence(result, *needles):
    """A refusal and nothing else: exit code 2, one stderr line naming the problem, no stdout."""
    assert_one_line_error(result, *needles)
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, (result.stdout, result.stderr)


def test_missing_musdb_root(tmp_path, env, monkeypatch, capsys):
    result = run_main("train.py", ["--model", "unet", "--musdb-root", tmp_path / "nowhere",
                                   "--run-dir", tmp_path / "run"], monkeypatch, capsys, env_extra=env)
    assert_refused_in_silence(result, tmp_path / "nowhere", "no such folder")  # no `shards: ...` line first
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_folder_not_in_musdb_layout(tmp_path, env, monkeypatch, capsys):
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "song.wav").write_bytes(b"RIFF")
    result = run_main("train.py", ["--model", "unet-tiny", "--musdb-root", tmp_path / "music",
                                   "--run-dir", tmp_path / "run"], monkeypatch, capsys, env_extra=env)
    assert_refused_in_silence(result, tmp_path / "music", "layout")


def test_track_with_missing_stem(tone_musdb, tmp_path, env, monkeypatch, capsys):
    (tone_musdb / "train" / "song 1" / "vocals.wav").unlink()
    result = run_main("train.py", ["--model", "unet-tiny", "--musdb-root", tone_musdb,
                                   "--run-dir", tmp_path / "run"], monkeypatch, capsys, env_extra=env)
    assert_refused_in_silence(result, "vocals.wav")
    assert not (tmp_path / "run").exists()


def test_non_audio_file_leaves_no_shards_or_run(tone_musdb, tmp_path, env, monkeypatch, capsys):
    (tone_musdb / "train" / "song 1" / "drums.wav").write_text("this is not audio")
    result = run_main("train.py", ["--model", "unet-tiny", "--musdb-root", tone_musdb,
                                   "--run-dir", tmp_path / "run"], monkeypatch, capsys, env_extra=env)
    assert_one_line_error(result, "drums.wav")
    assert not (tmp_path / "run").exists()
    shards = tmp_path / "data" / "shards"
    leftovers = [p for p in shards.rglob("*")] if shards.exists() else []
    assert not [p for p in leftovers if p.name == "manifest.json" and "train" in p.parts]
    assert not [p for p in leftovers if ".tmp" in p.name]


def test_evaluate_run_without_checkpoints(tmp_path, env, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "unet-tiny"}')
    result = run_main("evaluate.py", ["--run", run], monkeypatch, capsys, env_extra=env)
    assert_one_line_error(result, run, "checkpoints")
    assert not (run / "results.json").exists()


def test_evaluate_missing_run_dir(tmp_path, monkeypatch, capsys):
    result = run_main("evaluate.py", ["--run", tmp_path / "nope"], monkeypatch, capsys)
    assert_one_line_error(result, tmp_path / "nope")


# the module whose main each top-level script runs (tests/test_packaging.py checks the scripts call it)
COMMANDS = {"train.py": "mss_tf.cli.train", "evaluate.py": "mss_tf.cli.evaluate", "separate.py": "mss_tf.cli.separate",
            "datasets/make_demo.py": "mss_tf.cli.make_demo", "datasets/prepare_musdb.py": "mss_tf.cli.prepare_musdb"}


def _module(script):
    return importlib.import_module(COMMANDS.get(script, script))


def parser_of(script):
    """The parser the CLI runs with (python -m mss_tf.export passes the one-line parser class)."""
    module = _module(script)
    return module.build_parser(cli.ArgumentParser) if script == "mss_tf.export" else module.build_parser()


def run_main(script, args, monkeypatch, capsys, cwd=None, env_extra=None):
    """A CLI's main run in this process under cli.run, as its `__main__` block does: exit code,
    stdout and stderr, without a Python and TensorFlow start-up per call. For the refusals: a
    command that trains or evaluates runs as its own process (run_cli)."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    # the environment run_cli gives a command; and the TF_CPP_MIN_LOG_LEVEL a CLI sets for itself
    # (cli.quiet_tensorflow) is undone when the test ends, so it does not leak into later tests
    monkeypatch.delenv("MUSDB_PATH", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for key, value in (env_extra or {}).items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    main = _module(script).main
    with pytest.raises(SystemExit) as exited:
        cli.run(main)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess([script, *args], exited.value.code, captured.out, captured.err)


CLIS = ["train.py", "evaluate.py", "separate.py", "datasets/make_demo.py", "datasets/prepare_musdb.py",
        "mss_tf.study", "mss_tf.export"]


@pytest.mark.parametrize("script", CLIS)
def test_help_explains_every_flag(script):
    parser = parser_of(script)
    assert isinstance(parser, cli.ArgumentParser)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert "--verbose" in [a.option_strings[-1] for a in options]
    # each flag has its own help text, which says more than the flag's name
    assert all(a.help for a in options), [a.dest for a in options if not a.help]
    helps = [a.help for a in options]
    assert len(set(helps)) == len(helps), [h for h in helps if helps.count(h) > 1]
    restated = [a.dest for a in options if set(re.findall(r"[a-z]+", a.help.lower())) <= set(a.dest.split("_"))]
    assert not restated, restated
    shown = set(re.findall(r"(--[a-z][a-z-]+)", parser.format_help()))  # what --help prints
    assert {a.option_strings[-1] for a in options} <= shown


def test_help_runs_as_a_command():
    result = run_cli("train.py", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stderr
    assert "--model" in result.stdout and "--verbose" in result.stdout


def test_train_help_documents_the_contract_flags():
    flags = {a.option_strings[-1] for a in parser_of("train.py")._actions if a.option_strings}
    for flag in ("--strategy", "--precision", "--deterministic", "--resume", "--config", "--checkpoint-every",
                 "--jit-compile", "--loss", "--alpha", "--lr-decay", "--clip-norm", "--weight-decay", "--targets",
                 "--patience", "--seed", "--max-minutes", "--steps-per-epoch", "--export", "--musdb-root",
                 "--shards", "--run-dir", "--epochs", "--summary", "--tune", "--max-trials"):
        assert flag in flags, flag


@pytest.mark.parametrize("script, args, needle", [
    ("train.py", ["--epochs", "abc"], "--epochs"),
    ("train.py", ["--model", "unet-tiny", "--no-such-flag"], "--no-such-flag"),
    ("evaluate.py", ["--run"], "--run"),
    ("evaluate.py", ["--mixture"], "--out"),
    ("evaluate.py", ["--mixture", "--out", "mix", "--tracks", "0"], "--tracks 0"),
    ("evaluate.py", ["--run", "no-run", "--tracks", "-3"], "--tracks -3"),
    ("evaluate.py", ["--run", "no-run", "--workers", "0"], "--workers"),
    ("separate.py", ["song.wav", "--model", "m", "--out", "o", "--format", "mp3"], "--format"),
    ("datasets/make_demo.py", ["--out", "demo", "--seed", "-1"], "--seed"),
    ("datasets/prepare_musdb.py", ["--workers", "many"], "--workers"),
    ("mss_tf.study", ["--budget-steps", "x"], "--budget-steps"),
    ("mss_tf.export", ["--which", "worst"], "--which"),  # imports TensorFlow first: still one line
])
def test_a_bad_flag_is_one_line_and_exit_code_2_before_any_work(tmp_path, monkeypatch, capsys, script, args, needle):
    monkeypatch.setenv("MSS_TF_DATA", str(tmp_path / "data"))
    if script == "mss_tf.export":  # its own process: the one case that imports TensorFlow before parsing
        result = run_cli(script, *args, cwd=tmp_path)
    else:  # the CLI's main in this process, as `python SCRIPT ARGS` runs it (refused before any work)
        result = run_main(script, args, monkeypatch, capsys, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert result.stdout == "" and list(tmp_path.iterdir()) == []  # no demo set, no run or output folder


def test_a_reader_that_stops_reading_ends_the_program_quietly():
    """`mss-train --list | head -3`: no BrokenPipeError traceback once the reader is gone."""
    code = "from mss_tf import cli\n\ndef main():\n    for i in range(10 ** 6):\n        print(i)\n\ncli.run(main)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=checkout_env(os.environ))
    assert process.stdout.readline() == "0\n"
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 1 and stderr == "", stderr


def test_tensorflow_is_quiet_unless_verbose():
    environ = {}
    cli.quiet_tensorflow(["--model", "unet"], environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "3"}
    environ = {}
    cli.quiet_tensorflow(["--model", "unet", "--verbose"], environ)
    assert environ == {}
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}  # the user's own setting wins
    cli.quiet_tensorflow([], environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert TF_NOISE.search("2026-11-27 00:36:43.004660: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] "
                           "Unable to register cuFFT factory")
    assert not TF_NOISE.search("error: --epochs: invalid int value: 'abc'\nepoch 1/2: loss 0.12")


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("content, needle", [
    ('{"model": "unet-tiny", "epoch": 3}', "unknown setting 'epoch'"),
    ('{"model": "unet-tiny", "epochs": "3"}', "setting 'epochs' must be int"),
    ('{"model": "unet-tiny", "deterministic": 1}', "setting 'deterministic' must be bool"),
    ('[1, 2]', "JSON object"),
    ('{"model": ', "not a JSON config"),
])
def test_config_file_errors_name_the_setting(tmp_path, env, content, needle, monkeypatch, capsys):
    path = tmp_path / "run.json"
    path.write_text(content)
    result = run_main("train.py", ["--config", path, "--run-dir", tmp_path / "run"], monkeypatch, capsys, env_extra=env)
    assert_one_line_error(result, path, needle)
    assert not (tmp_path / "run").exists()


def test_config_file_with_flag_overrides_and_bad_resumes(tone_musdb, tmp_path, env, monkeypatch, capsys):
    config = tmp_path / "run.json"
    config.write_text('{"model": "unet-tiny", "epochs": 5, "steps_per_epoch": 2, "batch_size": 2, "lr_decay": 0.5}')
    run = tmp_path / "run"
    result = run_cli("train.py", "--config", config, "--epochs", "1", "--musdb-root", tone_musdb, "--run-dir", run,
                     "--quiet", "--crop-seconds", "2", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert not TF_NOISE.search(result.stderr), result.stderr  # TensorFlow's start-up lines need --verbose
    saved = json.loads((run / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["steps_per_epoch"] == 2 and saved["lr_decay"] == 0.5  # flag over file
    before = _snapshot(run)
    # a resume that contradicts the run: named, exit 2, run directory untouched
    for args, needle in [(["--model", "bsrnn-tiny"], "is a unet-tiny run, not bsrnn-tiny"),
                         (["--batch-size", "4"], "--batch-size 4 differs"),
                         (["--model-arg", "filters=[2,4,8]"], "--model-arg")]:
        assert_one_line_error(run_main("train.py", ["--resume", run, *args], monkeypatch, capsys, env_extra=env), run, needle)
        assert _snapshot(run) == before
    # its only checkpoint damaged: one line naming it, the run directory untouched
    from mss_tf.checkpoints import checkpoint_history

    index = Path(checkpoint_history(run / "checkpoints")[0] + ".index")
    intact = index.read_bytes()
    index.write_bytes(intact[: len(intact) // 2])
    before = _snapshot(run)
    assert_one_line_error(run_main("train.py", ["--resume", run, "--epochs", "2"], monkeypatch, capsys, env_extra=env),
                          index.with_suffix(""), "damaged checkpoint", "no earlier intact checkpoint")
    assert _snapshot(run) == before
    index.write_bytes(intact)
    # a run directory whose checkpoint is not this configuration's model (another architecture)
    saved["model_kwargs"]["filters"] = [2, 4, 8]
    (run / "config.json").write_text(json.dumps(saved))
    before = _snapshot(run)
    assert_one_line_error(run_main("train.py", ["--resume", run, "--epochs", "2"], monkeypatch, capsys, env_extra=env),
                          "does not hold the weights")
    assert _snapshot(run) == before
    # shards of another STFT than the model's: named, and no run directory is created
    shards = json.loads((run / "config.json").read_text())["shards"]
    result = run_main("train.py", ["--model", "bsrnn-tiny", "--shards", shards, "--run-dir", tmp_path / "other"],
                      monkeypatch, capsys, env_extra=env)
    assert_one_line_error(result, shards, "STFT config")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("how", ["truncated index", "truncated data"])
def test_separate_and_evaluate_name_a_damaged_checkpoint_in_one_line(tmp_path, tone_musdb, monkeypatch, capsys, how):
    from mss_tf.checkpoints import write_untrained_run
    from tests.test_checkpoints import damage_checkpoint

    run = write_untrained_run(tmp_path / "run", "unet-tiny")
    damaged = damage_checkpoint(run / "best", how)
    song = tmp_path / "song.wav"
    soundfile.write(song, np.zeros((4410, 2), np.float32), 44100)
    separated = run_main("separate.py", [song, "--model", run, "--out", tmp_path / "stems", "--quiet"], monkeypatch, capsys)
    assert_one_line_error(separated, damaged, "damaged checkpoint")
    assert "Traceback" not in separated.stderr and not (tmp_path / "stems").exists()
    evaluated = run_main("evaluate.py", ["--run", run, "--musdb-root", tone_musdb, "--quiet"], monkeypatch, capsys)
    assert_one_line_error(evaluated, damaged, "damaged checkpoint")
    assert not (run / "results.json").exists()


def test_a_batch_the_replicas_cannot_share_is_refused():
    from mss_tf.errors import ConfigError
    from mss_tf.training.distribute import check_batch

    class TwoReplicas:
        num_replicas_in_sync = 2

    assert check_batch(TwoReplicas(), 4) == 2
    with pytest.raises(ConfigError, match="--batch-size 3 cannot be split over 2 replicas"):
        check_batch(TwoReplicas(), 3)
