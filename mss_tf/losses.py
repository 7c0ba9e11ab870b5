"""Separation losses on complex spectrograms stored as (..., 2) real/imaginary tensors.

Every neural preset trains with `mag_phase_l2` by default: the seed's weighted magnitude +
phase loss with squared instead of absolute errors. Why (measured in issue 5, README "Losses"):
a loss's minimiser over what the network cannot yet tell apart is the median of the target's
share of each bin for an absolute error and its energy-weighted mean for a squared error. A
source is absent from most time-frequency bins, so its median share is zero: under L1 the masks
of sparse or quiet targets (vocals, bass) are driven to zero before the network learns where
they are, and a mask at zero passes back almost no gradient, so the target stays silent. Under
squared error a target the network cannot yet locate keeps its mean share, so every mask keeps
its gradient. Squared STFT error is also, by Parseval, the waveform error energy that uSDR
measures. The seed's L1 (`mag_phase_l1`) and the BSRNN paper's loss (`bsrnn_paper`) stay
available by name; use them for single-target models.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, istft
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


def mag_phase_l2(target: tf.Tensor, estimate: tf.Tensor, alpha: float = 0.5) -> tf.Tensor:
    """alpha * MSE(|S_hat|, |S|) + (1 - alpha) * MSE on real and imaginary parts, in float32.

    `mag_phase_l1` with squared errors (the default loss, see the module doc). Both arguments
    are (..., 2) real/imaginary tensors; each term is a mean over all values.
    """
    target = tf.cast(target, tf.float32)
    estimate = tf.cast(estimate, tf.float32)
    magnitude_term = tf.reduce_mean(tf.square(_magnitude(estimate) - _magnitude(target)))
    complex_term = tf.reduce_mean(tf.square(estimate - target))
    return alpha * magnitude_term + (1.0 - alpha) * complex_term


def bsrnn_paper(target: tf.Tensor, estimate: tf.Tensor, stft: SpectrogramConfig | None = None) -> tf.Tensor:
    """The BSRNN paper's loss: L1(Re) + L1(Im) of the spectrograms + L1 of the iSTFT waveforms.

    Each term is a mean absolute error (as the reference code's `F.l1_loss`), in float32.
    Both arguments are (..., frames, bins, 2); the waveforms are `istft` of length
    (frames - 1) * hop under `stft` (default: the BSRNN STFT, 44.1 kHz / 2048 / 512), whose
    n_fft must match the bins.
    """
    stft = stft or SpectrogramConfig()
    target = tf.cast(target, tf.float32)
    estimate = tf.cast(estimate, tf.float32)
    if target.shape[-2] is not None and target.shape[-2] != stft.n_bins:
        raise ConfigError(f"bsrnn_paper: spectrogram has {target.shape[-2]} bins, STFT config {stft.to_dict()} has {stft.n_bins}")
    error = tf.abs(estimate - target)  # (..., frames, bins, 2)
    spectral_term = tf.reduce_mean(error[..., 0]) + tf.reduce_mean(error[..., 1])
    length = (tf.shape(target)[-3] - 1) * stft.hop
    waves = istft(tf.complex(tf.stack([target[..., 0], estimate[..., 0]]), tf.stack([target[..., 1], estimate[..., 1]])), stft, length)
    waveform_term = tf.reduce_mean(tf.abs(waves[1] - waves[0]))  # (..., samples)
    return spectral_term + waveform_term


LOSSES: dict[str, Callable[..., tf.Tensor]] = {
    "mag_phase_l2": mag_phase_l2, "mag_phase_l1": mag_phase_l1, "bsrnn_paper": bsrnn_paper,
}


def get_loss(name: str, **kwargs: Any) -> LossFn:
    """The loss called `name`, with its keyword arguments bound.

    Keyword arguments the loss does not take are dropped, so a caller can pass the shared
    settings (`alpha`, `stft`) whatever the loss; `bsrnn_paper` needs `stft=SpectrogramConfig`.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r} (choose from {', '.join(sorted(LOSSES))})")
    fn = LOSSES[name]
    accepted = inspect.signature(fn).parameters
    bound = {key: value for key, value in kwargs.items() if key in accepted}
    return lambda target, estimate: fn(target, estimate, **bound)
