"""train.py --tune: Keras Tuner searches over the shared training loop."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mss_tf.config import TrainConfig
from mss_tf.data.prepare import prepare_dataset
from mss_tf.errors import ConfigError, TrainingError
from mss_tf.models.registry import search_space
from mss_tf.models.search import apply_overrides
from mss_tf.training import loop as loop_module
from mss_tf.training.run import make_datasets, prepare_config
from mss_tf.training.tuning import TuneOptions, tune_run
from tests.conftest import REPO, write_tone_musdb
from tests.test_cli import assert_one_line_error, run_cli, run_main
from tests.test_loop import _free_ports

TINY = ["--trial-epochs", "1", "--trial-steps", "3", "--crop-seconds", "2", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tone MUSDB folder (3 train songs, one of them for validation) and its shards per preset."""
    tmp = tmp_path_factory.mktemp("tuning")
    root = write_tone_musdb(tmp / "musdb", 3.0)
    shards = {}
    for preset in ("unet-tiny", "bsrnn-se-tiny"):
        config = TrainConfig(model=preset, crop_seconds=2.0).resolve()
        shards[preset] = tmp / f"shards-{preset}"
        prepare_dataset(root, shards[preset], config.spectrogram, prepare_config(config), progress=False)
    return root, shards


def _config(preset, shards):
    config = TrainConfig(model=preset, crop_seconds=2.0).resolve()
    config.shards = str(shards)
    return config


def _search(preset, shards, run_dir, **options):
    config = _config(preset, shards)
    train_data, valid_ds = make_datasets(config, shards)
    options = TuneOptions(**{"tuner": "random", "max_trials": 2, "trial_epochs": 1, "trial_steps": 3, **options})
    return tune_run(config, run_dir, train_data, valid_ds, options, progress=False, echo=lambda line: None)


def _summary(run_dir):
    with open(run_dir / "tuning" / "summary.csv") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- search spaces


def test_each_model_has_its_own_space_sized_from_the_preset():
    unet = {p.name: p for p in search_space("unet").parameters}
    assert {"learning_rate", "weight_decay", "loss_alpha", "base_filters", "bottleneck_dropout",
            "decoder_dropout"} == set(unet)
    assert unet["base_filters"].values == (4, 8, 16)  # around the preset's 8
    plain = {p.name: p for p in search_space("bsrnn").parameters}
    se = {p.name: p for p in search_space("bsrnn-se-tiny").parameters}
    assert {"feature_dim", "num_modules", "lstm_hidden", "band_scheme", "learning_rate", "loss_alpha"} <= set(plain)
    assert "se_reduction" not in plain and se["se_reduction"].values == (4, 8, 16)
    assert plain["feature_dim"].values == (64, 128, 256) and se["feature_dim"].values == (8, 16, 32)
    with pytest.raises(ConfigError, match="nothing to tune"):
        search_space("nmf")


def test_a_json_file_narrows_removes_or_replaces():
    space = search_space("unet-tiny")
    narrowed = apply_overrides(space, {"learning_rate": {"min": 5e-4, "max": 1e-3}, "decoder_dropout": None,
                                       "base_filters": {"values": [4]}}, "f.json")
    by_name = {p.name: p for p in narrowed.parameters}
    assert (by_name["learning_rate"].min, by_name["learning_rate"].max, by_name["learning_rate"].log) == (5e-4, 1e-3, True)
    assert "decoder_dropout" not in by_name and by_name["base_filters"].values == (4,)
    only = apply_overrides(space, {"replace": True, "loss_alpha": {"min": 0.4, "max": 0.6}}, "f.json")
    assert only.names() == ["loss_alpha"]
    for bad, needle in [({"learnig_rate": {}}, "unknown hyperparameter 'learnig_rate'"),
                        ({"learning_rate": {"min": 1e-2, "max": 1e-3}}, "empty range"),
                        ({"base_filters": {"values": []}}, "empty list"),
                        ({"loss_alpha": {"mn": 0.1}}, "unknown key"),
                        ({"replace": True}, "nothing to search")]:
        with pytest.raises(ConfigError, match=needle):
            apply_overrides(search_space("unet-tiny"), bad, "f.json")


def test_chosen_values_reach_the_config_and_the_model():
    space = search_space("unet-tiny")
    config = TrainConfig(model="unet-tiny").resolve()
    space.apply({"learning_rate": 2e-4, "base_filters": 8, "decoder_dropout": 0.1}, config, {"filters": [4, 8, 16],
                                                                                           "bottleneck_filters": 16})
    assert config.learning_rate == 2e-4
    assert config.model_kwargs["filters"] == [8, 16, 32] and config.model_kwargs["bottleneck_filters"] == 32
    assert config.model_kwargs["decoder_dropout"] == 0.1


