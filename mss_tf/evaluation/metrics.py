"""Separation metrics: utterance-level SDR (uSDR) and its aggregation over tracks."""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def usdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """uSDR in dB: 10 log10(sum s^2 / sum (s - s_hat)^2) over all samples and channels of a track.

    This is the "utterance SDR" of the Music Demixing Challenge and of recent papers (BSRNN
    reports it beside museval's cSDR); `EPS` keeps silent references and perfect estimates finite.
    """
    reference = np.asarray(reference, np.float64)
    estimate = np.asarray(estimate, np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ in shape")
    signal = np.sum(reference**2)
    error = np.sum((reference - estimate) ** 2)
    return float(10.0 * np.log10((signal + EPS) / (error + EPS)))


def mean_over_tracks(per_track: list[dict[str, float]], targets: list[str]) -> dict[str, float]:
    """Mean of each target's per-track value (tracks lacking a target are skipped)."""
    return {t: float(np.mean([row[t] for row in per_track if t in row])) for t in targets}
