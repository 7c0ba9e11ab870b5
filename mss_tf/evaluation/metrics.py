"""Separation metrics: utterance-level SDR (uSDR) and its aggregation over tracks.

Pure numpy with no mss_tf imports, so the training loop's per-target health check
(`mss_tf.training.health`) scores validation crops with the same definition.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def usdr_from_energies(signal: np.ndarray | float, error: np.ndarray | float) -> np.ndarray:
    """uSDR in dB from the energy of the reference (sum s^2) and of the error (sum (s - s_hat)^2).

    `EPS` keeps silent references and perfect estimates finite; works elementwise on arrays.
    """
    return 10.0 * np.log10((np.asarray(signal, np.float64) + EPS) / (np.asarray(error, np.float64) + EPS))


def usdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """uSDR in dB: 10 log10(sum s^2 / sum (s - s_hat)^2) over all samples and channels of a track.

    This is the "utterance SDR" of the Music Demixing Challenge and of recent papers (BSRNN
    reports it beside museval's cSDR). A silent estimate scores exactly 0 dB; against a silent
    reference any sound scores 10 log10(EPS / sum s_hat^2) (finite, far below 0 dB) and silence 0 dB.
    """
    reference = np.asarray(reference, np.float64)
    estimate = np.asarray(estimate, np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ in shape")
    return float(usdr_from_energies(np.sum(reference**2), np.sum((reference - estimate) ** 2)))


def energy_ratio(reference: np.ndarray, estimate: np.ndarray) -> float:
    """sum s_hat^2 / sum s^2: 1 for an estimate as loud as its reference, 0 for silence."""
    return float(np.sum(np.asarray(estimate, np.float64) ** 2) / max(np.sum(np.asarray(reference, np.float64) ** 2), EPS))


def mean_over_tracks(per_track: list[dict[str, float]], targets: list[str]) -> dict[str, float]:
    """Mean of each target's per-track value (tracks lacking a target are skipped)."""
    return {t: float(np.mean([row[t] for row in per_track if t in row])) for t in targets}
