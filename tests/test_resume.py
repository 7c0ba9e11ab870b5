"""A training process killed with SIGKILL mid-epoch resumes where its last checkpoint left it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mss_tf.data.prepare import CropConfig, PrepareConfig, prepare_dataset
from mss_tf.models.registry import UNET_STFT
from tests.conftest import REPO

STEPS = 10  # per epoch; checkpoints every 3 steps: 3, 6, 9, 10 (epoch end), 12, ...


@pytest.fixture
def shards(tone_musdb, tmp_path):
    return prepare_dataset(tone_musdb, tmp_path / "shards", UNET_STFT, PrepareConfig(crops=CropConfig(seconds=2.0)),
                           progress=False)


def _command(run_dir, shards, *extra):
    # the U-Net has dropout (random-generator state) and batch norm (moving statistics): both must resume
    return [sys.executable, str(REPO / "train.py"), "--model", "unet-tiny", "--shards", str(shards),
            "--run-dir", str(run_dir), "--epochs", "2", "--steps-per-epoch", str(STEPS), "--batch-size", "2",
            "--checkpoint-every", "3", "--quiet", *extra]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _kill_after_first_checkpoint(command):
    """Start training, SIGKILL it as soon as a checkpoint exists; returns the step it stopped at."""
    run_dir = command[command.index("--run-dir") + 1]
    state = os.path.join(run_dir, "checkpoints", "checkpoint")
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not os.path.exists(state):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return int(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")).rsplit("-", 1)[1])


def _final_weights(run_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir / "checkpoints")))
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k.startswith("model/"))
    return reader, {k: reader.get_tensor(k) for k in keys}


def _resume(run_dir):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--resume", str(run_dir), "--quiet"],
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _step_losses(run_dir):
    """Training loss per global step from TensorBoard (the last value written for a step wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {}
    for events_file in sorted((run_dir / "logs").glob("events*"), key=lambda p: p.stat().st_mtime):
        events = EventAccumulator(str(events_file), size_guidance={"tensors": 0}).Reload()
        for event in events.Tensors("train/loss"):
            losses[event.step] = float(tf.make_ndarray(event.tensor_proto))
    return losses


def test_deterministic_resume_after_sigkill_ends_with_the_uninterrupted_weights(shards, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_command(whole, shards, "--deterministic", "--summary-every", "1"), env=_env(), check=True,
                   timeout=600, capture_output=True)
    killed = tmp_path / "killed"
    stopped = _kill_after_first_checkpoint(_command(killed, shards, "--deterministic", "--summary-every", "1"))
    assert stopped % STEPS, f"killed at an epoch boundary (step {stopped}): not the mid-epoch case"
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(killed / "checkpoints")))
    iterations = [k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/") and "iteration" in k]
    assert iterations, sorted(reader.get_variable_to_shape_map())[:20]
    assert reader.get_tensor(iterations[0]) == stopped  # one optimizer update per step so far
    out = _resume(killed)
    assert f"at step {stopped}" in out
    _, expected = _final_weights(whole)
    reader, resumed = _final_weights(killed)
    # 2 x STEPS steps in all, not STEPS more than the checkpoint: the count and Adam's state continued
    assert reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 2 * STEPS
    assert reader.get_tensor(iterations[0]) == 2 * STEPS
    assert expected.keys() == resumed.keys() and len(expected) > 20
    for key in expected:
        np.testing.assert_allclose(resumed[key], expected[key], atol=1e-6, rtol=0, err_msg=key)
    # two seeded deterministic runs (two processes) give identical losses at every step, before the
    # kill and after the resume
    expected_losses, resumed_losses = _step_losses(whole), _step_losses(killed)
    assert sorted(expected_losses) == list(range(1, 2 * STEPS + 1))
    assert resumed_losses == expected_losses
    # the dropout generators resumed too (they are not weights, and a replay would differ)
    rng = [k for k in reader.get_variable_to_shape_map() if k.startswith("model_rng/")]
    assert rng
    # and the epochs' records are those of the uninterrupted run
    records = lambda d: [l for l in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert len(records(killed)) == len(records(whole)) == 2  # each epoch recorded once
    for a, b in zip(records(whole), records(killed)):
        a, b = json.loads(a), json.loads(b)
        assert a["epoch"] == b["epoch"] and a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-5)
        # and so is the early-stopping state (its smoothed loss and count come from the checkpoint)
        assert a["smoothed_valid_loss"] == pytest.approx(b["smoothed_valid_loss"], rel=1e-5)
        assert a["stale_epochs"] == b["stale_epochs"]


