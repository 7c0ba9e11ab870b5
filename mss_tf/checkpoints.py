"""Model weights in checkpoints: what training saves and inference restores.

Checkpoints track dictionaries of variables rather than the model object: Keras 3 layers held in
Python lists (encoder/decoder stacks, BSRNN modules) are invisible to `tf.train.Checkpoint`'s
object graph, which would silently save and restore only part of the model. Keras variable paths
are not stable keys either (auto-named layers get `_1`, `_2` suffixes per process); the order of
`model.weights` is fixed by the architecture, and a restore checks shapes.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from mss_tf.errors import CheckpointError

CHECKPOINTS = "checkpoints"  # the latest training states of a run (rolling)
BEST = "best"  # the training state with the best validation loss


def model_variables(model: keras.Model) -> dict[str, tf.Variable]:
    """Every weight of a built model, keyed by its position in `model.weights`."""
    return {f"w{i:05d}": v for i, v in enumerate(model.weights)}


def rng_variables(model: keras.Model) -> dict[str, tf.Variable]:
    """The model's random-generator states (dropout seeds): not weights, but an exact resume needs them."""
    weights = {id(v) for v in model.weights}
    return {f"r{i:05d}": v for i, v in enumerate(v for v in model.variables if id(v) not in weights)}


def restore_weights(model: keras.Model, run_dir: str | Path, which: str = "best") -> str:
    """Load trained weights from a run directory ("best", else the latest checkpoint).

    The model must be built; every one of its variables must be found in the checkpoint.
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / BEST, run_dir / CHECKPOINTS] if which == "best" else [run_dir / CHECKPOINTS]
    for folder in candidates:
        latest = tf.train.latest_checkpoint(str(folder))
        if latest:
            try:
                status = tf.train.Checkpoint(model=model_variables(model)).restore(latest)
                status.assert_existing_objects_matched()
            except (AssertionError, ValueError) as exc:
                raise CheckpointError(f"{latest}: checkpoint does not hold this model's weights ({str(exc)[:200]})") from None
            status.expect_partial()
            return latest
    raise CheckpointError(f"{run_dir}: run directory has no checkpoints")


def write_untrained_run(run_dir: str | Path, preset: str) -> Path:
    """A run directory holding `preset`'s resolved config and its untrained (initial) weights as
    the best checkpoint: what benchmarks and tests time or export without training a model."""
    from mss_tf.config import TrainConfig
    from mss_tf.models.registry import build_model

    run_dir = Path(run_dir)
    config = TrainConfig(model=preset).resolve()
    run_dir.mkdir(parents=True)
    config.save(run_dir)
    model = build_model(config.model, **config.model_kwargs)
    model(tf.zeros([1, 16, config.spectrogram.n_bins, 2]), training=False)
    tf.train.Checkpoint(model=model_variables(model)).save(str(run_dir / BEST / "ckpt"))
    return run_dir
