"""SpecAugment frequency and time masks: the tensorflow-io adapter, with a pure-TF fallback.

``tfio.audio.freq_mask(input, param)`` / ``tfio.audio.time_mask(input, param)``
(tensorflow-io 0.37.1) take a 2-D ``(time, freq)`` float tensor and zero one
contiguous band of width ``w ~ U{0, ..., param - 1}`` (``param`` is an *exclusive*
maximum) starting at ``s ~ U{0, ..., size - w - 1}``. Their limits, and what this
module does about them:

- **They cannot be seeded.** Both draw with ``tf.random.uniform`` and no seed
  argument (stateful ops whose values depend on the global seed, op-creation order
  and, inside a parallel ``Dataset.map``, thread scheduling). So a call with a
  ``seed`` always runs the pure-TF implementation (stateless random ops,
  ``tf.random.stateless_uniform``), whichever backend is selected; the tfio ops
  are used only for unseeded calls.
- **No channel axis** ("TODO: Support audio with channel > 1" in their source): a
  ``(T, F, C)`` input broadcasts wrongly. Here the mask is drawn once on a
  ``(T, 1)`` / ``(1, F)`` tensor of ones and applied to every channel, which is
  what a complex STFT stored as real/imaginary channels needs (both parts of a
  bin are zeroed together).
- ``param`` larger than the axis, or ``<= 0``, makes their ``tf.random.uniform``
  fail (``maxval <= minval``). Here ``param <= 0`` is the identity and ``param``
  is clamped to the axis length.

The pure-TF fallback draws from exactly the same distributions (same exclusive
``param``, same start range), so the two paths give masks with the same
statistics; the tests check this.

The backend follows ``mss_tf.audio.io.audio_backend()`` (one choice per process,
``MSS_TF_AUDIO_BACKEND=fallback`` forces pure TF, ``reset_backend()`` re-reads it).
Inside ``Dataset.map`` the choice is made when the function is traced.
"""

from __future__ import annotations

from typing import Union

import tensorflow as tf

from mss_tf.audio import io as audio_io
from mss_tf.errors import ConfigError

__all__ = ["freq_mask", "time_mask", "mask_backend", "TFIO", "PURE_TF"]

TFIO = audio_io.TFIO  # "tensorflow-io"
PURE_TF = "tensorflow"

SeedLike = Union[None, int, tf.Tensor]


def mask_backend(seeded: bool = False) -> str:
    """The implementation a mask call uses: ``"tensorflow-io"`` or ``"tensorflow"`` (pure TF).

    Seeded calls always use pure TF, since the tfio ops cannot take a seed.
    """
    if seeded:
        return PURE_TF
    # audio_backend() probes tensorflow-io by decoding a tiny wav eagerly; when first called
    # while a Dataset.map / tf.function is being traced, that probe would build symbolic
    # tensors and wrongly conclude tfio is broken, so lift it out of any graph.
    with tf.init_scope():
        backend = audio_io.audio_backend()
    return TFIO if backend == audio_io.TFIO else PURE_TF


def freq_mask(spec: tf.Tensor, param: int, seed: SeedLike = None) -> tf.Tensor:
    """Zero one random band of contiguous frequency bins of a ``(T, F)`` or ``(T, F, C)`` tensor.

    Args:
        spec: spectrogram, time first; every channel gets the same mask.
        param: exclusive maximum mask width in bins (width ~ U{0..param-1}, as tfio);
            ``<= 0`` returns ``spec`` unchanged; clamped to F.
        seed: None (random; the tfio op when that backend is selected), a Python int, or a
            shape-[2] integer tensor (stateless seed, e.g. per element inside ``Dataset.map``).
    """
    return _apply_mask(spec, param, seed, axis=1)


def time_mask(spec: tf.Tensor, param: int, seed: SeedLike = None) -> tf.Tensor:
    """Zero one random run of contiguous frames of a ``(T, F)`` or ``(T, F, C)`` tensor.

    Same arguments as :func:`freq_mask`, along the time axis (0).
    """
    return _apply_mask(spec, param, seed, axis=0)


# --------------------------------------------------------------------------- internals


def _apply_mask(spec: tf.Tensor, param: int, seed: SeedLike, axis: int) -> tf.Tensor:
    spec = tf.convert_to_tensor(spec)
    if spec.shape.rank not in (2, 3):
        raise ConfigError(f"SpecAugment masks need a (T, F) or (T, F, C) tensor, got shape {spec.shape}")
    param = int(param)
    if param <= 0:
        return spec
    size = tf.shape(spec)[axis]
    if seed is None and mask_backend(seeded=False) == TFIO:
        keep = _keep_tfio(size, param, axis)
    else:
        keep = _keep_pure(size, param, _as_seed(seed))
    keep = tf.reshape(keep, [-1, 1] if axis == 0 else [1, -1])  # (T, 1) or (1, F)
    if spec.shape.rank == 3:
        keep = keep[..., None]
    return tf.where(keep, spec, tf.zeros([], spec.dtype))


def _keep_tfio(size: tf.Tensor, param: int, axis: int) -> tf.Tensor:
    """Boolean keep-vector of length `size`, drawn by the tfio op on a vector of ones."""
    import tensorflow_io as tfio

    param_t = tf.minimum(tf.constant(param, tf.int32), size)
    if axis == 0:
        ones = tf.ones(tf.stack([size, 1]), tf.float32)
        masked = tfio.audio.time_mask(ones, param=param_t)[:, 0]
    else:
        ones = tf.ones(tf.stack([1, size]), tf.float32)
        masked = tfio.audio.freq_mask(ones, param=param_t)[0]
    return masked > 0.5


def _keep_pure(size: tf.Tensor, param: int, seed: tf.Tensor | None) -> tf.Tensor:
    """Same distribution as tfio: width ~ U{0..param'-1}, start ~ U{0..size-width-1}, param' = min(param, size)."""
    param_t = tf.maximum(tf.minimum(tf.constant(param, tf.int32), size), 1)
    if seed is None:
        width = tf.random.uniform([], 0, param_t, dtype=tf.int32)
        start = tf.random.uniform([], 0, tf.maximum(size - width, 1), dtype=tf.int32)
    else:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        width = tf.random.stateless_uniform([], seeds[0], 0, param_t, dtype=tf.int32)
        start = tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(size - width, 1), dtype=tf.int32)
    index = tf.range(size)
    return tf.logical_not(tf.logical_and(index >= start, index < start + width))


def _as_seed(seed: SeedLike) -> tf.Tensor | None:
    if seed is None:
        return None
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return seed
