"""MUSDB18 and MUSDB18-HQ reading: layout detection, track discovery, splits, loading, validation.

This module knows the MUSDB layouts and checks tracks; every file is decoded by the audio
adapter ``mss_tf.audio.io``. Two layouts are read, detected per subset folder:

- MUSDB18-HQ (``kind="wav"``): ``ROOT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav``,
  decoded by ``load_audio``, so no ffmpeg is needed.
- MUSDB18 (``kind="stem"``): ``ROOT/{train,test}/<track>.stem.mp4``, five AAC streams in the
  order mixture, drums, bass, other, vocals, decoded one stream at a time by ``load_stem``
  (stempeg, musdb's decoder, which needs the ``ffmpeg`` and ``ffprobe`` programs).

Track discovery and the train/valid split follow the musdb package's rules (tracks sorted by
name; ``split='valid'`` is musdb's bundled list of 14 validation tracks, `VALID_TRACKS`), but
``musdb.DB`` itself is not used at run time: importing musdb imports stempeg, which raises at
import when ffmpeg is missing (so the wav layout could not work without ffmpeg), and
``musdb.DB`` runs ffprobe on every file while scanning, reads wavs as 16-bit and silently skips
missing stems. stempeg is imported only when a ``.stem.mp4`` is decoded.

Resampling and downmixing go through ``mss_tf.audio.io.resample`` / ``mono``. Every problem
with a track raises a typed error (`DataError`, `AudioError`) whose one-line message starts
with the file (or folder) at fault.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from mss_tf import SOURCES, TARGETS
from mss_tf.audio import io as audio_io
from mss_tf.errors import AudioError, ConfigError, DataError

SUBSETS = ("train", "test")
SPLITS = ("train", "valid", "test")

WAV = "wav"
STEM = "stem"
STEM_SUFFIX = ".stem.mp4"
# Stream order inside a MUSDB18 .stem.mp4 (musdb's `stem_ids`).
STEM_INDEX = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}

# The official MUSDB18 validation tracks (musdb's `split='valid'`), taken from the train subset.
# Equal to `validation_tracks` in musdb's bundled configs/mus.yaml (tests check this).
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

# A track whose stems all peak below this (-100 dBFS, under one 16-bit step) is silent.
SILENCE_PEAK = 1e-5
# Stems of one track may differ in length by this much (decoder padding); more is an error.
LENGTH_TOLERANCE_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class Track:
    """One multitrack song.

    Args:
        name: track name (folder name, or file name without ``.stem.mp4``).
        path: the folder holding ``<source>.wav`` files (``kind="wav"``) or the
            ``.stem.mp4`` file (``kind="stem"``).
        subset: ``"train"`` or ``"test"``.
        kind: ``"wav"`` (MUSDB18-HQ) or ``"stem"`` (MUSDB18).
    """

    name: str
    path: Path
    subset: str
    kind: str = WAV

    def __post_init__(self) -> None:
        if self.kind not in (WAV, STEM):
            raise DataError(f"{self.path}: unknown track kind {self.kind!r} (expected 'wav' or 'stem')")

    def source_path(self, source: str) -> Path:
        """The file holding `source`: its wav, or the track's .stem.mp4."""
        _check_source(source)
        return self.path / f"{source}.wav" if self.kind == WAV else self.path

    def describe(self, source: str) -> str:
        """Where `source` lives, for error messages: a wav path or ``file.stem.mp4 [stream i: name]``."""
        if self.kind == WAV:
            return str(self.source_path(source))
        return f"{self.path} [stream {STEM_INDEX[source]}: {source}]"


def source_fingerprint(track: Track) -> list[list]:
    """[file name, size, modification time in ns] of every file the track is read from.

    Cached shards record it, so audio rewritten under the same track names (a regenerated demo
    set, a re-downloaded song) is prepared again instead of being served from stale shards.
    """
    paths = [track.path / f"{source}.wav" for source in SOURCES] if track.kind == WAV else [track.path]
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append([path.name, stat.st_size, stat.st_mtime_ns])
        except OSError:
            out.append([path.name, None, None])  # missing: loading the track reports it
    return out


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r} (choose from {', '.join(SOURCES)})")


def resolve_root(musdb_root: str | os.PathLike | None) -> Path | None:
    """`--musdb-root` if given, else `$MUSDB_PATH`, else None (the caller uses the demo set)."""
    root = musdb_root or os.environ.get("MUSDB_PATH") or None
    return Path(root) if root else None


# --------------------------------------------------------------------------- discovery