def test_show_search_space_and_bad_input_are_one_line_errors(tmp_path, monkeypatch, capsys):
    shown = run_main("train.py", ["--model", "bsrnn-se-tiny", "--show-search-space"], monkeypatch, capsys)
    assert shown.returncode == 0 and "se_reduction" in shown.stdout and "{4, 8, 16}" in shown.stdout
    bad = tmp_path / "space.json"
    bad.write_text(json.dumps({"lerning_rate": {"min": 1e-4}}))
    assert_one_line_error(run_main("train.py", ["--model", "unet-tiny", "--tune", "--search-space", bad,
                                  "--run-dir", tmp_path / "r"], monkeypatch, capsys), "lerning_rate", str(bad))
    bad.write_text(json.dumps({"loss_alpha": {"min": 0.9, "max": 0.1}}))
    assert_one_line_error(run_main("train.py", ["--model", "unet-tiny", "--show-search-space", "--search-space", bad], monkeypatch, capsys),
                          "empty range", "loss_alpha")
    assert_one_line_error(run_main("train.py", ["--model", "nmf", "--tune"], monkeypatch, capsys), "nmf")
    assert_one_line_error(run_main("train.py", ["--model", "unet-tiny", "--tune", "--strategy", "mirrored"], monkeypatch, capsys), "--strategy")
    assert_one_line_error(run_main("train.py", ["--model", "unet-tiny", "--tune", "--max-trials", "0"], monkeypatch, capsys), "--max-trials")
    bad.write_text(json.dumps({"loss_alpha": {"min": 0.3, "max": 0.6}}))
    assert_one_line_error(run_main("train.py", ["--model", "unet-tiny", "--tune", "--objective", "val_loss",
                                  "--search-space", bad, "--run-dir", tmp_path / "r"], monkeypatch, capsys), "loss_alpha", "val_usdr")
    shown = run_main("train.py", ["--model", "unet-tiny", "--show-search-space", "--objective", "val_loss"], monkeypatch, capsys)
    assert shown.returncode == 0 and "loss_alpha" not in shown.stdout and "learning_rate" in shown.stdout
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- searches


@pytest.mark.slow  # 35 s: the search itself runs in the default test below (a failed trial); this is its CLI end to end
def test_unet_search_through_the_cli_writes_the_summary_and_the_best_config_trains(data, tmp_path):
    root, _ = data
    env = {"MSS_TF_DATA": str(tmp_path / "data")}
    run = tmp_path / "search"
    result = run_cli("train.py", "--model", "unet-tiny", "--tune", "--tuner", "random", "--max-trials", 2,
                     "--musdb-root", root, "--run-dir", run, *TINY, env_extra=env)
    assert result.returncode == 0, result.stderr
    rows = _summary(run)
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    scores = [float(r["val_usdr"]) for r in rows]  # the default objective: higher is better
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    assert "| trial | status | val_usdr | val_loss |" in (run / "tuning" / "summary.md").read_text()
    assert "| trial | status | val_usdr |" in result.stdout
    best = json.loads((run / "best_config.json").read_text())
    # the preset's full length: its epoch cap, epochs sized by the data it will train on
    preset = TrainConfig(model="unet-tiny").resolve()
    assert best["model"] == "unet-tiny" and best["epochs"] == preset.epochs > 2 and best["steps_per_epoch"] is None
    winner = rows[0]
    assert best["learning_rate"] == pytest.approx(float(winner["learning_rate"]))
    assert best["model_kwargs"]["filters"][0] == int(winner["base_filters"])
    # each trial is a run directory of the shared loop
    trial_runs = sorted((run / "tuning").glob("trial_*/run"))
    assert len(trial_runs) == 2 and all((r / "metrics.jsonl").is_file() and (r / "config.json").is_file()
                                        for r in trial_runs)
    trained = run_cli("train.py", "--config", run / "best_config.json", "--musdb-root", root, "--run-dir",
                      tmp_path / "full", "--epochs", 1, "--steps-per-epoch", 2, "--crop-seconds", 2, "--quiet",
                      env_extra=env)
    assert trained.returncode == 0, trained.stderr
    full = json.loads((tmp_path / "full" / "config.json").read_text())
    assert full["learning_rate"] == best["learning_rate"] and full["model_kwargs"]["filters"] == best["model_kwargs"]["filters"]
    other = run_cli("train.py", "--model", "unet", "--tune", "--musdb-root", root, "--run-dir", run, *TINY, env_extra=env)
    assert_one_line_error(other, str(run / "tuning"), "unet-tiny")


