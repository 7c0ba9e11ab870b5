import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.config import TrainConfig
from mss_tf.errors import ConfigError, DamagedCheckpointError, DataError
from mss_tf.inference import Separator
from mss_tf.models.registry import build_model
from mss_tf.checkpoints import checkpoint_history, model_variables
from mss_tf.training.run import check_resume, ensure_shards, train_run, training_data


def _config(**kw):
    base = dict(model="unet-tiny", epochs=2, steps_per_epoch=3, batch_size=2, train_seconds=1.0, crop_seconds=2.0, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_train_run_writes_run_dir_and_resumes(tone_musdb, tmp_path, monkeypatch):
    monkeypatch.setenv("MSS_TF_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    result = train_run(_config(), run, tone_musdb, None, progress=False, echo=lambda s: None)
    assert len(result["history"]) == 2
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "unet-tiny" and saved["learning_rate"] == 1e-3 and saved["weight_decay"] == 1e-5
    assert saved["stft"] == {"sample_rate": 16000, "n_fft": 1024, "hop": 512}
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and all(np.isfinite(l["valid_loss"]) for l in lines)
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-6")  # numbered by global step
    assert (run / "train.log").read_text().count("epoch=") == 2
    # every weight of the trained model comes back from the checkpoint, identically each time
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "best")))
    separator = Separator.from_run(run)
    for path, variable in model_variables(separator.model).items():
        key = f"model/{path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(key))
    assert len(model_variables(separator.model)) == len(separator.model.weights)
    mix = tf.random.stateless_normal([1, 20, 513, 2], seed=[0, 1])
    # a config the caller has read already (evaluate.py) is used as it is, not read again
    config = TrainConfig.load(run)
    with monkeypatch.context() as patch:
        patch.setattr(TrainConfig, "load", lambda *a: pytest.fail("config.json read a second time"))
        again = Separator.from_run(run, config=config)
    np.testing.assert_array_equal(separator.model(mix, training=False), again.model(mix, training=False))
    # the same checkpoint run in bfloat16: float32 weights, bfloat16 layers, float32 waveforms out
    bf16 = Separator.from_run(run, precision="mixed_bfloat16")
    assert bf16.model.compute_dtype == "bfloat16" and keras.config.dtype_policy().name == "float32"
    for ours, theirs in zip(bf16.model.weights, separator.model.weights):
        assert ours.dtype == "float32"
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (16000, 2)).astype(np.float32)
    full, half = separator.separate(audio, 16000), bf16.separate(audio, 16000)
    for target in separator.targets:
        assert half[target].dtype == np.float32 and half[target].shape == full[target].shape
        error = np.sum((half[target] - full[target]) ** 2) / np.sum(full[target] ** 2)
        assert 0 < error < 1e-3, (target, error)  # bfloat16 rounding: close to, not equal to, float32
    with pytest.raises(ConfigError, match="float8"):
        Separator.from_run(run, precision="float8")
    # resuming continues at epoch 3 with the restored optimizer state
    config = TrainConfig.load(run)
    config.epochs = 3
    result = train_run(config, run, tone_musdb, None, progress=False, echo=lambda s: None)
    assert [h["epoch"] for h in result["history"]] == [3]


def test_an_epoch_is_a_pass_over_the_training_crops_and_at_least_64_per_song():
    from mss_tf.config import epoch_steps

    # MUSDB18-sized: 86 songs, 6,900 crops -> a pass over the crops
    assert epoch_steps(6900, 86, 4) == 1725
    assert epoch_steps(6901, 86, 4) == 1726
    # twice the songs at the same length: twice the steps
    assert epoch_steps(13800, 172, 4) == 2 * epoch_steps(6900, 86, 4)
    # the demo set: 14 songs of 12 s, 42 crops -> 64 per song
    assert epoch_steps(42, 14, 4) == 224 and epoch_steps(42, 14, 2) == 448
    with pytest.raises(ConfigError):
        epoch_steps(0, 1, 4)
    # a preset sized by the data keeps a length given on the command line, or by a resumed run
    config = TrainConfig(model="unet").resolve()
    assert config.steps_per_epoch is None
    assert config.set_epoch_length(42, 14) == 224 and config.set_epoch_length(6900, 86) == 224
    assert TrainConfig(model="unet", steps_per_epoch=100).resolve().set_epoch_length(42, 14) == 100
    # paper-size presets keep the paper's 10,000 steps
    assert TrainConfig(model="bsrnn").resolve().set_epoch_length(42, 14) == 10_000


