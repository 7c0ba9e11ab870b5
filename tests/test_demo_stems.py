"""The demo set's stems layout: instrument parts, their sums, the stem map back to MUSDB, the
marker, the CLI; and the musdb layout left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mss_tf import TARGETS
from mss_tf.data import demo
from mss_tf.data.multitrack import MIXTURE, detect_layout, group_stems, list_tracks, load_multitrack, read_stem_map
from mss_tf.errors import ConfigError
from tests.conftest import REPO, checkout_env

SR = 16000
# Seed 2 has songs with and without the arpeggio, and two chord instruments (epiano, guitar).
SMALL = dict(seed=2, n_train=2, n_test=1, seconds=2.0, sample_rate=SR)
ALL_PARTS = {part for parts in demo.PARTS.values() for part in parts}
EVERY_SONG = ("kick", "snare", "hats", "bass", "vocals")


@pytest.fixture(scope="module")
def stems_set(tmp_path_factory) -> Path:
    return demo.make_demo_set(tmp_path_factory.mktemp("demo") / "stems", **SMALL, layout="stems", n_valid=1)


@pytest.fixture(scope="module")
def musdb_set(tmp_path_factory) -> Path:
    return demo.make_demo_set(tmp_path_factory.mktemp("demo") / "musdb", **SMALL)


def track_dirs(root: Path) -> list[Path]:
    return [p for subset in ("train", "valid", "test") for p in sorted((root / subset).iterdir())]


def load(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SR
    return data.astype(np.float64)


def parts_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: load(p) for p in sorted(folder.glob("*.wav")) if p.stem != "mixture"}


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(stems_set):
    root = stems_set
    assert sorted(p.name for p in root.iterdir()) == [".complete", "musdb_stem_map.json", "test", "train", "valid"]
    assert [p.name for p in track_dirs(root)] == ["demo_train_000", "demo_train_001", "demo_valid_000", "demo_test_000"]
    assert detect_layout(root) == "stems"
    comps = set()
    for folder in track_dirs(root):
        names = {p.name for p in folder.iterdir()}
        parts = {name[:-4] for name in names if name.endswith(".wav")} - {"mixture"}
        assert names == {"mixture.wav", "meta.json"} | {f"{part}.wav" for part in parts}
        assert parts <= ALL_PARTS and set(EVERY_SONG) <= parts, (folder.name, parts)
        meta = json.loads((folder / "meta.json").read_text())
        # one chord instrument, the one the description names; the arpeggio when it plays
        assert parts - set(EVERY_SONG) == {meta["other"]["comp"]} | ({"arp"} if meta["other"]["arpeggio"] else set())
        comps.add(meta["other"]["comp"])
        for part in parts | {"mixture"}:
            info = sf.info(folder / f"{part}.wav")
            assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 2, "FLOAT", 2 * SR)
    assert comps == {"epiano", "guitar"}


def test_absent_parts_are_not_written_and_written_ones_are_audible(stems_set):
    without_arp = [f.name for f in track_dirs(stems_set) if not (f / "arp.wav").exists()]
    assert without_arp and len(without_arp) < 4, without_arp
    for folder in track_dirs(stems_set):
        mixture_rms = np.sqrt(np.mean(load(folder / "mixture.wav") ** 2))
        for part, audio in parts_of(folder).items():
            level_db = 20 * np.log10(np.sqrt(np.mean(audio**2)) / mixture_rms)
            assert level_db > -40.0, (folder.name, part, level_db)


def test_parts_sum_to_the_mixture(stems_set):
    for folder in track_dirs(stems_set):
        mixture = load(folder / "mixture.wav")
        assert np.max(np.abs(mixture - sum(parts_of(folder).values()))) < 1e-6
        assert 0 < np.max(np.abs(mixture)) < 1.0


def test_stem_map_file(stems_set):
    assert json.loads((stems_set / "musdb_stem_map.json").read_text()) == {
        "vocals": ["vocals"], "drums": ["kick", "snare", "hats"], "bass": ["bass"], "other": "*rest*"}


def test_stem_map_gives_the_musdb_stems_of_the_same_seed(stems_set, musdb_set):
    # read as any stems folder would be (mss_tf.data.multitrack), grouped by the set's own stem map
    stem_map = read_stem_map(stems_set / "musdb_stem_map.json")
    tracks = [t for t in list_tracks(stems_set) if t.split != "valid"]
    assert [t.name for t in tracks] == ["demo_train_000", "demo_train_001", "demo_test_000"]
    for track in tracks:
        raw, rate = load_multitrack(track)
        raw.pop(MIXTURE)
        grouped = group_stems(raw, stem_map, targets=TARGETS)
        folder = musdb_set / track.split / track.name
        for target in TARGETS:
            assert np.max(np.abs(grouped[target] - load(folder / f"{target}.wav"))) < 1e-6, (track.name, target)
        assert (folder / "meta.json").read_bytes() == (stems_set / track.split / track.name / "meta.json").read_bytes()


def test_parts_sum_to_the_stems_in_process():
    # the renderers' parts against the stems they are summed into, for a sparse song (gated stems too)
    for seed in range(3):
        stems, meta = demo.generate_track(demo.track_rng(seed, "test", 0), 2.0, SR, "sparse")
        parts, parts_meta = demo.generate_track(demo.track_rng(seed, "test", 0), 2.0, SR, "sparse", parts=True)
        assert parts_meta == meta
        for target, names in demo.PARTS.items():
            total = sum(parts[n].astype(np.float64) for n in names if n in parts)
            assert np.max(np.abs(total - stems[target])) < 1e-6, (seed, target)


def test_reproducible(stems_set, tmp_path):
    again = demo.make_demo_set(tmp_path / "again", **SMALL, layout="stems", n_valid=1)
    assert file_bytes(again) == file_bytes(stems_set)


# sha256 of the musdb layout set (seed 0, 2 train + 1 test songs of 2 s at 16 kHz): every file's
# path, then its samples as little-endian float32 (wav) or its bytes (meta.json, .complete).
# Computed with the code before the stems layout existed (commit d92c771): the parts must not
# move a bit of the musdb layout. Exact float bits: another platform's maths may differ in the
# last bit (test_demo's SONG_CHECKSUMS are the rounded, portable check).
MUSDB_SET_SHA256 = "74e114344057e04ad9a4ff878547936536c8fb48b0617b6813152f8b82dd22f5"


def test_musdb_layout_is_unchanged(tmp_path):
    root = demo.make_demo_set(tmp_path / "musdb", seed=0, n_train=2, n_test=1, seconds=2.0, sample_rate=SR)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.suffix == ".wav":
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            digest.update(f"{rate} {data.shape}".encode() + data.astype("<f4").tobytes())
        else:
            digest.update(path.read_bytes())
    assert digest.hexdigest() == MUSDB_SET_SHA256
    assert "layout" not in json.loads((root / ".complete").read_text())


def test_marker_distinguishes_layouts(musdb_set, tmp_path):
    params = {**SMALL, "n_valid": 1}
    assert demo.demo_set_is_complete(musdb_set, **SMALL)
    assert not demo.demo_set_is_complete(musdb_set, **SMALL, layout="stems")
    root = tmp_path / "set"
    demo.make_demo_set(root, **SMALL)
    demo.make_demo_set(root, **params, layout="stems")  # the musdb set there is replaced
    assert demo.demo_set_is_complete(root, **params, layout="stems")
    assert not demo.demo_set_is_complete(root, **SMALL)
    assert not demo.demo_set_is_complete(root, **{**params, "n_valid": 2}, layout="stems")
    folder = root / "train" / "demo_train_000"
    assert (folder / "kick.wav").is_file() and not (folder / "drums.wav").exists()
    assert json.loads((root / ".complete").read_text())["layout"] == "stems"
    (folder / "kick.wav").unlink()
    assert not demo.demo_set_is_complete(root, layout="stems")
    demo.make_demo_set(root, **SMALL)  # and back
    assert demo.demo_set_is_complete(root, **SMALL) and not (root / "valid").exists()
    assert not (root / "musdb_stem_map.json").exists()


def test_bad_layout_parameters(tmp_path):
    with pytest.raises(ConfigError, match="valid"):
        demo.make_demo_set(tmp_path / "set", n_train=1, n_test=0, seconds=1.0, n_valid=1)
    with pytest.raises(ConfigError, match="layout"):
        demo.make_demo_set(tmp_path / "set", n_train=1, n_test=0, seconds=1.0, layout="moisesdb")
    with pytest.raises(ConfigError, match="n_valid"):
        demo.make_demo_set(tmp_path / "set", n_train=0, n_test=0, seconds=1.0, layout="stems", n_valid=0)
    assert not (tmp_path / "set").exists()


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "datasets" / "make_demo.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=checkout_env(os.environ))


def test_cli_stems_layout(stems_set, tmp_path):
    out = tmp_path / "cli"
    result = run_cli("--out", out, "--layout", "stems", "--valid", 1, "--seed", 2, "--train", 2, "--test", 1,
                     "--seconds", 2, "--sample-rate", SR, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "1 valid" in result.stdout and "stems layout" in result.stdout
    assert file_bytes(out) == file_bytes(stems_set)  # same bytes from another process


@pytest.mark.parametrize("args, needle", [
    (["--valid", "1"], "--valid"),
    (["--layout", "stems", "--valid", "-1"], "-1"),
    (["--layout", "mixed"], "mixed"),
    (["--layout", "stems", "--train", "0", "--test", "0", "--valid", "0"], "--valid"),
])
def test_cli_bad_layout_input(tmp_path, args, needle):
    result = run_cli("--out", tmp_path / "x", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert not (tmp_path / "x").exists()
