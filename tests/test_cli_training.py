"""NMF and BSRNN-SE through the real commands: train.py then evaluate.py on a tone set.

(The U-Net's demo-set run is tests/test_end_to_end.py, kept apart so that the two files can run
on two pytest workers side by side.)"""

import json

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run_cli, run_main


def test_nmf_baseline_fits_and_evaluates_through_the_clis(tone_musdb, tmp_path, monkeypatch, capsys):
    env = {"MSS_TF_DATA": str(tmp_path / "data")}
    run = tmp_path / "nmf"
    trained = run_cli("train.py", "--model", "nmf", "--musdb-root", tone_musdb, "--run-dir", run, "--quiet",
                      "--crop-seconds", 2, "--model-arg", "fit_iterations=15", "--model-arg", "rank=4", "--model-arg", "max_frames=400",
                      "--model-arg", "separate_iterations=20", env_extra=env)
    assert trained.returncode == 0, trained.stderr
    assert (run / "nmf.npz").is_file() and json.loads((run / "config.json").read_text())["model_kwargs"]["rank"] == 4
    evaluated = run_main("evaluate.py", ["--run", run, "--quiet", "--fast"], monkeypatch, capsys, env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "nmf" and results["params"] == 513 * 4 * 4
    assert [t["track"] for t in results["tracks"]] == ["test song"]  # the data it was fitted on, not the demo set
    # the tone stems have distinct spectra: supervised NMF must separate them well
    assert results["average"]["usdr"] > results["baseline"]["average"]["usdr"] + 3.0
    # a fitted NMF has nothing to resume: refused, the fitted model untouched
    fitted = (run / "nmf.npz").stat().st_mtime_ns
    assert_one_line_error(run_main("train.py", ["--resume", run, "--epochs", 3], monkeypatch, capsys, env_extra=env),
                          "nothing to resume")
    assert (run / "nmf.npz").stat().st_mtime_ns == fitted


@pytest.mark.slow  # 40 s (BSRNN-SE graphs, museval): the stereo BSRNN run of test_training covers train.py with BSRNN
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
