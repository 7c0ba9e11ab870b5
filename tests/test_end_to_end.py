"""The demo path through the real commands: demo set -> shards -> U-Net -> evaluate."""

import json

import numpy as np
import pytest

from mss_tf.data import musdb
from mss_tf.inference import Separator
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {"MSS_TF_DATA": str(tmp / "data")}
    root = tmp / "demo"
    made = run_cli("datasets/make_demo.py", "--out", root, "--train", 6, "--test", 2, "--seconds", 12, env_extra=env)
    assert made.returncode == 0, made.stderr
    run = tmp / "run"
    trained = run_cli("train.py", "--model", "unet", "--musdb-root", root, "--run-dir", run,
                      "--epochs", 4, "--steps-per-epoch", 40, "--quiet", env_extra=env)
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("evaluate.py", "--run", run, "--quiet", env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    return root, run, evaluated.stdout


def test_unet_beats_mixture_baseline_on_demo_test_set(demo_run):
    root, run, stdout = demo_run
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "unet" and results["subset"] == "test" and results["params"] > 0
    assert [t["track"] for t in results["tracks"]] == [t.name for t in musdb.split_tracks(root, "test")]
    assert set(results["targets"]) == {"vocals", "drums", "bass", "other"}
    assert results["average"]["usdr"] > results["baseline"]["average"]["usdr"] + 1.0
    assert "average" in stdout and "uSDR" in stdout


def test_no_target_estimate_is_silent(demo_run):
    root, run, _ = demo_run
    separator = Separator.from_run(run)
    track = musdb.split_tracks(root, "test")[0]
    audio, rate = musdb.load_track(track)
    estimates = separator.separate(audio["mixture"], rate)
    for target, estimate in estimates.items():
        assert estimate.shape == audio["mixture"].shape
        rms = float(np.sqrt(np.mean(estimate**2)))
        assert rms > 0.05 * float(np.sqrt(np.mean(audio[target] ** 2))), target


def test_run_directory_contents(demo_run):
    _, run, _ = demo_run
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "unet" and config["epochs"] == 4
    assert (run / "checkpoints" / "checkpoint").is_file() and (run / "best" / "checkpoint").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    assert list((run / "logs").iterdir())  # TensorBoard events


def test_nmf_baseline_fits_and_evaluates_through_the_clis(tone_musdb, tmp_path):
    env = {"MSS_TF_DATA": str(tmp_path / "data")}
    run = tmp_path / "nmf"
    trained = run_cli("train.py", "--model", "nmf", "--musdb-root", tone_musdb, "--run-dir", run, "--quiet",
                      "--crop-seconds", 2, "--model-arg", "fit_iterations=15", "--model-arg", "rank=4", "--model-arg", "max_frames=400",
                      "--model-arg", "separate_iterations=20", env_extra=env)
    assert trained.returncode == 0, trained.stderr
    assert (run / "nmf.npz").is_file() and json.loads((run / "config.json").read_text())["model_kwargs"]["rank"] == 4
    evaluated = run_cli("evaluate.py", "--run", run, "--quiet", env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "nmf" and results["params"] == 513 * 4 * 4
    # the tone stems have distinct spectra: supervised NMF must separate them well
    assert results["average"]["usdr"] > results["baseline"]["average"]["usdr"] + 3.0


def test_bsrnn_se_tiny_trains_and_evaluates_through_the_clis(tone_musdb, tmp_path):
    env = {"MSS_TF_DATA": str(tmp_path / "data")}
    run = tmp_path / "bsrnn"
    trained = run_cli("train.py", "--model", "bsrnn-se-tiny", "--musdb-root", tone_musdb, "--run-dir", run,
                      "--epochs", 2, "--steps-per-epoch", 3, "--crop-seconds", 2, "--quiet", env_extra=env)
    assert trained.returncode == 0, trained.stderr
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(np.isfinite(h["train_loss"]) and np.isfinite(h["valid_loss"]) for h in history)
    evaluated = run_cli("evaluate.py", "--run", run, "--quiet", env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "bsrnn-se-tiny" and list(results["targets"]) == ["vocals"]
    assert np.isfinite(results["targets"]["vocals"]["usdr"])
