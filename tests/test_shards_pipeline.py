
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, istft
from mss_tf.data import musdb
from mss_tf.data.online import OnlineAugmentConfig
from mss_tf.data.pipeline import MIN_SHUFFLE, PipelineConfig, make_dataset, shuffle_size
from mss_tf.data.prepare import CropConfig, PrepareConfig, crop_offsets, prepare_dataset
from mss_tf.data.shards import (
    MANIFEST, ShardWriter, example_bytes, iterate_examples, manifest_channels, read_manifest, write_manifest,
)
from mss_tf.errors import ConfigError, DataError, ShardError

STFT = SpectrogramConfig(16000, 1024, 512)
CROPS = CropConfig(seconds=2.0, overlap=0.5)
PREP = PrepareConfig(crops=CROPS, dtype="float32")
PREP16 = PrepareConfig(crops=CROPS, dtype="float16")
STEREO = PrepareConfig(crops=CROPS, dtype="float32", channels=2)
STEMS4 = ["vocals", "drums", "bass", "other"]


def test_crop_offsets():
    assert crop_offsets(10, 4, 2) == [0, 2, 4, 6]
    assert crop_offsets(3, 4, 2) == []


def test_split_tracks_holds_out_validation(tone_musdb):
    train = musdb.split_tracks(tone_musdb, "train")
    valid = musdb.split_tracks(tone_musdb, "valid")
    assert [t.name for t in valid] == ["song 2"]
    assert [t.name for t in train] == ["song 0", "song 1"]
    assert [t.name for t in musdb.split_tracks(tone_musdb, "test")] == ["test song"]


def test_prepared_shards_reproduce_the_audio(tone_musdb, tmp_path):
    out = prepare_dataset(tone_musdb, tmp_path / "shards", STFT, PREP, progress=False)
    manifest = read_manifest(out / "train", STFT, ["vocals"], verify_checksums=True)
    # 4 s tracks, 2 s crops with 1 s hop -> 3 crops per track, 2 train tracks
    assert manifest["n_examples"] == 6 and manifest["tracks"] == ["song 0", "song 1"]
    assert manifest["stft"] == STFT.to_dict() and manifest["dtype"] == "float32"
    audio, _ = musdb.load_track(musdb.split_tracks(tone_musdb, "train")[0], sample_rate=16000, mono=True)
    example = next(iter(iterate_examples(out / "train")))
    assert example["track"] == b"song 0" and example["offset"] == 0
    for i, stem in enumerate(["vocals", "drums", "bass", "other"]):
        spec = example["stems"][i]
        wave = istft(tf.complex(spec[..., 0], spec[..., 1]), STFT, 32000).numpy()
        assert np.max(np.abs(wave - audio[stem][:32000, 0])) < 1e-4


def test_float16_shards_are_half_the_size_and_close(tone_musdb, tmp_path):
    f32 = prepare_dataset(tone_musdb, tmp_path / "a", STFT, PREP, splits=["test"], progress=False)
    f16 = prepare_dataset(tone_musdb, tmp_path / "b", STFT, PREP16, splits=["test"], progress=False)
    m32, m16 = read_manifest(f32 / "test"), read_manifest(f16 / "test")
    assert m16["bytes"] < 0.55 * m32["bytes"]
    a = next(iter(iterate_examples(f32 / "test")))["mixture"]
    b = next(iter(iterate_examples(f16 / "test")))["mixture"]
    assert np.max(np.abs(a - b)) <= 1e-3 * np.max(np.abs(a))


def test_preparation_is_cached(tone_musdb, tmp_path):
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, PREP, splits=["valid"], progress=False)
    stamp = (out / "valid" / MANIFEST).stat().st_mtime_ns
    prepare_dataset(tone_musdb, tmp_path / "s", STFT, PREP, splits=["valid"], progress=False)
    assert (out / "valid" / MANIFEST).stat().st_mtime_ns == stamp
    # a different STFT config is a different shard folder content: rebuilt, not reused
    other = SpectrogramConfig(16000, 512, 256)
    prepare_dataset(tone_musdb, tmp_path / "s", other, PREP, splits=["valid"], progress=False)
    assert read_manifest(out / "valid")["stft"] == other.to_dict()


