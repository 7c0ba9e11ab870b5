"""Quality assessment of training crops: drop crops where the checked stems are (nearly) silent.

A crop is kept when each checked stem passes two rules (mode ``"all"``; with mode ``"any"``,
when at least one checked stem passes both):

- ``rms``: the RMS of the stem over the whole crop is at least `QualityConfig.min_rms`
  (default 0.005, about -46 dBFS);
- ``activity``: the share of `frame_seconds` frames (default 50 ms) whose RMS is at least
  `frame_rms` is at least `min_activity` (default 30 %).

The frame threshold `frame_rms` defaults to 0.003 (about -50 dBFS). It sits a few dB under the
crop RMS floor, so a stem playing steadily at the floor still counts as active; it is 20-30 dB
under the usual level of a MUSDB stem at mix gain (stem RMS 0.03-0.1), so soft passages count
as activity, while reverb tails, bleed, fade-outs and dither (below -60 dBFS) do not. The
procedural demo set passes with it (its stems have RMS 0.03-0.14, 88-100 % of frames above
0.003). RMS is taken over all channels of a frame together (stereo or mono alike).

`QualityStats` counts, over many crops, how many were kept and how many each rule rejected
per stem, and serializes to a dict for the shard manifest.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from mss_tf import TARGETS
from mss_tf.errors import ConfigError, DataError
from mss_tf.utils import dataclass_from_dict

RULES = ("rms", "activity")
MODES = ("all", "any")


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the crop quality filter.

    Args:
        min_rms: minimum RMS of a checked stem over the crop (linear, full scale 1.0).
        min_activity: minimum share (0..1) of active frames of a checked stem.
        frame_seconds: frame length of the activity measure.
        frame_rms: RMS a frame needs to count as active (linear; 0.003 is about -50 dBFS).
        stems: stems to check; None checks every stem given to `assess` except the mixture
            (preparation passes the model's targets here).
        mode: "all" (every checked stem must pass) or "any" (one passing stem keeps the crop).
        enabled: False keeps every crop (the filter off, still counting crops).
    """

    min_rms: float = 0.005
    min_activity: float = 0.3
    frame_seconds: float = 0.05
    frame_rms: float = 0.003
    stems: tuple[str, ...] | None = None
    mode: str = "all"
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("min_rms", "frame_rms"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigError(f"QualityConfig.{name} must be a number >= 0, got {value!r}")
        if not _is_number(self.min_activity) or not 0.0 <= self.min_activity <= 1.0:
            raise ConfigError(f"QualityConfig.min_activity must be in [0, 1], got {self.min_activity!r}")
        if not _is_number(self.frame_seconds) or self.frame_seconds <= 0:
            raise ConfigError(f"QualityConfig.frame_seconds must be > 0, got {self.frame_seconds!r}")
        if self.mode not in MODES:
            raise ConfigError(f"QualityConfig.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.stems is not None:
            if isinstance(self.stems, str):
                object.__setattr__(self, "stems", (self.stems,))
            else:
                object.__setattr__(self, "stems", tuple(self.stems))
            if not self.stems:
                raise ConfigError("QualityConfig.stems must name at least one stem (or be None)")

    def frame_samples(self, sample_rate: int) -> int:
        return max(1, int(round(self.frame_seconds * sample_rate)))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stems"] = list(self.stems) if self.stems is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QualityConfig":
        return dataclass_from_dict(cls, data, "quality filter", tuples=["stems"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) and math.isfinite(
        value
    )


@dataclasses.dataclass(frozen=True)
class QualityResult:
    """The verdict on one crop.

    Attributes:
        kept: whether the crop passes.
        failures: (stem, rule) pairs that failed, rule in `RULES`.
        rms: RMS of each checked stem over the crop.
        activity: share of active frames of each checked stem.
        limits: the thresholds applied, by rule.
    """

    kept: bool
    failures: tuple[tuple[str, str], ...]
    rms: dict[str, float]
    activity: dict[str, float]
    limits: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """One readable line per failed rule, e.g. ``"vocals: rms 0.0012 < 0.005"``."""
        lines = []
        for stem, rule in self.failures:
            value = self.rms[stem] if rule == "rms" else self.activity[stem]
            limit = self.limits.get(rule)
            lines.append(f"{stem}: {rule} {value:.4g}" + ("" if limit is None else f" < {limit:g}"))
        return lines


def checked_stems(stems: Mapping[str, np.ndarray], config: QualityConfig) -> tuple[str, ...]:
    """The stems `assess` checks: `config.stems`, or every given stem except the mixture."""
    names = config.stems if config.stems is not None else tuple(s for s in stems if s != "mixture")
    missing = [s for s in names if s not in stems]
    if missing:
        raise ConfigError(f"quality check needs stems {missing}, got {sorted(stems)}")
    if not names:
        raise ConfigError("quality check: no stems to check (only a mixture given)")
    return tuple(names)


def frame_rms(audio: np.ndarray, frame_samples: int) -> np.ndarray:
    """RMS of consecutive non-overlapping frames of audio (..., samples, channels) or (samples,).

    The tail shorter than a frame is dropped, unless the audio is shorter than one frame
    (then it is one frame). Returns (..., n_frames) float64.
    """
    x = np.asarray(audio)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[-2]
    if n == 0:
        raise DataError("quality check: empty crop (0 samples)")
    size = min(frame_samples, n)
    n_frames = n // size
    x = x[..., : n_frames * size, :]
    x = x.reshape(x.shape[:-2] + (n_frames, size * x.shape[-1]))
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def assess(stems: Mapping[str, np.ndarray], sample_rate: int, config: QualityConfig = QualityConfig()) -> QualityResult:
    """Judge one crop: `stems` maps names to (samples, channels) or (samples,) arrays of one length.

    Vectorized over stems and frames. Raises ConfigError when a stem the config asks for is
    missing, DataError on an empty crop or stems of different lengths.
    """
    names = checked_stems(stems, config)
    arrays = [np.asarray(stems[name]) for name in names]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    if len({a.shape for a in arrays}) > 1:
        raise DataError(f"quality check: stems have different shapes {[a.shape for a in arrays]}")
    block = np.stack(arrays)  # (S, samples, channels)
    if block.shape[1] == 0:
        raise DataError("quality check: empty crop (0 samples)")
    rms = np.sqrt(np.mean(np.square(block, dtype=np.float64), axis=(1, 2)))  # (S,)
    frames = frame_rms(block, config.frame_samples(sample_rate))  # (S, n_frames)
    activity = np.mean(frames >= config.frame_rms, axis=-1)  # (S,)
    rms_ok = rms >= config.min_rms
    activity_ok = activity >= config.min_activity
    passed = rms_ok & activity_ok
    kept = True
    if config.enabled:
        kept = bool(passed.all() if config.mode == "all" else passed.any())
    failures = []
    for i, name in enumerate(names):
        if not rms_ok[i]:
            failures.append((name, "rms"))
        if not activity_ok[i]:
            failures.append((name, "activity"))
    return QualityResult(
        kept=kept,
        failures=tuple(failures),
        rms={n: float(v) for n, v in zip(names, rms)},
        activity={n: float(v) for n, v in zip(names, activity)},
        limits={"rms": float(config.min_rms), "activity": float(config.min_activity)},
    )


class QualityStats:
    """Counts crops seen and kept, and how many crops each rule rejected per stem.

    A rejected crop counts once under every rule it failed; a kept crop (mode "any") whose
    other stems failed counts under none. Merge the stats of parallel workers with `merge`.
    """

    def __init__(self, config: QualityConfig = QualityConfig()) -> None:
        self.config = config
        self.crops = 0
        self.kept = 0
        self.rejected_by: dict[str, dict[str, int]] = {}
        self.rejected_tracks: dict[str, int] = {}

    @property
    def rejected(self) -> int:
        return self.crops - self.kept

    def add(self, result: QualityResult, track: str | None = None) -> QualityResult:
        """Count one crop's verdict (and its track's rejections); returns `result`."""
        self.crops += 1
        if result.kept:
            self.kept += 1
            return result
        for stem, rule in result.failures:
            per_stem = self.rejected_by.setdefault(stem, {r: 0 for r in RULES})
            per_stem[rule] += 1
        if track is not None:
            self.rejected_tracks[track] = self.rejected_tracks.get(track, 0) + 1
        return result

    def merge(self, other: "QualityStats") -> "QualityStats":
        """Add the counts of `other` (same config) into this one; returns self."""
        if other.config != self.config:
            raise ConfigError("cannot merge QualityStats of different QualityConfigs")
        self.crops += other.crops
        self.kept += other.kept
        for stem, rules in other.rejected_by.items():
            per_stem = self.rejected_by.setdefault(stem, {r: 0 for r in RULES})
            for rule, count in rules.items():
                per_stem[rule] += count
        for track, count in other.rejected_tracks.items():
            self.rejected_tracks[track] = self.rejected_tracks.get(track, 0) + count
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest."""
        return {
            "config": self.config.to_dict(),
            "crops": self.crops,
            "kept": self.kept,
            "rejected": self.rejected,
            "rejected_by": {stem: dict(rules) for stem, rules in sorted(self.rejected_by.items())},
            "rejected_tracks": dict(sorted(self.rejected_tracks.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QualityStats":
        stats = cls(QualityConfig.from_dict(data["config"]))
        stats.crops = int(data["crops"])
        stats.kept = int(data["kept"])
        stats.rejected_by = {s: {r: int(c) for r, c in rules.items()} for s, rules in data["rejected_by"].items()}
        stats.rejected_tracks = {t: int(c) for t, c in data.get("rejected_tracks", {}).items()}
        return stats


def targets_config(targets: Sequence[str] = TARGETS, **overrides: Any) -> QualityConfig:
    """A QualityConfig checking the model's `targets` (the preparation default)."""
    return QualityConfig(stems=tuple(targets), **overrides)
