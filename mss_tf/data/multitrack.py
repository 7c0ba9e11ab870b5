"""Multitrack folders beyond MUSDB18, and stem maps that group raw stems into targets.

This module reads them; `mss_tf.data.sources.DataSource` puts every layout (MUSDB18's two stay
with `mss_tf.data.musdb`) behind the one interface preparation, training and evaluation use.

Layouts (`detect_layout` tells them apart, `--layout` settles an ambiguous folder):

- ``musdb``: MUSDB18-HQ (``ROOT/{train,test}/<track>/mixture.wav`` and the four stems) or MUSDB18
  (``ROOT/{train,test}/<track>.stem.mp4``), read by `mss_tf.data.musdb`;
- ``stems``: ``ROOT/{train,valid,test}/<track>/<stem>.{wav,flac}`` with any stem names; a
  ``mixture`` file is optional (absent: the mixture is the sum of the stems);
- ``moisesdb``: MoisesDB's release, ``ROOT/<track id>/<stem>/<part>.wav`` (several files per stem,
  summed) with a ``data.json`` per track; no splits.

A stem map (``--stem-map FILE.json``) groups raw stems into targets: ``{"guitar": ["guitar",
"acoustic_guitar"], "vocals": "vocals", "other": "*rest*"}``; the ``*rest*`` target takes every
raw stem no other target names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mss_tf.errors import ConfigError, DataError

LAYOUTS = ("musdb", "stems", "moisesdb")
SPLITS = ("train", "valid", "test")
AUDIO_SUFFIXES = (".wav", ".flac")
MIXTURE = "mixture"
REST = "*rest*"
MUSDB_STEMS = ("mixture", "vocals", "drums", "bass", "other")


@dataclasses.dataclass(frozen=True)
class MultiTrack:
    """One track of a `stems` or `moisesdb` folder.

    Attributes:
        name: the track's folder name.
        split: ``train``/``valid``/``test`` (None in MoisesDB, which has no splits).
        stems: raw stem name -> the audio files summed into it (one in `stems`, one or more in MoisesDB).
        mixture: the mixture file, or None when the mixture is the sum of the stems.
    """

    name: str
    split: str | None
    stems: Mapping[str, tuple[Path, ...]]
    mixture: Path | None = None


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _is_musdb(root: Path) -> bool:
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_file() and child.name.endswith(".stem.mp4"):
                return True
            if child.is_dir() and all((child / f"{s}.wav").is_file() for s in MUSDB_STEMS):
                return True
    return False


def _is_stems(root: Path) -> bool:
    return any((root / split).is_dir() and any(child.is_dir() and _audio_files(child) for child in (root / split).iterdir())
               for split in SPLITS)


def _is_moisesdb(root: Path) -> bool:
    return any(child.is_dir() and (child / "data.json").is_file() for child in root.iterdir())


def detect_layout(root: str | os.PathLike, layout: str | None = None) -> str:
    """The layout of `root` (one of LAYOUTS): `layout` when given (checked), else the one the folder
    matches. A MUSDB18 folder also matches `stems` (its track folders hold audio files): it is
    read as MUSDB18, the stricter layout, unless told otherwise. Raises DataError naming the
    folder when it matches none, ConfigError for an unknown `layout`."""
    root = Path(root)
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    found = [name for name, test in (("musdb", _is_musdb), ("stems", _is_stems), ("moisesdb", _is_moisesdb))
             if test(root)]
    if layout is not None:
        if layout not in found:
            raise DataError(f"{root}: not a {layout} folder ({_describe(layout)})")
        return layout
    if not found:
        raise DataError(f"{root}: no multitrack layout found (looked for: "
                        + "; ".join(f"{name}: {_describe(name)}" for name in LAYOUTS) + ")")
    return found[0]


def _describe(layout: str) -> str:
    return {"musdb": "train/ and test/ with MUSDB18-HQ track folders or .stem.mp4 files",
            "stems": "train/, valid/ or test/ holding <track>/<stem>.wav|flac",
            "moisesdb": "<track>/data.json with one folder of audio files per stem"}[layout]


def list_tracks(root: str | os.PathLike, layout: str | None = None, split: str | None = None) -> list[MultiTrack]:
    """The tracks of a `stems` or `moisesdb` folder (of one split when `split` is given), sorted by
    split then name. A track folder with no audio is skipped; two files of one stem in a `stems`
    track (``guitar.wav`` and ``guitar.flac``) are a DataError naming the track."""
    root = Path(root)
    layout = detect_layout(root, layout)
    if layout == "musdb":
        raise ConfigError(f"{root}: a MUSDB18 folder; read it with mss_tf.data.musdb (or pass --layout stems)")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    tracks = []
    if layout == "stems":
        for name in (split,) if split else SPLITS:
            folder = root / name
            if not folder.is_dir():
                continue
            for track in sorted(p for p in folder.iterdir() if p.is_dir()):
                files = _audio_files(track)
                if not files:
                    continue
                by_stem: dict[str, list[Path]] = {}
                for file in files:
                    by_stem.setdefault(file.stem, []).append(file)
                doubles = sorted(stem for stem, paths in by_stem.items() if len(paths) > 1)
                if doubles:
                    raise DataError(f"{track}: more than one file for stem(s) {', '.join(doubles)}; keep one of each")
                mixture = by_stem.pop(MIXTURE, [None])[0]
                if not by_stem:
                    raise DataError(f"{track}: a mixture and no stems")
                tracks.append(MultiTrack(track.name, name, {s: tuple(p) for s, p in sorted(by_stem.items())}, mixture))
    else:  # moisesdb
        if split is not None:
            raise ConfigError(f"{root}: MoisesDB has no splits (asked for {split!r})")
        for track in sorted(p for p in root.iterdir() if p.is_dir() and (p / "data.json").is_file()):
            stems = {folder.name: tuple(_audio_files(folder)) for folder in sorted(track.iterdir()) if folder.is_dir()}
            stems = {name: files for name, files in stems.items() if files}
            if stems:
                tracks.append(MultiTrack(track.name, None, stems, None))
    return tracks


def read_stem_map(path: str | os.PathLike) -> dict[str, tuple[str, ...] | str]:
    """A stem map file: a JSON object target -> raw stem name, list of raw stem names, or "*rest*"
    (at most one target). Raises ConfigError naming the file for anything else, and for a raw
    stem claimed by two targets."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such stem map") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON stem map ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: a stem map is a JSON object of target names, e.g. "
                          '{"guitar": ["guitar", "acoustic_guitar"], "other": "*rest*"}')
    stem_map: dict[str, tuple[str, ...] | str] = {}
    owner: dict[str, str] = {}
    for target, raw in data.items():
        if raw == REST:
            stem_map[target] = REST
            continue
        names = (raw,) if isinstance(raw, str) else raw
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{path}: target {target!r} must map to a stem name, a list of them or {REST!r}")
        for name in names:
            if name in owner:
                raise ConfigError(f"{path}: stem {name!r} is in both {owner[name]!r} and {target!r}")
            owner[name] = target
        stem_map[target] = tuple(names)
    rest = [t for t, raw in stem_map.items() if raw == REST]
    if len(rest) > 1:
        raise ConfigError(f"{path}: only one target can take {REST!r}, not {', '.join(rest)}")
    return stem_map


