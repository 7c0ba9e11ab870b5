"""Fine-tuning (mss_tf.training.finetune, train.py --init-from): which weights are copied, which
heads are new, the frozen body, and the run's record, from a run directory and from an export."""

import json
from pathlib import Path

import numpy as np
import pytest

from mss_tf.checkpoints import model_variables, restore_weights
from mss_tf.config import TrainConfig
from mss_tf.errors import ConfigError
from mss_tf.models.registry import build_model, example_mixture
from mss_tf.training.finetune import InitSource, configure, freeze_body, load_weights
from tests.test_cli import assert_one_line_error, run_main
from tests.test_sources import song


def built(preset, targets, **kwargs):
    config = TrainConfig(model=preset, targets=list(targets), model_kwargs=kwargs).resolve()
    spec = config.spectrogram
    model = build_model(preset, stft=spec, **config.model_kwargs)
    model(example_mixture(model, spec.n_frames(spec.hop * 8), spec.n_bins), training=False)
    return model, config


def source_of(preset, targets, **kwargs):
    model, config = built(preset, targets, **kwargs)
    weights = {k: v.numpy() for k, v in model_variables(model).items()}
    return InitSource(Path("src"), "run", preset, dict(config.model_kwargs), dict(config.stft), list(targets), weights)


def test_unet_body_and_the_channels_of_shared_targets_are_copied():
    source = source_of("unet-tiny", ["vocals", "drums", "bass", "other"])
    model, _ = built("unet-tiny", ["bass", "guitar"])
    fresh = model.head.kernel.numpy().copy()
    assert load_weights(model, ["bass", "guitar"], source) == {"reused": ["bass"], "new": ["guitar"]}
    weights = {k: v.numpy() for k, v in model_variables(model).items()}
    for key, value in source.weights.items():
        if not key.startswith("head/"):
            np.testing.assert_array_equal(weights[key], value, err_msg=key)
    np.testing.assert_array_equal(weights["head/kernel"][..., 0], source.weights["head/kernel"][..., 2])  # bass
    np.testing.assert_array_equal(weights["head/bias"][0], source.weights["head/bias"][2])
    # guitar, new: the mean of the source's channels (its mask the mean mask), not a random start
    np.testing.assert_allclose(weights["head/kernel"][..., 1], source.weights["head/kernel"].mean(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(weights["head/bias"][1], source.weights["head/bias"].mean(), rtol=1e-6)
    assert not np.allclose(weights["head/kernel"][..., 1], fresh[..., 1])


def test_bsrnn_heads_follow_their_targets_and_new_targets_get_new_heads():
    source = source_of("bsrnn-tiny", ["vocals", "bass"], band_scheme="v7")
    model, _ = built("bsrnn-tiny", ["bass", "piano", "vocals"], band_scheme="v7")
    assert load_weights(model, ["bass", "piano", "vocals"], source) == {"reused": ["bass", "vocals"], "new": ["piano"]}
    weights = {k: v.numpy() for k, v in model_variables(model).items()}
    np.testing.assert_array_equal(weights["mask_estimators/0/glu/kernel"], source.weights["mask_estimators/1/glu/kernel"])
    np.testing.assert_array_equal(weights["mask_estimators/2/glu/kernel"], source.weights["mask_estimators/0/glu/kernel"])
    np.testing.assert_array_equal(weights["band_split/dense/kernel"], source.weights["band_split/dense/kernel"])
    freeze_body(model)
    trainable = {k for k, v in model_variables(model).items() if any(v is t for t in model.trainable_variables)}
    assert trainable and all(k.startswith("mask_estimators/") for k in trainable)
    assert len(trainable) == len([k for k in weights if k.startswith("mask_estimators/")])


def test_a_different_body_is_refused_naming_the_weight():
    source = source_of("unet-tiny", ["vocals", "drums"])
    model, _ = built("unet-tiny", ["vocals"], filters=[4, 8, 32])
    with pytest.raises(ConfigError, match=r"^--init-from src: weight encoder/2/conv/kernel is .* there and .* here; "
                                          r"the body must be the same architecture"):
        load_weights(model, ["vocals"], source)


def test_configure_inherits_the_model_and_pins_bsrnn_bands():
    source = source_of("bsrnn-tiny", ["bass"], band_scheme="auto")  # "auto" for one bass model: the bass bands
    config = TrainConfig(model=source.model, targets=["bass", "drums"])  # "auto" here would be v7
    configure(config, source, "body", model_given=False)
    assert config.model_kwargs["band_scheme"] == "bass" and config.init_from["freeze"] == "body"
    config.resolve()
    model, _ = built("bsrnn-tiny", config.targets, **{k: v for k, v in config.model_kwargs.items() if k != "targets"})
    assert load_weights(model, config.targets, source)["new"] == ["drums"]
    with pytest.raises(ConfigError, match=r"a bsrnn-tiny \(BSRNN\) cannot start a unet-tiny \(UNet\)"):
        configure(TrainConfig(model="unet-tiny"), source, "none", model_given=True)


def stems_data(root):
    parts = {"lead": 440.0, "guitar": 330.0, "keys": 880.0, "kick": 60.0}
    for i in range(4):
        song(root, "train", f"t{i}", parts=parts, seconds=3.0)
    song(root, "test", "x0", parts=parts, seconds=3.0)
    return root


def test_train_init_from_a_run_and_its_export_with_a_frozen_body(tmp_path, monkeypatch, capsys):
    env = {"MSS_TF_DATA": str(tmp_path / "cache")}
    data = stems_data(tmp_path / "d")
    quick = ["--epochs", 1, "--steps-per-epoch", 2, "--crop-seconds", 2, "--quiet"]
    source = tmp_path / "src"
    trained = run_main("train.py", ["--model", "unet-tiny", "--data", data, "--targets", "lead", "guitar",
                                    "--run-dir", source, "--export", *quick], monkeypatch, capsys, env_extra=env)
    assert trained.returncode == 0, trained.stderr
    from mss_tf.training import finetune

    reads = []
    real_read = finetune.read_source
    monkeypatch.setattr(finetune, "read_source", lambda path: reads.append(path) or real_read(path))
    for start in (source, source / "export"):
        run = tmp_path / f"ft-{start.name}"
        tuned = run_main("train.py", ["--init-from", start, "--freeze", "body", "--data", data, "--targets", "keys",
                                      "lead", "--lr", "3e-3", "--run-dir", run, *quick], monkeypatch, capsys,
                         env_extra=env)
        assert tuned.returncode == 0, tuned.stderr
        assert "heads of lead reused, keys new; body frozen" in tuned.stdout
        assert reads.pop() == start and not reads  # the source read once, not again by the training
        config = json.loads((run / "config.json").read_text())
        assert config["model"] == "unet-tiny" and config["targets"] == ["keys", "lead"]
        assert config["learning_rate"] == 3e-3
        assert config["init_from"] == {"path": str(start.resolve()), "kind": "export" if start.name == "export" else "run",
                                       "model": "unet-tiny", "targets": ["lead", "guitar"], "freeze": "body",
                                       "reused": ["lead"], "new": ["keys"]}
        before, _ = built("unet-tiny", ["lead", "guitar"])
        restore_weights(before, source)
        after, _ = built("unet-tiny", ["keys", "lead"])
        restore_weights(after, run)
        old = {k: v.numpy() for k, v in model_variables(before).items()}
        new = {k: v.numpy() for k, v in model_variables(after).items()}
        for key in old:
            if not key.startswith("head/"):
                np.testing.assert_array_equal(new[key], old[key], err_msg=key)  # the frozen body did not move
        assert not np.array_equal(new["head/kernel"][..., 1], old["head/kernel"][..., 0])  # the lead head trained
    assert_one_line_error(run_main("train.py", ["--freeze", "body", "--model", "unet-tiny"], monkeypatch, capsys),
                          "--freeze needs --init-from")
    assert_one_line_error(run_main("train.py", ["--init-from", source, "--tune"], monkeypatch, capsys),
                          "--tune with --init-from")
    assert_one_line_error(run_main("train.py", ["--init-from", tmp_path / "d", "--data", data], monkeypatch, capsys),
                          "neither a train.py run directory")
    assert_one_line_error(run_main("train.py", ["--init-from", source, "--model", "bsrnn-tiny", "--data", data],
                                   monkeypatch, capsys), "cannot start a bsrnn-tiny")
