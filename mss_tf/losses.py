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
measures. The seed's L1 (`mag_phase_l1`), the BSRNN paper's loss (`bsrnn_paper`) and the
BS-RoFormer paper's multi-resolution loss (`roformer_paper`) stay available by name; all three
are L1 losses: use them for single-target models (README "Losses" has the measurements).

Every loss takes (B, S, [C,] T, F, 2) references and estimates: a stereo model's channel axis
is one more axis the means run over (the waveforms of `bsrnn_paper` and `roformer_paper` are
inverted per channel).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

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


# The BS-RoFormer reference training code's multi-resolution STFT loss (ZFTurbo's
# Music-Source-Separation-Training, models/bs_roformer/bs_roformer.py, after lucidrains'
# BS-RoFormer): window sizes, hop and the weight of the summed STFT terms.
MULTI_STFT_WINDOWS = (4096, 2048, 1024, 512, 256)
MULTI_STFT_HOP = 147
MULTI_STFT_WEIGHT = 1.0


def _complex_abs(spec: tf.Tensor) -> tf.Tensor:
    """|z| of a complex tensor with a zero (not NaN) gradient where z is exactly 0 (torch's abs)."""
    square = tf.square(tf.math.real(spec)) + tf.square(tf.math.imag(spec))
    nonzero = square > 0.0
    return tf.where(nonzero, tf.sqrt(tf.where(nonzero, square, tf.ones_like(square))), tf.zeros_like(square))


def resolution_stft(waves: tf.Tensor, window: int, n_fft: int, hop: int = MULTI_STFT_HOP) -> tf.Tensor:
    """One resolution of the multi-resolution loss: (..., samples) -> (..., frames, n_fft // 2 + 1).

    As ``torch.stft(x, n_fft, hop, win_length=window, window=hann_window(window), center=True)``:
    frames of n_fft samples centred at t * hop (``samples // hop + 1`` of them), a periodic Hann
    window of `window` samples zero-padded on both sides to n_fft. The one difference: the signal
    is centre-padded with zeros, as the suite's `stft` pads, where torch pads by reflection
    (``pad_mode="reflect"``); only the frames within n_fft / 2 of either end differ.
    """
    if window > n_fft:
        raise ConfigError(f"multi-resolution STFT: window {window} is longer than n_fft {n_fft}")
    waves = tf.convert_to_tensor(waves, tf.float32)
    rank = waves.shape.rank
    padded = tf.pad(waves, [[0, 0]] * (rank - 1) + [[n_fft // 2, n_fft // 2]])  # (..., samples + n_fft)
    left = (n_fft - window) // 2
    hann = tf.signal.hann_window(window, periodic=True)
    centred = tf.pad(hann, [[left, n_fft - window - left]])  # (n_fft,)
    return tf.signal.stft(padded, frame_length=n_fft, frame_step=hop, fft_length=n_fft,
                          window_fn=lambda length, dtype: tf.cast(centred, dtype), pad_end=False)


def multi_resolution_stft_l1(
    reference: tf.Tensor, estimate: tf.Tensor, n_fft: int, windows: Sequence[int] = MULTI_STFT_WINDOWS,
    hop: int = MULTI_STFT_HOP,
) -> tf.Tensor:
    """Sum over `windows` of the mean |STFT(estimate) - STFT(reference)| (`resolution_stft` at
    n_fft max(window, n_fft)), the reference code's ``F.l1_loss`` of complex STFTs. Waveforms
    (..., samples) float32."""
    error = tf.cast(estimate, tf.float32) - tf.cast(reference, tf.float32)  # the STFT is linear
    total = tf.constant(0.0, tf.float32)
    for window in windows:
        spec = resolution_stft(error, int(window), max(int(window), int(n_fft)), hop)  # (..., frames, bins)
        total = total + tf.reduce_mean(_complex_abs(spec))
    return total


def roformer_paper(
    target: tf.Tensor, estimate: tf.Tensor, stft: SpectrogramConfig | None = None,
    windows: Sequence[int] = MULTI_STFT_WINDOWS, hop: int = MULTI_STFT_HOP, weight: float = MULTI_STFT_WEIGHT,
) -> tf.Tensor:
    """The BS-RoFormer paper's loss: waveform L1 + weight x multi-resolution complex STFT L1.

    As the reference training code computes it (bottom of ``BSRoformer.forward``):
    ``F.l1_loss(recon_audio, target)`` plus, for each window size in 4096, 2048, 1024, 512, 256,
    ``F.l1_loss`` of the complex STFTs of estimate and reference (n_fft max(window, the model's
    n_fft), hop 147, Hann window of the window size; the L1 of complex tensors is the mean of
    |complex difference|), weight 1. Both arguments are (..., frames, bins, 2) spectrograms: they
    are inverted with the suite's `istft` under `stft` (default: the BSRNN STFT) to (frames - 1)
    x hop samples, so a stereo (B, S, 2, ...) pair is compared channel by channel, as the
    reference flattens (batch, stems, channels). The STFT frames are centre-padded with zeros
    where torch reflects (`resolution_stft`).
    """
    stft = stft or SpectrogramConfig()
    target = tf.cast(target, tf.float32)
    estimate = tf.cast(estimate, tf.float32)
    if target.shape[-2] is not None and target.shape[-2] != stft.n_bins:
        raise ConfigError(f"roformer_paper: spectrogram has {target.shape[-2]} bins, STFT config {stft.to_dict()} has {stft.n_bins}")
    length = (tf.shape(target)[-3] - 1) * stft.hop
    waves = istft(tf.complex(tf.stack([target[..., 0], estimate[..., 0]]), tf.stack([target[..., 1], estimate[..., 1]])), stft, length)
    waveform_term = tf.reduce_mean(tf.abs(waves[1] - waves[0]))  # (..., samples)
    return waveform_term + float(weight) * multi_resolution_stft_l1(waves[0], waves[1], stft.n_fft, windows, hop)


LOSSES: dict[str, Callable[..., tf.Tensor]] = {
    "mag_phase_l2": mag_phase_l2, "mag_phase_l1": mag_phase_l1, "bsrnn_paper": bsrnn_paper,
    "roformer_paper": roformer_paper,
}


def get_loss(name: str, **kwargs: Any) -> LossFn:
    """The loss called `name`, with its keyword arguments bound.

    Keyword arguments the loss does not take are dropped, so a caller can pass the shared
    settings (`alpha`, `stft`) whatever the loss; `bsrnn_paper` and `roformer_paper` need
    `stft=SpectrogramConfig`.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r} (choose from {', '.join(sorted(LOSSES))})")
    fn = LOSSES[name]
    accepted = inspect.signature(fn).parameters
    bound = {key: value for key, value in kwargs.items() if key in accepted}
    return lambda target, estimate: fn(target, estimate, **bound)
