"""The one STFT / inverse STFT of the suite, on tf.signal with a periodic Hann window."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from mss_tf.errors import ConfigError

PADDINGS = ("zero", "reflect")  # SpectrogramConfig.padding


@dataclasses.dataclass(frozen=True)
class SpectrogramConfig:
    """STFT settings that travel with every model, shard folder and export.

    Args:
        sample_rate: waveform sample rate in Hz.
        n_fft: FFT size and window length in samples.
        hop: hop size in samples.
        padding: how `stft` centre-pads the waveform's ends: "zero" (the suite's own models) or
            "reflect" (torch.stft's default, librosa's pad_mode="reflect": what models converted
            from PyTorch checkpoints were trained with). `istft` does not depend on it.
    """

    sample_rate: int = 44100
    n_fft: int = 2048
    hop: int = 512
    padding: str = "zero"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"SpectrogramConfig.{name} must be a positive integer, got {value!r}")
        if self.hop > self.n_fft // 2:
            raise ConfigError(f"SpectrogramConfig.hop={self.hop} must be at most n_fft/2={self.n_fft // 2}")
        if self.padding not in PADDINGS:
            raise ConfigError(f"SpectrogramConfig.padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Number of STFT frames `stft` returns for a waveform of `n_samples`."""
        return n_samples // self.hop + 1

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data; `padding` only when it is not "zero", so the manifests, run
        configs and exports written before the option existed still compare equal."""
        data = dataclasses.asdict(self)
        if self.padding == "zero":
            del data["padding"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpectrogramConfig":
        """Inverse of `to_dict`; a dict without "padding" (every one written before the option) is "zero"."""
        try:
            return cls(int(data["sample_rate"]), int(data["n_fft"]), int(data["hop"]), str(data.get("padding", "zero")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a SpectrogramConfig: {data!r}") from exc


def _padding(config: SpectrogramConfig, n_samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Centre padding (n_fft/2 on the left) and right padding so frames cover every sample."""
    left = config.n_fft // 2
    n_frames = n_samples // config.hop + 1
    total = (n_frames - 1) * config.hop + config.n_fft
    right = total - n_samples - left
    return tf.constant(left), right


def stft(waveform: tf.Tensor, config: SpectrogramConfig) -> tf.Tensor:
    """Complex STFT of `waveform` (..., samples) -> (..., frames, bins), complex64.

    Frames are centred (librosa's `center=True`): frame t covers samples
    [t*hop - n_fft/2, t*hop + n_fft/2), so `config.n_frames(samples)` frames are returned. The
    ends are padded with zeros, or with `config.padding == "reflect"` mirrored without repeating
    the edge sample (torch.stft(center=True) and librosa's pad_mode="reflect"; the waveform must
    then be longer than n_fft/2 samples, as torch requires).
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    n_samples = tf.shape(waveform)[-1]
    left, right = _padding(config, n_samples)
    rank = waveform.shape.rank
    if config.padding == "reflect":
        static = waveform.shape[-1]
        if static is not None and static <= config.n_fft // 2:
            raise ConfigError(f"reflect padding needs more than n_fft/2={config.n_fft // 2} samples, got {static}")
        # torch pads n_fft/2 on both ends; the frames reach at most `right` (<= n_fft/2) into the end's
        padded = tf.pad(waveform, [[0, 0]] * (rank - 1) + [[left, left]], mode="REFLECT")  # (..., samples + n_fft)
        padded = padded[..., : left + n_samples + right]  # (..., left + samples + right)
    else:
        padded = tf.pad(waveform, [[0, 0]] * (rank - 1) + [[left, right]])  # (..., left + samples + right)
    return tf.signal.stft(
        padded,
        frame_length=config.n_fft,
        frame_step=config.hop,
        fft_length=config.n_fft,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )


def istft(spectrogram: tf.Tensor, config: SpectrogramConfig, length: int | tf.Tensor) -> tf.Tensor:
    """Inverse of `stft`: (..., frames, bins) complex -> (..., length) float32.

    Overlap-adds the windowed frames and divides by the overlap-added squared window
    (the least-squares inverse), so any hop up to n_fft/2 reconstructs exactly.
    """
    spectrogram = tf.convert_to_tensor(spectrogram)
    if spectrogram.dtype != tf.complex64:
        spectrogram = tf.cast(spectrogram, tf.complex64)
    window = tf.signal.hann_window(config.n_fft, dtype=tf.float32)
    frames = tf.signal.irfft(spectrogram, fft_length=[config.n_fft]) * window
    signal = tf.signal.overlap_and_add(frames, config.hop)
    n_frames = tf.shape(spectrogram)[-2]
    window_sq = tf.tile(tf.square(window)[tf.newaxis, :], [n_frames, 1])
    norm = tf.signal.overlap_and_add(window_sq, config.hop)
    signal = signal / tf.maximum(norm, 1e-8)
    left = config.n_fft // 2
    return signal[..., left : left + length]