def test_pipeline_batches_crops_and_targets(tone_musdb, tmp_path):
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, PREP, progress=False)
    config = PipelineConfig(batch_size=4, train_frames=20, augment=OnlineAugmentConfig(remix=False, dropout=False, gain_db=6.0))
    ds = make_dataset(out / "train", STFT, ["vocals", "bass"], config, training=True, seed=1)
    mixture, targets = next(iter(ds))
    assert mixture.shape == (4, 20, 513, 2) and targets.shape == (4, 2, 20, 513, 2)
    # random gain per stem: against the same stream without augmentation (same crops), each stem
    # is scaled by one gain in [-6, 6] dB, gains differ between stems and examples, and the
    # mixture is the sum of the gained stems
    stems4 = ["vocals", "drums", "bass", "other"]
    gain = dataclasses.replace(OnlineAugmentConfig.none(), gain=True, gain_db=6.0)
    gain_only = PipelineConfig(batch_size=6, train_frames=20, augment=gain)
    plain = dataclasses.replace(gain_only, augment=None)
    gained_mix, gained = (x.numpy() for x in next(iter(make_dataset(out / "train", STFT, stems4, gain_only, seed=1))))
    _, original = (x.numpy() for x in next(iter(make_dataset(out / "train", STFT, stems4, plain, seed=1))))
    gains = np.sum(gained * original, axis=(2, 3, 4)) / np.sum(original**2, axis=(2, 3, 4))  # (6, 4)
    np.testing.assert_allclose(gained, gains[:, :, None, None, None] * original, atol=1e-5 * np.abs(original).max())
    db = 20 * np.log10(gains)
    assert db.min() >= -6.0 - 1e-3 and db.max() <= 6.0 + 1e-3
    assert np.unique(np.round(db, 3)).size == db.size  # one draw per stem and example
    np.testing.assert_allclose(gained_mix, gained.sum(axis=1), atol=1e-5 * np.abs(gained_mix).max())
    every = make_dataset(out / "train", STFT, ["vocals", "drums", "bass", "other"],
                         PipelineConfig(batch_size=2, train_frames=20, augment=OnlineAugmentConfig()), seed=3)
    mixture4, stems4 = next(iter(every))
    np.testing.assert_allclose(mixture4, tf.reduce_sum(stems4, axis=1), atol=1e-4)  # remix/gain/dropout keep the sum
    valid = make_dataset(out / "valid", STFT, ["vocals"], config, training=False)
    batches = list(valid)
    assert sum(b[0].shape[0] for b in batches) == 3  # every example once, last batch kept
    first_mix, first_vocals = batches[0]
    stored = next(iter(iterate_examples(out / "valid")))
    np.testing.assert_allclose(first_mix[0], stored["mixture"][:20], atol=1e-2)
    np.testing.assert_allclose(first_vocals[0, 0], stored["stems"][0][:20], atol=1e-2)


def test_seeded_pipeline_is_deterministic(tone_musdb, tmp_path):
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, PREP, splits=["train"], progress=False)
    config = PipelineConfig(batch_size=2, train_frames=10, augment=OnlineAugmentConfig())
    a = next(iter(make_dataset(out / "train", STFT, ["vocals"], config, seed=5)))[0].numpy()
    b = next(iter(make_dataset(out / "train", STFT, ["vocals"], config, seed=5)))[0].numpy()
    np.testing.assert_array_equal(a, b)


def test_reader_refuses_mismatch_and_corruption(tone_musdb, tmp_path):
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, PREP, splits=["train"], progress=False)
    with pytest.raises(ShardError, match="STFT config"):
        read_manifest(out / "train", SpectrogramConfig(44100, 2048, 512))
    shard = out / "train" / read_manifest(out / "train")["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="checksum"):
        read_manifest(out / "train", verify_checksums=True)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ShardError, match="size"):
        read_manifest(out / "train")
    with pytest.raises(ShardError, match="no manifest.json"):
        read_manifest(tmp_path)


def test_interrupted_writer_leaves_no_readable_folder(tmp_path):
    spec = np.zeros((4, 5, STFT.n_bins), np.complex64)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x", STFT) as writer:
            writer.add(spec, spec[0], "t", 0)
            raise RuntimeError("killed")
    assert not (tmp_path / "x" / MANIFEST).exists()
    assert [p.name for p in (tmp_path / "x").iterdir()] == []
    with pytest.raises(ShardError):
        read_manifest(tmp_path / "x")


