"""The procedural demo set: multitrack songs (drums, bass, other, vocals) in MUSDB18-HQ layout,
or their instrument parts in the generic stems layout.

``make_demo_set`` writes ``ROOT/{train,test}/demo_<subset>_<iii>/`` with the five stereo float32
wav files of a song and its ``meta.json``; a given seed always gives the same bytes. With
``layout="stems"`` it writes ``ROOT/{train,valid,test}/demo_<subset>_<iii>/`` with one wav per
instrument part the song plays (kick, snare, hats, bass, vocals and the other stem's instruments,
`PARTS`), their sum as ``mixture.wav`` and ``meta.json``, plus ``ROOT/musdb_stem_map.json``, the stem
map that groups the parts back into the four MUSDB stems (the train and test songs are the musdb
layout's of the same seed, part for part). ``demo_set_is_complete`` tells whether a folder already
holds the set asked for. It is the data used when no MUSDB18 is given, and by the tests and benchmarks.

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

from mss_tf import SOURCES
from mss_tf.audio import io as audio_io
from mss_tf.data.demo.track import MUSDB_STEM_MAP, PARTS, STYLES, generate_track
from mss_tf.errors import ConfigError, DataError

__all__ = [
    "GENERATOR_VERSION",
    "LAYOUTS",
    "MARKER",
    "MUSDB_STEM_MAP",
    "PARTS",
    "SOURCES",
    "STEM_MAP_FILE",
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
LAYOUTS = ("musdb", "stems")
SUBSETS = ("train", "test")
# The subsets of each layout, and the order that numbers them in the track seeds: "valid" comes
# last, so a train or test song is the same in both layouts.
LAYOUT_SUBSETS = {"musdb": SUBSETS, "stems": ("train", "valid", "test")}
SEED_SUBSETS = ("train", "test", "valid")
STEM_MAP_FILE = "musdb_stem_map.json"
# The marker's "generator" field: the name of this module (one file until it became a package).
GENERATOR = "mss_tf.data.demo"


def track_rng(seed: int, subset: str, index: int) -> np.random.Generator:
    """The generator of one track, derived from the set seed, the subset and the track index."""
    return np.random.default_rng([int(seed), SEED_SUBSETS.index(subset), int(index)])


def track_name(subset: str, index: int) -> str:
    """Folder name of a demo track, unique across subsets (MUSDB names are unique too)."""
    return f"demo_{subset}_{index:03d}"


def _check_params(
    seed: int, n_train: int, n_test: int, seconds: float, sample_rate: int, style: str = "balanced",
    layout: str = "musdb", n_valid: int | None = None,
) -> dict:
    """The set's parameters as recorded in its marker (n_valid only in the stems layout, 2 by default)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "musdb" and n_valid:
        raise ConfigError(f"the musdb layout has no valid subset (n_valid={n_valid!r}); use layout='stems'")
    if layout == "stems" and n_valid is None:
        n_valid = 2
    counts = {"n_train": n_train, "n_test": n_test, **({"n_valid": n_valid} if layout == "stems" else {})}
    for name, value in (("seed", seed), *counts.items(), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if min(counts.values()) < 0:
        raise ConfigError(f"track counts must be >= 0, got {', '.join(f'{k}={v}' for k, v in counts.items())}")
    if sum(counts.values()) == 0:
        raise ConfigError(f"the demo set needs at least one track ({' + '.join(counts)} >= 1)")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 1.0):
        raise ConfigError(f"seconds must be a number >= 1, got {seconds!r}")
    if not 16000 <= sample_rate <= 192000:
        raise ConfigError(f"sample_rate must be in 16000..192000 Hz, got {sample_rate}")
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    params = {"seed": int(seed), "n_train": int(n_train), "n_test": int(n_test), "seconds": float(seconds),
              "sample_rate": int(sample_rate), "style": style}
    if layout == "stems":
        params["n_valid"] = int(n_valid)
    return params


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
    layout: str = "musdb",
    n_valid: int | None = None,
) -> bool:
    """Whether root holds a finished demo set of this generator version in `layout` with the given
    parameters.

    Parameters left as None are not compared. Every track's wav files must exist: the five of the
    musdb layout, or the mixture and the parts the marker lists for the track in the stems layout.
    """
    root = Path(root)
    marker = _read_marker(root)
    if marker is None or marker.get("version") != GENERATOR_VERSION:
        return False
    if marker.get("layout", "musdb") != layout:  # the musdb layout's marker has no "layout" (as before it existed)
        return False
    wanted = {"seed": seed, "n_train": n_train, "n_test": n_test, "seconds": seconds, "sample_rate": sample_rate,
              "style": style, "n_valid": n_valid}
    for key, value in wanted.items():
        if value is not None and marker.get("params", {}).get(key) != value:
            return False
    parts = marker.get("parts", {})
    for subset, names in marker.get("tracks", {}).items():
        for name in names:
            files = SOURCES if layout == "musdb" else ("mixture", *parts.get(name, ()))
            if not all((root / subset / name / f"{file}.wav").is_file() for file in files):
                return False
    return layout == "musdb" or (root / STEM_MAP_FILE).is_file()


