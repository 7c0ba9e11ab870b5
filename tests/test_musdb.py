"""MUSDB18 (.stem.mp4) and MUSDB18-HQ (wav) reading: layouts, splits, loading, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mss_tf.audio import io as audio_io
from mss_tf.data import musdb
from mss_tf.errors import AudioError, ConfigError, DataError
from tests.conftest import REPO, write_tone_track

RATE = 44100
OFFICIAL = "Leaf - Summerghost"  # one of musdb's 14 validation tracks


def tone_stems(seconds: float, seed: int, rate: int = RATE) -> dict[str, np.ndarray]:
    """Five stereo float32 sources (mixture = sum of four distinct tone+noise stems)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    stems = {}
    for name, freq in {"drums": 90.0, "bass": 55.0, "other": 660.0, "vocals": 440.0}.items():
        wave = 0.2 * np.sin(2 * np.pi * freq * (1 + 0.1 * seed) * t) + 0.01 * rng.standard_normal(t.size)
        stems[name] = np.stack([wave, 0.8 * wave], axis=1).astype(np.float32)
    return {"mixture": sum(stems.values()).astype(np.float32), **stems}


def write_stem_file(path: Path, audio: dict[str, np.ndarray], rate: int = RATE) -> None:
    """A MUSDB18-style .stem.mp4: AAC streams in musdb's stem order (mixture, drums, bass, other, vocals)."""
    import stempeg

    names = sorted(musdb.SOURCES, key=lambda s: musdb.STEM_INDEX[s])
    data = np.stack([audio[s] for s in names])  # (streams, samples, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    stempeg.write_stems(
        str(path), data, rate, writer=stempeg.StreamsWriter(codec="aac", bitrate=256000, stem_names=names)
    )


