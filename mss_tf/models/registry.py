"""Model presets by name: architecture arguments, STFT config and training defaults as plain data."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras

from mss_tf import TARGETS
from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import ConfigError
from mss_tf.models.unet import UNet

UNET_STFT = SpectrogramConfig(sample_rate=16000, n_fft=1024, hop=512)
BSRNN_STFT = SpectrogramConfig(sample_rate=44100, n_fft=2048, hop=512)


@dataclasses.dataclass(frozen=True)
class TrainingDefaults:
    """Optimisation settings a preset trains with unless the command line overrides them."""

    batch_size: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float = 5.0
    train_seconds: float = 3.0
    loss: str = "mag_phase_l1"
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


MODEL_CLASSES: dict[str, Callable[..., keras.Model]] = {"UNet": UNet}

PRESETS: dict[str, Preset] = {
    "unet": Preset(
        name="unet",
        model="UNet",
        kwargs={"targets": list(TARGETS), "filters": [8, 16, 32], "bottleneck_filters": 64},
        stft=UNET_STFT,
        training=TrainingDefaults(batch_size=4, learning_rate=1e-3, weight_decay=1e-5),
        description="seed U-Net: 8/16/32 filters, bottleneck 64, all four targets, 16 kHz",
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


def get_preset(name: str) -> Preset:
    """Look up a preset by name; ConfigError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r} (choose from {', '.join(sorted(PRESETS))})") from None


def build_model(preset: Preset | str, **overrides: Any) -> keras.Model:
    """Instantiate the model of a preset, with keyword overrides of its architecture arguments."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    kwargs = {**preset.kwargs, **overrides}
    return MODEL_CLASSES[preset.model](**kwargs, name=preset.name.replace("-", "_"))


def model_targets(model: keras.Model) -> list[str]:
    """Target names a model estimates, in output order."""
    return list(model.targets)
