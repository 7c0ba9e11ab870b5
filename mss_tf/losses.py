"""Separation losses on complex spectrograms stored as (..., 2) real/imaginary tensors."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from mss_tf.errors import ConfigError

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _magnitude(spec: tf.Tensor) -> tf.Tensor:
    # eps keeps the gradient of sqrt finite at exactly silent bins
    return tf.sqrt(tf.reduce_sum(tf.square(spec), axis=-1) + 1e-10)


def mag_phase_l1(target: tf.Tensor, estimate: tf.Tensor, alpha: float = 0.5) -> tf.Tensor:
    """alpha * L1(|S_hat| - |S|) + (1 - alpha) * L1 on real and imaginary parts, in float32.

    Both arguments are (..., 2) real/imaginary tensors; each L1 term is a mean absolute error,
    the real/imaginary term averaged over both parts.
    """
    target = tf.cast(target, tf.float32)
    estimate = tf.cast(estimate, tf.float32)
    magnitude_term = tf.reduce_mean(tf.abs(_magnitude(estimate) - _magnitude(target)))
    complex_term = tf.reduce_mean(tf.abs(estimate - target))
    return alpha * magnitude_term + (1.0 - alpha) * complex_term


LOSSES: dict[str, Callable[..., tf.Tensor]] = {"mag_phase_l1": mag_phase_l1}


def get_loss(name: str, **kwargs: float) -> LossFn:
    """The loss called `name`, with its keyword arguments bound."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r} (choose from {', '.join(sorted(LOSSES))})")
    fn = LOSSES[name]
    return lambda target, estimate: fn(target, estimate, **kwargs)