@pytest.mark.slow  # `make test-slow`: kept out of the default run for its time
def test_best_models_load_their_trained_weights(data, tmp_path):
    _, shards = data
    result = _search("bsrnn-se-tiny", shards["bsrnn-se-tiny"], tmp_path / "run", objective="val_loss")
    tuner = result["tuner"]
    rows = _summary(tmp_path / "run")
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    losses = [float(r["val_loss"]) for r in rows]
    assert losses == sorted(losses)  # lower is better
    assert "loss_alpha" not in rows[0]  # losses of different weights cannot rank trials
    best_model = tuner.get_best_models(1)[0]
    best_hp = tuner.get_best_hyperparameters(1)[0]
    x = tf.random.stateless_normal([1, 20, 1025, 2], seed=[1, 2])
    untrained = tuner.hypermodel.build(best_hp)
    assert not np.allclose(best_model(x).numpy(), untrained(x).numpy())
    untrained.load_weights(tuner._get_checkpoint_fname(rows[0]["trial"]))
    np.testing.assert_allclose(best_model(x).numpy(), untrained(x).numpy(), atol=1e-6)
    # the winner's config trains the BSRNN-SE it describes
    best = json.loads((tmp_path / "run" / "best_config.json").read_text())
    assert best["model"] == "bsrnn-se-tiny" and best["model_kwargs"]["se_reduction"] == best_hp.values["se_reduction"]
    trained = run_cli("train.py", "--config", tmp_path / "run" / "best_config.json", "--shards", shards["bsrnn-se-tiny"],
                      "--run-dir", tmp_path / "full", "--epochs", 1, "--steps-per-epoch", 2, "--crop-seconds", 2, "--quiet")
    assert trained.returncode == 0, trained.stderr
    full = json.loads((tmp_path / "full" / "config.json").read_text())
    assert {k: full["model_kwargs"][k] for k in best_hp.values if k in full["model_kwargs"]} == \
        {k: v for k, v in best_hp.values.items() if k in full["model_kwargs"]}


@pytest.mark.slow  # `make test-slow`: kept out of the default run for its time
def test_an_interrupted_search_continues_with_the_remaining_trials(data, tmp_path, monkeypatch):
    _, shards = data
    run = tmp_path / "run"
    original = loop_module.Trainer.fit
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(self.run_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second trial is cut short
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop_module.Trainer, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _search("unet-tiny", shards["unet-tiny"], run, max_trials=3)
    monkeypatch.setattr(loop_module.Trainer, "fit", original)
    first = json.loads((calls[0] / "metrics.jsonl").read_text().splitlines()[-1])
    _search("unet-tiny", shards["unet-tiny"], run, max_trials=3)
    rows = _summary(run)
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows)  # the cut trial ran again, then one more
    done = {r["trial"]: float(r["val_loss"]) for r in rows}
    assert done[calls[0].parent.name.removeprefix("trial_")] == pytest.approx(first["valid_loss"])  # kept, not rerun
    # run once more with a bigger budget: only the new trial trains
    _search("unet-tiny", shards["unet-tiny"], run, max_trials=4)
    assert len(_summary(run)) == 4


def test_a_failed_trial_is_recorded_and_the_search_goes_on(data, tmp_path, monkeypatch):
    _, shards = data
    original = loop_module.Trainer.fit
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        if len(calls) == 2:
            raise TrainingError("25 training steps in a row had a non-finite loss")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop_module.Trainer, "fit", failing)
    _search("unet-tiny", shards["unet-tiny"], tmp_path / "run", max_trials=3)
    rows = _summary(tmp_path / "run")
    assert sorted(r["status"] for r in rows) == ["COMPLETED", "FAILED", "FAILED"]
    assert rows[0]["status"] == "COMPLETED"  # completed trials first
    assert (tmp_path / "run" / "best_config.json").is_file()


@pytest.mark.slow  # 35 s: `make test-slow`
def test_hyperband_continues_trials_from_their_weights(data, tmp_path):
    _, shards = data
    result = _search("unet-tiny", shards["unet-tiny"], tmp_path / "run", tuner="hyperband", trial_epochs=3)
    tuner = result["tuner"]
    continued = [t for t in tuner.oracle.trials.values() if "tuner/trial_id" in t.hyperparameters.values]
    assert continued, "hyperband promoted no trial"
    rows = _summary(tmp_path / "run")
    assert all(r["status"] == "COMPLETED" for r in rows) and len(rows) >= 3


@pytest.mark.slow  # 45 s of three processes: `make test-slow`
def test_distributed_search_with_a_chief_and_two_workers(data, tmp_path):
    root, shards = data
    port = _free_ports(1)[0]
    run = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), "--model", "unet-tiny", "--tune", "--tuner", "random",
               "--max-trials", "3", "--shards", str(shards["unet-tiny"]), "--run-dir", str(run), *TINY]
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port), "MSS_TF_DATA": str(tmp_path / "data")}
    processes = [subprocess.Popen(command, env={**base, "KERASTUNER_TUNER_ID": name}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for name in ("chief", "tuner0", "tuner1")]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    rows = _summary(run)
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows)
    assert "| trial | status | val_usdr |" in outputs[0][0]  # the chief reports
    assert (run / "best_config.json").is_file()
    # the workers trained the trials between them, none twice; the chief trained none
    trained = [{line.split(":")[0] for line in out.splitlines() if line.startswith("trial ") and "{" in line}
               for out, _ in outputs]
    assert not trained[0] and not trained[1] & trained[2] and len(trained[1] | trained[2]) == 3, trained
