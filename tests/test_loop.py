"""The shared training loop: strategies, precision, the step's arithmetic, guards, schedules, state."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.config import TrainConfig
from mss_tf.errors import TrainingError
from mss_tf.models.registry import build_model
from mss_tf.models.registry import precision_scope
from mss_tf.training.loop import Trainer
from tests.conftest import REPO

STFT = SpectrogramConfig(8000, 256, 128)


def _batches(count=8, batch=4, frames=12, seed=0, targets=1):
    """Random spectrogram batches (mixture (B, T, F, 2), targets (B, S, T, F, 2)), each target a share."""
    rng = np.random.default_rng(seed)
    mixture = (0.1 * rng.standard_normal((count * batch, frames, STFT.n_bins, 2))).astype(np.float32)
    shares = np.linspace(0.7, 0.2, targets, dtype=np.float32)
    stems = np.stack([s * mixture for s in shares], axis=1)
    return tf.data.Dataset.from_tensor_slices((mixture, stems)).batch(batch)


def _config(**kw):
    base = dict(model="bsrnn-tiny", epochs=1, steps_per_epoch=4, batch_size=4, targets=["vocals"], stft=STFT.to_dict(),
                seed=0, summary_every=1)
    base.update(kw)
    return TrainConfig(**base).resolve()


def _trainer(tmp_path, precision="float32", **kw):
    config = _config(precision=precision, **kw)
    keras.utils.set_random_seed(0)
    with precision_scope(precision):
        model = build_model("bsrnn-tiny", stft=config.spectrogram, **config.model_kwargs)
    trainer = Trainer(model, config, tmp_path)
    mixture, _ = next(iter(_batches()))
    trainer._build(mixture)
    return trainer


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def _run_script(body, timeout=300, env=None):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# float32 trains in every other test of the loop: its own case runs in make test-slow
@pytest.mark.parametrize("precision", [pytest.param("float32", marks=pytest.mark.slow), "mixed_float16", "mixed_bfloat16"])
def test_every_precision_policy_trains(tmp_path, precision):
    trainer = _trainer(tmp_path, precision)
    assert trainer.model.layers[0].compute_dtype == {"float32": "float32", "mixed_float16": "float16",
                                                     "mixed_bfloat16": "bfloat16"}[precision]
    before = _weights(trainer.model)
    for mixture, targets in _batches().take(3):
        loss, grad_norm, finite = trainer._train_step(mixture, targets)
        assert bool(finite) and np.isfinite(float(loss)) and float(grad_norm) > 0
    assert all(v.dtype == "float32" for v in trainer.model.trainable_variables)  # master weights stay float32
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(trainer.model)))


def test_float16_overflow_skips_the_step_and_halves_the_loss_scale(tmp_path):
    trainer = _trainer(tmp_path, "mixed_float16")
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    trainer.optimizer.dynamic_scale.assign(2.0**60)  # float16 gradients overflow at this scale
    before = _weights(trainer.model)
    mixture, targets = next(iter(_batches()))
    _, _, finite = trainer._train_step(mixture, targets)
    assert not bool(finite)
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0**59
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(trainer.model)))
    assert int(trainer.nonfinite_total.numpy()) == 1 and int(trainer.global_step.numpy()) == 1


def test_a_nonfinite_batch_is_skipped_and_a_streak_stops_the_run(tmp_path):
    trainer = _trainer(tmp_path)
    mixture, targets = next(iter(_batches()))
    before = _weights(trainer.model)
    bad = tf.tensor_scatter_nd_update(mixture, [[0, 0, 0, 0]], [np.nan])
    _, _, finite = trainer._train_step(bad, targets)
    assert not bool(finite) and all(np.array_equal(a, b) for a, b in zip(before, _weights(trainer.model)))
    trainer._train_step(mixture, targets)  # a good step resets the streak and updates
    assert int(trainer.nonfinite_streak.numpy()) == 0 and int(trainer.nonfinite_total.numpy()) == 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(trainer.model)))
    # a run whose every batch is NaN stops with a message naming the streak, saving nothing
    config = _config(epochs=2, steps_per_epoch=30, max_nonfinite=5, summary_every=50)
    nan_data = _batches().map(lambda m, t: (m * np.nan, t)).repeat()
    with pytest.raises(TrainingError, match="non-finite loss or gradient"):
        Trainer(build_model("bsrnn-tiny", stft=config.spectrogram, **config.model_kwargs), config, tmp_path / "nan").fit(
            nan_data, progress=False, log=lambda line: None)
    assert not (tmp_path / "nan" / "checkpoints").exists()


def _first_moments(trainer):
    """Adam's first-moment estimates after one step from zero: (1 - beta_1) x the applied gradient."""
    return [trainer.optimizer._momentums[i].numpy() / (1 - trainer.optimizer.beta_1)
            for i in range(len(trainer.model.trainable_variables))]