def write_wav_track(folder: Path, audio: dict[str, np.ndarray], rate: int = RATE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in audio.items():
        soundfile.write(folder / f"{name}.wav", data, rate, subtype="FLOAT")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n].ravel(), b[:n].ravel())[0, 1])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stem_musdb(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """MUSDB18 layout: train = one ordinary track + one official validation track (2 s each)."""
    root = tmp_path_factory.mktemp("stems") / "musdb18"
    written = {}
    for name, seed in (("A - First", 0), (OFFICIAL, 1)):
        written[name] = tone_stems(2.0, seed)
        write_stem_file(root / "train" / f"{name}.stem.mp4", written[name])
    return root, written


def remux(source: Path, target: Path, *args: str) -> None:
    """Copy the streams of a .stem.mp4 with ffmpeg (no re-encoding), e.g. a subset of them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c", "copy", *args, str(target)], check=True)


@pytest.fixture
def wav_official(tmp_path) -> Path:
    """MUSDB18-HQ layout holding an official validation track name."""
    root = tmp_path / "hq"
    for i, name in enumerate(["A - First", OFFICIAL, "Z - Last"]):
        write_tone_track(root / "train" / name, 0.5, seed=i)
    write_tone_track(root / "test" / "Test - Song", 0.5, seed=9)
    return root


# --------------------------------------------------------------------------- wav layout


def test_wav_layout_reads_back_exactly(tone_musdb):
    tracks = musdb.find_tracks(tone_musdb, "train")
    assert [t.name for t in tracks] == ["song 0", "song 1", "song 2"]
    assert {t.kind for t in tracks} == {"wav"} and musdb.detect_layout(tone_musdb, "train") == "wav"
    written = write_tone_track(tone_musdb / "train" / "song 1", 4.0, seed=1)
    audio, rate = musdb.load_track(tracks[1])
    assert rate == RATE and list(audio) == list(musdb.SOURCES)
    for source in musdb.SOURCES:
        assert audio[source].dtype == np.float32 and audio[source].shape == (4 * RATE, 2)
        np.testing.assert_array_equal(audio[source], written[source])
    assert musdb.validate_track(tracks[1]) is None


def test_mono_and_resampling_go_through_the_audio_module(tone_musdb):
    track = musdb.find_tracks(tone_musdb, "test")[0]
    full, _ = musdb.load_track(track)
    audio, rate = musdb.load_track(track, sample_rate=16000, mono=True, sources=("vocals", "mixture"))
    assert rate == 16000 and list(audio) == ["vocals", "mixture"]
    for source in ("vocals", "mixture"):
        expected = audio_io.resample(audio_io.mono(full[source]), RATE, 16000)
        assert audio[source].shape == (4 * 16000, 1)
        np.testing.assert_array_equal(audio[source], expected)


def test_official_split_matches_musdb(wav_official):
    import musdb as musdb_pkg

    config = Path(musdb_pkg.__file__).parent / "configs" / "mus.yaml"
    import yaml

    assert musdb.VALID_TRACKS == frozenset(yaml.safe_load(config.read_text())["validation_tracks"])
    valid = musdb.split_tracks(wav_official, "valid")
    train = musdb.split_tracks(wav_official, "train")
    assert [t.name for t in valid] == [OFFICIAL]
    assert [t.name for t in train] == ["A - First", "Z - Last"]
    reference = musdb_pkg.DB(root=str(wav_official), is_wav=True, subsets="train", split="valid")
    assert [t.name for t in reference] == [t.name for t in valid]


def test_unknown_split_and_subset(tone_musdb):
    with pytest.raises(DataError, match="unknown split 'dev'"):
        musdb.split_tracks(tone_musdb, "dev")
    with pytest.raises(DataError, match="unknown subset"):
        musdb.find_tracks(tone_musdb, "valid")
    with pytest.raises(DataError, match="unknown source"):
        musdb.load_track(musdb.find_tracks(tone_musdb, "test")[0], sources=("piano",))


def test_select_tracks_by_count_or_name():
    """evaluate.py --tracks: a count, exact names, else parts of names, each track once."""
    tracks = [musdb.Track(name, Path("/nowhere") / name, "test", musdb.WAV)
              for name in ("Al - Song", "Al - Song 2", "Bo - Tune", "Cy - Song")]
    names = lambda chosen: [t.name for t in chosen]  # noqa: E731
    assert names(musdb.select_tracks(tracks, None, "/root", "test")) == [t.name for t in tracks]
    assert names(musdb.select_tracks(tracks, ["2"], "/root", "test")) == ["Al - Song", "Al - Song 2"]
    assert names(musdb.select_tracks(tracks, ["9"], "/root", "test")) == [t.name for t in tracks]
    assert names(musdb.select_tracks(tracks, ["Al - Song"], "/root", "test")) == ["Al - Song"]  # exact wins
    assert names(musdb.select_tracks(tracks, ["tune", "SONG"], "/root", "test")) == [
        "Bo - Tune", "Al - Song", "Al - Song 2", "Cy - Song"]  # in the order asked, once each
    with pytest.raises(DataError, match="--tracks 'Dee': no such track in the test split of /root"):
        musdb.select_tracks(tracks, ["Song", "Dee"], "/root", "test")
    with pytest.raises(ConfigError, match="--tracks 0"):
        musdb.select_tracks(tracks, ["0"], "/root", "test")
    with pytest.raises(DataError, match="/root: no tracks in the test split"):
        musdb.select_tracks([], ["1"], "/root", "test")


# --------------------------------------------------------------------------- stem layout


def test_stem_layout_reads_aac_approximately(stem_musdb):
    root, written = stem_musdb
    assert musdb.detect_layout(root, "train") == "stem"
    tracks = musdb.find_tracks(root, "train")
    assert [(t.name, t.kind) for t in tracks] == [("A - First", "stem"), (OFFICIAL, "stem")]
    assert tracks[0].path == root / "train" / "A - First.stem.mp4"
    audio, rate = musdb.load_track(tracks[0])
    assert rate == RATE and list(audio) == list(musdb.SOURCES)
    for source in musdb.SOURCES:
        got, want = audio[source], written["A - First"][source]
        assert got.dtype == np.float32 and got.shape[1] == 2
        assert abs(got.shape[0] - want.shape[0]) <= 1024  # within one AAC frame
        assert correlation(got, want) > 0.99, source  # stream order: mixture, drums, bass, other, vocals
    assert [t.name for t in musdb.split_tracks(root, "train")] == ["A - First"]
    # the decoding itself is the audio adapter's: one stream of any .stem.mp4
    info = audio_io.stem_info(tracks[0].path)
    assert (info.streams, info.channels(4), info.sample_rate(4)) == (5, 2, RATE)
    vocals, rate = audio_io.load_stem(tracks[0].path, 4)
    assert rate == RATE and np.array_equal(vocals, audio["vocals"])
    with pytest.raises(AudioError, match=r"First\.stem\.mp4 \[stream 5\]: the file has 5 audio streams"):
        audio_io.load_stem(tracks[0].path, 5, info=info)


def test_stem_layout_validates_mono_resampled(stem_musdb):
    root, written = stem_musdb
    (track,) = musdb.split_tracks(root, "valid")
    assert track.name == OFFICIAL
    assert musdb.validate_track(track) is None
    audio, rate = musdb.load_track(track, sample_rate=16000, mono=True, sources=("bass",))
    assert rate == 16000 and audio["bass"].shape[1] == 1
    assert abs(audio["bass"].shape[0] - 2 * 16000) <= 400
    expected = audio_io.resample(audio_io.mono(written[OFFICIAL]["bass"]), RATE, 16000)
    assert correlation(audio["bass"], expected) > 0.99


def test_stem_split_matches_musdb(stem_musdb):
    import musdb as musdb_pkg

    root, _ = stem_musdb
    reference = musdb_pkg.DB(root=str(root), subsets="train", split="valid")
    assert [t.name for t in reference] == [t.name for t in musdb.split_tracks(root, "valid")] == [OFFICIAL]


def test_missing_ffmpeg_fails_only_the_stem_path(stem_musdb, tone_musdb, tmp_path, monkeypatch):
    root, _ = stem_musdb
    track = musdb.Track("A - First", root / "train" / "A - First.stem.mp4", "train", "stem")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no ffprobe
    assert audio_io.ffmpeg_problem() == "ffmpeg and ffprobe not found on PATH"
    with pytest.raises(AudioError, match=r"train: reading MUSDB18 \.stem\.mp4 files needs ffmpeg.*install ffmpeg.*MUSDB18-HQ"):
        musdb.find_tracks(root, "train")
    with pytest.raises(AudioError, match=r"A - First\.stem\.mp4: .*needs ffmpeg"):
        musdb.load_track(track)
    with pytest.raises(AudioError, match="needs ffmpeg"):
        musdb.validate_track(track)
    # the wav layout does not need ffmpeg
    audio, _ = musdb.load_track(musdb.find_tracks(tone_musdb, "test")[0], sources=("vocals",))
    assert audio["vocals"].shape == (4 * RATE, 2)


def test_wav_layout_never_imports_musdb_or_stempeg(tone_musdb, tmp_path):
    code = (
        "import sys\n"
        "from mss_tf.data import musdb\n"
        f"track = musdb.find_tracks({str(tone_musdb)!r}, 'test')[0]\n"
        "musdb.validate_track(track)\n"
        "audio, rate = musdb.load_track(track, mono=True)\n"
        "assert audio['mixture'].shape == (4 * 44100, 1), audio['mixture'].shape\n"
        "assert 'stempeg' not in sys.modules and 'musdb' not in sys.modules\n"
    )
    env = {**os.environ, "PATH": str(tmp_path), "MSS_TF_AUDIO_BACKEND": "fallback", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------- bad input: layout


def test_empty_and_mixed_folders(tmp_path, tone_musdb):
    with pytest.raises(DataError, match="no such folder"):
        musdb.find_tracks(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*not in MUSDB18-HQ layout.*nor MUSDB18 layout"):
        musdb.find_tracks(tmp_path / "empty", "train")
    (tmp_path / "empty" / "train").mkdir()
    (tmp_path / "empty" / "train" / ".DS_Store").write_bytes(b"")
    with pytest.raises(DataError, match=r"train: no track folders or \.stem\.mp4 files \(empty MUSDB18 subset\)"):
        musdb.split_tracks(tmp_path / "empty", "train")
    (tone_musdb / "train" / "x.stem.mp4").write_bytes(b"not really")
    with pytest.raises(DataError, match="holds both .stem.mp4 files"):
        musdb.find_tracks(tone_musdb, "train")


def test_missing_stem_strict_and_lenient(tone_musdb):
    (tone_musdb / "train" / "song 1" / "vocals.wav").unlink()
    with pytest.raises(DataError, match=r"song 1/vocals\.wav: missing stem 'vocals' of track 'song 1'"):
        musdb.find_tracks(tone_musdb, "train")
    tracks = musdb.find_tracks(tone_musdb, "train", strict=False)
    assert len(tracks) == 3
    with pytest.raises(DataError, match=r"song 1/vocals\.wav: missing stem"):
        musdb.validate_track(tracks[1])
    with pytest.raises(DataError, match=r"vocals\.wav: missing stem"):
        musdb.load_track(tracks[1])
    musdb.validate_track(tracks[0])  # the others stay usable


# --------------------------------------------------------------------------- bad input: audio


def bad_track(tmp_path: Path, **overrides) -> musdb.Track:
    """A 0.5 s wav track whose sources are replaced by `overrides` ({source: (array, rate)})."""
    folder = tmp_path / "bad" / "train" / "bad song"
    audio = tone_stems(0.5, seed=3)
    write_wav_track(folder, audio)
    for source, (data, rate) in overrides.items():
        soundfile.write(folder / f"{source}.wav", data, rate, subtype="FLOAT")
    return musdb.find_tracks(tmp_path / "bad", "train")[0]


def check_both(track: musdb.Track, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        musdb.validate_track(track)
    with pytest.raises(error, match=pattern):
        musdb.load_track(track)


def test_silent_track(tmp_path):
    zeros = np.zeros((RATE // 2, 2), np.float32)
    track = bad_track(tmp_path, **{s: (zeros, RATE) for s in musdb.SOURCES})
    check_both(track, DataError, r"bad song: silent track 'bad song'")
    # one silent stem is a quality matter, not an error
    track = bad_track(tmp_path, vocals=(zeros, RATE))
    musdb.validate_track(track)


def test_nan_and_inf_samples(tmp_path):
    data = tone_stems(0.5, seed=3)["bass"].copy()
    data[100, 0] = np.nan
    check_both(bad_track(tmp_path, bass=(data, RATE)), AudioError, r"bass\.wav: contains NaN or infinite samples")
    data[100, 0] = np.inf
    check_both(bad_track(tmp_path, drums=(data, RATE)), AudioError, r"drums\.wav: contains NaN or infinite")


def test_other_sample_rate_is_an_error_naming_the_file(tmp_path):
    other_rate = tone_stems(0.5, seed=3, rate=22050)["other"]
    track = bad_track(tmp_path, other=(other_rate, 22050))
    check_both(track, DataError, r"other\.wav: 22050 Hz but mixture, vocals, drums, bass .* are 44100 Hz")
    # the rate check runs before resampling hides it
    with pytest.raises(DataError, match="22050 Hz"):
        musdb.load_track(track, sample_rate=16000)


def test_mono_file_among_stereo_stems(tmp_path):
    mono_vocals = tone_stems(0.5, seed=3)["vocals"][:, :1]
    track = bad_track(tmp_path, vocals=(mono_vocals, RATE))
    check_both(track, DataError, r"vocals\.wav: mono but .* are stereo \(a mono file among stereo stems")
    with pytest.raises(DataError, match=r"vocals\.wav: mono"):
        musdb.load_track(track, mono=True)


def test_truncated_and_unreadable_wav(tmp_path):
    track = bad_track(tmp_path)
    path = track.source_path("drums")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    check_both(track, AudioError, r"drums\.wav: truncated audio file")
    path.write_bytes(b"RIFF garbage that is no wav")
    check_both(track, AudioError, r"drums\.wav: ")


def test_lengths_must_agree(tmp_path):
    audio = tone_stems(0.5, seed=3)
    track = bad_track(tmp_path, bass=(audio["bass"][: RATE // 4], RATE))
    check_both(track, DataError, r"bass\.wav: 11025 samples .* has 22050 .*equal length")
    # a few samples of decoder padding are trimmed
    track = bad_track(tmp_path, bass=(np.concatenate([audio["bass"], audio["bass"][:7]]), RATE))
    loaded, _ = musdb.load_track(track)
    assert {a.shape for a in loaded.values()} == {(RATE // 2, 2)}


def test_bad_stem_files(stem_musdb, tmp_path):
    root, written = stem_musdb
    data = (root / "train" / "A - First.stem.mp4").read_bytes()
    cut = tmp_path / "cut" / "train" / "Cut.stem.mp4"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(data[: len(data) // 2])
    (track,) = musdb.find_tracks(tmp_path / "cut", "train")
    check_both(track, AudioError, r"Cut\.stem\.mp4: not a readable \.stem\.mp4 \(truncated or corrupt")
    cut.write_bytes(b"")
    check_both(track, AudioError, r"Cut\.stem\.mp4: empty file")
    # moov atom first (faststart): the header survives the cut, the streams decode short
    fast = tmp_path / "fast" / "train" / "Fast.stem.mp4"
    remux(root / "train" / "A - First.stem.mp4", fast, "-map", "0", "-movflags", "+faststart")
    fast.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    (track,) = musdb.find_tracks(tmp_path / "fast", "train")
    with pytest.raises(AudioError, match=r"Fast\.stem\.mp4 \[stream 0: mixture\]: truncated audio stream"):
        musdb.validate_track(track)
    # one stream re-encoded as mono: refused from the header, before any decoding
    odd = tmp_path / "odd" / "train" / "Odd.stem.mp4"
    remux(root / "train" / "A - First.stem.mp4", odd, "-map", "0", "-c:a:4", "aac", "-ac:a:4", "1")
    (track,) = musdb.find_tracks(tmp_path / "odd", "train")
    with pytest.raises(DataError, match=r"Odd\.stem\.mp4 \[stream 4: vocals\]: mono but .* are stereo"):
        musdb.validate_track(track)
    three = tmp_path / "three" / "train" / "Three.stem.mp4"
    remux(root / "train" / "A - First.stem.mp4", three, "-map", "0:0", "-map", "0:1", "-map", "0:2")
    (track,) = musdb.find_tracks(tmp_path / "three", "train")
    check_both(track, DataError, r"Three\.stem\.mp4: 3 audio streams.*missing stems other, vocals")


def test_stem_layout_prepares_shards_for_both_splits(stem_musdb, tmp_path):
    from mss_tf.audio.spectrogram import SpectrogramConfig
    from mss_tf.data.crops import CropConfig
    from mss_tf.data.prepare import PrepareConfig, prepare_dataset
    from mss_tf.data.shards import read_manifest

    root, _ = stem_musdb
    stft = SpectrogramConfig(16000, 1024, 512)
    out = prepare_dataset(root, tmp_path / "s", stft, PrepareConfig(crops=CropConfig(seconds=1.0)), progress=False)
    assert read_manifest(out / "train")["tracks"] == ["A - First"]
    assert read_manifest(out / "valid")["tracks"] == [OFFICIAL]
    assert read_manifest(out / "train")["n_examples"] == 3  # 2 s, 1 s crops with 0.5 s hop
