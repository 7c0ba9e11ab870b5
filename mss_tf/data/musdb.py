"""MUSDB18-HQ layout reading: track discovery, train/valid/test splits and stem loading."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from mss_tf import TARGETS
from mss_tf.audio import io as audio_io
from mss_tf.errors import DataError

SOURCES = ("mixture",) + TARGETS

# The official MUSDB18 validation tracks (musdb's `split='valid'`), taken from the train subset.
VALID_TRACKS = frozenset(
    [
        "Actions - One Minute Smile",
        "Clara Berry And Wooldog - Waltz For My Victims",
        "Johnny Lokke - Promises & Lies",
        "Patrick Talbot - A Reason To Leave",
        "Triviul - Angelsaint",
        "Alexander Ross - Goodbye Bolero",
        "Fergessen - Nos Palpitants",
        "Leaf - Summerghost",
        "Skelpolu - Human Mistakes",
        "Young Griffo - Pennies",
        "ANiMAL - Rockshow",
        "James May - On The Line",
        "Meaxic - Take A Step",
        "Traffic Experiment - Sirens",
    ]
)


@dataclasses.dataclass(frozen=True)
class Track:
    """One multitrack song: its name and the folder holding `<source>.wav` files."""

    name: str
    path: Path
    subset: str

    def source_path(self, source: str) -> Path:
        return self.path / f"{source}.wav"


def resolve_root(musdb_root: str | os.PathLike | None) -> Path | None:
    """`--musdb-root` if given, else `$MUSDB_PATH`, else None (the caller uses the demo set)."""
    root = musdb_root or os.environ.get("MUSDB_PATH") or None
    return Path(root) if root else None


def find_tracks(root: str | os.PathLike, subset: str) -> list[Track]:
    """Tracks of `subset` ("train" or "test") in a MUSDB18-HQ folder, sorted by name.

    Raises DataError naming the path when the folder is missing, is not in MUSDB18-HQ layout,
    or a track lacks one of its five wav files.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    subset_dir = root / subset
    if not subset_dir.is_dir():
        raise DataError(f"{root}: not in MUSDB18-HQ layout (no '{subset}' folder with track folders)")
    tracks = []
    for folder in sorted(p for p in subset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        track = Track(folder.name, folder, subset)
        for source in SOURCES:
            if not track.source_path(source).is_file():
                raise DataError(f"{track.source_path(source)}: missing stem '{source}' of track '{folder.name}'")
        tracks.append(track)
    if not tracks:
        raise DataError(f"{subset_dir}: no track folders (empty MUSDB18 subset)")
    return tracks


def split_tracks(root: str | os.PathLike, split: str) -> list[Track]:
    """Tracks of a split: "train" and "valid" partition the train subset, "test" is the test subset.

    The valid split is MUSDB18's official 14 tracks; a folder holding none of them (the demo
    set, a small custom set) holds out the last `max(1, n // 6)` train tracks by name instead.
    """
    if split == "test":
        return find_tracks(root, "test")
    if split not in ("train", "valid"):
        raise DataError(f"unknown split {split!r} (choose from train, valid, test)")
    tracks = find_tracks(root, "train")
    valid = [t for t in tracks if t.name in VALID_TRACKS]
    if not valid:
        valid = tracks[-max(1, len(tracks) // 6) :] if len(tracks) > 1 else []
    chosen = valid if split == "valid" else [t for t in tracks if t not in valid]
    if not chosen:
        raise DataError(f"{root}: the '{split}' split has no tracks")
    return chosen


def load_track(
    track: Track, sample_rate: int | None = None, mono: bool = False, sources: tuple[str, ...] = SOURCES
) -> tuple[dict[str, np.ndarray], int]:
    """Load the sources of a track as float32 (samples, channels) arrays of equal length.

    Returns the arrays by source name and their sample rate (`sample_rate` when given).
    """
    audio = {}
    rates = set()
    for source in sources:
        data, rate = audio_io.load_audio(track.source_path(source), sample_rate=sample_rate, mono=mono)
        audio[source] = data
        rates.add(rate)
    if len(rates) > 1:
        raise DataError(f"{track.path}: stems have different sample rates {sorted(rates)}")
    lengths = {a.shape[0] for a in audio.values()}
    if len(lengths) > 1:
        # MUSDB stems can differ by a few samples after decoding; trim to the shortest
        n = min(lengths)
        audio = {k: v[:n] for k, v in audio.items()}
    return audio, rates.pop()
