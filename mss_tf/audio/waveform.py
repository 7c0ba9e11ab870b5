"""Waveform helpers shared by file reading, data preparation and inference: length and channels."""

from __future__ import annotations

import numpy as np


def fit_length(audio: np.ndarray, n_samples: int, axis: int = 0) -> np.ndarray:
    """`audio` cut to `n_samples` along `axis` (time) from the start, or zero-padded at the end."""
    n = audio.shape[axis]
    if n >= n_samples:
        index = [slice(None)] * audio.ndim
        index[axis] = slice(0, n_samples)
        return audio[tuple(index)]
    pad = [(0, 0)] * audio.ndim
    pad[axis] = (0, n_samples - n)
    return np.pad(audio, pad)


def mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``(samples, channels)`` audio into ``(samples, 1)``."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        return samples[:, None]
    return samples.mean(axis=1, keepdims=True, dtype=np.float32)  # (samples, 1)
