"""Per-target health of a separator during training: validation uSDR, energy ratio, dead targets.

An average loss hides a silenced stem: a model whose vocals mask collapsed to zero still lowers
its loss through the other targets, and a silent estimate scores exactly 0 dB uSDR. Every epoch
the training loop scores each target on the validation crops (waveforms by inverse STFT of the
estimate and the reference) and tracks the ratio of estimate energy to reference energy; a target
whose estimate stays below `DEAD_ENERGY_RATIO` of its reference for `DEAD_EPOCHS` epochs in a row
is reported by name.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, istft
from mss_tf.evaluation.metrics import usdr_from_energies

DEAD_ENERGY_RATIO = 0.01
DEAD_EPOCHS = 2


def waveform_energies(reference: tf.Tensor, estimate: tf.Tensor, stft: SpectrogramConfig) -> tf.Tensor:
    """Energies of reference, error and estimate waveforms per example and target.

    Args:
        reference, estimate: (B, S, ..., frames, bins, 2) real/imaginary spectrograms (any
            channel axes between S and frames are summed over).
        stft: the STFT both were computed with.

    Returns:
        (3, B, S) float32: sum s^2, sum (s - s_hat)^2 and sum s_hat^2 over the
        (frames - 1) * hop samples of the inverse STFT.
    """
    reference = tf.cast(reference, tf.float32)
    estimate = tf.cast(estimate, tf.float32)
    length = (tf.shape(reference)[-3] - 1) * stft.hop
    both = tf.stack([reference, estimate])  # (2, B, S, ..., T, F, 2)
    waves = istft(tf.complex(both[..., 0], both[..., 1]), stft, length)  # (2, B, S, ..., samples)
    ref, est = waves[0], waves[1]  # (B, S, ..., samples)
    axes = list(range(2, ref.shape.rank))  # channels (if any) and samples
    signal = tf.reduce_sum(tf.square(ref), axis=axes)  # (B, S)
    error = tf.reduce_sum(tf.square(ref - est), axis=axes)  # (B, S)
    energy = tf.reduce_sum(tf.square(est), axis=axes)  # (B, S)
    return tf.stack([signal, error, energy])  # (3, B, S)


class TargetHealth:
    """Accumulates `waveform_energies` over validation batches and summarises them per target.

    `valid_usdr[t]` is the mean over crops of each crop's uSDR (as evaluation averages over
    tracks); `energy_ratio[t]` is sum over crops of estimate energy / reference energy (1.0 for
    an estimate as loud as its reference, 0.0 for silence).
    """

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)
        self._rows: list[np.ndarray] = []

    def update(self, energies: tf.Tensor | np.ndarray) -> None:
        self._rows.append(np.asarray(energies, np.float64))  # (3, B, S)

    def summary(self) -> dict[str, dict[str, float]]:
        if not self._rows:
            return {}
        signal, error, energy = np.concatenate(self._rows, axis=1)  # (B_total, S) each
        per_crop = usdr_from_energies(signal, error)  # (B_total, S)
        ratio = energy.sum(axis=0) / np.maximum(signal.sum(axis=0), 1e-12)  # (S,)
        return {
            "valid_usdr": {t: float(per_crop[:, i].mean()) for i, t in enumerate(self.targets)},
            "energy_ratio": {t: float(ratio[i]) for i, t in enumerate(self.targets)},
        }


def dead_targets(
    low_epochs: dict[str, int], energy_ratio: dict[str, float], threshold: float = DEAD_ENERGY_RATIO
) -> dict[str, int]:
    """Consecutive epochs each target's energy ratio has been below `threshold`, this epoch included."""
    return {t: (low_epochs.get(t, 0) + 1 if ratio < threshold else 0) for t, ratio in energy_ratio.items()}


def dead_target_warning(target: str, epochs: int, ratio: float) -> str:
    return (f"warning: target {target!r} is dead: its estimate has {100 * ratio:.2f}% of the reference's energy "
            f"on the validation crops for {epochs} epochs (a silent estimate scores 0 dB)")