def test_clipping_and_weight_decay_shape_the_applied_gradient(tmp_path):
    mixture, targets = next(iter(_batches()))
    plain = _trainer(tmp_path / "a", clip_norm=0.0, weight_decay=0.0)
    _, norm, _ = plain._train_step(mixture, targets)
    raw = _first_moments(plain)
    np.testing.assert_allclose(np.sqrt(sum(np.sum(g**2) for g in raw)), float(norm), rtol=1e-4)
    # clipping: the applied gradient has the clip norm, same direction
    clipped = _trainer(tmp_path / "b", clip_norm=0.5 * float(norm), weight_decay=0.0)
    clipped._train_step(mixture, targets)
    applied = _first_moments(clipped)
    np.testing.assert_allclose(np.sqrt(sum(np.sum(g**2) for g in applied)), 0.5 * float(norm), rtol=1e-4)
    np.testing.assert_allclose(applied[0], 0.5 * raw[0], rtol=1e-3, atol=1e-9)
    # coupled L2: gradient + weight_decay * w (weights before the step)
    decayed = _trainer(tmp_path / "c", clip_norm=0.0, weight_decay=0.1)
    initial = _weights(decayed.model)
    decayed._train_step(mixture, targets)
    for g_plain, g_decay, w in zip(raw, _first_moments(decayed), initial):
        np.testing.assert_allclose(g_decay, g_plain + 0.1 * w, rtol=1e-3, atol=1e-7)


class Constant(keras.Model):
    """Scripted validation losses: the estimate is a fixed scale of the mixture chosen per epoch."""

    def __init__(self):
        super().__init__()
        self.unused = self.add_weight(name="unused", shape=(), initializer="zeros")  # trainable, no gradient
        self.scale = self.add_weight(name="scale", shape=(), initializer="zeros", trainable=False)

    def call(self, mixture, training=None):
        return tf.stack([self.scale * mixture], axis=1) + 0.0 * self.unused


def test_early_stopping_best_checkpoint_and_lr_schedule(tmp_path):
    # the raw rule (no smoothing, no minimum improvement) is the smoothed rule's special case
    config = _config(epochs=8, steps_per_epoch=2, early_stopping_patience=2, early_stopping_smoothing=0.0,
                     early_stopping_min_delta=0.0, lr_decay=0.5, lr_decay_epochs=2, learning_rate=1e-2)
    model = Constant()
    # validation estimate scale per epoch: target is 0.7 x mixture; distance |s - 0.7| -> loss
    scales = iter([0.0, 0.6, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1])
    seen = {}

    def log(line):
        if line.startswith("epoch="):
            epoch = int(line.split()[0].split("=")[1])
            seen[epoch] = float(model.scale.numpy())
            model.scale.assign(next(scales, 0.1))

    model.scale.assign(next(scales))
    history = Trainer(model, config, tmp_path).fit(_batches(targets=1).repeat(), _batches(count=2), progress=False, log=log)
    losses = [h["valid_loss"] for h in history]
    assert np.argmin(losses) == 1  # epoch 2 (scale 0.6) is the best
    # early stopping after 2 epochs without improvement: epochs 3 and 4, not 8
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["learning_rate"] for h in history] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3])
    # the best checkpoint is epoch 2's (global step 4), the latest is epoch 4's
    assert tf.train.latest_checkpoint(str(tmp_path / "best")).endswith("ckpt-4")
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-8")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "best")))
    assert reader.get_tensor("model/scale/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(0.6)
    # TensorBoard has the step scalars and the epoch media
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"tensors": 0}).Reload()
    tags = set(events.Tags()["tensors"])
    for tag in ("train/loss", "train/grad_norm", "train/learning_rate", "train/steps_per_second",
                "valid_usdr/vocals", "audio/mixture", "audio/vocals/estimate", "audio/vocals/reference"):
        assert tag in tags, tags
    assert any(tag.startswith("spectrogram/vocals") for tag in tags), tags


