"""Crop quality filter (mss_tf.data.quality) and cropping (mss_tf.data.crops)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mss_tf.data import musdb
from mss_tf.data.crops import (
    CropConfig,
    crop_offsets,
    random_crop_frames,
    seconds_to_frames,
    track_crops,
)
from mss_tf.data.quality import QualityConfig, QualityStats, assess, frame_rms, targets_config
from mss_tf.errors import ConfigError, DataError

RATE = 16000


def tone(seconds: float = 1.0, amplitude: float = 0.1, rate: int = RATE, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)  # RMS = amplitude
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def bursts(active_share: float, seconds: float = 1.0, amplitude: float = 0.2) -> np.ndarray:
    """A tone during the first `active_share` of the crop, silence after."""
    x = tone(seconds, amplitude)
    x[int(active_share * x.shape[0]) :] = 0
    return x


def stems(**overrides: np.ndarray) -> dict[str, np.ndarray]:
    audio = {name: tone() for name in ("vocals", "drums", "bass", "other")}
    audio.update(overrides)
    audio["mixture"] = sum(audio[n] for n in ("vocals", "drums", "bass", "other"))
    return audio


# --------------------------------------------------------------------------- quality


def test_the_demo_set_passes_the_default_filter(tmp_path):
    from mss_tf.data.demo import make_demo_set

    root = make_demo_set(tmp_path / "demo", n_train=2, n_test=1, seconds=8)
    config = QualityConfig()
    stats = QualityStats(config)
    for track in musdb.find_tracks(root, "train") + musdb.find_tracks(root, "test"):
        for mono in (False, True):  # stereo at 44.1 kHz, and as prepared for a mono 16 kHz model
            audio, rate = musdb.load_track(track, sample_rate=16000 if mono else None, mono=mono)
            for offset, crop in track_crops(audio, rate, CropConfig(seconds=3.0)):
                result = stats.add(assess(crop, rate, config), track.name)
                assert result.kept, (track.name, mono, offset, result.reasons)
    # 3 tracks x (stereo, mono) x 4 crops (8 s tracks, 3 s crops every 1.5 s: 0, 1.5, 3, 4.5 s)
    assert stats.crops == stats.kept == 3 * 2 * 4


def test_silence_fails_both_rules_and_is_counted():
    config = QualityConfig()
    result = assess(stems(vocals=np.zeros_like(tone())), RATE, config)
    assert not result.kept
    assert result.failures == (("vocals", "rms"), ("vocals", "activity"))
    assert result.rms["vocals"] == 0.0 and result.activity["vocals"] == 0.0
    assert result.reasons == ["vocals: rms 0 < 0.005", "vocals: activity 0 < 0.3"]
    assert result.rms["bass"] == pytest.approx(0.1, rel=1e-3) and result.activity["bass"] == 1.0
    assert "mixture" not in result.rms  # the mixture is never checked by default


def test_sparse_stem_fails_activity_only():
    # loud for 20 % of the crop: RMS 0.2 * sqrt(0.2) = 0.089 passes, activity 0.2 fails
    result = assess(stems(drums=bursts(0.2)), RATE, QualityConfig())
    assert not result.kept and result.failures == (("drums", "activity"),)
    assert result.activity["drums"] == pytest.approx(0.2, abs=0.05)
    assert assess(stems(drums=bursts(0.5)), RATE, QualityConfig()).kept
    assert assess(stems(drums=bursts(0.2)), RATE, QualityConfig(min_activity=0.1)).kept


def test_quiet_but_steady_stem_fails_rms_only():
    result = assess(stems(bass=tone(amplitude=0.004)), RATE, QualityConfig())
    assert result.failures == (("bass", "rms"),)
    assert assess(stems(bass=tone(amplitude=0.004)), RATE, QualityConfig(min_rms=0.003)).kept


def test_frame_threshold_and_length_are_configurable():
    quiet = stems(other=tone(amplitude=0.006))  # passes min_rms, frames at 0.006
    assert assess(quiet, RATE, QualityConfig()).kept
    assert assess(quiet, RATE, QualityConfig(frame_rms=0.01)).failures == (("other", "activity"),)
    # a 0.3 s burst: 30 % of 50 ms frames, 0 % of whole-second frames
    gated = stems(vocals=bursts(0.3))
    assert assess(gated, RATE, QualityConfig()).activity["vocals"] == pytest.approx(0.3)
    assert assess(gated, RATE, QualityConfig(frame_seconds=1.0)).activity["vocals"] == 1.0


def test_checked_stems_and_modes():
    audio = stems(vocals=np.zeros_like(tone()), bass=np.zeros_like(tone()))
    assert not assess(audio, RATE, QualityConfig()).kept
    assert assess(audio, RATE, QualityConfig(stems=("drums", "other"))).kept
    assert not assess(audio, RATE, QualityConfig(stems=("vocals",))).kept
    assert assess(audio, RATE, QualityConfig(stems=("vocals", "drums"), mode="any")).kept
    assert not assess(audio, RATE, QualityConfig(stems=("vocals", "bass"), mode="any")).kept
    assert targets_config(["vocals"]).stems == ("vocals",)
    # mono (samples, 1) and 1-D stems are fine too
    assert assess({"vocals": tone(channels=1), "bass": tone()[:, 0]}, RATE, QualityConfig()).kept
    # switched off: kept, but the measurements are still there
    off = assess(audio, RATE, QualityConfig(enabled=False))
    assert off.kept and off.failures


def test_bad_quality_inputs():
    with pytest.raises(ConfigError, match="needs stems"):
        assess({"vocals": tone()}, RATE, QualityConfig(stems=("vocals", "bass")))
    with pytest.raises(ConfigError, match="no stems to check"):
        assess({"mixture": tone()}, RATE, QualityConfig())
    with pytest.raises(DataError, match="different shapes"):
        assess({"vocals": tone(), "bass": tone(0.5)}, RATE, QualityConfig())
    with pytest.raises(DataError, match="empty crop"):
        assess({"vocals": tone(0.0)}, RATE, QualityConfig())
    for bad in (
        dict(min_rms=-1),
        dict(min_activity=1.5),
        dict(frame_seconds=0),
        dict(frame_rms=float("nan")),
        dict(mode="most"),
        dict(stems=()),
    ):
        with pytest.raises(ConfigError):
            QualityConfig(**bad)


def test_frame_rms_is_vectorized_and_correct():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1050, 2)).astype(np.float32)  # (stems, samples, channels)
    got = frame_rms(x, 100)  # 10 whole frames, the 50-sample tail dropped
    assert got.shape == (3, 10)
    expected = [[np.sqrt(np.mean(x[s, f * 100 : (f + 1) * 100] ** 2)) for f in range(10)] for s in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert frame_rms(x[0, :30], 100).shape == (1,)  # shorter than a frame: one frame


def test_stats_count_rules_per_stem_and_serialize():
    config = QualityConfig()
    stats = QualityStats(config)
    stats.add(assess(stems(), RATE, config), "a")
    stats.add(assess(stems(vocals=np.zeros_like(tone())), RATE, config), "a")
    stats.add(assess(stems(vocals=np.zeros_like(tone()), drums=bursts(0.1)), RATE, config), "b")
    other = QualityStats(config)
    other.add(assess(stems(bass=tone(amplitude=0.001)), RATE, config), "c")
    stats.merge(other)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["crops"] == 4 and data["kept"] == 1 and data["rejected"] == 3
    assert data["rejected_by"] == {
        "bass": {"rms": 1, "activity": 1},
        "drums": {"rms": 0, "activity": 1},
        "vocals": {"rms": 2, "activity": 2},
    }
    assert data["rejected_tracks"] == {"a": 1, "b": 1, "c": 1}
    assert data["config"]["min_rms"] == 0.005 and data["config"]["frame_rms"] == 0.003
    assert QualityStats.from_dict(data).to_dict() == data
    with pytest.raises(ConfigError, match="different QualityConfigs"):
        stats.merge(QualityStats(QualityConfig(min_rms=0.1)))


# --------------------------------------------------------------------------- crops


def test_crop_config_and_offsets():
    assert crop_offsets(10, 4, 2) == [0, 2, 4, 6]
    assert crop_offsets(3, 4, 2) == []
    config = CropConfig()
    assert (config.seconds, config.overlap) == (6.0, 0.5)
    assert config.crop_samples(44100) == 264600 and config.hop_samples(44100) == 132300
    assert config.offsets(44100 * 13, 44100) == [0, 132300, 264600]
    assert CropConfig(2.0, 0.0).offsets(8 * RATE, RATE) == [0, 32000, 64000, 96000]
    for bad in (dict(seconds=0), dict(seconds=float("inf")), dict(overlap=1.0), dict(overlap=-0.1)):
        with pytest.raises(ConfigError):
            CropConfig(**bad)
    from mss_tf.data.prepare import CropConfig as PrepareCropConfig, crop_offsets as prepare_offsets

    assert PrepareCropConfig is CropConfig and prepare_offsets is crop_offsets


def test_track_crops_cut_every_source_at_the_same_offsets():
    n = 5 * RATE
    ramp = np.arange(n, dtype=np.float32)
    audio = {"mixture": np.stack([ramp, -ramp], 1), "vocals": ramp[:, None] * 2, "bass": ramp}
    crops = list(track_crops(audio, RATE, CropConfig(seconds=2.0, overlap=0.5)))
    assert [o for o, _ in crops] == [0, RATE, 2 * RATE, 3 * RATE]
    for offset, crop in crops:
        assert set(crop) == set(audio)
        assert crop["mixture"].shape == (2 * RATE, 2) and crop["vocals"].shape == (2 * RATE, 1)
        assert crop["mixture"][0, 0] == crop["bass"][0] == crop["vocals"][0, 0] / 2 == offset
        assert np.shares_memory(crop["bass"], audio["bass"])  # views, no copies
    assert list(track_crops({"vocals": ramp[: RATE]}, RATE, CropConfig(seconds=2.0))) == []
    with pytest.raises(DataError, match="different lengths"):
        list(track_crops({"vocals": ramp, "bass": ramp[:-1]}, RATE, CropConfig()))
    with pytest.raises(DataError, match="no sources"):
        list(track_crops({}, RATE, CropConfig()))


def test_seconds_to_frames_matches_the_stft():
    from mss_tf.audio.spectrogram import SpectrogramConfig

    spec = SpectrogramConfig(44100, 2048, 512)
    assert seconds_to_frames(3.0, spec) == 132300 // 512 + 1 == 259
    assert seconds_to_frames(3.0, SpectrogramConfig(16000, 1024, 512)) == 94
    with pytest.raises(ConfigError):
        seconds_to_frames(0, spec)


def frame_ramp(n_frames: int) -> tuple:
    import tensorflow as tf

    t = tf.range(n_frames, dtype=tf.float32)
    mixture = tf.tile(t[:, None, None], [1, 3, 2])  # (T, F, 2), value = frame index
    stems = tf.stack([mixture, 10 * mixture])  # (S, T, F, 2)
    return stems, mixture


def test_random_crop_frames_semantics():
    import tensorflow as tf

    stems, mixture = frame_ramp(10)
    starts = set()
    for _ in range(200):
        s, m = random_crop_frames(stems, mixture, 4)
        assert s.shape == (2, 4, 3, 2) and m.shape == (4, 3, 2)
        start = int(m[0, 0, 0])
        np.testing.assert_array_equal(m[:, 0, 0], np.arange(start, start + 4))
        np.testing.assert_array_equal(s[1], 10 * m.numpy())  # stems and mixture cut alike
        starts.add(start)
    assert starts == set(range(7))  # uniform over [0, T - n]
    s, m = random_crop_frames(stems, mixture, 25)  # shorter than n_frames: whole example
    assert m.shape[0] == 10 and s.shape[1] == 10
    # a stateless seed gives the same window every time
    a = random_crop_frames(stems, mixture, 4, tf.constant([3, 4]))[1]
    b = random_crop_frames(stems, mixture, 4, tf.constant([3, 4]))[1]
    np.testing.assert_array_equal(a, b)


def test_random_crop_frames_with_the_pipelines_element_keys():
    """In tf.data, keyed per element as mss_tf.data.pipeline keys its crops: windows vary between
    elements, repeat exactly on a second pass, and a stream started at position k draws what the
    whole stream drew at k (a resumed run sees the crops it would have seen)."""
    import tensorflow as tf

    from mss_tf.data.online import CROP_SALT, element_seeds

    stems, mixture = frame_ramp(12)

    def starts(seed, start=0, n=40):
        ds = tf.data.Dataset.from_tensors((stems, mixture)).repeat(n)
        ds = tf.data.Dataset.zip((ds, element_seeds(seed, start, CROP_SALT)))
        ds = ds.map(lambda example, key: random_crop_frames(*example, 5, key), num_parallel_calls=4, deterministic=True)
        out = []
        for s, m in ds:
            np.testing.assert_array_equal(s[1], 10 * m.numpy())  # stems and mixture cut alike
            out.append(int(m[0, 0, 0]))
        return out

    whole = starts(seed=3)
    assert set(whole) == set(range(8))  # every start in [0, T - n] drawn, none outside
    assert starts(seed=3) == whole
    assert starts(seed=3, start=17, n=23) == whole[17:]
    assert starts(seed=4) != whole
