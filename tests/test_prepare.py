"""Shard preparation at scale: resumable, parallel, quality statistics, bad tracks, --check."""

import json

import numpy as np
import pytest
import soundfile

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.data import musdb, prepare
from mss_tf.data.crops import CropConfig
from mss_tf.data.prepare import PrepareConfig, check_shards, prepare_dataset, prepare_split
from mss_tf.data.quality import QualityConfig
from mss_tf.data.shards import MANIFEST, iterate_examples, read_manifest
from mss_tf.errors import DataError, ShardError
from tests.conftest import write_tone_track
from tests.test_cli import assert_one_line_error, run_main

STFT = SpectrogramConfig(16000, 1024, 512)
CONFIG = PrepareConfig(crops=CropConfig(seconds=2.0, overlap=0.5), dtype="float32")


def test_rerun_after_interruption_skips_finished_tracks(tone_musdb, tmp_path, monkeypatch):
    tracks = musdb.find_tracks(tone_musdb, "train")
    real = prepare.prepare_track
    calls = []

    def interrupted(index, track, *args):
        if index == 2:
            raise KeyboardInterrupt
        calls.append(index)
        return real(index, track, *args)

    monkeypatch.setattr(prepare, "prepare_track", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_split(tracks, tmp_path / "s", STFT, CONFIG, progress=False)
    assert not (tmp_path / "s" / MANIFEST).exists()  # nothing the reader would accept
    with pytest.raises(ShardError):
        read_manifest(tmp_path / "s")

    def counting(index, track, *args):
        calls.append(index)
        return real(index, track, *args)

    calls.clear()
    monkeypatch.setattr(prepare, "prepare_track", counting)
    manifest = prepare_split(tracks, tmp_path / "s", STFT, CONFIG, progress=False)
    assert calls == [2]
    assert manifest["n_examples"] == 9 and manifest["tracks"] == [t.name for t in tracks]
    assert [e["track"].decode() for e in iterate_examples(tmp_path / "s")].count("song 0") == 3


def test_partial_shard_of_an_interrupted_track_is_removed(tone_musdb, tmp_path):
    tracks = musdb.find_tracks(tone_musdb, "train")
    out = tmp_path / "s"
    prepare_split(tracks, out, STFT, CONFIG, progress=False)
    record = out / ".done" / "0001.json"
    record.unlink()  # as if track 1 was killed after writing its shard, before its record
    (out / ".0001-song_1-00001.tfrecord.tmp").write_bytes(b"half")
    manifest = prepare_split(tracks, out, STFT, CONFIG, progress=False)
    assert not list(out.glob(".*.tmp"))
    assert manifest["n_examples"] == 9
    check_shards(out)


def test_two_workers_give_the_same_examples(tone_musdb, tmp_path):
    tracks = musdb.find_tracks(tone_musdb, "train")
    one = prepare_split(tracks, tmp_path / "one", STFT, CONFIG, workers=1, progress=False)
    two = prepare_split(tracks, tmp_path / "two", STFT, CONFIG, workers=2, progress=False)
    assert one["n_examples"] == two["n_examples"]
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]


def test_quality_filter_statistics_in_manifest(tmp_path):
    root = tmp_path / "musdb"
    write_tone_track(root / "train" / "a", 4.0)
    stems = write_tone_track(root / "train" / "b", 4.0, seed=1)
    silent = stems["vocals"].copy()
    silent[: 2 * 44100] = 0.0  # first two seconds of vocals silent
    soundfile.write(root / "train" / "b" / "vocals.wav", silent, 44100, subtype="FLOAT")
    config = PrepareConfig(crops=CropConfig(seconds=2.0, overlap=0.5), quality=QualityConfig(stems=("vocals",)))
    manifest = prepare_split(musdb.find_tracks(root, "train"), tmp_path / "s", STFT, config, progress=False)
    quality = manifest["quality"]
    assert quality["crops"] == 6 and quality["rejected"] >= 1
    assert quality["rejected_by"]["vocals"]["activity"] >= 1
    assert manifest["n_examples"] == 6 - quality["rejected"]


def test_bad_track_stops_or_is_skipped(tone_musdb, tmp_path):
    (tone_musdb / "train" / "song 1" / "bass.wav").write_text("not audio")
    tracks = musdb.find_tracks(tone_musdb, "train")
    with pytest.raises(DataError, match="bass.wav"):
        prepare_split(tracks, tmp_path / "s", STFT, CONFIG, progress=False)
    manifest = prepare_split(tracks, tmp_path / "s", STFT, CONFIG, skip_bad=True, progress=False)
    assert list(manifest["skipped"]) == ["song 1"] and "bass.wav" in manifest["skipped"]["song 1"]
    assert manifest["tracks"] == ["song 0", "song 2"]


def test_refuses_to_overwrite_a_foreign_folder(tone_musdb, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ShardError, match="not an mss-tf shard folder"):
        prepare_split(musdb.find_tracks(tone_musdb, "test"), out, STFT, CONFIG, progress=False)
    assert (out / "thesis.tex").read_text() == "precious"


