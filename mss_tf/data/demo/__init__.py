"""The procedural demo set: multitrack songs (drums, bass, other, vocals) in MUSDB18-HQ layout.

``make_demo_set`` writes ``ROOT/{train,test}/demo_<subset>_<iii>/`` with the five stereo float32
wav files of a song and its ``meta.json``; a given seed always gives the same bytes.
``demo_set_is_complete`` tells whether a folder already holds the set asked for. It is the data
used when no MUSDB18 is given, and by the tests and benchmarks.

The synthesiser lives in the submodules: ``track`` (one song: ``generate_track``), ``plan``
(tempo, key, chords), one module per instrument family (``drums``, ``bass``, ``other``,
``vocals``) and ``dsp`` (filters, oscillators, envelopes, panning, room reverb).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from mss_tf.audio import io as audio_io
from mss_tf.data.demo.track import SOURCES, STYLES, generate_track
from mss_tf.errors import ConfigError, DataError

__all__ = [
    "GENERATOR_VERSION",
    "MARKER",
    "SOURCES",
    "STYLES",
    "SUBSETS",
    "demo_set_is_complete",
    "generate_track",
    "make_demo_set",
    "track_name",
    "track_rng",
]

# Bump whenever the synthesis changes, so cached demo sets are rebuilt.
GENERATOR_VERSION = 1
MARKER = ".complete"
SUBSETS = ("train", "test")
# The marker's "generator" field: the name of this module (one file until it became a package).
GENERATOR = "mss_tf.data.demo"


def track_rng(seed: int, subset: str, index: int) -> np.random.Generator:
    """The generator of one track, derived from the set seed, the subset and the track index."""
    return np.random.default_rng([int(seed), SUBSETS.index(subset), int(index)])


def track_name(subset: str, index: int) -> str:
    """Folder name of a demo track, unique across subsets (MUSDB names are unique too)."""
    return f"demo_{subset}_{index:03d}"


def _check_params(seed: int, n_train: int, n_test: int, seconds: float, sample_rate: int, style: str = "balanced") -> dict:
    for name, value in (("seed", seed), ("n_train", n_train), ("n_test", n_test), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"track counts must be >= 0, got n_train={n_train}, n_test={n_test}")
    if n_train + n_test == 0:
        raise ConfigError("the demo set needs at least one track (n_train + n_test >= 1)")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 1.0):
        raise ConfigError(f"seconds must be a number >= 1, got {seconds!r}")
    if not 16000 <= sample_rate <= 192000:
        raise ConfigError(f"sample_rate must be in 16000..192000 Hz, got {sample_rate}")
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return {"seed": int(seed), "n_train": int(n_train), "n_test": int(n_test), "seconds": float(seconds),
            "sample_rate": int(sample_rate), "style": style}


def _read_marker(root: Path) -> dict | None:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def demo_set_is_complete(
    root: str | os.PathLike,
    *,
    seed: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seconds: float | None = None,
    sample_rate: int | None = None,
    style: str | None = None,
) -> bool:
    """Whether root holds a finished demo set of this generator version with the given parameters.

    Parameters left as None are not compared. Every track's five wav files must exist.
    """
    root = Path(root)
    marker = _read_marker(root)
    if marker is None or marker.get("version") != GENERATOR_VERSION:
        return False
    wanted = {"seed": seed, "n_train": n_train, "n_test": n_test, "seconds": seconds, "sample_rate": sample_rate,
              "style": style}
    for key, value in wanted.items():
        if value is not None and marker.get("params", {}).get(key) != value:
            return False
    for subset, names in marker.get("tracks", {}).items():
        for name in names:
            if not all((root / subset / name / f"{source}.wav").is_file() for source in SOURCES):
                return False
    return True


def make_demo_set(
    root: str | os.PathLike,
    seed: int = 0,
    n_train: int = 16,
    n_test: int = 4,
    seconds: float = 12.0,
    sample_rate: int = 44100,
    progress: Callable[[int, int], None] | None = None,
    style: str = "balanced",
) -> Path:
    """Write a procedural demo set in MUSDB18-HQ layout at root and return root.

    Tracks are `ROOT/{train,test}/demo_<subset>_<iii>/{mixture,drums,bass,other,vocals}.wav`
    (stereo float32 wav) plus a `meta.json` describing each song. The set is built in a hidden
    sibling folder and renamed into place with a `.complete` marker, so an interrupted run never
    leaves a set that looks complete. If root already holds a complete set with the same
    parameters, nothing is written. An older or different demo set at root is replaced; any other
    existing folder is refused (DataError). `progress(done, total)` is called once the checks
    pass (done = 0) and after each track. `style`: "balanced" (default) or "sparse" (`STYLES`).
    """
    params = _check_params(seed, n_train, n_test, seconds, sample_rate, style)
    root = Path(root)
    if demo_set_is_complete(root, **params):
        return root
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise DataError(f"{root}: exists and is not a folder")
        if any(root.iterdir()) and _read_marker(root) is None:
            raise DataError(f"{root}: folder exists and is not a demo set; choose another output folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    jobs = [("train", i) for i in range(params["n_train"])] + [("test", i) for i in range(params["n_test"])]
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the set should not be
        tracks: dict[str, list[str]] = {subset: [] for subset in SUBSETS}
        if progress is not None:
            progress(0, len(jobs))
        for done, (subset, index) in enumerate(jobs, start=1):
            name = track_name(subset, index)
            folder = staging / subset / name
            folder.mkdir(parents=True)
            rng = track_rng(params["seed"], subset, index)
            audio, meta = generate_track(rng, params["seconds"], params["sample_rate"], params["style"])
            for source in SOURCES:
                # float wav without the PEAK chunk's time of writing: the same seed gives the same bytes
                audio_io.save_audio(folder / f"{source}.wav", audio[source], params["sample_rate"], reproducible=True)
            (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            tracks[subset].append(name)
            if progress is not None:
                progress(done, len(jobs))
        for subset in SUBSETS:
            (staging / subset).mkdir(exist_ok=True)
        marker = {"generator": GENERATOR, "version": GENERATOR_VERSION, "params": params, "tracks": tracks}
        (staging / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        _install(staging, root, params)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _install(staging: Path, root: Path, params: dict) -> None:
    """Rename the finished staging folder to root, moving an old demo set (or empty folder) aside."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
    try:
        os.replace(staging, root)
    except OSError:
        # Another process installed a set meanwhile; keep it when it is the one we wanted.
        if not demo_set_is_complete(root, **params):
            raise DataError(f"{root}: could not move the finished demo set into place") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