def test_bad_layouts_raise_data_errors(tone_musdb, tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        musdb.find_tracks(tmp_path / "missing", "train")
    with pytest.raises(DataError, match="not in MUSDB18-HQ layout"):
        musdb.find_tracks(tmp_path, "train")
    (tone_musdb / "train" / "song 1" / "bass.wav").unlink()
    with pytest.raises(DataError, match="bass.wav"):
        musdb.find_tracks(tone_musdb, "train")


def test_stream_started_at_a_position_continues_the_uninterrupted_stream(tone_musdb, tmp_path):
    """A resumed run rebuilds its stream at global step x batch: it must see what it would have seen.

    The positions cross pass boundaries (the folder holds a handful of examples) and do not fall
    on remix windows (group 4), with crops, remix, gain, dropout and masks all on.
    """
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, PREP, splits=["train"], progress=False)
    n_examples = read_manifest(out / "train")["n_examples"]
    augment = OnlineAugmentConfig(remix_group=4)
    config = PipelineConfig(batch_size=3, train_frames=10, augment=augment, shuffle_buffer=4)
    whole = [m.numpy() for m, _ in make_dataset(out / "train", STFT, ["vocals"], config, seed=9).take(3 * n_examples)]
    for step in (1, n_examples + 1, 2 * n_examples - 1):
        resumed = make_dataset(out / "train", STFT, ["vocals"], config, seed=9, start=step * 3)
        for k, (mixture, _) in enumerate(resumed.take(3)):
            np.testing.assert_array_equal(mixture.numpy(), whole[step + k], err_msg=f"step {step + k}")
    # another seed is another stream, and later passes are not copies of the first
    other = next(iter(make_dataset(out / "train", STFT, ["vocals"], config, seed=10)))[0].numpy()
    assert not np.array_equal(other, whole[0])
    assert not np.array_equal(whole[0], whole[n_examples])


def test_shuffle_window_is_bounded_by_bytes():
    """The shuffle holds `shuffle_buffer` examples, fewer when they pass `shuffle_bytes`."""
    def manifest(stft, seconds, dtype="float16"):
        return {"stft": stft.to_dict(), "n_frames": [stft.n_frames(int(seconds * stft.sample_rate))],
                "stems": ["vocals", "drums", "bass", "other"], "dtype": dtype}

    bsrnn = example_bytes(manifest(SpectrogramConfig(44100, 2048, 512), 6.0))
    unet = example_bytes(manifest(STFT, 6.0))
    assert bsrnn == 517 * 1025 * 2 * 5 * 2 and unet == 188 * 513 * 2 * 5 * 2  # frames x bins x re/im x 5 x float16
    assert example_bytes(manifest(STFT, 6.0, "float32")) == 2 * unet
    config = PipelineConfig()
    assert config.shuffle_bytes == 512 * 2**20
    assert shuffle_size(config, bsrnn) == 512 * 2**20 // bsrnn == 50  # was 256 (2.7 GB)
    assert shuffle_size(config, unet) == config.shuffle_buffer == 256  # 1.8 MiB each: the count binds
    assert shuffle_size(dataclasses.replace(config, shuffle_bytes=256 * 2**20), bsrnn) == 25
    assert shuffle_size(config, 2**30) == MIN_SHUFFLE  # however large, some shuffling
    assert shuffle_size(dataclasses.replace(config, shuffle_buffer=4), 2**30) == 4


def tagged_shards(folder, n_tracks=8, per_track=6, frames=4):
    """Shards as prepare_dataset lays them out (each track's examples in files of its own);
    stem s of every example of track t holds the value 10 * t + s + 1."""
    stft = SpectrogramConfig(16000, 32, 16)
    written, tracks = [], []
    for t in range(n_tracks):
        writer = ShardWriter(folder, stft, dtype="float32", prefix=f"{t:04d}-track_{t}")
        with writer:
            for k in range(per_track):
                stems = np.ones((4, frames, stft.n_bins), np.complex64) * (10 * t + np.arange(4) + 1)[:, None, None]
                writer.add(stems, stems.sum(axis=0), f"track {t}", k)
            written += writer.finish()
        tracks.append(f"track {t}")
    write_manifest(folder, stft, "float32", "", written, n_tracks * per_track, [frames], tracks)
    return stft