def test_gzip_and_small_shards(tone_musdb, tmp_path):
    import dataclasses

    config = dataclasses.replace(CONFIG, compression="GZIP", shard_bytes=1)
    manifest = prepare_split(musdb.find_tracks(tone_musdb, "train"), tmp_path / "s", STFT, config, progress=False)
    assert len(manifest["shards"]) == 9 and all(s["file"].endswith(".gz") for s in manifest["shards"])
    assert sum(1 for _ in iterate_examples(tmp_path / "s")) == 9


def test_prepare_cli_and_check(tone_musdb, tmp_path, monkeypatch, capsys):
    out = tmp_path / "shards"
    # prepare_musdb.py's main in this process (tests/test_cli.py run_main: no Python and TensorFlow
    # start-up; train.py prepares shards in its own process in tests/test_end_to_end.py), its two
    # workers processes of their own
    prepare_cli = lambda *args: run_main("datasets/prepare_musdb.py", args, monkeypatch, capsys)  # noqa: E731
    result = prepare_cli("--musdb-root", tone_musdb, "--out", out, "--model", "unet", "--crop-seconds", 2, "--workers", 2,
                         "--quiet")
    assert result.returncode == 0, result.stderr
    assert "train: 6 mono examples" in result.stdout and "valid: 3 mono examples" in result.stdout
    checked = prepare_cli("--check", out)
    assert checked.returncode == 0 and checked.stdout.count("ok:") == 2
    shard = out / "train" / read_manifest(out / "train")["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert_one_line_error(prepare_cli("--check", out), shard, "checksum")
    assert_one_line_error(prepare_cli("--check", tmp_path / "none"), tmp_path / "none")
    assert_one_line_error(prepare_cli("--musdb-root", tone_musdb, "--out", out, "--model", "unet", "--workers", 0), "--workers")


def test_skip_bad_also_skips_a_track_with_a_missing_stem(tone_musdb, tmp_path):
    (tone_musdb / "train" / "song 0" / "other.wav").unlink()
    with pytest.raises(DataError, match="other.wav"):
        prepare_dataset(tone_musdb, tmp_path / "s", STFT, CONFIG, splits=["train"], progress=False)
    prepare_dataset(tone_musdb, tmp_path / "s", STFT, CONFIG, splits=["train"], skip_bad=True, progress=False)
    manifest = read_manifest(tmp_path / "s" / "train")
    assert list(manifest["skipped"]) == ["song 0"] and manifest["tracks"] == ["song 1"]


def test_float16_shards_reproduce_the_source_audio(tone_musdb, tmp_path):
    import dataclasses

    import tensorflow as tf

    from mss_tf.audio.spectrogram import istft

    config = dataclasses.replace(CONFIG, dtype="float16")
    out = prepare_dataset(tone_musdb, tmp_path / "s", STFT, config, splits=["test"], progress=False)
    audio, _ = musdb.load_track(musdb.find_tracks(tone_musdb, "test")[0], sample_rate=16000, mono=True)
    crop = 32000
    for example in iterate_examples(out / "test"):
        offset = int(example["offset"])
        for i, stem in enumerate(["mixture", "vocals", "drums", "bass", "other"]):
            spec = example["mixture"] if stem == "mixture" else example["stems"][i - 1]
            wave = istft(tf.complex(spec[..., 0], spec[..., 1]), STFT, crop).numpy()
            reference = audio[stem][offset : offset + crop, 0]
            # float16 keeps 11 significant bits: relative error about 2^-11 of the STFT values
            assert np.max(np.abs(wave - reference)) < 2e-3 * max(1.0, np.max(np.abs(reference)))


def test_augmented_copies_are_written_with_their_parameters(tone_musdb, tmp_path):
    import dataclasses

    from mss_tf.data.augment import AugmentConfig

    config = dataclasses.replace(CONFIG, augment=AugmentConfig(), augment_copies=1, seed=4)
    manifest = prepare_split(musdb.find_tracks(tone_musdb, "test"), tmp_path / "s", STFT, config, progress=False)
    assert manifest["n_examples"] == 6 and manifest["n_augmented"] == 3
    assert manifest["settings"]["augment"] == AugmentConfig().to_dict() and manifest["settings"]["augment_copies"] == 1
    examples = list(iterate_examples(tmp_path / "s"))
    params = [json.loads(e["augmentation"]) for e in examples]
    assert [p is None for p in params] == [True, False] * 3  # each original followed by its copy
    original, copy = examples[0], examples[1]
    assert int(original["offset"]) == int(copy["offset"])
    assert not np.allclose(original["stems"], copy["stems"])
    # the mixture of an augmented copy is the sum of its augmented stems
    np.testing.assert_allclose(copy["mixture"], copy["stems"].sum(axis=0), atol=2e-2 * np.abs(copy["mixture"]).max())
    # seeded: preparing again gives the same shards
    again = prepare_split(musdb.find_tracks(tone_musdb, "test"), tmp_path / "t", STFT, config, progress=False)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_changed_audio_under_the_same_track_name_is_prepared_again(tone_musdb, tmp_path, monkeypatch):
    # e.g. a demo set regenerated in another style: same track names, different audio
    prepare_dataset(tone_musdb, tmp_path / "s", STFT, CONFIG, progress=False)
    calls = []
    real = prepare.prepare_track

    def counting(index, track, *args):
        calls.append(track.name)
        return real(index, track, *args)

    monkeypatch.setattr(prepare, "prepare_track", counting)
    prepare_dataset(tone_musdb, tmp_path / "s", STFT, CONFIG, progress=False)
    assert calls == []  # unchanged: served from the cache
    write_tone_track(tone_musdb / "train" / "song 0", 4.0, seed=11)  # new audio, same name
    prepare_dataset(tone_musdb, tmp_path / "s", STFT, CONFIG, progress=False)
    assert calls == ["song 0"]  # only the changed track
    fresh = prepare_dataset(tone_musdb, tmp_path / "fresh", STFT, CONFIG, progress=False)
    cached = [e["stems"] for e in iterate_examples(tmp_path / "s" / "train") if e["track"] == b"song 0"]
    rebuilt = [e["stems"] for e in iterate_examples(fresh / "train") if e["track"] == b"song 0"]
    assert len(cached) == len(rebuilt) > 0
    for a, b in zip(cached, rebuilt):
        np.testing.assert_array_equal(a, b)


def test_sped_up_copies_read_a_longer_excerpt_and_have_no_zero_tail(tmp_path):
    """A 1.2x speed-up of a 2 s crop consumes 2.4 s of audio: each copy is made from the longer
    excerpt (ending with the track for the last crop), so the end of the crop is music, not zeros."""
    import dataclasses

    from mss_tf.data.augment import AugmentConfig
    from tests.conftest import write_tone_musdb

    root = write_tone_musdb(tmp_path / "musdb", 4.0, n_train=0)  # stationary tones + noise
    fast = AugmentConfig(pitch_p=0.0, stretch_p=1.0, stretch_factor=(1.2, 1.2), compressor_p=0.0, reverb_p=0.0)
    config = dataclasses.replace(CONFIG, augment=fast, augment_copies=1)
    prepare_split(musdb.find_tracks(root, "test"), tmp_path / "s", STFT, config, progress=False)
    copies = [e for e in iterate_examples(tmp_path / "s") if json.loads(e["augmentation"]) is not None]
    params = [json.loads(e["augmentation"]) for e in copies]
    assert [p["time_stretch"] for p in params] == [{"factor": 1.2}] * 3 and [p["padded"] for p in params] == [0] * 3
    assert [p["source_offset"] for p in params] == [0, 16000, 64000 - params[2]["input_length"]]
    assert all(p["input_length"] > 1.2 * 32000 for p in params)
    for copy in copies:
        energy = np.sum(copy["stems"] ** 2, axis=(2, 3))  # (stems, frames)
        tail = energy.shape[1] // 10
        np.testing.assert_allclose(energy[:, -tail:].mean(axis=1), energy[:, :-tail].mean(axis=1), rtol=0.1)


def test_stereo_shards_from_the_cli_and_stereo_augmented_copies(tone_musdb, tmp_path, monkeypatch, capsys):
    import dataclasses

    from mss_tf.data.augment import AugmentConfig

    prepare_cli = lambda *args: run_main("datasets/prepare_musdb.py", args, monkeypatch, capsys)  # noqa: E731
    out = tmp_path / "shards"
    result = prepare_cli("--musdb-root", tone_musdb, "--out", out, "--model", "unet", "--channels", 2,
                         "--crop-seconds", 2, "--splits", "valid", "--quiet")
    assert result.returncode == 0 and "valid: 3 stereo examples" in result.stdout, result.stderr
    assert read_manifest(out / "valid", channels=2)["settings"]["channels"] == 2
    checked = prepare_cli("--check", out)
    assert checked.returncode == 0 and checked.stdout.rstrip().endswith("MB, stereo"), checked.stdout
    # offline augmentation of a stereo crop: one pitch shift and time stretch for both channels of
    # every stem (right stays 0.8 x left, as in the tone tracks), the copy stereo like its original
    shift = AugmentConfig(pitch_p=1.0, stretch_p=1.0, compressor_p=0.0, reverb_p=0.0)
    config = dataclasses.replace(CONFIG, augment=shift, augment_copies=1, channels=2)
    prepare_split(musdb.find_tracks(tone_musdb, "test"), tmp_path / "s", STFT, config, progress=False)
    copies = [e for e in iterate_examples(tmp_path / "s") if json.loads(e["augmentation"]) is not None]
    assert len(copies) == 3
    for copy in copies:
        stems = copy["stems"]  # (4, 2, T, F, 2)
        assert stems.shape[:2] == (4, 2)
        for left, right in zip(stems[:, 0], stems[:, 1]):
            assert np.max(np.abs(right - 0.8 * left)) < 0.03 * np.max(np.abs(left))
