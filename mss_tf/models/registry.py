"""Model presets by name: architecture arguments, STFT config and training defaults as plain data."""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import inspect
import numbers
import types
import typing
from typing import Any, Callable, Iterable, Iterator, Union

import keras
import numpy as np

from mss_tf import TARGETS
from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import ConfigError
from mss_tf.models.bsrnn import BSRNN
from mss_tf.models.nmf import NMFSeparator
from mss_tf.models.roformer import BSRoformer, MelBandRoformer
from mss_tf.models.search import SearchSpace, training_space
from mss_tf.models.unet import UNet

UNET_STFT = SpectrogramConfig(sample_rate=16000, n_fft=1024, hop=512)
BSRNN_STFT = SpectrogramConfig(sample_rate=44100, n_fft=2048, hop=512)
# Keras dtype policies a model can be built in (training and inference)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainingDefaults:
    """Optimisation settings a preset trains with unless the command line overrides them."""

    batch_size: int = 4
    learning_rate: float = 1e-3
    lr_decay: float = 1.0  # learning rate x lr_decay every lr_decay_epochs epochs (staircase)
    lr_decay_epochs: int = 2
    weight_decay: float = 0.0  # coupled L2 (PyTorch's weight_decay): gradient + weight_decay * w
    clip_norm: float = 5.0  # global-norm clipping; 0 turns it off
    # at most this many epochs: early stopping (or --max-minutes) ends a run before
    epochs: int = 200
    # None: one pass over the training crops, at least 64 per training song (mss_tf.config.epoch_steps)
    steps_per_epoch: int | None = None
    train_seconds: float = 3.0
    loss: str = "mag_phase_l2"  # squared errors, not the seed's L1: see mss_tf/losses.py
    loss_alpha: float = 0.5


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model configuration: which class, its arguments, its STFT and training defaults."""

    name: str
    model: str
    kwargs: dict[str, Any]
    stft: SpectrogramConfig
    training: TrainingDefaults
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "kwargs": dict(self.kwargs),
            "stft": self.stft.to_dict(),
            "training": dataclasses.asdict(self.training),
        }


MODEL_CLASSES: dict[str, Callable[..., Any]] = {
    "UNet": UNet, "BSRNN": BSRNN, "BSRoformer": BSRoformer, "MelBandRoformer": MelBandRoformer,
    "NMFSeparator": NMFSeparator,
}
# Constructor arguments a model class takes from the STFT it runs at (BSRNN, the RoFormers: their
# band edges in bins): `build_model` fills them from the SpectrogramConfig; not model arguments.
STFT_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "BSRNN": ("sample_rate", "n_fft"), "BSRoformer": ("sample_rate", "n_fft"), "MelBandRoformer": ("sample_rate", "n_fft"),
}

PRESETS: dict[str, Preset] = {
    "unet": Preset(
        name="unet",
        model="UNet",
        kwargs={"targets": list(TARGETS), "filters": [8, 16, 32], "bottleneck_filters": 64},
        stft=UNET_STFT,
        training=TrainingDefaults(batch_size=4, learning_rate=1e-3, weight_decay=1e-5),
        description="seed U-Net: 8/16/32 filters, bottleneck 64, all four targets, 16 kHz",
    ),
    "nmf": Preset(
        name="nmf",
        model="NMFSeparator",
        kwargs={"targets": list(TARGETS), "rank": 32, "beta": 1.0, "fit_iterations": 200,
                "separate_iterations": 100, "mask_power": 1.0, "max_frames": 10000},
        stft=UNET_STFT,
        training=TrainingDefaults(),
        description="supervised NMF baseline: KL, 32 atoms per source, soft masks, 16 kHz",
    ),
    "unet-tiny": Preset(
        name="unet-tiny",
        model="UNet",
        kwargs={"targets": list(TARGETS), "filters": [4, 8, 16], "bottleneck_filters": 16},
        stft=UNET_STFT,
        training=TrainingDefaults(batch_size=4, learning_rate=1e-3, weight_decay=1e-5, train_seconds=2.0),
        description="U-Net at half width for tests",
    ),
}

# Paper size (Luo & Yu 2023): N = 128, 12 modules, BLSTM hidden 2N, mask MLP 4N, one target per
# model with the paper's band scheme for it ("auto": V7 for vocals/other, bass, drums).
_BSRNN_PAPER = {"targets": ["vocals"], "band_scheme": "auto", "feature_dim": 128, "num_modules": 12}
# Same code at CPU-demo size: N = 16, 2 modules, the coarse 12-band scheme.
_BSRNN_TINY = {**_BSRNN_PAPER, "band_scheme": "coarse", "feature_dim": 16, "num_modules": 2}
# The paper's schedule: Adam 1e-3 x 0.98 every 2 epochs, batch 2, clipping at 5, epochs of
# 10,000 steps (early stopping after 10 epochs without improvement ends a run).
_BSRNN_TRAINING = TrainingDefaults(batch_size=2, learning_rate=1e-3, lr_decay=0.98, lr_decay_epochs=2, clip_norm=5.0,
                                   epochs=100, steps_per_epoch=10_000)
# Smaller presets keep the schedule with epochs sized by the data (a pass over the training crops).
_BSRNN_TINY_TRAINING = dataclasses.replace(_BSRNN_TRAINING, train_seconds=1.0, epochs=200, steps_per_epoch=None)

# CPU size, between tiny and paper: the paper's architecture (V7 bands cut at Nyquist: 30 bands,
# complex masks, BLSTM hidden 2N, mask MLP 4N) at the U-Net's 16 kHz STFT with N = 32, 4 modules,
# all four targets and 3 s crops, so that it learns within minutes on 2 CPU cores (the tiny
# presets are sized for unit tests and plateau; benchmarks/RESULTS.md, "Separation quality").
_BSRNN_SMALL = {**_BSRNN_PAPER, "targets": list(TARGETS), "feature_dim": 32, "num_modules": 4}
_BSRNN_SMALL_TRAINING = dataclasses.replace(_BSRNN_TRAINING, train_seconds=3.0, epochs=200, steps_per_epoch=None)


def _bsrnn_pair(suffix: str, kwargs: dict[str, Any], stft: SpectrogramConfig, training: TrainingDefaults,
                se_reduction: int, size: str, se_size: str) -> dict[str, Preset]:
    """`bsrnn<suffix>` and `bsrnn-se<suffix>`: one size of BSRNN, without and with SE blocks."""
    plain, se = f"bsrnn{suffix}", f"bsrnn-se{suffix}"
    return {
        plain: Preset(name=plain, model="BSRNN", kwargs=dict(kwargs), stft=stft, training=training, description=size),
        se: Preset(name=se, model="BSRNN", kwargs={**kwargs, "squeeze_excitation": True, "se_reduction": se_reduction},
                   stft=stft, training=training, description=se_size),
    }


PRESETS.update(_bsrnn_pair(
    "", _BSRNN_PAPER, BSRNN_STFT, _BSRNN_TRAINING, 16,
    "Band-Split RNN at paper size (N=128, 12 modules, V7 bands for vocals), 44.1 kHz",
    "BSRNN with an SE block (r=16) after each of its 24 BLSTMs, paper size, 44.1 kHz",
))
PRESETS.update(_bsrnn_pair(
    "-tiny", _BSRNN_TINY, BSRNN_STFT, _BSRNN_TINY_TRAINING, 4,
    "BSRNN for tests and CPU demos (N=16, 2 modules, 12 coarse bands)",
    "BSRNN-SE for tests and CPU demos (N=16, 2 modules, 4 SE blocks with r=4)",
))
PRESETS.update(_bsrnn_pair(
    "-small", _BSRNN_SMALL, UNET_STFT, _BSRNN_SMALL_TRAINING, 8,
    "BSRNN at CPU size (N=32, 4 modules, V7 bands at 16 kHz, all four targets)",
    "BSRNN-SE at CPU size (N=32, 4 modules, 8 SE blocks with r=8, 16 kHz, all four targets)",
))


# BS-RoFormer and Mel-Band RoFormer at the papers' MUSDB18 size (Lu et al. 2023, Wang et al. 2023):
# D = 384, L = 6 blocks of one time and one band transformer layer, 8 heads of 64, dropout 0.1,
# stereo (both channels enter the band split together), the reference code's 62 bands (BS) or 60
# mel bands (Mel), a mask MLP of depth 2 (each model's reading of it), BSRNN's STFT (44.1 kHz,
# n_fft 2048, hop 512), one target per model as `bsrnn` (`--model-arg targets=[...]` adds heads).
_ROFORMER_PAPER = {"targets": ["vocals"], "channels": 2, "dim": 384, "depth": 6, "time_transformer_depth": 1,
                   "freq_transformer_depth": 1, "heads": 8, "dim_head": 64, "attn_dropout": 0.1, "ff_dropout": 0.1,
                   "mask_estimator_depth": 2, "gradient_checkpointing": True}
# gradient_checkpointing: each transformer's activations are recomputed in the backward pass (the
# reference's use_torch_checkpoint): kept, a step at batch 2 x 8 s needs more memory than a 24 GB
# machine (or GPU) has; recomputed, it fits (peak RSS in benchmarks/roformer.py).
# Training: Adam at 5e-4, the BS-RoFormer paper's learning rate, no weight decay (the loop's is
# coupled L2, not a decoupled AdamW decay), 8 s crops (the paper's training segments); batch 2,
# global-norm clipping at 5 and epochs of 10,000 steps as `bsrnn`, since the paper's batch and
# schedule are for many GPUs (the reference training code's MUSDB18 configs: batch 7-10 of 3 s
# crops, lr 5e-5, no clipping).
_ROFORMER_TRAINING = TrainingDefaults(batch_size=2, learning_rate=5e-4, clip_norm=5.0, epochs=100,
                                      steps_per_epoch=10_000, train_seconds=8.0)
# CPU size, as bsrnn-small: the U-Net's 16 kHz STFT, all four targets, mono (so the study compares
# like with like), 3 s crops; D = 48, L = 2, 4 heads of 12, a mask MLP of 2D (the reference's 4D
# makes the Mel heads' hidden-to-hidden layers 3x the rest of the model), no dropout (minutes of
# training do not overfit). Sized for about bsrnn-small's parameters and training step: on 2 cores
# (2026-12-02), at batch 4 of 3 s crops, 1.13 s (BS) and 1.19 s (Mel) a step to bsrnn-small's
# 0.92 s, interleaved. BS bands: the reference layout's edges in Hz at 16 kHz / n_fft 1024, cut at
# Nyquist (52 bands: `bands.bs_roformer_bands`); Mel: 45 mel bands, the mel width of the paper's
# 60 bands at 44.1 kHz, up to 8 kHz.
_ROFORMER_SMALL = {**_ROFORMER_PAPER, "targets": list(TARGETS), "channels": 1, "dim": 48, "depth": 2, "heads": 4,
                   "dim_head": 12, "attn_dropout": 0.0, "ff_dropout": 0.0, "mlp_expansion_factor": 2,
                   "gradient_checkpointing": False}
_ROFORMER_SMALL_TRAINING = dataclasses.replace(_ROFORMER_TRAINING, train_seconds=3.0, epochs=200, steps_per_epoch=None)
# Unit-test size: D = 16, one block, 2 heads of 8, the small presets' STFT and bands (Mel: 16 bands), 1 s crops.
_ROFORMER_TINY = {**_ROFORMER_SMALL, "targets": ["vocals"], "dim": 16, "depth": 1, "heads": 2, "dim_head": 8}
_ROFORMER_TINY_TRAINING = dataclasses.replace(_ROFORMER_SMALL_TRAINING, train_seconds=1.0)

for _suffix, _kwargs, _stft, _training, _mel_bands, _bs_text, _mel_text in [
    ("", _ROFORMER_PAPER, BSRNN_STFT, _ROFORMER_TRAINING, 60,
     "BS-RoFormer at paper size (D=384, L=6, 8 heads, 62 bands, stereo, vocals), 44.1 kHz",
     "Mel-Band RoFormer at paper size (D=384, L=6, 8 heads, 60 mel bands, stereo, vocals), 44.1 kHz"),
    ("-small", _ROFORMER_SMALL, UNET_STFT, _ROFORMER_SMALL_TRAINING, 45,
     "BS-RoFormer at CPU size (D=48, L=2, 4 heads, 52 bands at 16 kHz, all four targets)",
     "Mel-Band RoFormer at CPU size (D=48, L=2, 4 heads, 45 mel bands at 16 kHz, all four targets)"),
    ("-tiny", _ROFORMER_TINY, UNET_STFT, _ROFORMER_TINY_TRAINING, 16,
     "BS-RoFormer for tests (D=16, L=1, 2 heads, 52 bands at 16 kHz)",
     "Mel-Band RoFormer for tests (D=16, L=1, 2 heads, 16 mel bands at 16 kHz)"),
]:
    PRESETS[f"bs-roformer{_suffix}"] = Preset(f"bs-roformer{_suffix}", "BSRoformer", dict(_kwargs), _stft, _training,
                                              _bs_text)
    PRESETS[f"mel-roformer{_suffix}"] = Preset(f"mel-roformer{_suffix}", "MelBandRoformer",
                                               {**_kwargs, "num_bands": _mel_bands}, _stft, _training, _mel_text)


def get_preset(name: str) -> Preset:
    """Look up a preset by name; ConfigError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r} (choose from {', '.join(sorted(PRESETS))})") from None