def test_an_epoch_of_a_preset_follows_the_size_of_its_training_data(tone_musdb, tmp_path, monkeypatch):
    from mss_tf.config import SAMPLES_PER_TRACK, epoch_steps
    from mss_tf.data.shards import read_manifest
    from mss_tf.training.run import make_datasets

    monkeypatch.setenv("MSS_TF_DATA", str(tmp_path / "data"))
    config = _config(steps_per_epoch=None).resolve()
    assert config.steps_per_epoch is None  # unet-tiny sizes its epochs by the data
    shards = ensure_shards(config, tone_musdb, None, progress=False, echo=lambda s: None)
    manifest = read_manifest(shards / "train")
    make_datasets(config, shards)
    # 2 training songs of 4 s, 3 crops of 2 s each: 6 crops, fewer than 64 per song -> 128 examples
    assert (manifest["n_examples"], len(manifest["tracks"])) == (6, 2)
    assert config.steps_per_epoch == epoch_steps(6, 2, 2) == SAMPLES_PER_TRACK * 2 // 2
    flagged = _config(steps_per_epoch=5).resolve()  # --steps-per-epoch overrides it
    make_datasets(flagged, shards)
    assert flagged.steps_per_epoch == 5


def test_training_reduces_loss_on_a_fixed_batch(tmp_path):
    from mss_tf.training.loop import Trainer

    model = build_model("unet-tiny")
    mixture = tf.random.stateless_uniform([2, 16, 65, 2], seed=[1, 2], minval=-1, maxval=1)
    targets = tf.stack([0.8 * mixture, 0.1 * mixture, 0.05 * mixture, 0.05 * mixture], axis=1)
    trainer = Trainer(model, _config(learning_rate=1e-2).resolve(), tmp_path / "run")
    trainer._build(mixture)
    first = float(trainer._train_step(mixture, targets)[0])
    for _ in range(60):
        last = float(trainer._train_step(mixture, targets)[0])
    assert last < 0.5 * first
    assert not (tmp_path / "run").exists()  # training steps write nothing; checkpoints and logs come from fit


def test_a_resume_keeps_what_defines_the_run(tmp_path):
    config = _config().resolve()
    run = tmp_path / "run"
    check_resume(config, run, "unet-tiny", {"epochs": 5, "learning_rate": 1e-4, "batch_size": 2, "seed": None})
    for request, message in [
        ({"model": "bsrnn-tiny"}, f"{run}: is a unet-tiny run, not bsrnn-tiny"),
        ({"config_file": True}, "--config and --resume together"),
        ({"model_args": True}, f"{run}: --model-arg cannot change the architecture"),
        ({"overrides": {"batch_size": 4}}, f"{run}: --batch-size 4 differs from the run's 2"),
        ({"overrides": {"seed": 1}}, f"{run}: --seed 1 differs from the run's 0"),
        ({"overrides": {"crop_seconds": 3.0}}, f"{run}: --crop-seconds 3.0 differs from the run's 2.0"),
        ({"overrides": {"targets": ["vocals"]}}, "--targets ['vocals'] differs"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_resume(config, run, **request)
    with pytest.raises(ConfigError, match="fitted in one go"):
        check_resume(TrainConfig(model="nmf").resolve(), run)


def test_training_data_is_the_shards_given_else_the_runs_else_a_musdb_folder(tmp_path, monkeypatch):
    config = _config().resolve()
    shards, music, run = tmp_path / "shards", tmp_path / "music", tmp_path / "run"
    shards.mkdir()
    monkeypatch.setenv("MUSDB_PATH", str(tmp_path / "env-music"))
    assert training_data(config, shards, str(music)) == (None, shards)
    assert training_data(config, None, str(music)) == (music, None)
    assert training_data(config) == (tmp_path / "env-music", None)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'gone'}: no such shard folder")):
        training_data(config, tmp_path / "gone")
    config.shards = str(shards)  # a resumed run trains on its own shards unless told otherwise
    assert training_data(config, resume=run) == (None, shards)
    assert training_data(config, None, str(music), resume=run) == (music, None)
    config.shards = str(tmp_path / "deleted")
    with pytest.raises(ConfigError, match=re.escape(f"{run}: the run's shard folder '{tmp_path / 'deleted'}' is gone")):
        training_data(config, resume=run)


def test_a_bad_data_root_is_refused_before_anything_is_said_or_written(tmp_path, monkeypatch, tone_musdb):
    monkeypatch.setenv("MSS_TF_DATA", str(tmp_path / "data"))
    (tmp_path / "music").mkdir()
    (tone_musdb / "train" / "song 1" / "vocals.wav").unlink()
    said = []
    for root, message in [(tmp_path / "nowhere", "no such folder"), (tmp_path / "music", "not in MUSDB18-HQ layout"),
                          (tone_musdb, "missing stem 'vocals'")]:
        with pytest.raises(DataError, match=message):
            ensure_shards(_config().resolve(), root, None, progress=False, echo=said.append)
    assert said == [] and not (tmp_path / "data").exists()


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="epochs"):
        _config(epochs=0).resolve()
    with pytest.raises(ConfigError, match="unknown model"):
        TrainConfig(model="nope").resolve()
    with pytest.raises(ConfigError, match="unknown loss"):
        _config(loss="l2").resolve()


