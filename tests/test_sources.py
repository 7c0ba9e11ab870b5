"""Any layout, any targets (mss_tf.data.sources): splits, checks with one-line reasons, shards
that record their targets, and runs refused for targets the data does not have."""

import json

import numpy as np
import pytest

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.data.crops import CropConfig
from mss_tf.data.prepare import PrepareConfig, prepare_dataset
from mss_tf.data.shards import iterate_examples, read_manifest
from mss_tf.data.sources import DataSource, _moisesdb_split
from mss_tf.errors import ConfigError, DataError, ShardError
from tests.conftest import write_tone_musdb
from tests.test_multitrack import RATE, moises_folder, tone, write

STFT = SpectrogramConfig(RATE, 512, 256)
PREP = PrepareConfig(crops=CropConfig(seconds=1.0, overlap=0.0), quality=None, dtype="float32")
PARTS = {"lead": 440.0, "guitar": 330.0, "keys": 880.0, "kick": 60.0}


def song(root, split, name, parts=PARTS, seconds=2.0, mixture=False, **replace):
    waves = {part: tone(freq, seconds) for part, freq in parts.items()}
    waves.update(replace)
    for part, wave in waves.items():
        write(root / split / name / f"{part}.wav", wave)
    if mixture is not False:
        write(root / split / name / "mixture.wav", np.sum(list(waves.values()), axis=0) if mixture is True else mixture)
    return root


def stems_set(root, n_train=4):
    for i in range(n_train):
        song(root, "train", f"t{i}", mixture=i == 0)
    song(root, "test", "x0")
    return root


def test_stems_layout_splits_targets_and_loading(tmp_path):
    source = DataSource.open(stems_set(tmp_path / "d"))
    assert source.layout == "stems" and source.stems == ("guitar", "keys", "kick", "lead")  # sorted raw stems
    # no valid/: the last sixth of train (at least one) validates, as in MUSDB18
    assert [t.name for t in source.split_tracks("valid")] == ["t3"]
    assert [t.name for t in source.split_tracks("train")] == ["t0", "t1", "t2"]
    audio, rate = source.load(source.split_tracks("train")[0], mono=True, targets=["lead", "kick"])
    assert rate == RATE and list(audio) == ["mixture", "lead", "kick"] and audio["lead"].shape == (2 * RATE, 1)
    np.testing.assert_allclose(audio["lead"][:, 0], tone(440.0, 2.0).mean(axis=1), atol=1e-6)
    spec = source.spec()
    assert spec["layout"] == "stems" and spec["stems"] == list(source.stems) and spec["stem_map"] is None
    assert DataSource.open(write_tone_musdb(tmp_path / "m", 0.5, n_train=1)).spec() is None  # MUSDB18 records nothing new
    with pytest.raises(ConfigError, match=r"^--targets lead piano: piano not in .*it has: guitar, keys, kick, lead\)$"):
        source.check_targets(["lead", "piano"])


def test_stem_map_groups_raw_stems_and_rest_takes_the_others(tmp_path):
    root = stems_set(tmp_path / "d")
    (tmp_path / "map.json").write_text(json.dumps({"vocals": "lead", "other": "*rest*", "drums": ["kick", "snare"]}))
    source = DataSource.open(root, stem_map_file=tmp_path / "map.json")
    assert source.stems == ("vocals", "other", "drums")
    assert source.spec()["stem_map"] == {"vocals": ["lead"], "other": "*rest*", "drums": ["kick", "snare"]}
    audio, _ = source.load(source.split_tracks("test")[0])
    np.testing.assert_allclose(audio["other"], tone(330.0, 2.0) + tone(880.0, 2.0), atol=1e-6)
    np.testing.assert_allclose(audio["mixture"], audio["vocals"] + audio["other"] + audio["drums"], atol=1e-6)
    assert DataSource.from_record(source.spec(), root) == source  # a run's record reads the data the same way
    (tmp_path / "none.json").write_text(json.dumps({"piano": "piano", "rest": "*rest*"}))
    with pytest.raises(ConfigError, match="none of the stems it names are in"):
        DataSource.open(root, stem_map_file=tmp_path / "none.json")


@pytest.mark.parametrize("problem, message", [
    ("missing", r"/train/t1: no stem for target\(s\) keys \(the track has: guitar, kick, lead\)$"),
    ("silent", r"/train/t1: target\(s\) keys silent throughout \(below -100 dBFS\)$"),
    ("mismatch", r"/train/t1: the stems do not add up to mixture mixture.wav \(their sum is .* dB from it; at least 20 dB expected\)$"),
    ("length", r"track t1: files of different lengths or channel counts"),
    ("rate", r"track t1: files at different sample rates \(.*keys.wav 16000 Hz.*\); export every stem at one rate$"),
    ("unreadable", r"/train/t1/keys.wav: "),
])
def test_bad_tracks_get_one_line_reasons_and_skip_bad_skips_them(tmp_path, problem, message):
    root = stems_set(tmp_path / "d")
    bad = root / "train" / "t1"
    if problem == "missing":
        (bad / "keys.wav").unlink()
    elif problem == "silent":
        write(bad / "keys.wav", np.zeros((2 * RATE, 2), np.float32))
    elif problem == "mismatch":
        write(bad / "mixture.wav", 0.5 * np.sum([tone(f, 2.0) for f in PARTS.values()], axis=0))
    elif problem == "rate":
        write(bad / "keys.wav", tone(880.0, 2.0, rate=16000), rate=16000)
    elif problem == "unreadable":
        (bad / "keys.wav").write_bytes(b"RIFF, but not audio")
    else:
        write(bad / "keys.wav", tone(880.0, 1.5))
    source = DataSource.open(root)
    track = [t for t in source.split_tracks("train") if t.name == "t1"][0]
    with pytest.raises(DataError, match=message) as error:
        source.load(track)
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match=message):
        prepare_dataset(source, tmp_path / "s", STFT, PREP, splits=["train"], progress=False)
    assert not (tmp_path / "s" / "train" / "manifest.json").exists()  # nothing half-written looks finished
    manifest = json.loads((prepare_dataset(source, tmp_path / "s", STFT, PREP, splits=["train"], skip_bad=True,
                                           progress=False) / "train" / "manifest.json").read_text())
    assert list(manifest["skipped"]) == ["t1"] and manifest["tracks"] == ["t0", "t2"]


