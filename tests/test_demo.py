"""The procedural demo set: MUSDB18-HQ layout, exact mixtures, determinism, quality, caching, CLI."""

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

from mss_tf.data import demo
from mss_tf.errors import ConfigError, DataError
from tests.conftest import REPO, checkout_env

SMALL = dict(seed=0, n_train=2, n_test=1, seconds=4.0)
SOURCES = ("mixture", "drums", "bass", "other", "vocals")
TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return demo.make_demo_set(tmp_path_factory.mktemp("demo") / "demo-musdb", **SMALL)


def track_dirs(root: Path) -> list[Path]:
    return sorted(p for subset in ("train", "test") for p in (root / subset).iterdir())


def load(folder: Path, source: str) -> np.ndarray:
    data, rate = sf.read(folder / f"{source}.wav", dtype="float32", always_2d=True)
    assert rate == SR
    return data


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def band_fraction(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.mean(axis=1).astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / SR)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum() / spectrum.sum())


def test_layout(small_set):
    root = small_set
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["test", "train"]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["demo_train_000", "demo_train_001"]
    assert sorted(p.name for p in (root / "test").iterdir()) == ["demo_test_000"]
    for folder in track_dirs(root):
        assert sorted(p.name for p in folder.iterdir()) == sorted([f"{s}.wav" for s in SOURCES] + ["meta.json"])
        assert "tempo_bpm" in json.loads((folder / "meta.json").read_text())
    assert not list(root.parent.glob(f".{root.name}.*")), "staging folders left behind"


def test_wav_format(small_set):
    for folder in track_dirs(small_set):
        for source in SOURCES:
            info = sf.info(folder / f"{source}.wav")
            assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 2, "FLOAT", "WAV")
            assert info.frames == int(SMALL["seconds"] * SR)


def test_mixture_is_sum_of_stems_and_does_not_clip(small_set):
    for folder in track_dirs(small_set):
        stems = sum(load(folder, s).astype(np.float64) for s in TARGETS)
        mixture = load(folder, "mixture")
        assert np.max(np.abs(mixture - stems)) < 1e-6
        assert np.max(np.abs(mixture)) < 1.0
        assert not np.allclose(mixture[:, 0], mixture[:, 1]), "stereo channels should differ"


def test_deterministic(small_set, tmp_path):
    again = demo.make_demo_set(tmp_path / "again", **SMALL)
    assert file_bytes(again) == file_bytes(small_set)
    other = demo.make_demo_set(tmp_path / "other", **{**SMALL, "seed": 1, "n_train": 1, "n_test": 0})
    first = "train/demo_train_000/mixture.wav"
    assert file_bytes(other)[first] != file_bytes(small_set)[first]


def test_stems_pass_the_quality_filter(small_set):
    # The filter the training pipeline applies: RMS > 0.005 and >= 30 % of 50 ms frames active.
    frame = int(0.05 * SR)
    for folder in track_dirs(small_set):
        for source in TARGETS:
            mono = load(folder, source).mean(axis=1).astype(np.float64)
            frames = mono[: len(mono) // frame * frame].reshape(-1, frame)
            frame_rms = np.sqrt(np.mean(frames**2, axis=1))
            assert np.sqrt(np.mean(mono**2)) > 0.005, (folder.name, source)
            assert np.mean(frame_rms > 0.01) >= 0.3, (folder.name, source)


def test_sources_overlap_in_frequency(small_set):
    # Not separable by a fixed filter bank: voice and chords share the 200-2000 Hz band, the
    # bass reaches above 200 Hz with its harmonics, and the drums are broadband.
    for folder in track_dirs(small_set):
        audio = {s: load(folder, s) for s in TARGETS}
        assert band_fraction(audio["vocals"], 200, 2000) > 0.3, folder.name
        assert band_fraction(audio["other"], 200, 2000) > 0.3, folder.name
        assert band_fraction(audio["bass"], 200, SR / 2) > 0.1, folder.name
        assert band_fraction(audio["drums"], 2000, SR / 2) > 0.02, folder.name
        assert band_fraction(audio["drums"], 0, 200) > 0.1, folder.name


def test_cached_set_is_not_rewritten(small_set, monkeypatch):
    assert demo.demo_set_is_complete(small_set, **SMALL)
    assert not demo.demo_set_is_complete(small_set, **{**SMALL, "seed": 5})
    mtimes = {p: p.stat().st_mtime_ns for p in small_set.rglob("*")}

    def no_synthesis(*args, **kwargs):
        raise AssertionError("a complete set was generated again")

    monkeypatch.setattr(demo, "generate_track", no_synthesis)
    assert demo.make_demo_set(small_set, **SMALL) == small_set
    assert {p: p.stat().st_mtime_ns for p in small_set.rglob("*")} == mtimes


# sha256 of one short song: its five sources rounded to multiples of 2**-13 (so that last-bit
# differences in another platform's maths cannot matter) as little-endian int16, then its
# description as sorted JSON. Computed with the synthesiser as it was when it was one file,
# demo.py; a change to the synthesis must bump GENERATOR_VERSION and these checksums together.
SONG_CHECKSUMS = [
    ((0, "train", 0, 2.0, 44100, "balanced"), "b00c832ec7cdb91efc8f27da1fb081cb041ca6fe0e3f280469e04c14e0eec418"),
    ((3, "test", 1, 2.0, 22050, "sparse"), "cb667981dd8972a40c5a64d0319c45be7a1b186e6952d63b7952a725d839fc3f"),
]


@pytest.mark.parametrize("song, checksum", SONG_CHECKSUMS)
def test_a_seed_always_gives_the_same_song(song, checksum):
    seed, subset, index, seconds, rate, style = song
    audio, meta = demo.generate_track(demo.track_rng(seed, subset, index), seconds, rate, style)
    digest = hashlib.sha256()
    for source in SOURCES:
        assert audio[source].dtype == np.float32 and audio[source].shape == (int(seconds * rate), 2)
        digest.update(np.round(audio[source].astype(np.float64) * 2**13).astype("<i2").tobytes())
    digest.update(json.dumps(meta, sort_keys=True).encode())
    assert digest.hexdigest() == checksum
    assert demo.GENERATOR_VERSION == 1


def test_changed_parameters_replace_the_set(tmp_path):
    root = demo.make_demo_set(tmp_path / "set", seed=0, n_train=1, n_test=0, seconds=1.0)
    demo.make_demo_set(root, seed=0, n_train=0, n_test=1, seconds=1.0)
    assert demo.demo_set_is_complete(root, n_train=0, n_test=1)
    assert not (root / "train" / "demo_train_000").exists()
    assert [p.name for p in (root / "test").iterdir()] == ["demo_test_000"]


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = demo.generate_track
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo, "generate_track", failing)
    with pytest.raises(KeyboardInterrupt):
        demo.make_demo_set(tmp_path / "set", seed=0, n_train=2, n_test=0, seconds=1.0)
    assert not (tmp_path / "set").exists()
    assert not demo.demo_set_is_complete(tmp_path / "set")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_other_data(tmp_path):
    folder = tmp_path / "musdb"
    (folder / "train" / "song").mkdir(parents=True)
    with pytest.raises(DataError, match="not a demo set"):
        demo.make_demo_set(folder, n_train=1, n_test=0, seconds=1.0)
    assert (folder / "train" / "song").is_dir()
    a_file = tmp_path / "file.wav"
    a_file.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        demo.make_demo_set(a_file, n_train=1, n_test=0, seconds=1.0)