class Silencer(keras.Model):
    """Target 0: a trainable gain times the mixture; target 1: always silent (a dead target)."""

    def __init__(self):
        super().__init__()
        self.gain = self.add_weight(name="gain", shape=(), initializer="ones")

    def call(self, mixture, training=None):
        return tf.stack([self.gain * mixture, 0.0 * mixture], axis=1)  # (B, 2, T, F, 2)


def _tone_batches(stft, count=4, seconds=0.5):
    """(mixture, targets) STFT batches of two tones: 'keep' at 300 Hz and 'silent' at 1200 Hz."""
    t = np.arange(int(seconds * stft.sample_rate)) / stft.sample_rate
    phases = np.random.default_rng(0).uniform(0, 2 * np.pi, (count, 2, 1))
    stems = np.stack([0.3 * np.sin(2 * np.pi * 300 * t + phases[:, 0]), 0.1 * np.sin(2 * np.pi * 1200 * t + phases[:, 1])], 1)
    spec = lambda x: tf.stack([tf.math.real(x), tf.math.imag(x)], -1)  # noqa: E731
    from mss_tf.audio.spectrogram import stft as to_stft

    targets = spec(to_stft(tf.constant(stems, tf.float32), stft))  # (E, 2, T, F, 2)
    mixture = spec(to_stft(tf.constant(stems.sum(1), tf.float32), stft))  # (E, T, F, 2)
    return tf.data.Dataset.from_tensor_slices((mixture, targets)).batch(2)


