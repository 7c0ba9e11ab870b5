"""One interface over every multitrack layout: which tracks a split holds, which targets the data
gives, and each track's mixture and targets as arrays.

`DataSource.open(root, layout, stem_map_file)` reads a MUSDB18(-HQ) folder (`mss_tf.data.musdb`,
targets vocals/drums/bass/other), a generic stems folder or MoisesDB (`mss_tf.data.multitrack`),
optionally through a stem map that groups raw stems into targets. Preparation, training data and
evaluation take a DataSource, so everything downstream sees names, not a layout.

A plain MUSDB18 source (no stem map) describes itself as None (`spec`): the shard folders,
cache keys and run configs of MUSDB18 runs stay what they were before other layouts existed.

Splits: MUSDB18 as `musdb.split_tracks` (the official validation tracks, or the last sixth of
train). A stems folder has train/, valid/ and test/; without valid/, the last sixth of train (by
name) validates, as in MUSDB18. MoisesDB has no splits: a track goes to test when the first byte
of the SHA-1 of its id is below 26 (about 10 %), to valid below 52, else to train; stable when
tracks are added or removed.

Track checks (each a one-line DataError naming the track; `--skip-bad` skips such tracks): files
of different rates, lengths or channel counts; a target with none of its raw stems in the track
(missing) or below -100 dBFS throughout (silent); a mixture file the stems do not add up to
(the sum more than `MISMATCH_DB` below the mixture's energy away from it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mss_tf import TARGETS
from mss_tf.data import multitrack, musdb
from mss_tf.errors import ConfigError, DataError

MISMATCH_DB = 20.0  # a mixture file the stems' sum misses by more than 1 % of its energy is refused
MOISESDB_TEST, MOISESDB_VALID = 26, 52  # first SHA-1 byte below these: test, then valid


def _freeze(stem_map: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
    if stem_map is None:
        return None
    return tuple((t, raw if raw == multitrack.REST else tuple(raw)) for t, raw in stem_map.items())


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A multitrack folder in one layout, read through an optional stem map.

    Attributes:
        root: the folder.
        layout: "musdb", "stems" or "moisesdb".
        stem_map: target -> raw stem names or "*rest*", as (target, names) pairs (None: every raw
            stem is a target; for MUSDB18 the four stems).
        stem_map_file: where the map was read from (for messages and records).
    """

    root: Path
    layout: str = "musdb"
    stem_map: tuple[tuple[str, Any], ...] | None = None
    stem_map_file: str | None = None

    @classmethod
    def open(cls, root: str | os.PathLike, layout: str | None = None,
             stem_map_file: str | os.PathLike | None = None) -> "DataSource":
        """The source at `root`: its layout detected (`layout` forces one), the stem map read and
        checked against the stems the folder holds. DataError / ConfigError name the folder or file."""
        root = Path(root)
        layout = multitrack.detect_layout(root, layout)
        stem_map = _freeze(multitrack.read_stem_map(stem_map_file)) if stem_map_file is not None else None
        source = cls(root, layout, stem_map, str(stem_map_file) if stem_map_file is not None else None)
        if stem_map is not None:
            raw = set(source.raw_stems())
            named = {n for _, names in stem_map if names != multitrack.REST for n in names}
            unknown = sorted(named - raw)
            if unknown and not (named & raw):
                raise ConfigError(f"{stem_map_file}: none of the stems it names are in {root} "
                                  f"(it has: {', '.join(sorted(raw))})")
        return source

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None, root: str | os.PathLike) -> "DataSource":
        """The source a run or shard folder recorded (`spec`; None: plain MUSDB18) at `root`."""
        if not record:
            return cls(Path(root))
        stem_map = record.get("stem_map")
        return cls(Path(root), record["layout"], _freeze(stem_map), record.get("stem_map_file"))

    # ----------------------------------------------------------------------------- what it holds

    @property
    def plain_musdb(self) -> bool:
        return self.layout == "musdb" and self.stem_map is None

    def spec(self) -> dict[str, Any] | None:
        """What a shard folder or run records about the source: None for plain MUSDB18."""
        if self.plain_musdb:
            return None
        return {"layout": self.layout, "stems": list(self.stems),
                "stem_map": {t: raw if raw == multitrack.REST else list(raw) for t, raw in self.stem_map}
                if self.stem_map is not None else None,
                "stem_map_file": self.stem_map_file}

    def raw_stems(self) -> tuple[str, ...]:
        """Every raw stem name in the folder (all splits), sorted; MUSDB18's four in its order."""
        if self.layout == "musdb":
            return tuple(TARGETS)
        names = {name for track in multitrack.list_tracks(self.root, self.layout) for name in track.stems}
        return tuple(sorted(names))

    @property
    def stems(self) -> tuple[str, ...]:
        """The targets the data gives, in shard order: the stem map's targets in its order, else
        the raw stems (MUSDB18: vocals, drums, bass, other)."""
        if self.stem_map is not None:
            return tuple(t for t, _ in self.stem_map)
        return self.raw_stems()

    def check_targets(self, targets: Sequence[str], flag: str = "--targets") -> None:
        """ConfigError naming the targets the data does not give."""
        unknown = [t for t in targets if t not in self.stems]
        if unknown:
            raise ConfigError(f"{flag} {' '.join(targets)}: {', '.join(unknown)} not in {self.root} "
                              f"({self.layout}{', stem map ' + str(self.stem_map_file) if self.stem_map_file else ''}; "
                              f"it has: {', '.join(self.stems)})")

    # ----------------------------------------------------------------------------- tracks

    def split_tracks(self, split: str, strict: bool = True) -> list[Any]:
        """The tracks of `split` (train, valid or test), sorted by name; DataError for an empty split."""
        if self.layout == "musdb":
            return musdb.split_tracks(self.root, split, strict)
        if split not in musdb.SPLITS:
            raise DataError(f"unknown split {split!r} (choose from {', '.join(musdb.SPLITS)})")
        if self.layout == "moisesdb":
            tracks = [t for t in multitrack.list_tracks(self.root, "moisesdb") if _moisesdb_split(t.name) == split]
        else:
            folders = {name: multitrack.list_tracks(self.root, "stems", name) if (self.root / name).is_dir() else []
                       for name in musdb.SPLITS}
            tracks = folders[split]
            if split in ("train", "valid") and not (self.root / "valid").is_dir():
                train = folders["train"]
                held = train[-max(1, len(train) // 6):] if len(train) > 1 else []
                tracks = held if split == "valid" else [t for t in train if t not in held]
        if not tracks:
            raise DataError(f"{self.root}: the '{split}' split has no tracks")
        return tracks

    def fingerprint(self, track: Any) -> list[list]:
        """[file name, size, modification time in ns] of every file the track is read from."""
        if isinstance(track, musdb.Track):
            return musdb.source_fingerprint(track)
        files = [f for fs in track.stems.values() for f in fs] + ([track.mixture] if track.mixture else [])
        out = []
        for path in files:
            try:
                stat = path.stat()
                out.append([f"{path.parent.name}/{path.name}", stat.st_size, stat.st_mtime_ns])
            except OSError:
                out.append([path.name, None, None])
        return out

    def where(self, track: Any) -> str:
        """The track's folder or file, for messages."""
        return str(track.path) if isinstance(track, musdb.Track) else str(self.root / (track.split or "") / track.name)

    def load(self, track: Any, sample_rate: int | None = None, mono: bool = False,
             targets: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], int]:
        """The track's "mixture" and targets (`targets`, default all `stems`) as float32
        (samples, channels) arrays (channels 1 with `mono`), at `sample_rate` when given."""
        targets = tuple(targets) if targets is not None else self.stems
        if self.plain_musdb:
            return musdb.load_track(track, sample_rate=sample_rate, mono=mono, sources=("mixture",) + targets)
        if self.layout == "musdb":
            audio, rate = musdb.load_track(track, sample_rate=sample_rate, mono=mono)
            raw = {name: wave for name, wave in audio.items() if name != "mixture"}
            mixture = audio["mixture"]
        else:
            audio, rate = multitrack.load_multitrack(track, sample_rate)
            if track.mixture is not None:
                mismatch = multitrack.mixture_mismatch_db(audio)
                if mismatch < MISMATCH_DB:
                    raise DataError(f"{self.where(track)}: the stems do not add up to mixture "
                                    f"{track.mixture.name} (their sum is {mismatch:.1f} dB from it; "
                                    f"at least {MISMATCH_DB:.0f} dB expected)")
            if mono:
                audio = {name: np.mean(wave, axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
                         for name, wave in audio.items()}
            raw = {name: wave for name, wave in audio.items() if name != multitrack.MIXTURE}
            mixture = audio[multitrack.MIXTURE]
        stem_map = dict(self.stem_map) if self.stem_map is not None else {name: (name,) for name in self.raw_stems()}
        missing = [t for t in targets if stem_map.get(t) not in (None, multitrack.REST)
                   and not any(name in raw for name in stem_map[t])]
        if missing:
            raise DataError(f"{self.where(track)}: no stem for target(s) {', '.join(missing)} "
                            f"(the track has: {', '.join(sorted(raw))})")
        grouped = multitrack.group_stems(raw, stem_map, targets)
        silent = [t for t, wave in grouped.items() if float(np.max(np.abs(wave), initial=0.0)) < musdb.SILENCE_PEAK]
        if silent:
            raise DataError(f"{self.where(track)}: target(s) {', '.join(silent)} silent throughout (below -100 dBFS)")
        return {"mixture": mixture, **grouped}, rate


def _moisesdb_split(name: str) -> str:
    first = hashlib.sha1(name.encode()).digest()[0]
    return "test" if first < MOISESDB_TEST else "valid" if first < MOISESDB_VALID else "train"


def describe(source: DataSource) -> str:
    """One line for logs: folder, layout, map and targets."""
    extra = f", stem map {source.stem_map_file}" if source.stem_map_file else ""
    return f"{source.root} ({source.layout}{extra}; targets {', '.join(source.stems)})"