def detect_layout(root: str | os.PathLike, subset: str) -> str:
    """``"wav"`` (track folders, MUSDB18-HQ) or ``"stem"`` (``*.stem.mp4`` files, MUSDB18).

    Raises DataError when the root or subset folder is missing, the subset folder is empty,
    or it holds both layouts.
    """
    subset_dir = _subset_dir(Path(root), subset)
    stems, folders = _listing(subset_dir)
    if stems and folders:
        raise DataError(
            f"{subset_dir}: holds both .stem.mp4 files (MUSDB18) and track folders (MUSDB18-HQ); "
            "keep one layout per folder"
        )
    if stems:
        return STEM
    if folders:
        return WAV
    raise DataError(f"{subset_dir}: no track folders or .stem.mp4 files (empty MUSDB18 subset)")


def _subset_dir(root: Path, subset: str) -> Path:
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r} (choose from {', '.join(SUBSETS)})")
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    subset_dir = root / subset
    if not subset_dir.is_dir():
        raise DataError(
            f"{root}: not in MUSDB18-HQ layout (no '{subset}' folder with track folders) "
            f"nor MUSDB18 layout (no '{subset}' folder with .stem.mp4 files)"
        )
    return subset_dir


def _listing(subset_dir: Path) -> tuple[list[Path], list[Path]]:
    """(.stem.mp4 files, track folders) of a subset folder, hidden entries skipped, sorted by name."""
    stems, folders = [], []
    for entry in sorted(subset_dir.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry)
        elif entry.is_file() and entry.name.lower().endswith(STEM_SUFFIX):
            stems.append(entry)
    return stems, folders


def find_tracks(root: str | os.PathLike, subset: str, strict: bool = True) -> list[Track]:
    """Tracks of `subset` ("train" or "test") in a MUSDB18 or MUSDB18-HQ folder, sorted by name.

    The layout is detected from the subset folder (see `detect_layout`). With `strict`, a wav
    track lacking one of its five files raises; with ``strict=False`` it is listed anyway and
    `validate_track` / `load_track` report it (for ``--skip-bad``). A ``.stem.mp4`` layout
    needs ffmpeg, checked here so that the problem surfaces before any work starts.

    Raises DataError naming the path when the folder is missing, is not in either layout, is
    empty, a track lacks a stem (strict), or ffmpeg is missing for ``.stem.mp4`` files.
    """
    root = Path(root)
    kind = detect_layout(root, subset)
    subset_dir = root / subset
    stems, folders = _listing(subset_dir)
    if kind == STEM:
        audio_io.require_ffmpeg(subset_dir)
        return [Track(p.name[: -len(STEM_SUFFIX)], p, subset, STEM) for p in stems]
    tracks = [Track(folder.name, folder, subset, WAV) for folder in folders]
    if strict:
        for track in tracks:
            _check_wav_files(track, SOURCES)
    return tracks


