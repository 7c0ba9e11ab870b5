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
from mss_tf.checkpoints import restore_weights


def crossfade_window(length: int, fade: int) -> np.ndarray:
    """Weights for overlap-add of chunks: linear fades of `fade` samples at both ends."""
    window = np.ones(length, np.float32)
    if fade > 0:
        ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade
        window[:fade] = ramp
        window[-fade:] = ramp[::-1]
    return window


def chunk_starts(n_samples: int, chunk: int, step: int) -> list[int]:
    """Where the chunks of a track longer than one chunk start: every `step` samples, and the
    last chunk is the final `chunk` samples (it may overlap its neighbour by more than the
    others do), so no chunk reaches past the end of the track."""
    if n_samples <= chunk:
        return [0]
    starts = list(range(0, n_samples - chunk, step))
    return starts + [n_samples - chunk]


class Separator:
    """A trained model with its STFT config: waveform in, one waveform per target out.

    Long inputs are cut into `chunk_seconds` chunks overlapping by `overlap_seconds`; each chunk
    is separated (all channels as one batch of mono signals) and the chunks are overlap-added
    with linear crossfades normalised by the summed weights, so memory is bounded by the chunk,
    not the song. Every chunk of a track longer than one chunk is real signal: the last chunk is
    the final `chunk_seconds` of the track, overlapping its neighbour by `overlap_seconds` or more.

    A track no longer than one chunk is separated in one call at its own length. So the model
    never sees zero-padding as signal: BSRNN-SE's squeeze (a mean over the chunk) and BSRNN's
    time BLSTMs see only the track. (Models that must run padded batches, such as exports,
    pass BSRNN its `valid_frames` instead.) A track shorter than a chunk costs one more trace.

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
        chunk = self.chunk
        if n_samples == 0:
            return np.zeros((len(self.targets), n_channels, 0), np.float32)
        if n_samples <= chunk:  # one call at the track's own length: no padding
            est = self._separate_chunk(tf.constant(waves)).numpy()  # (C, S, samples)
            return np.ascontiguousarray(np.transpose(est, (1, 0, 2)))  # (S, C, samples)
        out = np.zeros((len(self.targets), n_channels, n_samples), np.float32)
        norm = np.zeros(n_samples, np.float32)
        fade = min(self.overlap, chunk // 2)
        starts = chunk_starts(n_samples, chunk, max(1, chunk - self.overlap))
        for i, start in enumerate(starts):
            est = self._separate_chunk(tf.constant(waves[:, start : start + chunk])).numpy()  # (C, S, chunk)
            window = crossfade_window(chunk, fade)
            if i == 0:
                window[:fade] = 1.0  # nothing to fade in from
            if i == len(starts) - 1:
                window[fade:] = 1.0  # nothing to fade out into
            out[:, :, start : start + chunk] += np.transpose(est, (1, 0, 2)) * window
            norm[start : start + chunk] += window
        return out / norm

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