def test_training_windows_draw_from_more_than_four_songs(tmp_path):
    """16 files read in turn (was 4): the first shuffle window, and the remix windows and batches
    drawn from it, mix every one of 8 tracks, not 4."""
    stft = tagged_shards(tmp_path / "s")
    manifest = read_manifest(tmp_path / "s")
    assert len(manifest["shards"]) == 8
    # the bytes a record takes on disk are the estimate plus a few bytes of names and framing
    assert example_bytes(manifest) <= manifest["bytes"] / manifest["n_examples"] < example_bytes(manifest) + 200
    remix = dataclasses.replace(OnlineAugmentConfig.none(), remix=True, remix_group=8)
    config = PipelineConfig(batch_size=8, augment=remix, shuffle_buffer=16)

    def tracks_per_batch(config, n_batches=2):
        ds = make_dataset(tmp_path / "s", stft, ["vocals", "drums", "bass", "other"], config, seed=2)
        tags = [targets.numpy()[:, :, 0, 0, 0].astype(int) // 10 for _, targets in ds.take(n_batches)]
        return [set(t.ravel()) for t in tags]  # the tracks each batch's stems come from

    first, second = tracks_per_batch(config)
    assert len(first) > 4 and len(second) > 4 and first | second == set(range(8))
    four = tracks_per_batch(dataclasses.replace(config, cycle_length=4))
    assert len(four[0] | four[1]) == 4  # the former default: one window held four songs
    # the byte bound sets the window: 24 examples' worth of bytes streams as a 24-example buffer
    plain = dataclasses.replace(config, augment=None, shuffle_buffer=24)
    by_bytes = dataclasses.replace(plain, shuffle_buffer=256, shuffle_bytes=24 * example_bytes(manifest))
    take = lambda c: [m.numpy() for m, _ in make_dataset(tmp_path / "s", stft, ["vocals"], c, seed=2).take(3)]  # noqa: E731
    np.testing.assert_array_equal(take(by_bytes), take(plain))
    assert not np.array_equal(take(dataclasses.replace(plain, shuffle_buffer=16)), take(plain))


def test_stereo_shards_hold_both_channels_at_twice_the_size(tone_musdb, tmp_path):
    mono = prepare_dataset(tone_musdb, tmp_path / "mono", STFT, PREP, splits=["test"], progress=False)
    stereo = prepare_dataset(tone_musdb, tmp_path / "stereo", STFT, STEREO, splits=["test"], progress=False)
    m1, m2 = read_manifest(mono / "test", STFT, channels=1), read_manifest(stereo / "test", STFT, channels=2)
    assert (m1["channels"], m2["channels"]) == (1, 2) and m1["n_examples"] == m2["n_examples"] == 3
    assert example_bytes(m2) == 2 * example_bytes(m1)  # the shuffle window counts both channels
    assert 1.95 < m2["bytes"] / m1["bytes"] < 2.05  # on disk too
    audio, _ = musdb.load_track(musdb.split_tracks(tone_musdb, "test")[0], sample_rate=16000)  # (samples, 2) each
    for mono_example, example in zip(iterate_examples(mono / "test"), iterate_examples(stereo / "test")):
        offset = int(example["offset"])
        assert example["stems"].shape == (4, 2, 63, 513, 2) and example["mixture"].shape == (2, 63, 513, 2)
        for i, stem in enumerate(["mixture", *STEMS4]):
            spec = example["mixture"] if i == 0 else example["stems"][i - 1]  # (2, T, F, 2)
            waves = istft(tf.complex(spec[..., 0], spec[..., 1]), STFT, 32000).numpy()  # (2, samples): left, right
            np.testing.assert_allclose(waves, audio[stem][offset : offset + 32000].T, atol=1e-4)
        # mono shards hold the downmix: the mean of the two channels
        np.testing.assert_allclose(mono_example["stems"], example["stems"].mean(axis=1), atol=1e-5)
    # a folder of the other channel count is refused, naming the folder and both counts
    for folder, model in ((stereo / "test", 1), (mono / "test", 2)):
        with pytest.raises(ConfigError) as refused:
            make_dataset(folder, STFT, ["vocals"], PipelineConfig(batch_size=2), training=False, channels=model)
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"{folder}: ")
        found, wanted = {1: "stereo (2-channel)", 2: "mono (1-channel)"}[model], {1: "mono (1-channel)", 2: "stereo (2-channel)"}[model]
        assert f"shards hold {found} STFTs, the model takes {wanted} input" in message
    # manifests written before stereo shards existed are mono
    path = mono / "test" / MANIFEST
    legacy = {k: v for k, v in json.loads(path.read_text()).items() if k != "channels"}
    path.write_text(json.dumps(legacy))
    assert manifest_channels(read_manifest(mono / "test", STFT, channels=1)) == 1


