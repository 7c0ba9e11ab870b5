"""python -m mss_tf.study: every model trained and evaluated alike, one report."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert_one_line_error(run_study("--quick", "--out", tmp_path / "s"), "--question se")
    assert not (tmp_path / "s").exists()


def test_a_study_on_other_data_passes_it_to_every_command(tmp_path, monkeypatch):
    calls = []

    def stand_in(command, log, verbose=False):
        calls.append(command)
        raise SystemExit(0)  # the first command is enough: what it is given

    monkeypatch.setattr(study, "_run", stand_in)
    (tmp_path / "map.json").write_text("{}")
    with pytest.raises(SystemExit):
        study.main(["--models", "unet-tiny", "--data", str(tmp_path), "--stem-map", str(tmp_path / "map.json"),
                    "--budget-steps", "4", "--out", str(tmp_path / "s")])
    command = calls[0]
    assert command[0] == "train.py" and "--musdb-root" not in command
    assert command[command.index("--data") + 1] == str(tmp_path.resolve())
    assert command[command.index("--stem-map") + 1] == str((tmp_path / "map.json").resolve())
    with pytest.raises(ConfigError, match="^--data and --musdb-root name the same thing; give one$"):
        study.main(["--data", str(tmp_path), "--musdb-root", str(tmp_path), "--out", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="^--stem-map needs --data DIR"):
        study.main(["--stem-map", str(tmp_path / "map.json"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


# --- --question se (issue 26): the report's logic on synthetic runs, and the quick path end to end

def _fake_run(run: Path, seed: int, gain: float, speed: float, tracks=("a", "b", "c")) -> None:
    """A run folder as train.py and evaluate.py leave it: metrics.jsonl (validation uSDR per target at
    10 epochs, rising to 4 + gain dB) and results.json (per-track uSDR, seed- and track-dependent)."""
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = []
    for epoch in range(1, 11):
        level = (4 + gain) * (1 - np.exp(-speed * epoch)) + rng.normal(0, 0.01)
        lines.append(json.dumps({"epoch": epoch, "step": 10 * epoch, "valid_usdr": {"vocals": level - 1, "drums": level + 1}}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows = [{"track": t, "usdr": {"vocals": 3 + gain + 0.3 * seed + i, "drums": 5 + gain + 0.3 * seed}}
            for i, t in enumerate(tracks)]
    average = float(np.mean([np.mean(list(r["usdr"].values())) for r in rows]))
    (run / "results.json").write_text(json.dumps({
        "params": 1000 + int(gain > 0), "tracks": rows, "data_root": "demo-musdb",
        "targets": {t: {"usdr": float(np.mean([r["usdr"][t] for r in rows])), "csdr": 1.0 + seed}
                    for t in ("vocals", "drums")},
        "average": {"usdr": average, "csdr": 1.0 + seed}}))


def _fake_question(out: Path, gain: float, speed: float, seeds: int) -> list[dict]:
    jobs = []
    for label, preset, g, s in (("bsrnn-tiny", "bsrnn-tiny", 0.0, 0.3), ("bsrnn-se-tiny", "bsrnn-se-tiny", gain, speed)):
        for seed in range(seeds):
            job = {"label": label, "preset": preset, "model_args": {}, "seed": seed, "neural": True,
                   "dir": f"se/{label}-seed{seed}"}
            _fake_run(out / "runs" / job["dir"], seed, g, s)
            jobs.append(job)
    return jobs


def test_se_report_statistics_steps_to_level_bootstrap_and_the_verdict_rule():
    from mss_tf.study_se import bootstrap_ci, early_usdr, judge, steps_to_level, verdict

    steps, usdr = np.array([10, 20, 30, 40]), np.array([1.0, 2.5, 3.1, 2.9])
    assert steps_to_level(steps, usdr, 2.0) == 20 and steps_to_level(steps, usdr, 3.0) == 30
    assert steps_to_level(steps, usdr, 4.0) is None
    assert early_usdr(steps, usdr) == pytest.approx(1.75)  # epochs at steps <= 20
    mean, low, high = bootstrap_ci(np.array([[1.0, 1.2], [0.9, 1.1], [1.1, 1.0]]))
    assert mean == pytest.approx(1.05) and 0.9 <= low < mean < high <= 1.2
    assert bootstrap_ci(np.array([0.5, -0.4, 0.1])) == bootstrap_ci(np.array([0.5, -0.4, 0.1]))  # fixed seed
    assert bootstrap_ci(np.array([0.5, -0.4, 0.1]))[1] < 0 < bootstrap_ci(np.array([0.5, -0.4, 0.1]))[2]
    assert judge(0.1, 0.5) == "better" and judge(-0.1, 0.1) == "not better" and judge(-0.5, 0.5) == "unclear"
    assert verdict("better", "better") == "both" and verdict("better", "unclear") == "higher"
    assert verdict("not better", "better") == "faster" and verdict("not better", "not better") == "neither"
    assert verdict("unclear", "not better") == "too noisy to tell at this size"


@pytest.mark.parametrize("gain, speed, seeds, expected", [
    (1.0, 0.1, 3, "higher"), (0.0, 1.0, 3, "faster"), (1.0, 1.0, 3, "both"), (0.0, 0.3, 3, "neither"),
    (1.0, 1.0, 2, "too noisy to tell at this size"),  # two seeds judge nothing
])
def test_the_se_report_holds_every_run_and_states_what_the_numbers_support(tmp_path, monkeypatch, gain, speed, seeds,
                                                                          expected):
    from mss_tf import study_se

    out = tmp_path / "study"
    jobs = _fake_question(out, gain, speed, seeds)
    monkeypatch.setattr(study_se, "read_gates", lambda run, crops: {
        "blocks": ["m0/time", "m0/band"], "crops": ["x @ 0.0 s"], "scales": np.full((crops, 2, 4), 0.5)})
    monkeypatch.setattr(study_se, "measure_cost", lambda presets, steps: [
        {"label": label, "params": 1000 + i, "seconds": 0.1 * (1 + i)} for i, (label, _, _) in enumerate(presets)])
    state = {"args": {"budget_steps": 100, "fast": True, "max_seconds": None}, "study_seconds": 60}
    report = study_se.write_se_report(out, jobs, state, cost_steps=2, gate_crops=3).read_text()
    assert f"**Answer ({expected}).**" in report
    assert report.count("**Answer (") == 1
    for job in jobs:  # every run's numbers, as its files hold them
        results = json.loads((out / "runs" / job["dir"] / "results.json").read_text())
        final = json.loads((out / "runs" / job["dir"] / "metrics.jsonl").read_text().splitlines()[-1])
        valid = np.mean(list(final["valid_usdr"].values()))
        assert f"| {job['label']} | {job['seed']} | 100 | {valid:.2f} | {results['average']['usdr']:.2f} |" in report
    assert f"({seeds}/{seeds} seeds)" in report and "+0.10%" in report and "+100.0%" in report
    assert (out / study_se.CURVES).is_file() and (out / study_se.GATES).is_file()


def test_the_se_question_plans_paired_seeds_of_plain_se_and_the_ablation():
    jobs = plan(build_parser().parse_args(["--question", "se"]))
    labels = list(dict.fromkeys(j["label"] for j in jobs))
    assert labels[:2] == ["bsrnn-small", "bsrnn-se-small"] and len(labels) == 7  # plain, the preset, 5 more variants
    for label in labels:  # the same seeds for every variant: paired runs
        assert [j["seed"] for j in jobs if j["label"] == label] == [0, 1, 2]
    assert all(j["dir"].startswith("se/") for j in jobs) and len({j["dir"] for j in jobs}) == len(jobs)
    quick = plan(build_parser().parse_args(["--question", "se", "--quick"]))
    assert [(j["preset"], j["seed"]) for j in quick] == [("bsrnn-tiny", 0), ("bsrnn-tiny", 1),
                                                        ("bsrnn-se-tiny", 0), ("bsrnn-se-tiny", 1)]


@pytest.mark.parametrize("models", [["bsrnn-small"], ["bsrnn-se-small", "bsrnn-small"], ["unet", "bsrnn-se-small"]])
def test_the_se_question_needs_a_plain_bsrnn_then_a_bsrnn_se(tmp_path, models):
    with pytest.raises(ConfigError, match="PLAIN SE"):
        study.main(["--question", "se", "--models", *models, "--out", str(tmp_path / "s")])
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # about 2 minutes on 2 shared cores (four tiny trainings and evaluations, the gates, the cost)
def test_the_quick_se_question_runs_end_to_end(tmp_path):
    from mss_tf.study_se import CURVES, GATES, VERDICTS

    root = write_tone_musdb(tmp_path / "musdb", 7.0)
    out = tmp_path / "study"
    (tmp_path / "README.md").write_text("# x\n<!-- bench:study-se -->\nold\n<!-- /bench:study-se -->\nend\n")
    result = run_study("--question", "se", "--quick", "--musdb-root", root, "--out", out, "--workers", "1",
                       "--readme", tmp_path / "README.md", env_extra={"MSS_TF_DATA": str(tmp_path / "data")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "SE.md").read_text()
    answers = [v for v in VERDICTS if f"**Answer ({v}).**" in report]
    assert answers == ["too noisy to tell at this size"], report  # two seeds judge nothing
    for label in ("bsrnn-tiny", "bsrnn-se-tiny"):
        for seed in (0, 1):
            run = out / "runs" / "se" / f"{label}-seed{seed}"
            results = json.loads((run / "results.json").read_text())
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert records[-1]["step"] == 6
            valid = np.mean(list(records[-1]["valid_usdr"].values()))
            assert (f"| {label} | {seed} | 6 | {valid:.2f} | {results['average']['usdr']:.2f} |") in report
    for name in (CURVES, GATES, "se.json"):
        assert (out / name).is_file(), name
    assert not (out / "REPORT.md").exists() and not (out / "runs" / "oracle-irm2").exists()
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and f"](study/{GATES})" in readme and "make study-se" in readme
