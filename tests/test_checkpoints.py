"""Checkpoint keys: weights keyed by attribute path, older positional checkpoints still load."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.checkpoints import (
    BEST, POSITIONS, checkpoint_history, checkpoint_layout, model_variables, restore_weights, write_untrained_run,
)
from mss_tf.config import TrainConfig
from mss_tf.errors import CheckpointError, DamagedCheckpointError
from mss_tf.models.registry import PRESETS, build_model


def _built(preset, seed=0):
    config = TrainConfig(model=preset).resolve()
    keras.utils.set_random_seed(seed)
    model = build_model(config.model, **config.model_kwargs)
    model(tf.zeros([1, 8, config.spectrogram.n_bins, 2]), training=False)
    return model


@pytest.mark.parametrize("preset", ["unet-tiny", "bsrnn-tiny", "bsrnn-se-tiny"])
def test_every_weight_has_a_unique_stable_path(preset):
    first, second = _built(preset), _built(preset)  # second model: Keras names its layers *_1, *_2
    keys = list(model_variables(first))
    assert len(keys) == len(first.weights) == len(set(keys))
    assert keys == list(model_variables(second))  # the same keys in another instance
    assert [v.path for v in first.weights] != [v.path for v in second.weights]  # Keras' own names differ
    if preset.startswith("bsrnn"):
        assert "band_sequence/0/time_rnn/norm/gamma" in keys and "band_sequence/0/band_rnn/norm/gamma" in keys


class _Pair(keras.Model):
    """Two Dense layers of equal shapes, created in the order given (as a module's two BLSTMs)."""

    def __init__(self, first_is_time):
        super().__init__()
        if first_is_time:
            self.time_rnn, self.band_rnn = keras.layers.Dense(4), keras.layers.Dense(4)
        else:
            self.band_rnn, self.time_rnn = keras.layers.Dense(4), keras.layers.Dense(4)

    def call(self, x):
        return self.band_rnn(self.time_rnn(x))


def test_a_reordered_model_restores_by_path_not_position(tmp_path):
    """Equal shapes in another order: a positional restore would swap the two layers silently."""
    keras.utils.set_random_seed(0)
    saved, reordered = _Pair(first_is_time=True), _Pair(first_is_time=False)
    for model in (saved, reordered):
        model(tf.zeros([1, 4]))
    assert [v.shape for v in saved.weights] == [v.shape for v in reordered.weights]
    tf.train.Checkpoint(model=model_variables(saved)).save(str(tmp_path / BEST / "ckpt"))
    restore_weights(reordered, tmp_path)
    x = tf.random.stateless_normal([3, 4], seed=[1, 2])
    np.testing.assert_allclose(reordered(x), saved(x), rtol=1e-6)
    np.testing.assert_array_equal(reordered.time_rnn.kernel.numpy(), saved.time_rnn.kernel.numpy())


def test_positional_checkpoints_of_older_runs_still_load(tmp_path):
    trained = _built("unet-tiny", seed=3)
    run = tmp_path / "old-run"
    latest = tf.train.Checkpoint(model=model_variables(trained, POSITIONS)).save(str(run / BEST / "ckpt"))
    assert checkpoint_layout(latest) == POSITIONS
    fresh = _built("unet-tiny", seed=4)
    assert not np.array_equal(fresh.weights[0].numpy(), trained.weights[0].numpy())
    restore_weights(fresh, run)
    for ours, theirs in zip(fresh.weights, trained.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_another_models_checkpoint_is_a_one_line_error(tmp_path):
    run = write_untrained_run(tmp_path / "unet", "unet-tiny")
    with pytest.raises(CheckpointError) as error:
        restore_weights(_built("bsrnn-tiny"), run)
    assert "\n" not in str(error.value) and "weights missing" in str(error.value)
    # same architecture, other sizes: the shape is named
    wider = build_model("unet-tiny", filters=[8, 16, 32])
    wider(tf.zeros([1, 8, 513, 2]))
    with pytest.raises(CheckpointError, match=r"another shape \(first: encoder/0/conv/kernel"):
        restore_weights(wider, run)


def test_a_run_without_checkpoints_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        restore_weights(build_model("unet-tiny"), tmp_path)
    with pytest.raises(CheckpointError, match="not a run directory"):
        TrainConfig.load(tmp_path)


def test_every_preset_has_paths():
    """Every tiny preset keys all its weights by path (the larger sizes are the same classes with
    more modules and units)."""
    for preset in sorted(PRESETS):
        if preset.endswith("-tiny"):
            model = _built(preset)
            assert len(model_variables(model)) == len(model.weights), preset


DAMAGE = ["truncated index", "empty index", "truncated data", "missing data", "corrupt data"]


def damage_checkpoint(folder, how, which=0):
    """Damage the files of a checkpoint of `folder` (0: the newest) as a crash or a bad copy would;
    returns the checkpoint's path (its prefix, as TensorFlow names it)."""
    path = checkpoint_history(folder)[which]
    index, (data,) = Path(path + ".index"), list(Path(path).parent.glob(Path(path).name + ".data-*"))
    target = index if "index" in how else data
    if how.startswith("truncated"):
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif how.startswith("empty"):
        target.write_bytes(b"")
    elif how.startswith("missing"):
        target.unlink()
    else:  # same size, other bytes: only the checksums tell
        target.write_bytes(bytes(b ^ 0x5A for b in target.read_bytes()))
    return path


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_checkpoint_is_a_one_line_error_naming_it(tmp_path, how):
    run = write_untrained_run(tmp_path / "run", "unet-tiny")
    path = damage_checkpoint(run / BEST, how)
    with pytest.raises(DamagedCheckpointError) as error:
        restore_weights(_built("unet-tiny"), run)
    message = str(error.value)
    assert message.startswith(f"{path}: damaged checkpoint") and "\n" not in message and len(message) < 400


def test_checkpoint_history_is_newest_first_with_or_without_the_state_file(tmp_path):
    variables = {"w": tf.Variable(1.0)}
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=variables), str(tmp_path), max_to_keep=3)
    for step in (1, 5, 12):
        manager.save(checkpoint_number=step)
    expected = [str(tmp_path / f"ckpt-{step}") for step in (12, 5, 1)]
    assert checkpoint_history(tmp_path) == expected
    (tmp_path / "checkpoint").unlink()  # lost: the index files still tell
    assert checkpoint_history(tmp_path) == expected
    assert checkpoint_history(tmp_path / "none") == []
