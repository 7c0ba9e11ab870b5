"""The model registry: presets, the STFT a model takes its arguments from, checked model arguments."""

import os

import pytest

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.config import TrainConfig
from mss_tf.errors import ConfigError
from mss_tf.models.bands import band_widths
from mss_tf.models.registry import PRESETS, STFT_ARGUMENTS, build_model, check_model_kwargs, get_preset

# presets whose model takes its band edges from the STFT (BSRNN, the RoFormers), paper size excluded
STFT_PRESETS = [name for name, preset in PRESETS.items()
                if preset.model in STFT_ARGUMENTS and (name.endswith("-tiny") or name.endswith("-small"))]


@pytest.mark.parametrize("name", STFT_PRESETS)
def test_a_band_split_preset_states_its_stft_once(name):
    preset = get_preset(name)
    assert not {"sample_rate", "n_fft"} & set(preset.kwargs)
    model = build_model(name)
    assert (model.sample_rate, model.n_fft) == (preset.stft.sample_rate, preset.stft.n_fft)
    assert sum(model.band_widths) == preset.stft.n_bins or preset.model == "MelBandRoformer"


def test_every_preset_is_listed_with_its_family_and_sizes():
    families = {"unet": "UNet", "nmf": "NMFSeparator", "bsrnn": "BSRNN", "bsrnn-se": "BSRNN",
                "bs-roformer": "BSRoformer", "mel-roformer": "MelBandRoformer"}
    sizes = {"unet": ["", "-tiny"], "nmf": [""]}
    expected = {f"{family}{size}": model for family, model in families.items() for size in sizes.get(family, ["", "-small", "-tiny"])}
    assert {name: preset.model for name, preset in PRESETS.items()} == expected


def test_a_run_stft_sets_the_band_edges():
    stft = SpectrogramConfig(8000, 256, 128)
    config = TrainConfig(model="bsrnn-tiny", stft=stft.to_dict()).resolve()
    model = build_model(config.model, stft=config.spectrogram, **config.model_kwargs)
    assert (model.sample_rate, model.n_fft) == (8000, 256)
    assert model.band_widths == band_widths("coarse", 8000, 256) != band_widths("coarse", 44100, 2048)


def test_stft_arguments_equal_to_the_stft_are_dropped_and_others_are_errors():
    # run configs written before the STFT was stated once hold sample_rate and n_fft in model_kwargs
    old = TrainConfig(model="bsrnn-small", model_kwargs={"sample_rate": 16000, "n_fft": 1024, "feature_dim": 8})
    assert old.resolve().model_kwargs == {"feature_dim": 8, "targets": ["vocals", "drums", "bass", "other"]}
    custom = TrainConfig(model="bsrnn-tiny", stft={"sample_rate": 8000, "n_fft": 256, "hop": 128},
                         model_kwargs={"sample_rate": 8000})
    assert "sample_rate" not in custom.resolve().model_kwargs
    with pytest.raises(ConfigError, match=r"bsrnn-tiny: model argument sample_rate=48000 contradicts the STFT's "
                                          r"sample_rate 44100"):
        TrainConfig(model="bsrnn-tiny", model_kwargs={"sample_rate": 48000}).resolve()
    with pytest.raises(ConfigError, match="n_fft=2048 contradicts the STFT's n_fft 1024"):
        build_model("bsrnn-small", n_fft=2048)
    with pytest.raises(ConfigError, match="unknown model argument 'sample_rate'"):
        TrainConfig(model="unet", model_kwargs={"sample_rate": 16000}).resolve()  # a U-Net has no such argument


@pytest.mark.parametrize("name,kwargs,message", [
    ("bsrnn-tiny", {"feture_dim": 8}, "bsrnn-tiny: unknown model argument 'feture_dim' (known: band_scheme,"),
    ("bsrnn-tiny", {"name": "x"}, "unknown model argument 'name'"),
    ("bsrnn-tiny", {"feature_dim": "wide"}, "model argument 'feature_dim' must be int, got 'wide'"),
    ("bsrnn-tiny", {"feature_dim": 8.5}, "model argument 'feature_dim' must be int, got 8.5"),
    ("bsrnn-se-tiny", {"squeeze_excitation": "yes"}, "'squeeze_excitation' must be bool"),
    ("bsrnn-tiny", {"targets": "vocals"}, "'targets' must be a list of str, got 'vocals'"),
    ("unet", {"filters": [8, "16", 32]}, "'filters' must be a list of int"),
    ("unet", {"decoder_dropout": True}, "'decoder_dropout' must be float, got True"),
    ("nmf", {"rank": "many"}, "'rank' must be int or an object of int"),
])
def test_unknown_and_mistyped_model_arguments_are_one_line_errors(name, kwargs, message):
    with pytest.raises(ConfigError) as error:
        check_model_kwargs(name, kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="model argument"):
        TrainConfig(model=name, model_kwargs=kwargs).resolve()


