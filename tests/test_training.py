import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.config import TrainConfig
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.inference import Separator
from mss_tf.models.registry import build_model
from mss_tf.training.loop import restore_weights
from mss_tf.training.run import train_run


class PassThrough(keras.Model):
    """Returns the mixture scaled per target: lets separation arithmetic be checked exactly."""

    def __init__(self, scales):
        super().__init__()
        self.scales = scales
        self.targets = [f"t{i}" for i in range(len(scales))]

    def call(self, mixture, training=None):
        return tf.stack([s * mixture for s in self.scales], axis=1)


def _config(**kw):
    base = dict(model="unet-tiny", epochs=2, steps_per_epoch=3, batch_size=2, train_seconds=1.0, crop_seconds=2.0, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_train_run_writes_run_dir_and_resumes(tone_musdb, tmp_path, monkeypatch):
    monkeypatch.setenv("MSS_TF_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    result = train_run(_config(), run, tone_musdb, None, progress=False, echo=lambda s: None)
    assert len(result["history"]) == 2
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "unet-tiny" and saved["learning_rate"] == 1e-3 and saved["weight_decay"] == 1e-5
    assert saved["stft"] == {"sample_rate": 16000, "n_fft": 1024, "hop": 512}
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and all(np.isfinite(l["valid_loss"]) for l in lines)
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-2")
    assert (run / "train.log").read_text().count("epoch=") == 2
    # every weight of the trained model comes back from the checkpoint, identically each time
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "best")))
    separator = Separator.from_run(run)
    for i, variable in enumerate(separator.model.weights):
        key = f"model/w{i:05d}/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(key))
    mix = tf.random.stateless_normal([1, 20, 513, 2], seed=[0, 1])
    again = Separator.from_run(run)
    np.testing.assert_array_equal(separator.model(mix, training=False), again.model(mix, training=False))
    # resuming continues at epoch 3 with the restored optimizer state
    config = TrainConfig.load(run)
    config.epochs = 3
    result = train_run(config, run, tone_musdb, None, progress=False, echo=lambda s: None)
    assert [h["epoch"] for h in result["history"]] == [3]


def test_training_reduces_loss_on_a_fixed_batch():
    from mss_tf.training.loop import Trainer

    model = build_model("unet-tiny")
    mixture = tf.random.stateless_uniform([2, 16, 65, 2], seed=[1, 2], minval=-1, maxval=1)
    targets = tf.stack([0.8 * mixture, 0.1 * mixture, 0.05 * mixture, 0.05 * mixture], axis=1)
    trainer = Trainer(model, _config(learning_rate=1e-2).resolve(), "/tmp/unused-run")
    trainer._build(mixture)
    first = float(trainer._train_step(mixture, targets)[0])
    for _ in range(60):
        last = float(trainer._train_step(mixture, targets)[0])
    assert last < 0.5 * first


def test_restore_weights_refuses_another_models_checkpoint(tmp_path):
    model = build_model("unet-tiny")
    model(tf.zeros([1, 16, 513, 2]))
    tf.train.Checkpoint(model={"unrelated": tf.Variable(1.0)}).save(str(tmp_path / "checkpoints" / "ckpt"))
    with pytest.raises(CheckpointError, match="does not hold this model"):
        restore_weights(model, tmp_path, "latest")


def test_restore_weights_needs_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        restore_weights(build_model("unet-tiny"), tmp_path)
    with pytest.raises(CheckpointError, match="not a run directory"):
        TrainConfig.load(tmp_path)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="epochs"):
        _config(epochs=0).resolve()
    with pytest.raises(ConfigError, match="unknown model"):
        TrainConfig(model="nope").resolve()
    with pytest.raises(ConfigError, match="unknown loss"):
        _config(loss="l2").resolve()


@pytest.mark.parametrize("n_samples", [3000, 16000 * 3 + 123])
def test_chunked_separation_reconstructs_exactly(n_samples):
    stft = SpectrogramConfig(16000, 1024, 512)
    separator = Separator(PassThrough([1.0, 0.25]), stft, ["a", "b"], chunk_seconds=1.0, overlap_seconds=0.25)
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (2, n_samples)).astype(np.float32)
    out = separator.separate_model_rate(waves)
    assert out.shape == (2, 2, n_samples)
    assert np.max(np.abs(out[0] - waves)) < 1e-4
    assert np.max(np.abs(out[1] - 0.25 * waves)) < 1e-4


def test_separate_resamples_and_keeps_stereo_length():
    stft = SpectrogramConfig(16000, 1024, 512)
    separator = Separator(PassThrough([1.0]), stft, ["x"], chunk_seconds=2.0)
    t = np.arange(44100 * 3) / 44100
    audio = np.stack([np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 300 * t)], 1).astype(np.float32)
    out = separator.separate(audio, 44100)["x"]
    assert out.shape == audio.shape
    # band-limited to 8 kHz, a 300 Hz tone survives resampling round trips
    assert np.max(np.abs(out[1000:-1000] - audio[1000:-1000])) < 1e-2