def build_model(preset: Preset | str, stft: SpectrogramConfig | None = None, **overrides: Any) -> keras.Model:
    """Instantiate the model of a preset, with keyword overrides of its architecture arguments
    (checked by `check_model_kwargs`), at the STFT `stft` (default: the preset's; a run's is
    `TrainConfig.spectrogram`), which sets the model's STFT arguments (BSRNN's band edges)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    stft = stft or preset.stft
    kwargs = check_model_kwargs(preset, {**preset.kwargs, **overrides}, stft)
    kwargs.update(_stft_values(preset, stft))
    return MODEL_CLASSES[preset.model](**kwargs, name=preset.name.replace("-", "_"))


def _stft_values(preset: Preset, stft: SpectrogramConfig) -> dict[str, int]:
    return {name: int(getattr(stft, name)) for name in STFT_ARGUMENTS.get(preset.model, ())}


def model_arguments(preset: Preset | str) -> dict[str, Any]:
    """The architecture arguments a preset's model class takes, by name, with their type hints
    (those set from the STFT and Keras' `name` excluded)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    cls = MODEL_CLASSES[preset.model]
    hints = typing.get_type_hints(cls.__init__)
    skip = {"self", "name", *STFT_ARGUMENTS.get(preset.model, ())}
    return {
        name: hints.get(name, Any) for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name not in skip and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }


def check_model_kwargs(preset: Preset | str, kwargs: dict[str, Any], stft: SpectrogramConfig | None = None) -> dict[str, Any]:
    """Architecture arguments for a preset's model, checked before any work: an unknown name, a
    value of the wrong type, or an STFT argument (BSRNN's sample_rate, n_fft) other than the STFT's
    (`stft`, default the preset's) is a one-line ConfigError naming the preset and the argument.
    Returns the arguments without the STFT ones (those equal to the STFT's, as old run configs
    hold them, are dropped: `build_model` sets them from the STFT)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    stft = stft or preset.stft
    known = model_arguments(preset)
    stft_values = _stft_values(preset, stft)
    checked = {}
    for key, value in kwargs.items():
        if key in stft_values:
            if value != stft_values[key]:
                raise ConfigError(
                    f"{preset.name}: model argument {key}={value!r} contradicts the STFT's {key} {stft_values[key]}; "
                    f"a {preset.model} takes {', '.join(stft_values)} from its STFT config (drop the argument)"
                )
            continue
        if key not in known:
            raise ConfigError(f"{preset.name}: unknown model argument {key!r} (known: {', '.join(sorted(known))})")
        if not _matches(value, known[key]):
            raise ConfigError(f"{preset.name}: model argument {key!r} must be {_describe(known[key])}, got {value!r}")
        checked[key] = value
    return checked


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-like value fits a type hint (hints this check does not know pass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if hint is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if origin in (collections.abc.Mapping, dict):
        return isinstance(value, dict) and (not args or all(_matches(k, args[0]) and _matches(v, args[1])
                                                            for k, v in value.items()))
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin in (collections.abc.Sequence, list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (collections.abc.Mapping, dict):
        return f"an object of {_describe(args[1])}" if args else "an object"
    return getattr(hint, "__name__", str(hint))


def count_parameters(preset: Preset | str) -> int:
    """Trainable parameters of a preset's model (NMF: its dictionary entries at the preset's STFT)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    model = build_model(preset)
    if not is_neural(preset):
        return int(preset.stft.n_bins * model.n_components)
    model(example_mixture(model, preset.stft.n_frames(preset.stft.hop * 16), preset.stft.n_bins), training=False)
    return model_parameters(model)


