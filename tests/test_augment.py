"""Offline (pedalboard) and online (tf.data) augmentation, and the SpecAugment adapter."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio import io as audio_io
from mss_tf.audio import specaugment
from mss_tf.data import online
from mss_tf.data.augment import AugmentConfig, augment_crop, augmented_copies, source_length
from mss_tf.errors import ConfigError

SR = 16000
NAMES = ("vocals", "drums", "bass", "other")


def sine(freq: float, seconds: float = 0.5, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(wave: np.ndarray) -> float:
    """Peak of the zero-padded spectrum of the middle half (skips Rubber Band's edges)."""
    wave = np.asarray(wave, np.float64)
    wave = wave if wave.ndim == 1 else wave[:, 0]
    n = wave.size
    mid = wave[n // 4 : 3 * n // 4]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(mid.size), 16 * mid.size))
    return float(np.argmax(spectrum) * SR / (16 * mid.size))


ONLY = dict(pitch_p=0.0, stretch_p=0.0, compressor_p=0.0, reverb_p=0.0)


# --------------------------------------------------------------------------- offline


def test_pitch_shift_two_semitones_moves_440_to_494():
    config = AugmentConfig(**{**ONLY, "pitch_p": 1.0, "pitch_semitones": (2.0, 2.0)})
    out, params = augment_crop({"vocals": sine(440.0)}, SR, config, np.random.default_rng(0))
    assert params["pitch_shift"] == {"semitones": 2.0} and params["time_stretch"] is None
    assert dominant_freq(out["vocals"]) == pytest.approx(440.0 * 2 ** (2 / 12), abs=2.0)  # 493.9 Hz
    assert out["vocals"].shape == (SR // 2,) and out["vocals"].dtype == np.float32


def test_time_stretch_keeps_pitch_and_crop_length():
    slow = AugmentConfig(**{**ONLY, "stretch_p": 1.0, "stretch_factor": (0.8, 0.8)})
    out, params = augment_crop({"vocals": sine(440.0)}, SR, slow, np.random.default_rng(0))
    assert params["time_stretch"] == {"factor": 0.8} and params["pitch_shift"] is None
    assert out["vocals"].shape == (SR // 2,) and params["padded"] == 0
    assert dominant_freq(out["vocals"]) == pytest.approx(440.0, abs=2.0)

    # A speed-up of a bare crop is zero-padded at the end; a longer source excerpt avoids it.
    fast = AugmentConfig(**{**ONLY, "stretch_p": 1.0, "stretch_factor": (1.25, 1.25)})
    length = SR // 2
    out, params = augment_crop({"bass": sine(220.0)}, SR, fast, np.random.default_rng(0))
    assert out["bass"].shape == (length,) and params["padded"] > 0.15 * length
    assert np.all(out["bass"][-params["padded"] :] == 0)
    long_source = sine(220.0, seconds=source_length(length, fast) / SR)
    out, params = augment_crop({"bass": long_source}, SR, fast, np.random.default_rng(0), length=length)
    assert out["bass"].shape == (length,) and params["padded"] == 0 and params["input_length"] > length
    assert dominant_freq(out["bass"]) == pytest.approx(220.0, abs=2.0)


def test_pitch_and_stretch_are_shared_by_every_stem():
    freqs = dict(zip(NAMES, (440.0, 330.0, 220.0, 660.0)))
    stems = {name: sine(f, seconds=0.4) for name, f in freqs.items()}
    config = AugmentConfig(**{**ONLY, "pitch_p": 1.0, "stretch_p": 1.0})
    out, params = augment_crop(stems, SR, config, np.random.default_rng(3))
    ratio = 2 ** (params["pitch_shift"]["semitones"] / 12)
    assert abs(params["pitch_shift"]["semitones"]) > 0.3  # this seed draws a clear shift
    for name, f in freqs.items():
        assert dominant_freq(out[name]) / f == pytest.approx(ratio, rel=0.01), name


def test_compression_and_reverb_are_drawn_per_stem_and_order_free():
    stems = {name: sine(f, seconds=0.3) for name, f in zip(NAMES, (440.0, 330.0, 220.0, 660.0))}
    config = AugmentConfig(**{**ONLY, "compressor_p": 1.0, "reverb_p": 1.0})
    out, params = augment_crop(stems, SR, config, np.random.default_rng(1))
    per_stem = params["stems"]
    assert list(per_stem) == list(NAMES)
    for key in ("compressor", "reverb"):
        draws = [json.dumps(per_stem[name][key], sort_keys=True) for name in NAMES]
        assert len(set(draws)) == len(NAMES), key
    assert set(per_stem["vocals"]["compressor"]) == {"threshold_db", "ratio", "attack_ms", "release_ms"}
    for name in NAMES:
        lo, hi = config.compressor_threshold_db
        assert lo <= per_stem[name]["compressor"]["threshold_db"] <= hi
        assert not np.array_equal(out[name], stems[name])
    # A stem's draws come from its own generator: dict order does not matter.
    reversed_stems = dict(reversed(list(stems.items())))
    out2, params2 = augment_crop(reversed_stems, SR, config, np.random.default_rng(1))
    assert params2["stems"] == {name: per_stem[name] for name in reversed(NAMES)}
    for name in NAMES:
        np.testing.assert_array_equal(out2[name], out[name])


def test_mixture_is_the_sum_of_augmented_stems_stereo_layout_kept():
    rng = np.random.default_rng(0)
    stems = {
        name: np.stack([w, 0.5 * w], axis=1) + 0.01 * rng.standard_normal((w.size, 2)).astype(np.float32)
        for name, w in zip(NAMES, (sine(440.0, 0.3), sine(90.0, 0.3), sine(55.0, 0.3), sine(660.0, 0.3)))
    }
    stems["mixture"] = np.ones_like(stems["vocals"])  # ignored: recomputed
    config = AugmentConfig(pitch_p=1.0, stretch_p=1.0, compressor_p=0.5, reverb_p=0.5)
    out, _ = augment_crop(stems, SR, config, np.random.default_rng(7))
    assert list(out) == list(NAMES) + ["mixture"]
    for name, wave in out.items():
        assert wave.shape == stems["vocals"].shape and wave.dtype == np.float32 and np.isfinite(wave).all()
    np.testing.assert_allclose(out["mixture"], sum(out[n] for n in NAMES), atol=1e-6)


def test_probability_zero_is_identity():
    stems = {name: sine(f, 0.2) for name, f in zip(NAMES, (440.0, 90.0, 55.0, 660.0))}
    out, params = augment_crop(stems, SR, AugmentConfig.none(), np.random.default_rng(0))
    for name in NAMES:
        np.testing.assert_array_equal(out[name], stems[name])
    np.testing.assert_allclose(out["mixture"], sum(stems.values()), atol=1e-7)
    assert params["pitch_shift"] is None and params["time_stretch"] is None
    assert all(v == {"compressor": None, "reverb": None} for v in params["stems"].values())


def test_augmented_copies_are_reproducible_and_record_their_params():
    stems = {"vocals": sine(440.0, 0.25), "bass": sine(110.0, 0.25)}
    config = AugmentConfig(pitch_p=1.0, stretch_p=0.5, compressor_p=0.5, reverb_p=0.5)
    first = augmented_copies(stems, SR, config, n_copies=2, seed=11, crop_id="song a:44100")
    again = augmented_copies(stems, SR, config, n_copies=2, seed=11, crop_id="song a:44100")
    other = augmented_copies(stems, SR, config, n_copies=1, seed=11, crop_id="song b:0")
    assert len(first) == 2
    for (out_a, params_a), (out_b, params_b) in zip(first, again):
        assert params_a == params_b
        for name in out_a:
            np.testing.assert_array_equal(out_a[name], out_b[name])
    assert [p["copy"] for _, p in first] == [0, 1]
    assert first[0][1]["seed"] == 11 and first[0][1]["crop_id"] == "song a:44100"
    assert first[0][1]["pitch_shift"] != first[1][1]["pitch_shift"]  # copies differ
    assert other[0][1]["pitch_shift"] != first[0][1]["pitch_shift"]  # crops differ
    json.dumps([p for _, p in first])  # JSON-serializable
    # The recorded semitones are the ones applied (a time stretch, drawn here for both copies,
    # keeps the pitch).
    assert all(params["time_stretch"] is not None for _, params in first)
    for out, params in first:
        ratio = 2 ** (params["pitch_shift"]["semitones"] / 12)
        assert dominant_freq(out["vocals"]) / 440.0 == pytest.approx(ratio, rel=0.005)


def test_augment_config_round_trip_and_validation():
    config = AugmentConfig(pitch_p=0.5, reverb_room_size=(0.2, 0.4))
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError):
        AugmentConfig(pitch_p=1.5)
    with pytest.raises(ConfigError):
        AugmentConfig(stretch_factor=(1.2, 0.8))
    with pytest.raises(ConfigError):
        AugmentConfig(reverb_damping=(0.0, 2.0))
    with pytest.raises(ConfigError):
        AugmentConfig.from_dict({"pitch": 1})


# --------------------------------------------------------------------------- SpecAugment adapter


@pytest.fixture
def backend(monkeypatch):
    """Select the SpecAugment backend: "fallback" or "tfio" (skipped when tfio cannot load)."""

    def select(name: str) -> None:
        monkeypatch.setenv(audio_io.BACKEND_ENV, name)
        audio_io.reset_backend()
        if name == "tfio":
            try:
                audio_io.audio_backend()
            except ConfigError as error:
                pytest.skip(f"tensorflow-io unavailable: {error}")

    yield select
    monkeypatch.delenv(audio_io.BACKEND_ENV, raising=False)
    audio_io.reset_backend()


def _mask_draws(fn, shape, param, n, seed=None) -> np.ndarray:
    """`n` masks drawn inside tf.data (as in training), as a (n, *shape) 0/1 array."""
    ones = tf.ones(shape)
    ds = tf.data.Dataset.range(n)
    if seed is None:
        ds = ds.map(lambda i: fn(ones, param))
    else:
        ds = ds.map(lambda i: fn(ones, param, tf.stack([tf.constant(seed, tf.int64), i])))
    return next(iter(ds.batch(n))).numpy()


def _runs(keep: np.ndarray) -> tuple[int, int]:
    """(width, start) of the single zero run of a 0/1 vector; asserts it is contiguous."""
    zeros = np.flatnonzero(keep == 0)
    if zeros.size == 0:
        return 0, -1
    assert np.all(np.diff(zeros) == 1), keep
    return zeros.size, int(zeros[0])


@pytest.mark.parametrize("name", ["fallback", "tfio"])
def test_masks_zero_one_contiguous_band_on_every_channel(backend, name):
    backend(name)
    expected = specaugment.TFIO if name == "tfio" else specaugment.PURE_TF
    assert specaugment.mask_backend() == expected
    spec = tf.random.uniform([12, 20, 2], 0.5, 1.0, seed=1)
    for seed in (None, 5):
        masked = specaugment.freq_mask(spec, 8, seed).numpy()
        keep_bins = (masked != 0).all(axis=(0, 2))
        assert ((masked == 0).any(axis=(0, 2)) == ~keep_bins).all()  # whole bins, both channels
        width, _ = _runs(keep_bins.astype(int))
        assert width < 8
        masked = specaugment.time_mask(spec, 5, seed).numpy()
        keep_frames = (masked != 0).all(axis=(1, 2))
        assert ((masked == 0).any(axis=(1, 2)) == ~keep_frames).all()
        width, _ = _runs(keep_frames.astype(int))
        assert width < 5
    assert specaugment.freq_mask(spec[..., 0], 0).shape == (12, 20)  # 2-D input, param 0: identity
    np.testing.assert_array_equal(specaugment.time_mask(spec, 0).numpy(), spec.numpy())
    np.testing.assert_array_equal(specaugment.time_mask(spec, 100, seed=3).shape, spec.shape)  # clamped


def test_tfio_and_fallback_masks_have_the_same_statistics(backend):
    n, size, param = 3000, 24, 8
    stats = {}
    for name in ("tfio", "fallback"):
        backend(name)
        freq = _mask_draws(specaugment.freq_mask, [2, size], param, n)[:, 0, :]
        time = _mask_draws(specaugment.time_mask, [size, 3], param, n)[:, :, 0]
        stats[name] = {}
        for axis_name, keep in (("freq", freq), ("time", time)):
            widths = np.array([_runs(row)[0] for row in keep])
            stats[name][axis_name] = (np.bincount(widths, minlength=param) / n, (keep == 0).mean(axis=0))
    for axis_name in ("freq", "time"):
        hist_tfio, profile_tfio = stats["tfio"][axis_name]
        hist_pure, profile_pure = stats["fallback"][axis_name]
        assert hist_tfio.size == hist_pure.size == param  # widths 0 .. param-1 (param exclusive)
        np.testing.assert_allclose(hist_tfio, 1 / param, atol=0.035)
        np.testing.assert_allclose(hist_pure, 1 / param, atol=0.035)
        np.testing.assert_allclose(profile_tfio, profile_pure, atol=0.06)  # where masks fall
        assert profile_tfio[-1] == profile_pure[-1] == 0  # tfio's start range never reaches the last bin


def test_seeded_masks_are_deterministic_on_both_backends(backend):
    results = []
    for name in ("tfio", "fallback"):
        backend(name)
        assert specaugment.mask_backend(seeded=True) == specaugment.PURE_TF
        results.append(_mask_draws(specaugment.freq_mask, [2, 30], 10, 50, seed=4))
        results.append(_mask_draws(specaugment.freq_mask, [2, 30], 10, 50, seed=4))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    assert not np.array_equal(results[0], _mask_draws(specaugment.freq_mask, [2, 30], 10, 50, seed=5))


# --------------------------------------------------------------------------- online


def tagged_dataset(n: int, frames: int = 6, bins: int = 5) -> tf.data.Dataset:
    """Example j, stem s filled with 10 * j + s + 1 (so the source of every stem is readable)."""
    stems = np.zeros((n, 4, frames, bins, 2), np.float32)
    for j in range(n):
        for s in range(4):
            stems[j, s] = 10 * j + s + 1
    return tf.data.Dataset.from_tensor_slices((stems, stems.sum(axis=1)))


def collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(ds.as_numpy_iterator())
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def draws(fn, n: int) -> np.ndarray:
    """`fn(seed)` for n per-element seeds, run inside tf.data."""
    ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.stack([tf.constant(9, tf.int64), i])))
    return next(iter(ds.batch(n))).numpy()


def test_random_gain_stays_in_range_and_mixture_is_recomputed():
    ones = tf.ones([4, 2, 3, 2])
    gains = draws(lambda seed: online.random_gain(ones, 10.0, seed)[:, 0, 0, 0], 500)  # (500, 4)
    db = 20 * np.log10(gains)
    assert db.min() >= -10.0 - 1e-4 and db.max() <= 10.0 + 1e-4
    assert db.min() < -9.0 and db.max() > 9.0 and abs(db.mean()) < 1.0
    assert np.unique(gains[0]).size == 4  # one gain per stem, shared by every bin
    config = online.OnlineAugmentConfig(**{**online.OnlineAugmentConfig.none().to_dict(), "gain": True})
    stems, mixture = collect(online.apply_online(tagged_dataset(6), config, seed=1))
    np.testing.assert_allclose(mixture, stems.sum(axis=1), rtol=1e-6)
    assert not np.allclose(stems, collect(tagged_dataset(6))[0])


def test_stem_dropout_rate_and_restrictions():
    ones = tf.ones([4, 2, 3, 2])
    kept = draws(lambda seed: online.stem_dropout(ones, 0.1, seed)[:, 0, 0, 0], 4000)  # (4000, 4)
    assert set(np.unique(kept)) <= {0.0, 1.0}
    assert (1 - kept).mean() == pytest.approx(0.1 - 0.1**4, abs=0.015)
    always = draws(lambda seed: online.stem_dropout(ones, 1.0, seed)[:, 0, 0, 0], 20)
    assert (always == 1).all()  # never every stem at once
    only_bass = draws(lambda seed: online.stem_dropout(ones, 0.5, seed, droppable=[2])[:, 0, 0, 0], 400)
    assert (only_bass[:, [0, 1, 3]] == 1).all() and 0.35 < (1 - only_bass[:, 2]).mean() < 0.65
    none = online.OnlineAugmentConfig.none().to_dict()
    config = online.OnlineAugmentConfig(**{**none, "dropout": True, "dropout_p": 0.5})
    stems, mixture = collect(online.apply_online(tagged_dataset(8), config, seed=2))
    np.testing.assert_allclose(mixture, stems.sum(axis=1))
    assert (stems[:, :, 0, 0, 0] == 0).any()


def test_remix_takes_each_stem_from_another_crop_and_sums_the_mixture():
    n, group = 24, 8
    config = online.OnlineAugmentConfig(**{**online.OnlineAugmentConfig.none().to_dict(), "remix": True, "remix_group": group})
    ds = online.apply_online(tagged_dataset(n), config, seed=3)
    assert ds.element_spec == tagged_dataset(n).element_spec
    stems, mixture = collect(ds)
    assert stems.shape[0] == n
    np.testing.assert_allclose(mixture, stems.sum(axis=1))
    tags = stems[:, :, 0, 0, 0].astype(int) - 1  # (n, 4): 10 * source + stem
    source, slot = tags // 10, tags % 10
    assert (slot == np.arange(4)).all()  # a bass stays the bass
    for w in range(n // group):
        window = source[w * group : (w + 1) * group]
        for s in range(4):  # each stem is a permutation of the window's crops
            assert sorted(window[:, s]) == list(range(w * group, (w + 1) * group))
    mixed_sources = [len(set(row)) for row in source]
    assert np.mean(np.array(mixed_sources) > 1) > 0.8  # most mixtures combine several crops
    # remix_p = 0 keeps every example as it was
    keep = online.OnlineAugmentConfig(**{**config.to_dict(), "remix_p": 0.0})
    stems0, _ = collect(online.apply_online(tagged_dataset(n), keep, seed=3))
    np.testing.assert_array_equal(stems0, collect(tagged_dataset(n))[0])


@pytest.mark.parametrize("name", ["fallback", "tfio"])
def test_masks_touch_only_the_mixture(backend, name):
    backend(name)
    none = online.OnlineAugmentConfig.none().to_dict()
    config = online.OnlineAugmentConfig(
        **{**none, "freq_mask": True, "freq_mask_param": 4, "time_mask": True, "time_mask_param": 4}
    )
    original_stems, original_mixture = collect(tagged_dataset(30))
    for seed in (None, 7):
        stems, mixture = collect(online.apply_online(tagged_dataset(30), config, seed=seed))
        np.testing.assert_array_equal(stems, original_stems)
        zero = mixture == 0
        assert zero.any()
        assert (zero[..., 0] == zero[..., 1]).all()  # real and imaginary together
        for j in range(30):
            cols = zero[j, :, :, 0].all(axis=0)
            rows = zero[j, :, :, 0].all(axis=1)
            # every zero lies in a masked bin column or a masked frame row, each one contiguous run
            assert (zero[j, :, :, 0] == (cols[None, :] | rows[:, None])).all()
            _runs((~cols).astype(int))
            _runs((~rows).astype(int))
            np.testing.assert_array_equal(mixture[j][~zero[j]], original_mixture[j][~zero[j]])


def test_apply_online_is_deterministic_with_a_seed():
    config = online.OnlineAugmentConfig(
        remix_group=4, dropout_p=0.3, freq_mask=True, freq_mask_param=3, time_mask=True, time_mask_param=3
    )
    first = collect(online.apply_online(tagged_dataset(16), config, seed=21))
    second = collect(online.apply_online(tagged_dataset(16), config, seed=21))
    other = collect(online.apply_online(tagged_dataset(16), config, seed=22))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    # the same dataset object iterated twice gives the same values too
    ds = online.apply_online(tagged_dataset(16), config, seed=21)
    np.testing.assert_array_equal(collect(ds)[1], collect(ds)[1])


def stereo_tagged_dataset(n: int, frames: int = 6, bins: int = 5) -> tf.data.Dataset:
    """Stereo examples (stems (4, 2, T, F, 2)): left of stem s of example j holds 10 * j + s + 1,
    right holds -3 times that (a ratio no gain of +-10 dB gives by chance)."""
    stems = np.zeros((n, 4, 2, frames, bins, 2), np.float32)
    for j in range(n):
        for s in range(4):
            stems[j, s, 0] = 10 * j + s + 1
            stems[j, s, 1] = -3 * (10 * j + s + 1)
    return tf.data.Dataset.from_tensor_slices((stems, stems.sum(axis=1)))


def test_stereo_stems_keep_their_channel_pairs():
    """One draw per stem, never per channel: a gain, a dropout or a remix that treated left and
    right apart would break right = -3 x left; the masks cover both channels of the mixture."""
    config = online.OnlineAugmentConfig(remix_group=4, dropout_p=0.3)
    stems, mixture = collect(online.apply_online(stereo_tagged_dataset(16), config, seed=5))
    assert stems.shape == (16, 4, 2, 6, 5, 2) and mixture.shape == (16, 2, 6, 5, 2)
    np.testing.assert_allclose(stems[:, :, 1], -3 * stems[:, :, 0], rtol=1e-6)
    np.testing.assert_allclose(mixture, stems.sum(axis=1), rtol=1e-5)
    left = stems[:, :, 0, 0, 0, 0]  # (16, 4)
    assert 0.1 < (left == 0).mean() < 0.5  # stems were dropped (both channels: the ratio holds at 0)
    assert np.unique(np.round(left[left != 0], 3)).size == (left != 0).sum()  # and gained, each by its own draw
    plain = dataclasses.replace(online.OnlineAugmentConfig.none(), remix=True, remix_group=4)
    remixed, _ = collect(online.apply_online(stereo_tagged_dataset(16), plain, seed=5))
    tags = remixed[:, :, 0, 0, 0, 0].astype(int) - 1
    assert (tags % 10 == np.arange(4)).all() and (tags // 10 != np.arange(16)[:, None]).any()  # stems moved
    np.testing.assert_array_equal(remixed[:, :, 1], -3 * remixed[:, :, 0])  # with both channels
    masks = dataclasses.replace(online.OnlineAugmentConfig.none(), freq_mask=True, freq_mask_param=4,
                                time_mask=True, time_mask_param=4)
    for seed in (None, 7):
        _, masked = collect(online.apply_online(stereo_tagged_dataset(16), masks, seed=seed))
        zero = masked == 0
        assert zero.any() and (zero[:, 0] == zero[:, 1]).all()  # the same bins and frames on both channels


def test_online_config_round_trip_and_validation():
    config = online.OnlineAugmentConfig(dropout_stems=("drums", "bass"), freq_mask=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert online.OnlineAugmentConfig.from_dict(data) == config
    unchanged = collect(online.apply_online(tagged_dataset(2), online.OnlineAugmentConfig.none(), seed=0))
    for a, b in zip(unchanged, collect(tagged_dataset(2))):
        np.testing.assert_array_equal(a, b)  # every step off: the stream as stored
    piano = online.OnlineAugmentConfig(dropout_stems=("piano",), dropout=True, dropout_p=0.5)  # any data's names
    with pytest.raises(ConfigError, match=r"\['piano'\] are not stems of the data"):
        online.apply_online(tagged_dataset(2), piano, seed=0)  # MUSDB18's four
    with pytest.raises(ConfigError):
        online.OnlineAugmentConfig(dropout_stems=("",))
    with pytest.raises(ConfigError):
        online.OnlineAugmentConfig(remix_group=1)
    with pytest.raises(ConfigError):
        online.OnlineAugmentConfig.from_dict({"mask": True})


def test_fit_length_cuts_or_pads_the_time_axis():
    from mss_tf.audio.waveform import fit_length

    audio = np.arange(1, 13, dtype=np.float32).reshape(6, 2)  # (samples, channels)
    np.testing.assert_array_equal(fit_length(audio, 4), audio[:4])
    padded = fit_length(audio, 8)
    np.testing.assert_array_equal(padded[:6], audio)
    assert padded.shape == (8, 2) and not padded[6:].any()
    np.testing.assert_array_equal(fit_length(audio.T, 3, axis=1), audio.T[:, :3])
    assert fit_length(audio.T, 9, axis=1).shape == (2, 9)