def _scripted_fit(run_dir, scales, epochs, **kw):
    """Fit a Constant model whose validation estimate is `scales[e]` x the mixture in epoch e + 1
    (the target is 0.7 x the mixture); returns the Trainer and this call's records."""
    config = _config(epochs=epochs, steps_per_epoch=1, early_stopping_patience=3, **kw)
    model = Constant()
    trainer = Trainer(model, config, run_dir)
    done = {"epochs": None}

    def log(line):
        if line.startswith("epoch="):
            epoch = int(line.split()[0].split("=")[1])
            model.scale.assign(scales[min(epoch, len(scales) - 1)])

    def start():
        done["epochs"] = int(trainer.epoch.numpy())
        model.scale.assign(scales[min(done["epochs"], len(scales) - 1)])

    history = trainer.fit(_batches(targets=1).repeat(), _batches(count=2), progress=False, log=log, on_start=start)
    return trainer, history


def test_the_smoothed_rule_stops_late_and_its_state_resumes(tmp_path):
    # a lucky low reading (epoch 3), then a loss that keeps falling slowly below it and flattens at
    # epoch 12: the raw rule (patience 3) stops at epoch 6; the smoothed one after the plateau began
    losses = [1.0, 0.5, 0.2, 0.4, 0.36, 0.32, 0.28, 0.25, 0.22, 0.19, 0.17] + [0.15] * 11
    scales = [0.7 * (1 - np.sqrt(loss)) for loss in losses]  # the loss is (0.7 - scale)^2 times epoch 1's
    rule = dict(early_stopping_smoothing=0.5, early_stopping_min_delta=0.02)
    _, raw = _scripted_fit(tmp_path / "raw", scales, 22, early_stopping_smoothing=0.0, early_stopping_min_delta=0.0)
    assert [h["epoch"] for h in raw][-1] == 6
    _, whole = _scripted_fit(tmp_path / "whole", scales, 22, **rule)
    stop = whole[-1]["epoch"]
    assert 12 + 3 <= stop < 22, [(h["epoch"], h["valid_loss"], h["smoothed_valid_loss"], h["stale_epochs"]) for h in whole]
    # the best checkpoint is the raw loss's best: an epoch of the plateau
    assert whole[-1]["best_valid_loss"] == pytest.approx(min(h["valid_loss"] for h in whole))
    assert min(h["valid_loss"] for h in whole) < 0.8 * whole[2]["valid_loss"]
    # stopped after 8 epochs, resumed: the same smoothed losses, counts and stopping epoch
    _scripted_fit(tmp_path / "resumed", scales, 8, **rule)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "resumed" / "checkpoints")))
    names = reader.get_variable_to_shape_map()
    for key in ("smoothed_loss", "smoothing_weight", "best_smoothed_loss", "stale_epochs", "best_loss"):
        assert f"{key}/.ATTRIBUTES/VARIABLE_VALUE" in names, sorted(names)
    trainer, rest = _scripted_fit(tmp_path / "resumed", scales, 22, **rule)
    assert [h["epoch"] for h in rest] == [h["epoch"] for h in whole[8:]]
    for a, b in zip(rest, whole[8:]):
        assert (a["smoothed_valid_loss"], a["stale_epochs"]) == pytest.approx((b["smoothed_valid_loss"], b["stale_epochs"]))
    # a run saved before the smoothed state existed resumes: its smoothing starts again from its best
    legacy = tmp_path / "legacy"
    old, _ = _scripted_fit(legacy, scales, 4, **rule)
    old_state = tf.train.Checkpoint(**old._state_objects(stopping_state=False))
    for path in (legacy / "checkpoints").glob("ckpt-*"):
        path.unlink()
    (legacy / "checkpoints" / "checkpoint").unlink()
    tf.train.CheckpointManager(old_state, str(legacy / "checkpoints"), 1).save(checkpoint_number=4)
    trainer, rest = _scripted_fit(legacy, scales, 6, **rule)
    assert [h["epoch"] for h in rest] == [5, 6] and trainer.restored_from.endswith("ckpt-4")
    assert rest[0]["smoothed_valid_loss"] == pytest.approx(rest[0]["valid_loss"])  # a new average from epoch 5


