"""The one separation path: chunked overlap-add separation of audio of any length.

evaluate.py, separate.py and exports all go through `Separator.separate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf.audio import io as audio_io
from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.config import TrainConfig
from mss_tf.models.registry import build_model, is_neural
from mss_tf.training.loop import restore_weights


def crossfade_window(length: int, fade: int) -> np.ndarray:
    """Weights for overlap-add of chunks: linear fades of `fade` samples at both ends."""
    window = np.ones(length, np.float32)
    if fade > 0:
        ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade
        window[:fade] = ramp
        window[-fade:] = ramp[::-1]
    return window


class Separator:
    """A trained model with its STFT config: waveform in, one waveform per target out.

    Long inputs are cut into `chunk_seconds` chunks overlapping by `overlap_seconds`; each chunk
    is separated (all channels as one batch of mono signals) and the chunks are overlap-added
    with linear crossfades, so memory is bounded by the chunk, not the song.

    Args:
        model: a separator mapping (B, T, F, 2) mixture STFTs to (B, n_targets, T, F, 2).
        stft_config: the STFT the model was trained with.
        targets: names of the model's outputs in order.
        chunk_seconds: chunk length in seconds at the model's sample rate.
        overlap_seconds: overlap between consecutive chunks.
    """

    def __init__(
        self,
        model: keras.Model,
        stft_config: SpectrogramConfig,
        targets: Sequence[str],
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.stft_config = stft_config
        self.targets = list(targets)
        self.chunk = int(round(chunk_seconds * stft_config.sample_rate))
        self.overlap = int(round(overlap_seconds * stft_config.sample_rate))
        self.name = name or model.name
        self._separate_chunk = tf.function(self._separate_chunk_fn, reduce_retracing=True)

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best", **kwargs: float) -> "Separator":
        """Rebuild the model of a run directory and load its best (or latest) checkpoint."""
        config = TrainConfig.load(run_dir)
        spec = config.spectrogram
        if not is_neural(config.model):
            from mss_tf.models.nmf import NMFSeparator

            model = NMFSeparator.load(run_dir)
        else:
            model = build_model(config.model, **config.model_kwargs)
            model(tf.zeros([1, spec.n_frames(spec.hop * 8), spec.n_bins, 2]), training=False)
            restore_weights(model, run_dir, which)
        return cls(model, spec, config.targets or [], name=config.model, **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.stft_config.sample_rate

    def _separate_chunk_fn(self, waves: tf.Tensor) -> tf.Tensor:
        spec = stft(waves, self.stft_config)  # (B, T, F) complex
        mixture = tf.stack([tf.math.real(spec), tf.math.imag(spec)], axis=-1)  # (B, T, F, 2)
        estimate = tf.cast(self.model(mixture, training=False), tf.float32)  # (B, S, T, F, 2)
        estimate = tf.complex(estimate[..., 0], estimate[..., 1])  # (B, S, T, F)
        return istft(estimate, self.stft_config, tf.shape(waves)[-1])  # (B, S, samples)

    def separate_model_rate(self, waves: np.ndarray) -> np.ndarray:
        """(channels, samples) at the model rate -> (targets, channels, samples)."""
        waves = np.asarray(waves, np.float32)
        n_channels, n_samples = waves.shape
        out = np.zeros((len(self.targets), n_channels, n_samples), np.float32)
        norm = np.zeros(n_samples, np.float32)
        chunk = min(self.chunk, max(n_samples, 1))
        step = max(1, chunk - self.overlap)
        fade = min(self.overlap, chunk // 2)
        start = 0
        while True:
            piece = waves[:, start : start + chunk]
            valid = piece.shape[1]
            if valid < chunk:  # keep one traced shape: pad the last chunk, then drop the padding
                piece = np.pad(piece, [(0, 0), (0, chunk - valid)])
            est = self._separate_chunk(tf.constant(piece)).numpy()  # (C, S, chunk)
            window = crossfade_window(chunk, fade)[:valid]
            if start == 0:
                window[:fade] = 1.0  # nothing to fade in from
            if start + chunk >= n_samples:
                window[fade:] = 1.0  # nothing to fade out into
            out[:, :, start : start + valid] += np.transpose(est[:, :, :valid], (1, 0, 2)) * window
            norm[start : start + valid] += window
            if start + chunk >= n_samples:
                break
            start += step
        return out / np.maximum(norm, 1e-8)

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """(samples, channels) audio at any rate -> {target: (samples, channels)} at that rate."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        model_audio = audio_io.resample(audio, sample_rate, self.sample_rate)
        estimates = self.separate_model_rate(model_audio.T)  # (S, C, samples)
        result = {}
        for name, estimate in zip(self.targets, estimates):
            back = audio_io.resample(estimate.T, self.sample_rate, sample_rate)
            result[name] = _fit_length(back, audio.shape[0])
        return result


def _fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    if audio.shape[0] >= n_samples:
        return audio[:n_samples]
    return np.pad(audio, [(0, n_samples - audio.shape[0]), (0, 0)])
