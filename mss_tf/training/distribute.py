"""Where and in which precision a run trains: `tf.distribute` strategies and Keras dtype policies.

Strategies (`--strategy`):

- ``default``: one device (the first GPU if any, else the CPU).
- ``mirrored``: `tf.distribute.MirroredStrategy` over every visible GPU; without GPUs, over
  every logical CPU device (tests split the CPU into two with
  `tf.config.set_logical_device_configuration`).
- ``multiworker``: `tf.distribute.MultiWorkerMirroredStrategy`, configured from the
  ``TF_CONFIG`` environment variable as TensorFlow documents (every worker runs the same
  command with its own ``task.index``; worker 0 is the chief and writes the run directory).
- ``auto`` (default): ``mirrored`` when more than one GPU is visible, else ``default``.

Precision (`--precision`): ``float32``, ``mixed_float16`` (Keras mixed-precision policy plus a
`LossScaleOptimizer`) or ``mixed_bfloat16``. The policy applies to the layers built inside
:func:`precision_scope`; the models keep STFT/iSTFT, mask application and the loss in float32.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from mss_tf.config import STRATEGIES
from mss_tf.errors import ConfigError
from mss_tf.models.registry import PRECISIONS, precision_scope

__all__ = ["PRECISIONS", "STRATEGIES", "check_batch", "is_chief", "make_strategy", "precision_scope", "worker_id"]


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (see the module doc)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    if name == "multiworker":
        return _multi_worker()
    gpus = tf.config.list_logical_devices("GPU")  # initialises TensorFlow's devices
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    raise AssertionError(name)


def _multi_worker() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from TF_CONFIG (before TensorFlow initialises: no op may run first)."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ConfigError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's task; see README)")
    try:
        cluster = json.loads(config)
        cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({exc!r}): {config[:200]}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory (always, except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}-{resolver.task_id}"


def check_batch(strategy: tf.distribute.Strategy, batch_size: int) -> int:
    """The per-replica batch of a global batch; a batch the replicas cannot share is an error."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(
            f"--batch-size {batch_size} cannot be split over {replicas} replicas: use a multiple of {replicas}"
        )
    return batch_size // replicas