def test_well_typed_model_arguments_pass():
    kwargs = {"feature_dim": 8, "lstm_hidden": None, "band_scheme": [[1000, 250], [4000, 1000]], "targets": ["bass"],
              "squeeze_excitation": True, "se_reduction": 2, "lstm_implementation": "keras"}
    assert check_model_kwargs("bsrnn-tiny", kwargs) == kwargs
    assert check_model_kwargs("unet", {"filters": (4, 8, 16), "bottleneck_dropout": 0}) == {
        "filters": (4, 8, 16), "bottleneck_dropout": 0}  # a JSON integer is a number
    assert check_model_kwargs("nmf", {"rank": {"vocals": 8}, "beta": "itakura-saito"})["rank"] == {"vocals": 8}
    for name, preset in PRESETS.items():
        assert check_model_kwargs(name, preset.kwargs) == preset.kwargs


def test_train_cli_rejects_a_bad_model_arg_before_any_data_or_run_directory(tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_main

    monkeypatch.delenv("MUSDB_PATH", raising=False)
    result = run_main("train.py", ["--model", "bsrnn-tiny", "--model-arg", "sample_rate=48000", "--model-arg",
                                   "feature_dim=8", "--run-dir", tmp_path / "run"], monkeypatch, capsys, cwd=tmp_path,
                      env_extra={"MSS_TF_DATA": tmp_path / "data"})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in result.stderr.splitlines() if line.strip()], result.stderr  # no traceback
    assert len(errors) == 1 and "sample_rate=48000" in errors[0] and "44100" in errors[0]
    assert sorted(os.listdir(tmp_path)) == []  # no run directory, no demo set, no shards


def test_one_parameter_count_for_list_summary_and_benchmarks():
    import tensorflow as tf

    from mss_tf.models.registry import count_parameters, count_values, model_parameters

    model = build_model("unet-tiny")
    model(tf.zeros([1, 8, 64, 2]), training=False)
    trainable = [v.numpy() for v in model.trainable_variables]
    assert model_parameters(model) == count_parameters("unet-tiny") == sum(w.size for w in trainable)
    assert count_values(trainable) == model_parameters(model) < model.count_params()  # BatchNorm statistics excluded


@pytest.mark.parametrize("preset, kwargs", [
    ("bsrnn-se-tiny", {"targets": ["vocals", "drums"]}), ("unet-tiny", {}),
    ("bs-roformer-tiny", {"targets": ["vocals", "drums"], "channels": 2}), ("mel-roformer-tiny", {}),
])
def test_config_round_trip_and_save_load_identical_outputs(tmp_path, preset, kwargs):
    import keras
    import numpy as np
    import tensorflow as tf

    from mss_tf.checkpoints import BEST, model_variables, restore_weights

    model = build_model(preset, **kwargs)
    bins = get_preset(preset).stft.n_fft // 2 + 1
    shape = [2, 10, bins, 2] if kwargs.get("channels", 1) == 1 else [2, kwargs["channels"], 10, bins, 2]
    mix = tf.random.stateless_normal(shape, seed=[1, 1])
    out = model(mix, training=False)
    clone = type(model).from_config(model.get_config())
    clone(mix, training=False)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(mix, training=False), out, atol=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(mix, training=False), out, atol=1e-6)
    # the suite's checkpoints (weights keyed by attribute path), into a fresh model of the same preset
    tf.train.Checkpoint(model=model_variables(model)).save(str(tmp_path / "run" / BEST / "ckpt"))
    fresh = build_model(preset, **kwargs)
    fresh(mix, training=False)
    restore_weights(fresh, tmp_path / "run")
    np.testing.assert_allclose(fresh(mix, training=False), out, atol=1e-6)