def split_tracks(root: str | os.PathLike, split: str, strict: bool = True) -> list[Track]:
    """Tracks of a split: "train" and "valid" partition the train subset, "test" is the test subset.

    The valid split is MUSDB18's official 14 tracks (86 train / 14 valid on the real data); a
    folder holding none of them (the demo set, a small custom set) holds out the last
    `max(1, n // 6)` train tracks by name instead (none when there is a single train track).
    """
    if split == "test":
        return find_tracks(root, "test", strict)
    if split not in ("train", "valid"):
        raise DataError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    tracks = find_tracks(root, "train", strict)
    valid = [t for t in tracks if t.name in VALID_TRACKS]
    if not valid:
        valid = tracks[-max(1, len(tracks) // 6) :] if len(tracks) > 1 else []
    chosen = valid if split == "valid" else [t for t in tracks if t not in valid]
    if not chosen:
        raise DataError(f"{root}: the '{split}' split has no tracks")
    return chosen


def select_tracks(tracks: Sequence[Track], wanted: Sequence[str] | None, root: str | os.PathLike,
                  subset: str) -> list[Track]:
    """The tracks an evaluation runs on (`--tracks`): all of `tracks` (those of `subset` in
    `root`) without `wanted`; a single number N: the first N; otherwise names, each matching
    a track exactly or else every track whose name holds it (case-insensitive), in the order
    asked, each track once.

    Raises DataError for an empty split or a name that matches nothing, ConfigError for a
    count below 1.
    """
    if not tracks:
        raise DataError(f"{root}: no tracks in the {subset} split")
    if not wanted:
        return list(tracks)
    if len(wanted) == 1 and wanted[0].lstrip("-").isdigit():
        if int(wanted[0]) < 1:
            raise ConfigError(f"--tracks {wanted[0]}: need at least one track")
        return list(tracks[: int(wanted[0])])
    chosen: list[Track] = []
    for name in wanted:
        exact = [t for t in tracks if t.name == name]
        matches = exact or [t for t in tracks if name.lower() in t.name.lower()]
        if not matches:
            raise DataError(f"--tracks {name!r}: no such track in the {subset} split of {root}")
        chosen += [t for t in matches if t not in chosen]
    return chosen


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class _Stream:
    """One decoded source with what the cross-file checks need."""

    source: str
    where: str
    audio: np.ndarray | None  # what `keep` made of the decoded audio; None when not kept
    rate: int
    channels: int
    length: int
    peak: float


def _check_wav_files(track: Track, sources: Iterable[str]) -> None:
    if not track.path.is_dir():
        raise DataError(f"{track.path}: track folder of '{track.name}' does not exist")
    for source in sources:
        if not track.source_path(source).is_file():
            raise DataError(f"{track.source_path(source)}: missing stem '{source}' of track '{track.name}'")


def _check_stream(where: str, audio: np.ndarray, rate: int) -> None:
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise AudioError(f"{where}: contains no audio samples")
    if audio.shape[1] not in (1, 2):
        raise DataError(f"{where}: {audio.shape[1]} channels; MUSDB stems are stereo (mono or stereo accepted)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{where}: contains NaN or infinite samples")
    if rate <= 0:
        raise AudioError(f"{where}: invalid sample rate {rate}")


# Turns a decoded (samples, channels) array at its rate into what the caller keeps; None keeps nothing.
Keep = Optional[Callable[[np.ndarray, int], np.ndarray]]


def _stream(source: str, where: str, audio: np.ndarray, rate: int, keep: Keep) -> _Stream:
    """Check one decoded source and take its statistics (at its own rate and channel count)."""
    _check_stream(where, audio, rate)
    peak = float(np.max(np.abs(audio)))
    kept = keep(audio, int(rate)) if keep is not None else None
    return _Stream(source, where, kept, int(rate), audio.shape[1], audio.shape[0], peak)


def _iter_wav(track: Track, sources: tuple[str, ...], keep: Keep) -> Iterator[_Stream]:
    _check_wav_files(track, sources)
    for source in sources:
        audio, rate = audio_io.load_audio(track.source_path(source))
        yield _stream(source, track.describe(source), audio, rate, keep)
        del audio


def _stem_info(track: Track) -> audio_io.StemInfo:
    """Probe a .stem.mp4 (ffprobe) and check it holds the five MUSDB streams."""
    path = track.path
    audio_io.require_ffmpeg(path)
    if not path.is_file():
        raise DataError(f"{path}: .stem.mp4 file of track '{track.name}' does not exist")
    info = audio_io.stem_info(path)
    n = info.streams
    if n < len(SOURCES):
        missing = sorted((s for s in SOURCES if STEM_INDEX[s] >= n), key=STEM_INDEX.get)
        raise DataError(
            f"{path}: {n} audio streams, a MUSDB18 .stem.mp4 holds {len(SOURCES)} "
            f"(mixture, drums, bass, other, vocals); missing stems {', '.join(missing)}"
        )
    return info


def _iter_stem(track: Track, sources: tuple[str, ...], keep: Keep) -> Iterator[_Stream]:
    info = _stem_info(track)
    # Cross-stream checks first, from the header: stempeg itself would refuse streams with
    # different channel counts and silently resample streams with a different rate.
    all_sources = tuple(SOURCES)
    _check_consistent(
        track, "channels", {s: info.channels(STEM_INDEX[s]) for s in all_sources}, _describe_channels
    )
    _check_consistent(track, "rate", {s: info.sample_rate(STEM_INDEX[s]) for s in all_sources}, _describe_rate)
    # One stream at a time (one ffmpeg process each): only one stream is held at its own rate.
    for source in sources:
        audio, rate = audio_io.load_stem(track.path, STEM_INDEX[source], info=info, label=source)
        yield _stream(source, track.describe(source), audio, rate, keep)
        del audio


def _iter_streams(track: Track, sources: tuple[str, ...], keep: Keep) -> Iterator[_Stream]:
    for source in sources:
        _check_source(source)
    if track.kind == WAV:
        return _iter_wav(track, sources, keep)
    return _iter_stem(track, sources, keep)


def _describe_rate(value: int) -> str:
    return f"{value} Hz"


def _describe_channels(value: int) -> str:
    return {1: "mono", 2: "stereo"}.get(value, f"{value} channels")


def _check_consistent(track: Track, what: str, values: dict[str, int], describe) -> None:
    """Raise naming the odd file when the sources of a track disagree on `what`.

    The reference is the value most files share (the mixture's on a tie).
    """
    if len(set(values.values())) <= 1:
        return
    counts = collections.Counter(values.values())
    top = max(counts.values())
    candidates = [v for v, c in counts.items() if c == top]
    reference = values["mixture"] if "mixture" in values and values["mixture"] in candidates else candidates[0]
    odd = next(s for s, v in values.items() if v != reference)
    others = ", ".join(s for s, v in values.items() if v == reference)
    if what == "channels":
        rule = "a mono file among stereo stems" if values[odd] == 1 else "a track's files must share one channel count"
    else:
        rule = "a track's files must share one sample rate"
    raise DataError(
        f"{track.describe(odd)}: {describe(values[odd])} but {others} of track '{track.name}' "
        f"{'is' if others.count(',') == 0 else 'are'} {describe(reference)} ({rule})"
    )


def _check_streams(track: Track, streams: list[_Stream]) -> None:
    """Cross-file checks on decoded sources: rate, channels, length, silence."""
    _check_consistent(track, "channels", {s.source: s.channels for s in streams}, _describe_channels)
    _check_consistent(track, "rate", {s.source: s.rate for s in streams}, _describe_rate)
    rate = streams[0].rate
    lengths = {s.source: s.length for s in streams}
    reference = lengths.get("mixture", int(np.median(list(lengths.values()))))
    tolerance = int(round(LENGTH_TOLERANCE_SECONDS * rate))
    for s in streams:
        if abs(s.length - reference) > tolerance:
            raise DataError(
                f"{s.where}: {s.length} samples ({s.length / rate:.2f} s) but the track '{track.name}' "
                f"has {reference} ({reference / rate:.2f} s); its stems must have equal length"
            )
    names = {s.source for s in streams}
    if ("mixture" in names or set(TARGETS) <= names) and all(s.peak < SILENCE_PEAK for s in streams):
        raise DataError(f"{track.path}: silent track '{track.name}' (every stem is all zeros or below -100 dBFS)")


def load_track(
    track: Track, sample_rate: int | None = None, mono: bool = False, sources: tuple[str, ...] = SOURCES
) -> tuple[dict[str, np.ndarray], int]:
    """Load the sources of a track as float32 (samples, channels) arrays of equal length.

    Files are read at their own rate and checked against each other (same rate, same channel
    count, lengths within 0.1 s, not all silent, no NaN/inf) before being downmixed (`mono`,
    shape (samples, 1)) and resampled to `sample_rate` through `mss_tf.audio.io`. Lengths that
    differ by a decoder frame are trimmed to the shortest.

    Returns the arrays by source name and their sample rate (`sample_rate` when given).

    Raises:
        DataError / AudioError: one line naming the file at fault (missing stem, unreadable or
            truncated file, NaN, mismatched rate or channels, silent track, no ffmpeg for
            ``.stem.mp4``).
    """
    sources = tuple(sources)
    if not sources:
        raise DataError(f"{track.path}: no sources requested")

    def convert(data: np.ndarray, rate: int) -> np.ndarray:
        # Downmix and resample each source as soon as it is decoded: peak memory stays at
        # one source at its own rate plus the converted ones.
        if mono:
            data = audio_io.mono(data)
        if sample_rate is not None and int(sample_rate) != rate:
            data = audio_io.resample(data, rate, int(sample_rate))
        return np.ascontiguousarray(data, dtype=np.float32)

    streams = list(_iter_streams(track, sources, keep=convert))
    _check_streams(track, streams)  # on the files' own rates, channels and lengths
    n = min(stream.audio.shape[0] for stream in streams)
    audio = {stream.source: stream.audio[:n] for stream in streams}
    return audio, int(sample_rate) if sample_rate is not None else streams[0].rate


def validate_track(track: Track) -> None:
    """Check a track without keeping its audio: raise on the first problem, return None if usable.

    Checks that all five sources exist (missing stems), decode completely (not truncated, not
    corrupt), hold finite samples, share one sample rate and channel count (a mono file among
    stereo stems is an error), have equal lengths (within 0.1 s), and that the track is not
    silent. Sources are decoded one at a time and dropped after their statistics are taken.
    """
    streams = list(_iter_streams(track, SOURCES, keep=None))
    _check_streams(track, streams)
