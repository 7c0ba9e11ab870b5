"""The demo path through the real commands: demo set -> shards -> U-Net -> evaluate."""

import json

import numpy as np
import pytest

from mss_tf.data import musdb
from mss_tf.inference import Separator
from tests.test_cli import run_cli


EPOCHS = 10  # of 100 steps


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    # the demo set `make demo` builds (16 + 4 songs of 12 s) and 1,000 of its 2,000 training steps
    # (EPOCHS). Measured 2026-12-02 on this set (test uSDR / cSDR in dB, the best checkpoint):
    #   400 steps: vocals 0.61 / -1.11 (too early), 800: vocals 2.22 / -0.10 (cSDR not yet 1 dB),
    #   1,000: vocals 2.97 / 1.30, drums 5.30 / 5.80, bass 2.44 / 2.44, other 2.04 / 2.40,
    #   1,200: vocals 3.16 / 1.60, drums 5.63 / 6.23, bass 2.64 / 2.75, other 2.01 / 2.08
    tmp = tmp_path_factory.mktemp("e2e")
    env = {"MSS_TF_DATA": str(tmp / "data")}
    root = tmp / "demo"
    made = run_cli("datasets/make_demo.py", "--out", root, "--train", 16, "--test", 4, "--seconds", 12, env_extra=env)
    assert made.returncode == 0, made.stderr
    run = tmp / "run"
    trained = run_cli("train.py", "--model", "unet", "--musdb-root", root, "--run-dir", run,
                      "--epochs", EPOCHS, "--steps-per-epoch", 100, "--quiet", env_extra=env, timeout=1200)
    assert trained.returncode == 0, trained.stderr
    # the fast BSSEval (within 1e-4 dB of museval on these songs, tests/test_bsseval.py): museval
    # itself runs through evaluate.py in tests/test_evaluation.py
    evaluated = run_cli("evaluate.py", "--run", run, "--quiet", "--fast", env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    return root, run, evaluated.stdout


def test_every_target_separates_on_the_demo_test_set(demo_run):
    # Judged per target: 0 dB uSDR is what a silent estimate scores, and the mixture-as-estimate
    # baseline is the floor; an average would hide a silenced stem.
    root, run, stdout = demo_run
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "unet" and results["subset"] == "test" and results["params"] > 0
    assert [t["track"] for t in results["tracks"]] == [t.name for t in musdb.split_tracks(root, "test")]
    assert set(results["targets"]) == {"vocals", "drums", "bass", "other"}
    for target, values in results["targets"].items():
        floor = results["baseline"]["targets"][target]["usdr"]
        assert values["usdr"] >= 1.0, (target, stdout)  # at least 1 dB above silence
        assert values["usdr"] >= floor + 3.0, (target, stdout)  # at least 3 dB above the mixture
        assert values["csdr"] >= 1.0, (target, stdout)  # museval's median-of-medians SDR agrees
    assert len(list((run / "museval" / "test").glob("*.json"))) == 4
    assert "average" in stdout and "uSDR" in stdout and "cSDR" in stdout


def test_no_target_estimate_is_silent(demo_run):
    root, run, _ = demo_run
    separator = Separator.from_run(run)
    track = musdb.split_tracks(root, "test")[0]
    audio, rate = musdb.load_track(track)
    estimates = separator.separate(audio["mixture"], rate)
    for target, estimate in estimates.items():
        assert estimate.shape == audio["mixture"].shape
        energy_ratio = float(np.sum(estimate**2) / np.sum(audio[target] ** 2))
        assert 0.1 < energy_ratio < 10.0, (target, energy_ratio)  # neither silenced nor the whole mixture


def test_run_directory_contents(demo_run):
    _, run, _ = demo_run
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "unet" and config["epochs"] == EPOCHS
    assert (run / "checkpoints" / "checkpoint").is_file() and (run / "best" / "checkpoint").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == EPOCHS
    assert list((run / "logs").iterdir())  # TensorBoard events


@pytest.mark.slow
def test_bsrnn_se_tiny_separates_every_target_of_the_demo_set(tmp_path):
    # The per-target check of the demo test, for the BSRNN-SE with all four targets sharing its
    # body (3,000 steps of 1 s crops: about 12 minutes on 2 CPU cores).
    env = {"MSS_TF_DATA": str(tmp_path / "data")}
    root = tmp_path / "demo"
    made = run_cli("datasets/make_demo.py", "--out", root, "--train", 16, "--test", 4, "--seconds", 12, env_extra=env)
    assert made.returncode == 0, made.stderr
    run = tmp_path / "run"
    trained = run_cli("train.py", "--model", "bsrnn-se-tiny", "--musdb-root", root, "--run-dir", run, "--quiet",
                      "--model-arg", 'targets=["vocals", "drums", "bass", "other"]',
                      "--epochs", 30, "--steps-per-epoch", 100, env_extra=env, timeout=3600)
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("evaluate.py", "--run", run, "--quiet", env_extra=env, timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((run / "results.json").read_text())
    assert list(results["targets"]) == ["vocals", "drums", "bass", "other"]
    for target, values in results["targets"].items():
        floor = results["baseline"]["targets"][target]["usdr"]
        assert values["usdr"] >= 1.0 and values["usdr"] >= floor + 3.0, (target, evaluated.stdout)