@pytest.mark.slow  # 35-65 s (BSRNN graphs traced per replica); tests/test_distribute.py splits batches over
# two CPU replicas and the two-worker test below trains under a tf.distribute strategy in the default run
def test_mirrored_strategy_over_two_cpus_follows_the_default_strategy(tmp_path):
    out = _run_script(f"""
        import json, keras, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from mss_tf.data.pipeline import distribute
        from mss_tf.models.registry import build_model
        from mss_tf.training.loop import Trainer
        from tests.test_loop import _batches, _config
        losses = {{}}
        for name, strategy in [("default", tf.distribute.get_strategy()),
                               ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
            config = _config(clip_norm=1e-4)  # clipping on: it must see the whole batch's norm
            keras.utils.set_random_seed(0)
            with strategy.scope():
                model = build_model("bsrnn-tiny", stft=config.spectrogram, **config.model_kwargs)
            trainer = Trainer(model, config, {str(tmp_path)!r} + name, strategy)
            trainer._build(next(iter(_batches()))[0])
            run = [trainer._train_step(m, t) for m, t in distribute(_batches(count=6), strategy)]
            losses[name] = [[float(l), float(n)] for l, n, _ in run]
            losses[name + "_weights"] = float(sum(np.sum(np.abs(v.numpy())) for v in model.trainable_variables))
            assert strategy.num_replicas_in_sync == (2 if name == "mirrored" else 1)
        # the whole loop (validation, checkpoints, summaries) under the mirrored strategy
        with strategy.scope():
            fresh = build_model("bsrnn-tiny", stft=config.spectrogram, **config.model_kwargs)
        history = Trainer(fresh, config, {str(tmp_path)!r} + name + "-fit", strategy).fit(
            _batches().repeat(), _batches(count=2), progress=False, log=lambda line: None)
        assert history[-1]["step"] == 4 and set(history[-1]["valid_usdr"]) == {{"vocals"}}
        print(json.dumps(losses))
    """)
    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(result["mirrored"], result["default"], rtol=2e-5)
    np.testing.assert_allclose(result["mirrored_weights"], result["default_weights"], rtol=1e-5)
    assert len(result["default"]) == 6


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # 30 s of two worker processes: make test-slow
def test_two_workers_on_localhost_train_together_to_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = f"""
        import json, os, keras, numpy as np, tensorflow as tf
        from mss_tf.training.distribute import make_strategy
        strategy = make_strategy("multiworker")
        from mss_tf.models.registry import build_model
        from mss_tf.training.loop import Trainer
        from tests.test_loop import _batches, _config
        config = _config(strategy="multiworker", epochs=2, steps_per_epoch=3)
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_model("bsrnn-tiny", stft=config.spectrogram, **config.model_kwargs)
        history = Trainer(model, config, {str(tmp_path / "run")!r}, strategy).fit(
            _batches(count=6, seed=int(os.environ["SEED"])).repeat(), progress=False, log=print)
        np.savez({str(tmp_path)!r} + "/w" + os.environ["INDEX"] + ".npz", *[v.numpy() for v in model.trainable_variables])
        print("RESULT", json.dumps([h["train_loss"] for h in history]))
    """
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "INDEX": str(index), "SEED": str(index),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    a, b = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(a.files) > 10
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    # the workers saw different data (seeds 0 and 1) yet agree: gradients were averaged across them
    losses = [json.loads(out.split("RESULT")[1]) for out, _ in outputs]
    assert losses[0] == losses[1] and all(np.isfinite(losses[0]))
    # only the chief (worker 0) wrote the run directory
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 2
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-6")


def test_a_stereo_model_trains_on_both_channels_with_the_roformer_loss(tmp_path):
    """(B, 2, T, F, 2) batches in, (B, S, 2, T, F, 2) estimates out, and repeated steps on one
    batch lower the BS-RoFormer paper's loss (the end-to-end stereo run trains with the default)."""
    config = _config(loss="roformer_paper", learning_rate=1e-2, model_kwargs={"channels": 2}, targets=["vocals", "bass"])
    assert config.channels == 2
    keras.utils.set_random_seed(0)
    model = build_model("bsrnn-tiny", stft=config.spectrogram, **config.model_kwargs)
    trainer = Trainer(model, config, tmp_path)
    rng = np.random.default_rng(1)
    mixture = tf.constant((0.1 * rng.standard_normal((2, 2, 12, STFT.n_bins, 2))).astype(np.float32))
    targets = tf.stack([0.7 * mixture, tf.reverse(0.3 * mixture, axis=[1])], axis=1)  # bass: channels swapped
    losses = [float(trainer.train_step(mixture, targets)[0]) for _ in range(12)]
    assert model(mixture).shape == (2, 2, 2, 12, STFT.n_bins, 2)
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