def group_stems(raw: Mapping[str, np.ndarray], stem_map: Mapping[str, tuple[str, ...] | str] | None = None,
                targets: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Targets from raw stems: each target the sum of its raw stems that the track has (silence when
    it has none: the caller's checks decide whether a silent target is refused), the `*rest*`
    target the sum of every raw stem no other target names. Without a map each raw stem is its
    own target. `targets` picks and orders the result (a name the map does not define is a
    ConfigError). Every raw stem must have one shape (DataError naming the odd ones)."""
    if not raw:
        raise DataError("a track with no stems")
    shapes = {name: np.shape(audio) for name, audio in raw.items()}
    shape = max(set(shapes.values()), key=list(shapes.values()).count)
    odd = sorted(name for name, s in shapes.items() if s != shape)
    if odd:
        raise DataError(f"stems of different lengths or channel counts: {', '.join(f'{n} {shapes[n]}' for n in odd)} "
                        f"against {shape}")
    stem_map = dict(stem_map) if stem_map is not None else {name: (name,) for name in raw}
    named = {name for names in stem_map.values() if names != REST for name in names}
    grouped = {}
    for target, names in stem_map.items():
        members = [n for n in raw if n not in named] if names == REST else [n for n in names if n in raw]
        total = np.zeros(shape, np.float64)
        for name in members:
            total += raw[name]
        grouped[target] = total.astype(np.float32)
    if targets is None:
        return grouped
    unknown = [t for t in targets if t not in grouped]
    if unknown:
        raise ConfigError(f"target(s) {', '.join(unknown)} not in the stem map or the data "
                          f"(it has: {', '.join(grouped)})")
    return {t: grouped[t] for t in targets}


def load_multitrack(track: MultiTrack, sample_rate: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    """A track's raw stems (the files of a stem summed) and its mixture (the file, or the sum of
    the stems), float32 ``(samples, channels)``, and the rate (`sample_rate` when given: every
    file resampled to it). Files at different sample rates (stems exported at another rate than
    the rest are a mistake to fix, not to resample silently), of different lengths or channel
    counts are a DataError naming the track and the files."""
    from mss_tf.audio.io import load_audio, resample

    loaded: dict[Path, tuple[np.ndarray, int]] = {}
    for files in track.stems.values():
        for file in files:
            loaded[file] = load_audio(file)
    if track.mixture is not None:
        loaded[track.mixture] = load_audio(track.mixture)
    rates = {file: rate for file, (_, rate) in loaded.items()}
    if len(set(rates.values())) > 1:
        raise DataError(f"track {track.name}: files at different sample rates "
                        f"({', '.join(f'{f.name} {r} Hz' for f, r in rates.items())}); export every stem at one rate")
    if sample_rate is not None:
        loaded = {file: (resample(audio, rate, sample_rate), sample_rate) for file, (audio, rate) in loaded.items()}
        rates = dict.fromkeys(loaded, sample_rate)
    shapes = {file: audio.shape for file, (audio, _) in loaded.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"track {track.name}: files of different lengths or channel counts "
                        f"({', '.join(f'{f.name} {s[0]} x {s[1]}' for f, s in shapes.items())})")
    rate = next(iter(rates.values()))
    stems = {}
    for name, files in track.stems.items():
        total = np.zeros(shapes[files[0]], np.float64)
        for file in files:
            total += loaded[file][0]
        stems[name] = total.astype(np.float32)
    if track.mixture is not None:
        stems[MIXTURE] = loaded[track.mixture][0]
    else:
        stems[MIXTURE] = np.sum([s.astype(np.float64) for n, s in stems.items()], axis=0).astype(np.float32)
    return stems, rate


def mixture_mismatch_db(stems: Mapping[str, np.ndarray]) -> float:
    """How far the sum of the stems lies from the mixture, in dB below the mixture's energy (inf when
    equal): a track whose stems do not add up to its mixture is reported when this is low."""
    mixture = np.asarray(stems[MIXTURE], np.float64)
    total = np.sum([np.asarray(s, np.float64) for n, s in stems.items() if n != MIXTURE], axis=0)
    error = float(np.sum((mixture - total) ** 2))
    energy = float(np.sum(mixture**2))
    if error == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(energy, 1e-30) / error)