def example_mixture(model: Any, frames: int, n_bins: int) -> Any:
    """Zeros shaped as a model's input STFT, to build its weights: (1, frames, bins, 2), or
    (1, channels, frames, bins, 2) for a model fed several channels at once (`model.channels`)."""
    import tensorflow as tf

    channels = int(getattr(model, "channels", 1))
    shape = [1, frames, n_bins, 2] if channels == 1 else [1, channels, frames, n_bins, 2]
    return tf.zeros(shape, tf.float32)


def model_parameters(model: Any) -> int:
    """What a built separator learns: trainable weights of a neural model (BatchNorm statistics
    excluded, as in `train.py --list`), dictionary entries of a fitted NMF. The one parameter
    count of the suite (`train.py --list` and `--summary`, results.json, exports, benchmarks)."""
    if not model.trainable_variables and hasattr(model, "count_params"):
        return int(model.count_params())  # NMF: fitted, not trained
    return count_values(model.trainable_variables)


def count_values(variables: Iterable[Any]) -> int:
    """Values held by these variables (or arrays); `model_parameters` counts with it."""
    return int(sum(int(np.prod(v.shape)) for v in variables))


def is_neural(preset: Preset | str) -> bool:
    """Whether a preset trains with the gradient loop (NMF is fitted by multiplicative updates)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return preset.model != "NMFSeparator"


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Layers built inside take the Keras dtype policy `precision`; the global policy is restored after."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def search_space(preset: Preset | str) -> SearchSpace:
    """What `train.py --tune` searches for a preset: the training settings of every neural model
    and the architecture arguments its model module defines (`search_space` in unet.py, bsrnn.py,
    roformer.py)."""
    from mss_tf.models import bsrnn, roformer, unet

    if isinstance(preset, str):
        preset = get_preset(preset)
    modules = {"UNet": unet, "BSRNN": bsrnn, "BSRoformer": roformer, "MelBandRoformer": roformer}
    if preset.model not in modules:
        raise ConfigError(f"{preset.name}: {preset.model} is fitted, not trained by gradient steps; there is nothing "
                          "to tune (choose a U-Net, BSRNN or RoFormer preset)")
    module = modules[preset.model]
    training = training_space(preset.training.learning_rate, preset.training.weight_decay)
    return SearchSpace(training + module.search_space(preset.kwargs), module.search_kwargs)