def test_shards_record_their_targets_and_refuse_others(tmp_path):
    root = stems_set(tmp_path / "d")
    (tmp_path / "map.json").write_text(json.dumps({"vocals": "lead", "guitar": "guitar", "other": "*rest*"}))
    source = DataSource.open(root, stem_map_file=tmp_path / "map.json")
    out = prepare_dataset(source, tmp_path / "s", STFT, PREP, splits=["train", "valid"], progress=False)
    manifest = read_manifest(out / "train", STFT, ["guitar", "vocals"])
    assert manifest["stems"] == ["vocals", "guitar", "other"] and manifest["data"] == source.spec()
    example = next(iter(iterate_examples(out / "train", manifest)))
    assert example["stems"].shape[0] == 3
    # the stored mixture is the mixture file (track t0) or the sum of the stems: the stems add up to it
    np.testing.assert_allclose(example["stems"].sum(axis=0), example["mixture"], atol=1e-4)
    with pytest.raises(ShardError, match=r"shards hold stems vocals, guitar, other, not target\(s\) drums; "):
        read_manifest(out / "train", STFT, ["vocals", "drums"])
    mtime = (out / "train" / "manifest.json").stat().st_mtime_ns
    prepare_dataset(source, tmp_path / "s", STFT, PREP, splits=["train"], progress=False)
    assert (out / "train" / "manifest.json").stat().st_mtime_ns == mtime  # same data, same map: reused


def test_moisesdb_split_is_stable_and_maps_its_stems(tmp_path):
    root = moises_folder(tmp_path / "moises")
    (tmp_path / "map.json").write_text(json.dumps({"guitar": "guitar", "rest": "*rest*"}))
    source = DataSource.open(root, stem_map_file=tmp_path / "map.json")
    split = {name: _moisesdb_split(name) for name in ("0a1b", "2c3d")}
    for name in split:
        assert name in [t.name for t in source.split_tracks(split[name])]
    counts = {s: sum(_moisesdb_split(f"{i:08x}") == s for i in range(2000)) for s in ("train", "valid", "test")}
    assert 150 < counts["test"] < 260 and 150 < counts["valid"] < 260  # about 10 % each
    track = [t for t in source.split_tracks(split["0a1b"]) if t.name == "0a1b"][0]
    audio, _ = source.load(track)
    np.testing.assert_allclose(audio["guitar"], tone(330.0) + tone(335.0), atol=1e-6)  # its files summed


def test_prepare_command_reads_any_layout_through_a_stem_map(tmp_path, monkeypatch, capsys):
    from tests.test_cli import assert_one_line_error, run_main

    root = stems_set(tmp_path / "d")
    (tmp_path / "map.json").write_text(json.dumps({"vocals": "lead", "other": "*rest*"}))
    out = tmp_path / "shards"
    done = run_main("datasets/prepare_musdb.py", ["--data", root, "--stem-map", tmp_path / "map.json", "--out", out,
                                         "--model", "unet-tiny", "--crop-seconds", 1, "--quiet"], monkeypatch, capsys)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["stems"] == ["vocals", "other"] and manifest["tracks"] == ["t0", "t1", "t2"]
    assert manifest["data"]["stem_map"] == {"vocals": ["lead"], "other": "*rest*"}
    assert_one_line_error(run_main("datasets/prepare_musdb.py", ["--data", root, "--targets", "piano", "--out", tmp_path / "x",
                                                        "--model", "unet-tiny"], monkeypatch, capsys),
                          "--targets piano: piano not in")
    assert_one_line_error(run_main("datasets/prepare_musdb.py", ["--layout", "stems", "--out", tmp_path / "x", "--model",
                                                        "unet-tiny"], monkeypatch, capsys), "--layout needs --data")
    assert not (tmp_path / "x").exists()


def test_the_quality_filter_needs_every_target_on_musdb_and_one_on_other_data():
    from mss_tf.config import TrainConfig
    from mss_tf.training.run import prepare_config

    musdb_run = TrainConfig(model="unet-tiny").resolve()
    assert prepare_config(musdb_run).quality.mode == "all"  # MUSDB18 shards exactly as before
    stems_run = TrainConfig(model="unet-tiny", targets=["kick", "hats"], data={"layout": "stems"}).resolve()
    assert prepare_config(stems_run).quality.mode == "any" and prepare_config(stems_run).quality.stems == ("kick", "hats")


def test_settings_of_a_run_on_other_data_need_that_data_not_the_demo_set():
    from mss_tf.config import TrainConfig
    from mss_tf.training.run import training_data

    config = TrainConfig(model="unet-tiny", data={"layout": "stems", "stems": ["lead", "kick"]})  # --config FILE
    with pytest.raises(ConfigError, match=r"^these settings train on stems data \(targets lead, kick\); give --data DIR"):
        training_data(config)