def make_demo_set(
    root: str | os.PathLike,
    seed: int = 0,
    n_train: int = 16,
    n_test: int = 4,
    seconds: float = 12.0,
    sample_rate: int = 44100,
    progress: Callable[[int, int], None] | None = None,
    style: str = "balanced",
    *,
    layout: str = "musdb",
    n_valid: int | None = None,
) -> Path:
    """Write a procedural demo set in MUSDB18-HQ layout (or the stems layout) at root and return root.

    Tracks are `ROOT/{train,test}/demo_<subset>_<iii>/{mixture,drums,bass,other,vocals}.wav`
    (stereo float32 wav) plus a `meta.json` describing each song. `layout="stems"`: tracks are
    `ROOT/{train,valid,test}/demo_<subset>_<iii>/` with a wav per part the song plays (`PARTS`; no
    silent files) and `mixture.wav`, their sum, and `ROOT/musdb_stem_map.json` holds
    `MUSDB_STEM_MAP`; `n_valid` validation songs (default 2; the musdb layout has none). The set
    is built in a hidden sibling folder and renamed into place with a `.complete` marker, so an
    interrupted run never leaves a set that looks complete. If root already holds a complete set
    with the same layout and parameters, nothing is written. An older or different demo set at
    root is replaced; any other existing folder is refused (DataError). `progress(done, total)`
    is called once the checks pass (done = 0) and after each track. `style`: "balanced" (default)
    or "sparse" (`STYLES`).
    """
    params = _check_params(seed, n_train, n_test, seconds, sample_rate, style, layout, n_valid)
    root = Path(root)
    if demo_set_is_complete(root, layout=layout, **params):
        return root
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise DataError(f"{root}: exists and is not a folder")
        if any(root.iterdir()) and _read_marker(root) is None:
            raise DataError(f"{root}: folder exists and is not a demo set; choose another output folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    subsets = LAYOUT_SUBSETS[layout]
    jobs = [(subset, i) for subset in subsets for i in range(params[f"n_{subset}"])]
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the set should not be
        tracks: dict[str, list[str]] = {subset: [] for subset in subsets}
        parts: dict[str, list[str]] = {}
        if progress is not None:
            progress(0, len(jobs))
        for done, (subset, index) in enumerate(jobs, start=1):
            name = track_name(subset, index)
            folder = staging / subset / name
            folder.mkdir(parents=True)
            rng = track_rng(params["seed"], subset, index)
            audio, meta = generate_track(rng, params["seconds"], params["sample_rate"], params["style"],
                                         parts=layout == "stems")
            for source, x in audio.items():
                # float wav without the PEAK chunk's time of writing: the same seed gives the same bytes
                audio_io.save_audio(folder / f"{source}.wav", x, params["sample_rate"], reproducible=True)
            (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            tracks[subset].append(name)
            parts[name] = [source for source in audio if source != "mixture"]
            if progress is not None:
                progress(done, len(jobs))
        for subset in subsets:
            (staging / subset).mkdir(exist_ok=True)
        marker = {"generator": GENERATOR, "version": GENERATOR_VERSION, "params": params, "tracks": tracks}
        if layout == "stems":
            marker = {**marker, "layout": layout, "parts": parts}
            (staging / STEM_MAP_FILE).write_text(json.dumps(MUSDB_STEM_MAP) + "\n")
        (staging / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        _install(staging, root, layout, params)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _install(staging: Path, root: Path, layout: str, params: dict) -> None:
    """Rename the finished staging folder to root, moving an old demo set (or empty folder) aside."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
    try:
        os.replace(staging, root)
    except OSError:
        # Another process installed a set meanwhile; keep it when it is the one we wanted.
        if not demo_set_is_complete(root, layout=layout, **params):
            raise DataError(f"{root}: could not move the finished demo set into place") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
