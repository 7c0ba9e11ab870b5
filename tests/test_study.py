"""python -m mss_tf.study: every model trained and evaluated alike, one report."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mss_tf import study
from mss_tf.errors import ConfigError
from mss_tf.models.registry import get_preset
from mss_tf.study import build_parser, plan
from tests.conftest import REPO, write_tone_musdb
from tests.test_cli import assert_one_line_error


def run_study(*args, env_extra=None, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    env.pop("MUSDB_PATH", None)
    return subprocess.run([sys.executable, "-m", "mss_tf.study", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_the_plan_trains_every_model_per_seed_and_the_ablation_variants():
    jobs = plan(build_parser().parse_args(["--seeds", "3", "--ablation"]))
    labels = list(dict.fromkeys(j["label"] for j in jobs))
    assert labels[:4] == ["nmf", "unet", "bsrnn-small", "bsrnn-se-small"]
    assert labels[-2:] == ["bs-roformer-small", "mel-roformer-small"]
    assert sum(j["label"] == "nmf" for j in jobs) == 1  # NMF's fit does not depend on a seed
    assert [j["seed"] for j in jobs if j["label"] == "unet"] == [0, 1, 2]
    variants = {(j["model_args"].get("se_placement"), j["model_args"].get("se_reduction"))
                for j in jobs if j["preset"] == "bsrnn-se-small"}
    # after each BLSTM or each module, r in {4, 8, 16}: six settings, one of them the preset's own
    own = get_preset("bsrnn-se-small").kwargs["se_reduction"]
    assert variants == {(None, None)} | {(p, r) for p in ("blstm", "module") for r in (4, 8, 16)} - {("blstm", own)}
    assert len({j["dir"] for j in jobs}) == len(jobs)
    paper = plan(build_parser().parse_args(["--size", "paper"]))
    assert [j["preset"] for j in paper] == ["nmf", "unet", "bsrnn", "bsrnn-se", "bs-roformer", "mel-roformer"]
    with pytest.raises(ConfigError):
        plan(build_parser().parse_args(["--models", "unet", "no-such-model"]))


@pytest.mark.slow  # 70-130 s (two trainings, their evaluations, the oracle and the mixture, twice): make test-slow
def test_a_tiny_study_writes_the_report_and_continues_where_it_stopped(tmp_path, monkeypatch):
    root = write_tone_musdb(tmp_path / "musdb", 7.0)
    out = tmp_path / "study"
    env = {"MSS_TF_DATA": str(tmp_path / "data")}
    command = ["--models", "unet-tiny", "--budget-steps", "6", "--seeds", "2",
               "--musdb-root", root, "--fast", "--max-seconds", "4", "--out", out, "--workers", "1",
               "--readme", tmp_path / "README.md"]
    (tmp_path / "README.md").write_text("# x\n<!-- bench:study -->\nold\n<!-- /bench:study -->\nend\n")
    result = run_study(*command, env_extra=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "REPORT.md").read_text()
    for needle in ("unet-tiny", "oracle IRM2", "mixture", "± ", "seeds 0..1",
                   "6 training steps per model", "training_curves.png", "tradeoff.png"):
        assert needle in report, needle
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and "](study/tradeoff.png)" in readme and readme.endswith("end\n")
    for name in ("tradeoff.png", "sdr_boxplot.png", "training_curves.png", "comparison.md", "study.json"):
        assert (out / name).is_file(), name
    for run in ("unet-tiny-seed0", "unet-tiny-seed1"):
        records = [json.loads(line) for line in (out / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == 6, run  # the same step budget for every model
        assert json.loads((out / "runs" / run / "config.json").read_text())["seed"] == int(run[-1])
    seed0 = json.loads((out / "runs" / "unet-tiny-seed0" / "results.json").read_text())
    seed1 = json.loads((out / "runs" / "unet-tiny-seed1" / "results.json").read_text())
    assert seed0["average"]["usdr"] != seed1["average"]["usdr"]  # two seeds, two trainings
    # the same command again reuses every finished run
    again = run_study(*command, env_extra=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier") == 2 and "training" not in again.stdout.split("# Study")[0]
    # another budget is another study: the runs are trained again and stale times leave the report.
    # The study's own logic runs in this process; its CLI steps are stood in for by copies of the
    # real run above (what matters here is which steps it runs, not training twice more).
    state = json.loads((out / "study.json").read_text())
    state["steps"]["gone-seed0/train"] = {"command": ["train.py"], "seconds": 6e6}
    (out / "study.json").write_text(json.dumps(state))
    real = tmp_path / "real-seed0"
    shutil.copytree(out / "runs" / "unet-tiny-seed0", real)
    calls = []

    def stand_in(command, log, verbose=False):
        calls.append(command)
        if command[0] == "train.py":
            run = Path(command[command.index("--run-dir") + 1])
            assert not run.exists()  # made by other commands: trained again from scratch
            shutil.copytree(real, run, ignore=shutil.ignore_patterns("results.json"))
        elif "--run" in command:
            shutil.copy(real / "results.json", Path(command[command.index("--run") + 1]) / "results.json")
        return 2.0

    monkeypatch.setattr(study, "_run", stand_in)
    monkeypatch.delenv("MUSDB_PATH", raising=False)
    assert study.main(["--models", "unet-tiny", "--budget-steps", "4", "--seeds", "1", *map(str, command[6:])]) == 0
    assert [c[0] for c in calls] == ["train.py", "evaluate.py", "evaluate.py"]  # oracle and mixture reused
    train = calls[0]
    assert train[train.index("--epochs") + 1] == "1" and train[train.index("--steps-per-epoch") + 1] == "4"
    assert "--compare" in calls[2]
    state = json.loads((out / "study.json").read_text())
    assert "gone-seed0/train" not in state["steps"] and "unet-tiny-seed1/train" not in state["steps"]
    assert state["steps"]["unet-tiny-seed0/train"]["command"] == train
    assert state["study_seconds"] == pytest.approx(sum(step["seconds"] for step in state["steps"].values()))
    assert state["study_seconds"] < 900
    assert "4 training steps per model" in (out / "REPORT.md").read_text()


def test_bad_study_arguments_are_one_line_errors(tmp_path):
    assert_one_line_error(run_study("--seeds", "0", "--out", tmp_path / "s"), "--seeds")
    assert_one_line_error(run_study("--models", "nope", "--out", tmp_path / "s"), "nope")
    assert not (tmp_path / "s").exists()
