"""TensorFlow's CPU thread pools for separation, set once before the runtime starts.

A BSRNN forward pass is almost all BLSTM recurrence; the two directions of a BLSTM are
independent ops that TensorFlow runs side by side on its inter-op pool. With one intra-op
thread per op for every two cores (`cores // 2`) and at least two inter-op threads, each
direction gets its own core instead of both fighting over all of them: the paper-size
forward pass takes 0.87x the time of TensorFlow's defaults on 2 cores (benchmarks/models.py,
"a BLSTM direction per core"). Convolutional models (the U-Net) are the other way round:
one big op at a time, fastest with every core in it, so `auto` leaves them alone.

`--threads` on separate.py and evaluate.py: `auto` (the above by model family), `default`
(TensorFlow's own choice), or a number of intra-op threads (with two inter-op threads).
"""

from __future__ import annotations

import os

import tensorflow as tf

from mss_tf.errors import ConfigError

RECURRENT_MODELS = {"BSRNN"}


def parse_threads(value: str) -> str | int:
    """argparse type of --threads: 'auto', 'default' or a positive integer."""
    if value in ("auto", "default"):
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"--threads {value!r}: use auto, default or a positive number of intra-op threads")
    return number


def intra_op_threads(threads: str | int, model_class: str | None) -> int | None:
    """The intra-op pool size `threads` asks for with this model class; None: TensorFlow's default."""
    if threads == "default":
        return None
    if threads == "auto":
        return max(1, (os.cpu_count() or 2) // 2) if model_class in RECURRENT_MODELS else None
    return int(threads)


def configure_threads(threads: str | int, model_class: str | None) -> int | None:
    """Set the pools for a separation with a model of class `model_class` ('BSRNN', 'UNet', ...).

    Must run before TensorFlow executes its first op; once the runtime is up its pools cannot
    change, and the call is a no-op (returns None) rather than an error, so library callers in
    a process that already ran TensorFlow keep working. Returns the intra-op size it set.
    """
    intra = intra_op_threads(threads, model_class)
    if intra is None:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, tf.config.threading.get_inter_op_parallelism_threads()))
    except RuntimeError:  # the runtime is already initialised
        return None
    return intra


def model_class_at(path: str | os.PathLike) -> str | None:
    """The model class ('BSRNN', 'UNet', ...) of a run directory or an exported SavedModel, read
    from its JSON (config.json, or the export's assets.extra/mss_tf.json) without running TensorFlow."""
    import json
    from pathlib import Path

    from mss_tf.models.registry import PRESETS

    folder = Path(path)
    for name in ("config.json", "assets.extra/mss_tf.json"):
        try:
            preset = json.loads((folder / name).read_text()).get("model")
        except (OSError, ValueError, AttributeError):
            continue
        return PRESETS[preset].model if preset in PRESETS else None
    return None
