"""Offline waveform augmentation of one crop with pedalboard (run while preparing shards).

One crop is a dict ``stem name -> float32 (samples,) or (samples, channels)`` at one sample
rate. :func:`augment_crop` applies, each with its own probability:

- **pitch shift** (semitones, default uniform in [-2, +2]) and **time stretch** (speed factor,
  default uniform in [0.8, 1.2], pitch preserved), drawn **once per crop** and applied with the
  same parameters to every stem in one Rubber Band pass (``pedalboard.time_stretch`` with
  ``pitch_shift_in_semitones``), so the stems stay aligned with each other;
- **compression** (``pedalboard.Compressor``) and **reverb** (``pedalboard.Reverb``), each
  drawn **independently per stem** (whether it is applied, and its parameters);

then recomputes the mixture as the sum of the augmented stems (any ``"mixture"`` passed in is
ignored).

Layout: pedalboard wants ``(channels, samples)`` float32 and guesses the layout of an
ambiguous 2-D array (and returns ``(1, samples)`` from ``time_stretch`` on 1-D input), so
every array is transposed to ``(channels, samples)`` explicitly here and transposed back; the
output has the input's layout and dtype float32.

Length: ``stretch_factor`` is pedalboard's *speed* factor (> 1 is faster, i.e. shorter:
``samples / factor`` come out). Every output is cut to ``length`` samples (default: the input
length) from the start, and zero-padded at the end when shorter, so crops stay fixed length.
To avoid that zero tail on a speed-up, give a longer source excerpt (at least
:func:`source_length` ``(length, config)`` samples, e.g. the crop plus the audio after it, as
shard preparation does) and pass ``length=`` the crop length; ``params["padded"]`` records any
padding that happened.

Randomness: every draw comes from the ``numpy.random.Generator`` passed in, always in the same
order (each probability's coin and each value are drawn whether or not the step is applied, so
changing one probability does not change the other draws). Per-stem draws come from a child
generator keyed by the stem name, so a stem's draws do not depend on which other stems exist or
on dict order. :func:`augmented_copies` derives each copy's generator from
``(seed, crop_id, copy)``: same inputs, identical output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Mapping

import numpy as np

from mss_tf.audio.waveform import fit_length
from mss_tf.errors import ConfigError, DataError
from mss_tf.utils import dataclass_from_dict

__all__ = ["AugmentConfig", "augment_crop", "augmented_copies", "source_length", "stable_key"]

MIXTURE = "mixture"
Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and parameter ranges (uniform, inclusive) of the offline augmentations.

    Args:
        pitch_p: probability of a pitch shift of the whole crop.
        pitch_semitones: range of the shift in semitones.
        stretch_p: probability of a time stretch of the whole crop (pitch preserved).
        stretch_factor: range of the speed factor (> 1 faster and shorter, pedalboard's meaning).
        compressor_p: per-stem probability of dynamic range compression.
        compressor_threshold_db, compressor_ratio, compressor_attack_ms, compressor_release_ms:
            ranges of the ``pedalboard.Compressor`` parameters.
        reverb_p: per-stem probability of reverb.
        reverb_room_size, reverb_damping, reverb_wet_level: ranges of the ``pedalboard.Reverb``
            parameters (each in [0, 1]).
        reverb_dry_level: fixed dry level; 0.5 is unity gain (JUCE's freeverb scales dry by 2).
        high_quality: Rubber Band's high-quality mode (slower).
    """

    pitch_p: float = 0.3
    pitch_semitones: Range = (-2.0, 2.0)
    stretch_p: float = 0.3
    stretch_factor: Range = (0.8, 1.2)
    compressor_p: float = 0.2
    compressor_threshold_db: Range = (-30.0, -10.0)
    compressor_ratio: Range = (1.5, 6.0)
    compressor_attack_ms: Range = (1.0, 20.0)
    compressor_release_ms: Range = (50.0, 300.0)
    reverb_p: float = 0.2
    reverb_room_size: Range = (0.1, 0.7)
    reverb_damping: Range = (0.1, 0.9)
    reverb_wet_level: Range = (0.05, 0.3)
    reverb_dry_level: float = 0.5
    high_quality: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_p"):
                if not 0.0 <= float(value) <= 1.0:
                    raise ConfigError(f"augmentation {field.name} must be in [0, 1], got {value}")
            elif field.type == "Range" or isinstance(value, (tuple, list)):
                if len(value) != 2 or not all(math.isfinite(float(v)) for v in value) or value[0] > value[1]:
                    raise ConfigError(f"augmentation {field.name} must be a range (low, high), got {value!r}")
                object.__setattr__(self, field.name, (float(value[0]), float(value[1])))
        if self.stretch_factor[0] <= 0:
            raise ConfigError(f"augmentation stretch_factor must be positive, got {self.stretch_factor}")
        if self.compressor_ratio[0] < 1:
            raise ConfigError(f"augmentation compressor_ratio must be >= 1, got {self.compressor_ratio}")
        if self.compressor_attack_ms[0] <= 0 or self.compressor_release_ms[0] <= 0:
            raise ConfigError("augmentation compressor attack and release times must be positive")
        for name in ("reverb_room_size", "reverb_damping", "reverb_wet_level"):
            low, high = getattr(self, name)
            if low < 0 or high > 1:
                raise ConfigError(f"augmentation {name} must lie in [0, 1], got {(low, high)}")
        if not 0.0 <= self.reverb_dry_level <= 1.0:
            raise ConfigError(f"augmentation reverb_dry_level must be in [0, 1], got {self.reverb_dry_level}")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """Every probability 0: :func:`augment_crop` returns the stems unchanged."""
        return cls(pitch_p=0.0, stretch_p=0.0, compressor_p=0.0, reverb_p=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (ranges as lists), for the shard manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AugmentConfig":
        return dataclass_from_dict(cls, data, "augmentation")


def source_length(length: int, config: AugmentConfig) -> int:
    """Source samples needed so that any time stretch of `config` yields `length` samples unpadded."""
    if config.stretch_p <= 0:
        return int(length)
    return int(math.ceil(length * max(1.0, config.stretch_factor[1]))) + 1024


def stable_key(value: Any) -> int:
    """A process-independent 63-bit integer for a crop id or stem name (not Python's salted hash)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    digest = hashlib.sha256(str(value).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def augment_crop(
    stems: Mapping[str, np.ndarray],
    sample_rate: int,
    config: AugmentConfig,
    rng: np.random.Generator,
    length: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Augment one crop; returns ``(stems incl. "mixture", params)``.

    Args:
        stems: stem name -> float (samples,) or (samples, channels), all the same shape;
            a ``"mixture"`` entry is ignored (recomputed).
        sample_rate: in Hz.
        config: probabilities and ranges.
        rng: source of every random draw.
        length: output samples (default: the input length); see the module doc.

    Returns:
        ``stems``: same names in the same order plus ``"mixture"`` (the float32 sum of the
        stems), float32, input layout, ``length`` samples. ``params``: JSON-serializable record
        of what was applied: ``{"sample_rate", "input_length", "length", "padded",
        "pitch_shift": {"semitones"} | None, "time_stretch": {"factor"} | None,
        "stems": {name: {"compressor": {...} | None, "reverb": {...} | None}}}``.

    Raises:
        DataError: no stems, mismatched shapes, non-finite samples (in or out).
    """
    import pedalboard

    waves = _check_stems(stems)
    first = next(iter(waves.values()))
    input_length = first.shape[0]
    length = input_length if length is None else int(length)
    if length <= 0:
        raise ConfigError(f"augmentation output length must be positive, got {length}")
    sample_rate = int(sample_rate)

    # Crop-level draws, in a fixed order.
    pitch_coin, pitch_value = rng.random(), rng.uniform(*config.pitch_semitones)
    stretch_coin, stretch_value = rng.random(), rng.uniform(*config.stretch_factor)
    stem_entropy = int(rng.integers(0, 2**63 - 1))
    pitch = float(pitch_value) if pitch_coin < config.pitch_p else None
    stretch = float(stretch_value) if stretch_coin < config.stretch_p else None

    params: dict[str, Any] = {
        "sample_rate": sample_rate,
        "input_length": int(input_length),
        "length": length,
        "padded": 0,
        "pitch_shift": None if pitch is None else {"semitones": pitch},
        "time_stretch": None if stretch is None else {"factor": stretch},
        "stems": {},
    }

    out: dict[str, np.ndarray] = {}
    for name, wave in waves.items():
        stem_rng = np.random.default_rng([stem_entropy, stable_key(name)])
        compressor, reverb = _draw_stem_effects(stem_rng, config)
        params["stems"][name] = {"compressor": compressor, "reverb": reverb}

        audio = np.ascontiguousarray(wave.T)  # (channels, samples), as pedalboard wants
        if pitch is not None or stretch is not None:
            audio = pedalboard.time_stretch(
                audio,
                float(sample_rate),
                stretch_factor=1.0 if stretch is None else stretch,
                pitch_shift_in_semitones=0.0 if pitch is None else pitch,
                high_quality=config.high_quality,
            )
        audio = np.asarray(audio, dtype=np.float32)  # (channels, samples)
        params["padded"] = max(params["padded"], length - audio.shape[1])
        audio = fit_length(audio, length, axis=1)
        plugins = []
        if compressor is not None:
            plugins.append(pedalboard.Compressor(**compressor))
        if reverb is not None:
            plugins.append(pedalboard.Reverb(**reverb))
        if plugins:
            audio = pedalboard.Pedalboard(plugins)(np.ascontiguousarray(audio), float(sample_rate))
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape != (wave.shape[1], length):
            raise DataError(f"stem {name!r}: augmentation returned shape {audio.shape}, expected {(wave.shape[1], length)}")
        if not np.isfinite(audio).all():
            raise DataError(f"stem {name!r}: augmentation produced NaN or infinite samples ({params})")
        out[name] = np.ascontiguousarray(audio.T)

    mixture = np.sum(np.stack(list(out.values())), axis=0, dtype=np.float32)
    if np.ndim(stems[next(iter(waves))]) == 1:  # back to the caller's 1-D layout
        out = {k: v[:, 0] for k, v in out.items()}
        mixture = mixture[:, 0]
    out[MIXTURE] = mixture
    return out, params


def augmented_copies(
    stems: Mapping[str, np.ndarray],
    sample_rate: int,
    config: AugmentConfig,
    n_copies: int,
    seed: int,
    crop_id: Any,
    length: int | None = None,
) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """`n_copies` augmented versions of one crop, reproducible from ``(seed, crop_id, copy)``.

    Copy ``k`` uses ``numpy.random.default_rng([seed, stable_key(crop_id), k])``; its params also
    record ``seed``, ``crop_id`` (as given, stringified unless an int) and ``copy``. The original
    crop is not included (write it separately).
    """
    if n_copies < 0:
        raise ConfigError(f"augmented copies must be >= 0, got {n_copies}")
    key = stable_key(crop_id)
    copies = []
    for copy in range(int(n_copies)):
        rng = np.random.default_rng([stable_key(seed), key, copy])
        out, params = augment_crop(stems, sample_rate, config, rng, length=length)
        params = {
            "seed": int(seed),
            "crop_id": crop_id if isinstance(crop_id, int) else str(crop_id),
            "copy": copy,
            **params,
        }
        copies.append((out, params))
    return copies


# --------------------------------------------------------------------------- internals


def _check_stems(stems: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stems (without "mixture") as float32 (samples, channels); all shapes equal and finite."""
    waves: dict[str, np.ndarray] = {}
    shape = None
    for name, wave in stems.items():
        if name == MIXTURE:
            continue
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 1:
            wave = wave[:, None]
        if wave.ndim != 2 or wave.shape[0] == 0:
            raise DataError(f"stem {name!r}: expected (samples,) or (samples, channels), got {np.shape(stems[name])}")
        if shape is not None and wave.shape != shape:
            raise DataError(f"stem {name!r}: shape {wave.shape} differs from the other stems' {shape}")
        if not np.isfinite(wave).all():
            raise DataError(f"stem {name!r}: NaN or infinite samples")
        shape = wave.shape
        waves[name] = wave
    if not waves:
        raise DataError("augmentation needs at least one stem")
    return waves


def _draw_stem_effects(rng: np.random.Generator, config: AugmentConfig) -> tuple[dict | None, dict | None]:
    comp_coin = rng.random()
    compressor = {
        "threshold_db": float(rng.uniform(*config.compressor_threshold_db)),
        "ratio": float(rng.uniform(*config.compressor_ratio)),
        "attack_ms": float(rng.uniform(*config.compressor_attack_ms)),
        "release_ms": float(rng.uniform(*config.compressor_release_ms)),
    }
    reverb_coin = rng.random()
    reverb = {
        "room_size": float(rng.uniform(*config.reverb_room_size)),
        "damping": float(rng.uniform(*config.reverb_damping)),
        "wet_level": float(rng.uniform(*config.reverb_wet_level)),
        "dry_level": float(config.reverb_dry_level),
    }
    return (
        compressor if comp_coin < config.compressor_p else None,
        reverb if reverb_coin < config.reverb_p else None,
    )