def test_every_epoch_scores_each_target_and_names_a_dead_one(tmp_path):
    from mss_tf.training.loop import Trainer

    stft = SpectrogramConfig(8000, 256, 128)
    config = _config(epochs=3, steps_per_epoch=2, targets=["keep", "silent"], stft=stft.to_dict()).resolve()
    lines = []
    Trainer(Silencer(), config, tmp_path).fit(_tone_batches(stft).repeat(), _tone_batches(stft), progress=False, log=lines.append)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert set(record["valid_usdr"]) == set(record["energy_ratio"]) == {"keep", "silent"}
        assert record["energy_ratio"]["silent"] == 0.0 and abs(record["valid_usdr"]["silent"]) < 1e-6  # silence: 0 dB
        assert record["energy_ratio"]["keep"] > 0.5 and record["valid_usdr"]["keep"] > 5.0  # mixture as estimate: 9.5 dB
    warnings = [line for line in lines if line.startswith("warning")]
    # below 1% of its reference's energy for 2 epochs: warned at epochs 2 and 3, by name, never 'keep'
    assert len(warnings) == 2 and all("'silent'" in w and "'keep'" not in w for w in warnings), lines
    assert lines.index(warnings[0]) > [i for i, line in enumerate(lines) if line.startswith("epoch=2")][0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs")).Reload()
    tags = set(events.Tags()["tensors"])
    assert {"valid_usdr/keep", "valid_usdr/silent", "energy_ratio/keep", "energy_ratio/silent"} <= tags


def test_dead_target_count_survives_a_resume(tmp_path):
    from mss_tf.training.loop import Trainer

    stft = SpectrogramConfig(8000, 256, 128)
    config = _config(epochs=1, steps_per_epoch=1, targets=["keep", "silent"], stft=stft.to_dict()).resolve()
    lines = []
    Trainer(Silencer(), config, tmp_path).fit(_tone_batches(stft).repeat(), _tone_batches(stft), progress=False, log=lines.append)
    assert not [line for line in lines if line.startswith("warning")]  # one quiet epoch is not yet dead
    config.epochs = 2
    Trainer(Silencer(), config, tmp_path).fit(_tone_batches(stft).repeat(), _tone_batches(stft), progress=False, log=lines.append)
    assert len([line for line in lines if line.startswith("warning") and "'silent'" in line]) == 1


def test_a_resume_passes_over_damaged_checkpoints_to_the_previous_intact_one(tmp_path):
    from mss_tf.training.loop import Trainer
    from tests.test_checkpoints import damage_checkpoint

    stft = SpectrogramConfig(8000, 256, 128)
    config = _config(epochs=1, steps_per_epoch=3, checkpoint_every=1, targets=["keep", "silent"],
                     stft=stft.to_dict()).resolve()
    train, valid = _tone_batches(stft).repeat(), _tone_batches(stft)
    Trainer(Silencer(), config, tmp_path).fit(train, valid, progress=False, log=lambda line: None)
    folder = tmp_path / "checkpoints"
    assert [Path(p).name for p in checkpoint_history(folder)] == ["ckpt-3", "ckpt-2", "ckpt-1"]
    newest = damage_checkpoint(folder, "truncated data")
    config.epochs = 2
    lines = []
    history = Trainer(Silencer(), config, tmp_path).fit(train, valid, progress=False, log=lines.append)
    (warning,) = [line for line in lines if "damaged" in line]  # one line says so
    assert warning.startswith(f"warning: {newest}: damaged checkpoint")
    assert warning.endswith(f"; resuming from the previous intact checkpoint {folder / 'ckpt-2'}")
    assert f"resumed from {folder / 'ckpt-2'} at step 2 (epoch 1, 4 examples seen)" in lines
    assert [record["epoch"] for record in history] == [1, 2]  # epoch 1 finished again, from its step 2
    assert Path(checkpoint_history(folder)[0]).name == "ckpt-6"
    # every checkpoint damaged: one line, nothing written
    for which in range(3):
        damage_checkpoint(folder, "truncated index", which)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    config.epochs = 3
    with pytest.raises(DamagedCheckpointError, match=re.escape(f"{folder / 'ckpt-6'}: damaged checkpoint")) as error:
        Trainer(Silencer(), config, tmp_path).fit(train, valid, progress=False, log=lines.append)
    assert str(error.value).endswith(f"no earlier intact checkpoint in {folder} to resume from")
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before


SPARSE_SR = 8000
SPARSE_STFT = SpectrogramConfig(SPARSE_SR, 256, 128)


def _dense_and_sparse(rng, seconds=1.0, quiet_db=-20.0):
    """(2, samples): a dense source (three harmonic notes changing every 0.25 s, always on) and a
    sparse one (two 80 ms whistles at 1.5-3 kHz), the sparse one `quiet_db` below the dense one."""
    n = int(seconds * SPARSE_SR)
    t = np.arange(n) / SPARSE_SR
    dense = np.zeros(n)
    for start in range(0, n, n // 4):
        part = slice(start, start + n // 4)
        for _ in range(3):
            f0 = rng.uniform(110, 440)
            for k in range(1, 7):
                dense[part] += np.sin(2 * np.pi * f0 * k * t[part] + rng.uniform(0, 2 * np.pi)) / k
    dense += 0.05 * rng.standard_normal(n)
    sparse = np.zeros(n)
    length = int(0.08 * SPARSE_SR)
    for _ in range(2):
        start, f = rng.integers(0, n - length), rng.uniform(1500, 3000)
        tt = np.arange(length) / SPARSE_SR
        sparse[start : start + length] += np.sin(2 * np.pi * f * tt + 3 * np.sin(2 * np.pi * 6 * tt)) * np.hanning(length)
    dense *= 0.1 / np.sqrt(np.mean(dense**2))
    sparse *= 0.1 * 10 ** (quiet_db / 20) / np.sqrt(np.mean(sparse**2))
    return np.stack([dense, sparse]).astype(np.float32)


def _spectrogram_pairs(seed, count):
    """(mixture (E, T, F, 2), targets (E, 2, T, F, 2)) of `count` dense + sparse examples."""
    from mss_tf.audio.spectrogram import stft as to_stft

    rng = np.random.default_rng(seed)
    stems = np.stack([_dense_and_sparse(rng) for _ in range(count)])  # (E, 2, samples)
    spec = lambda x: tf.stack([tf.math.real(x), tf.math.imag(x)], -1)  # noqa: E731
    return spec(to_stft(tf.constant(stems.sum(1)), SPARSE_STFT)), spec(to_stft(tf.constant(stems), SPARSE_STFT))


def test_a_sparse_source_20_db_quieter_is_separated_not_silenced(tmp_path):
    # The failure of issue 5 in miniature: a source present in ~2% of the time-frequency plane
    # and 20 dB under the other. Its median share of a bin is zero, so an absolute-error (L1)
    # loss silences it before the network learns where it is (measured: 0.00 of its energy,
    # 0.0 dB, after 100 steps); the default (squared-error) loss must recover it.
    from mss_tf.training.loop import Trainer

    keras.utils.set_random_seed(0)
    config = TrainConfig(model="unet", epochs=3, steps_per_epoch=200, targets=["dense", "sparse"],
                         stft=SPARSE_STFT.to_dict(), seed=0).resolve()
    train = tf.data.Dataset.from_tensor_slices(_spectrogram_pairs(0, 64)).shuffle(64, seed=0).repeat().batch(4)
    valid = tf.data.Dataset.from_tensor_slices(_spectrogram_pairs(1, 16)).batch(8)
    model = build_model("unet", targets=["dense", "sparse"])
    history = Trainer(model, config, tmp_path).fit(train, valid, progress=False, log=lambda line: None)
    final = history[-1]
    assert final["energy_ratio"]["sparse"] > 0.5, history  # its estimate carries most of its energy
    assert final["valid_usdr"]["sparse"] > 6.0, history  # and is that source, not the mixture
    assert final["valid_usdr"]["dense"] > 20.0, history  # the mixture alone scores 20 dB here


@pytest.mark.slow  # 35 s; stereo shards, training and separation are covered in the default run by
# test_prepare (stereo shards), test_loop (a stereo RoFormer step) and test_convert_runs (stereo separation)
def test_stereo_bsrnn_prepares_trains_validates_and_resumes(tone_musdb, tmp_path, monkeypatch):
    """`bsrnn-tiny` with channels=2 trains on stereo shards of its own (both channels at once)."""
    from mss_tf.data.prepare import CropConfig, PrepareConfig, prepare_dataset
    from mss_tf.data.shards import read_manifest
    from mss_tf.training.run import default_shard_dir

    monkeypatch.setenv("MSS_TF_DATA", str(tmp_path / "data"))
    stft = SpectrogramConfig(8000, 256, 128)
    stereo = lambda **kw: _config(model="bsrnn-tiny", model_kwargs={"channels": 2}, epochs=1, steps_per_epoch=2,  # noqa: E731
                                  validation_steps=1, stft=stft.to_dict(), **kw)
    run = tmp_path / "run"
    lines = []
    result = train_run(stereo(), run, tone_musdb, None, progress=False, echo=lines.append)
    shard_dir = default_shard_dir(tone_musdb, stereo().resolve())
    assert shard_dir.name.startswith("musdb-stereo-") and shard_dir != default_shard_dir(tone_musdb, _config(
        model="bsrnn-tiny", stft=stft.to_dict()).resolve())  # mono and stereo shards never share a folder
    for split in ("train", "valid"):
        assert read_manifest(shard_dir / split, stft, channels=2)["channels"] == 2
    record = result["history"][0]
    assert record["step"] == 2 and np.isfinite(record["train_loss"]) and np.isfinite(record["valid_loss"])
    assert np.isfinite(record["valid_usdr"]["vocals"]) and record["energy_ratio"]["vocals"] > 0  # stereo crops separated
    assert json.loads((run / "config.json").read_text())["model_kwargs"]["channels"] == 2
    config = TrainConfig.load(run)
    config.epochs = 2
    again = train_run(config, run, None, shard_dir, progress=False, echo=lines.append)
    assert [h["epoch"] for h in again["history"]] == [2] and any("resumed from" in line for line in lines)
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-4")
    # a mono model on these stereo shards, and the stereo model on mono shards: refused before any work
    mono_shards = prepare_dataset(tone_musdb, tmp_path / "mono", stft, PrepareConfig(crops=CropConfig(seconds=2.0)),
                                  splits=["train"], progress=False)
    for config, shards in ((_config(model="bsrnn-tiny", stft=stft.to_dict()), shard_dir), (stereo(), mono_shards)):
        with pytest.raises(ConfigError, match="shards hold .* STFTs, the model takes"):
            train_run(config, tmp_path / "refused", None, shards, progress=False, echo=lambda line: None)
        assert not (tmp_path / "refused").exists()
