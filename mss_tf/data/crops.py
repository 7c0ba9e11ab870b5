"""Cropping: fixed-length offline crops of a track, and the online random sub-crop in frames.

Offline (shard preparation): every stem of a track is cut at the same offsets into crops of
`CropConfig.seconds` (default 6 s) with `CropConfig.overlap` (default 50 %) — `crop_offsets`,
`track_crops`.

Online (tf.data): each training example is cut again to `train_seconds` (default 3 s) of STFT
frames at a uniformly random start — `random_crop_frames`, with `seconds_to_frames` giving the
frame count the STFT produces for a duration.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from mss_tf.errors import ConfigError, DataError

if TYPE_CHECKING:  # spectrogram.py imports TensorFlow; keep this module light
    import tensorflow as tf

    from mss_tf.audio.spectrogram import SpectrogramConfig

TRAIN_SECONDS = 3.0


@dataclasses.dataclass(frozen=True)
class CropConfig:
    """Fixed-length crops of every stem of a track at the same offsets.

    Args:
        seconds: crop length.
        overlap: fraction of a crop shared with the next one (0.5: hop of seconds/2), in [0, 1).
    """

    seconds: float = 6.0
    overlap: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not (
            math.isfinite(self.seconds) and self.seconds > 0
        ):
            raise ConfigError(f"CropConfig.seconds must be a positive number, got {self.seconds!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) or not (
            0.0 <= self.overlap < 1.0
        ):
            raise ConfigError(f"CropConfig.overlap must be in [0, 1), got {self.overlap!r}")

    def crop_samples(self, sample_rate: int) -> int:
        """Crop length in samples at `sample_rate`."""
        return max(1, int(round(self.seconds * sample_rate)))

    def hop_samples(self, sample_rate: int) -> int:
        """Distance between crop starts in samples at `sample_rate`."""
        return max(1, int(round(self.crop_samples(sample_rate) * (1.0 - self.overlap))))

    def offsets(self, n_samples: int, sample_rate: int) -> list[int]:
        """Start samples of the crops of a track of `n_samples` at `sample_rate`."""
        return crop_offsets(n_samples, self.crop_samples(sample_rate), self.hop_samples(sample_rate))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def crop_offsets(n_samples: int, crop_samples: int, hop_samples: int) -> list[int]:
    """Start samples of the crops of a track; a track shorter than one crop gives none.

    Crops start at 0, hop, 2*hop, ... while they fit entirely; a tail shorter than a crop
    after the last start is not covered.
    """
    if crop_samples <= 0 or hop_samples <= 0:
        raise ConfigError(f"crop and hop lengths must be positive, got {crop_samples} and {hop_samples}")
    if n_samples < crop_samples:
        return []
    return list(range(0, n_samples - crop_samples + 1, hop_samples))


def track_crops(
    audio: Mapping[str, np.ndarray], sample_rate: int, config: CropConfig = CropConfig()
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield `(offset, {source: crop})` for every crop of a track, all sources cut alike.

    `audio` maps source names to arrays with time on the first axis ((samples, channels) or
    (samples,)), all of one length. Crops are views into the arrays (no copy). A track shorter
    than one crop yields nothing.

    Raises:
        DataError: no sources, or sources of different lengths.
    """
    if not audio:
        raise DataError("track_crops: no sources given")
    lengths = {name: np.shape(a)[0] for name, a in audio.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"track_crops: sources have different lengths {lengths}")
    n_samples = next(iter(lengths.values()))
    crop = config.crop_samples(sample_rate)
    for offset in config.offsets(n_samples, sample_rate):
        yield offset, {name: a[offset : offset + crop] for name, a in audio.items()}


def seconds_to_frames(seconds: float, stft_config: "SpectrogramConfig") -> int:
    """STFT frames `mss_tf.audio.spectrogram.stft` returns for `seconds` of audio."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"crop length must be a positive number of seconds, got {seconds!r}")
    return stft_config.n_frames(int(round(seconds * stft_config.sample_rate)))


def random_crop_frames(
    stems: "tf.Tensor", mixture: "tf.Tensor", n_frames: "int | tf.Tensor", seed: "int | tf.Tensor | None" = None,
    time_axis: int = 0,
) -> "tuple[tf.Tensor, tf.Tensor]":
    """Cut stems (S, T, ...) and mixture (T, ...) to the same `n_frames` window in time.

    With `time_axis` = 1, stereo examples: stems (S, C, T, ...) and mixture (C, T, ...), every
    channel cut at the same frames.

    The start is uniform in [0, T - n_frames]; an example of at most `n_frames` frames is
    returned whole. Pure TensorFlow ops, so it runs eagerly and inside `tf.data` maps.

    Args:
        stems: (S, T, ...) tensor, time on axis 1.
        mixture: (T, ...) tensor, time on axis 0 (T equal to the stems').
        n_frames: window length in frames (a Python int or scalar int tensor).
        seed: None or a Python int: a stateful `tf.random.uniform` with that op seed (the
            semantics of the pipeline's crop so far; deterministic per dataset given a seed);
            or a shape-[2] int tensor: `tf.random.stateless_uniform`, the same start for the
            same seed — in tf.data give each element its own, e.g.
            ``ds.enumerate().map(lambda i, ex: random_crop_frames(..., seed=tf.stack([k, i])))``.
        time_axis: the mixture's time axis (the stems' is the next one).
    """
    import tensorflow as tf

    total = tf.shape(mixture)[time_axis]
    length = tf.minimum(tf.cast(n_frames, tf.int32), total)
    maxval = total - length + 1
    if seed is None or isinstance(seed, (int, np.integer)):
        start = tf.random.uniform([], 0, maxval, dtype=tf.int32, seed=None if seed is None else int(seed))
    else:
        seed = tf.cast(tf.reshape(seed, [2]), tf.int64)
        start = tf.random.stateless_uniform([], seed, 0, maxval, dtype=tf.int32)
    window = slice(start, start + length)
    before = (slice(None),) * time_axis
    return stems[(slice(None), *before, window)], mixture[(*before, window)]