@pytest.mark.parametrize("bad", [{"n_train": -1}, {"n_test": -2}, {"seed": -1}, {"seconds": 0.0},
                                 {"n_train": 0, "n_test": 0}, {"sample_rate": 8000}, {"n_train": 1.5}])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ConfigError):
        demo.make_demo_set(tmp_path / "set", **{"n_train": 1, "n_test": 0, "seconds": 1.0, **bad})
    assert not (tmp_path / "set").exists()


def run_cli(*args: object) -> subprocess.CompletedProcess:
    """`python datasets/make_demo.py ARGS` (it imports mss_tf: this checkout's, by PYTHONPATH)."""
    return subprocess.run([sys.executable, str(REPO / "datasets" / "make_demo.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=checkout_env(os.environ))


def test_cli_writes_a_set(tmp_path):
    out = tmp_path / "cli-demo"
    result = run_cli("--out", out, "--seed", 3, "--train", 1, "--test", 1, "--seconds", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    assert str(out.resolve()) in result.stdout
    assert demo.demo_set_is_complete(out, seed=3, n_train=1, n_test=1, seconds=2.0)
    in_process = demo.make_demo_set(tmp_path / "in-process", seed=3, n_train=1, n_test=1, seconds=2.0)
    assert file_bytes(in_process) == file_bytes(out)  # same bytes from another process
    again = run_cli("--out", out, "--seed", 3, "--train", 1, "--test", 1, "--seconds", 2, "--quiet")
    assert again.returncode == 0 and "already complete" in again.stdout


@pytest.mark.parametrize("args, needle", [
    (["--train", "-1"], "-1"),
    (["--test", "many"], "many"),
    (["--seconds", "0"], "0"),
    (["--train", "0", "--test", "0"], "--train"),
])
def test_cli_bad_input(tmp_path, args, needle):
    result = run_cli("--out", tmp_path / "x", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert not (tmp_path / "x").exists()


def test_cli_out_is_a_file(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    result = run_cli("--out", a_file, "--train", 1, "--test", 0, "--seconds", 1)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(a_file) in lines[0], result.stderr
    assert a_file.read_text() == "hello"


def test_sparse_style_has_quiet_and_intermittent_stems(tmp_path):
    root = demo.make_demo_set(tmp_path / "sparse", seed=1, n_train=3, n_test=1, seconds=6.0, style="sparse")
    assert demo.demo_set_is_complete(root, style="sparse") and not demo.demo_set_is_complete(root, style="balanced")
    spreads, gated = [], 0
    for folder in track_dirs(root):
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["style"] == "sparse"
        rms = {s: float(np.sqrt(np.mean(load(folder, s) ** 2))) for s in TARGETS}
        spreads.append(20 * np.log10(max(rms.values()) / min(rms.values())))
        for stem, (start, end) in meta["silent_seconds"].items():
            gated += 1
            audio = load(folder, stem)[int((start + 0.05) * SR) : int((end - 0.05) * SR)]
            assert np.max(np.abs(audio)) < 1e-3, (folder.name, stem)  # silent where the meta says
        mixture = sum(load(folder, s).astype(np.float64) for s in TARGETS)
        assert np.max(np.abs(load(folder, "mixture") - mixture)) < 1e-6
    assert max(spreads) > 12.0 and gated >= 2


def test_unknown_style_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="style"):
        demo.make_demo_set(tmp_path / "set", n_train=1, n_test=0, seconds=1.0, style="loud")