def test_stereo_stream_keeps_channel_pairs_and_resumes_exactly(tone_musdb, tmp_path):
    """A stereo example stays a real stereo mix: every stem of the tone tracks has its right
    channel at 0.8 x its left one, so a gain, a dropout or a remix drawn per channel instead of
    per stem would break the ratio; and the stream started at a position continues the whole one."""
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, STEREO, splits=["train"], progress=False)
    n_examples = read_manifest(out / "train")["n_examples"]
    no_masks = PipelineConfig(batch_size=3, train_frames=10, augment=OnlineAugmentConfig(remix_group=4, dropout_p=0.3))
    sounding = 0
    for mixture, stems in make_dataset(out / "train", STFT, STEMS4, no_masks, seed=4, channels=2).take(4):
        mixture, stems = mixture.numpy(), stems.numpy()
        assert mixture.shape == (3, 2, 10, 513, 2) and stems.shape == (3, 4, 2, 10, 513, 2)
        scale = np.abs(stems).max()
        np.testing.assert_allclose(stems[:, :, 1], 0.8 * stems[:, :, 0], atol=1e-5 * scale)
        np.testing.assert_allclose(mixture, stems.sum(axis=1), atol=1e-5 * scale)
        sounding += int((np.abs(stems).max(axis=(2, 3, 4, 5)) > 0).sum())
    assert sounding >= 24  # of 48 stems (dropout p = 0.3): the ratio was checked on sound, not on silence
    # exact resume with every step on (masks too, the same on both channels), across passes
    config = PipelineConfig(batch_size=3, train_frames=10, shuffle_buffer=4,
                            augment=OnlineAugmentConfig(remix_group=4, freq_mask=True, time_mask=True))
    whole = [m.numpy() for m, _ in make_dataset(out / "train", STFT, ["vocals"], config, seed=9).take(n_examples + 2)]
    assert all((w[:, 0] == 0).sum() == (w[:, 1] == 0).sum() > 0 for w in whole)  # masked alike
    for step in (1, n_examples):
        resumed = make_dataset(out / "train", STFT, ["vocals"], config, seed=9, start=step * 3, channels=2)
        for k, (mixture, _) in enumerate(resumed.take(2)):
            np.testing.assert_array_equal(mixture.numpy(), whole[step + k], err_msg=f"step {step + k}")


def test_validation_set_is_every_stored_crop_of_every_validation_song_whole_and_fixed(tmp_path):
    from mss_tf.data.pipeline import validation_dataset
    from tests.conftest import write_tone_musdb

    root = write_tone_musdb(tmp_path / "musdb", 4.0, n_train=12)  # the last 2 of 12 are held out
    out = prepare_dataset(root, tmp_path / "shards", STFT, PREP, splits=["valid"], progress=False)
    valid = [t.name for t in musdb.split_tracks(root, "valid")]
    manifest = read_manifest(out / "valid", STFT, STEMS4)
    stored = list(iterate_examples(out / "valid"))
    # 4 s songs, 2 s crops at a 1 s hop: crops at 0, 1 and 2 s cover every song from start to end
    assert sorted({e["track"].decode() for e in stored}) == sorted(valid) and len(valid) == 2
    for name in valid:
        assert sorted(e["offset"] for e in stored if e["track"].decode() == name) == [0, 16000, 32000]
    ds = validation_dataset(out / "valid", STFT, STEMS4, batch_size=4)
    epochs = [[(m.numpy(), t.numpy()) for m, t in ds] for _ in range(2)]
    mixtures = np.concatenate([m for m, _ in epochs[0]])
    assert mixtures.shape == (manifest["n_examples"], manifest["n_frames"][0], STFT.n_bins, 2)  # whole crops
    targets = np.concatenate([t for _, t in epochs[0]])
    matched = set()
    for example in stored:  # each stored crop exactly once, with its own stems
        same = [i for i in range(len(mixtures)) if np.array_equal(mixtures[i], example["mixture"])]
        assert len(same) == 1 and same[0] not in matched
        matched.add(same[0])
        np.testing.assert_array_equal(targets[same[0]], example["stems"])
    for (m0, t0), (m1, t1) in zip(*epochs):  # the same crops, the same order, every epoch
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(t0, t1)
