"""Run configuration: a preset's defaults resolved with command-line overrides, saved as JSON."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from pathlib import Path
from typing import Any

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.models.registry import MODEL_CLASSES, PRECISIONS, check_model_kwargs, get_preset
from mss_tf.utils import atomic_write

CONFIG_FILE = "config.json"
STRATEGIES = ("auto", "default", "mirrored", "multiworker")  # --strategy (mss_tf.training.distribute)
# The fewest examples a data-sized epoch draws per training track (`epoch_steps`): Open-Unmix's
# samples_per_track, whose epochs are this many random crops of every training song.
SAMPLES_PER_TRACK = 64

# The JSON types each setting accepts (None is accepted for every setting: the preset's default).
_NUMBER = (int, float)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "model_kwargs": (dict,), "epochs": (int,), "steps_per_epoch": (int,),
    "validation_steps": (int,), "batch_size": (int,), "learning_rate": _NUMBER, "lr_decay": _NUMBER,
    "lr_decay_epochs": (int,), "weight_decay": _NUMBER, "clip_norm": _NUMBER, "train_seconds": _NUMBER,
    "loss": (str,), "loss_alpha": _NUMBER, "crop_seconds": _NUMBER, "online_augment": (dict,),
    "early_stopping_patience": (int,), "early_stopping_min_delta": _NUMBER, "early_stopping_smoothing": _NUMBER,
    "max_minutes": _NUMBER, "seed": (int,), "deterministic": (bool,),
    "strategy": (str,), "precision": (str,), "jit_compile": (bool,), "checkpoint_every": (int,),
    "summary_every": (int,), "max_nonfinite": (int,), "keep_checkpoints": (int,), "stft": (dict,),
    "targets": (list,), "data_root": (str,), "shards": (str,), "data": (dict,), "init_from": (dict,),
}


def check_types(data: dict[str, Any], where: str) -> None:
    """Unknown keys and values of the wrong JSON type are errors naming the key and `where`."""
    for key, value in data.items():
        if key not in FIELD_TYPES:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(FIELD_TYPES))})")
        types = FIELD_TYPES[key]
        if value is None:
            continue
        # JSON has no int/bool distinction problem in reverse: true is not a number here
        wrong = isinstance(value, bool) and bool not in types
        if wrong or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{where}: setting {key!r} must be {names}, got {value!r}")


def model_channels(model: str, model_kwargs: dict[str, Any] | None = None) -> int:
    """Audio channels a preset's model takes at once: its `channels` argument as `model_kwargs`
    (e.g. `--model-arg channels=2`), else the preset, else the model class sets it; 1 (mono) for
    a model without one. The shards it trains on must hold that many channels."""
    preset = get_preset(model)
    for source in (model_kwargs or {}, preset.kwargs):
        if source.get("channels") is not None:
            return int(source["channels"])
    parameter = inspect.signature(MODEL_CLASSES[preset.model].__init__).parameters.get("channels")
    if parameter is not None and isinstance(parameter.default, int):
        return int(parameter.default)
    return 1


def epoch_steps(n_examples: int, n_tracks: int, batch_size: int) -> int:
    """Steps of a data-sized epoch: one pass over the `n_examples` training crops (stored crops
    and their augmented copies) of `n_tracks` songs in batches of `batch_size`, and at least
    SAMPLES_PER_TRACK examples per song.

    MUSDB18's 86 training songs give about 6,900 crops (a pass: 1,725 steps at batch 4); a set of
    short songs (the demo set's 14 training songs of 12 s: 42 crops) would otherwise get epochs of
    a few steps, with validation costing more than training and a patience of a few hundred steps.
    """
    if n_examples <= 0 or n_tracks <= 0 or batch_size <= 0:
        raise ConfigError(f"an epoch needs training examples, tracks and a positive batch, got {n_examples}, "
                          f"{n_tracks} and {batch_size}")
    return math.ceil(max(int(n_examples), SAMPLES_PER_TRACK * int(n_tracks)) / int(batch_size))


def _default_online_augment() -> dict[str, Any]:
    from mss_tf.data.online import OnlineAugmentConfig

    return OnlineAugmentConfig().to_dict()


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run; `config.json` in the run directory holds it.

    Fields left as None take the preset's training defaults in `resolve`.
    """

    model: str
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int | None = None
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    lr_decay: float | None = None
    lr_decay_epochs: int | None = None
    weight_decay: float | None = None
    clip_norm: float | None = None
    train_seconds: float | None = None
    loss: str | None = None
    loss_alpha: float | None = None
    crop_seconds: float = 6.0
    online_augment: dict[str, Any] | None = dataclasses.field(default_factory=lambda: _default_online_augment())
    early_stopping_patience: int = 10
    early_stopping_min_delta: float = 0.002
    early_stopping_smoothing: float = 0.8
    max_minutes: float | None = None
    seed: int = 0
    deterministic: bool = False
    strategy: str = "auto"
    precision: str = "float32"
    jit_compile: bool = False
    checkpoint_every: int = 500
    summary_every: int = 50
    max_nonfinite: int = 25
    keep_checkpoints: int = 3
    stft: dict[str, int] | None = None
    targets: list[str] | None = None
    data_root: str | None = None
    shards: str | None = None
    # the layout and stem map of data_root (`mss_tf.data.sources.DataSource.spec`); None: MUSDB18
    data: dict[str, Any] | None = None
    # fine-tuning: where the first weights came from (`mss_tf.training.finetune`); None: from scratch
    init_from: dict[str, Any] | None = None

    def resolve(self) -> "TrainConfig":
        """Fill every None field from the preset; returns self."""
        preset = get_preset(self.model)
        for field in dataclasses.fields(preset.training):
            if getattr(self, field.name) is None:
                setattr(self, field.name, getattr(preset.training, field.name))
        if self.stft is None:
            self.stft = preset.stft.to_dict()
        # the model's STFT arguments come from `stft`: model_kwargs never repeat them
        self.model_kwargs = check_model_kwargs(preset, self.model_kwargs, self.spectrogram)
        if self.targets is None:
            self.targets = list(self.model_kwargs.get("targets", preset.kwargs.get("targets")))
        self.model_kwargs = {**self.model_kwargs, "targets": self.targets}
        from mss_tf.losses import LOSSES

        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r} (choose from {', '.join(sorted(LOSSES))})")
        for name in ("epochs", "steps_per_epoch", "batch_size", "checkpoint_every", "summary_every",
                     "max_nonfinite", "early_stopping_patience", "lr_decay_epochs", "keep_checkpoints"):
            if name == "steps_per_epoch" and self.steps_per_epoch is None:
                continue  # a pass over the training crops: `set_epoch_length` once the data is known
            if int(getattr(self, name)) <= 0:
                flag = "--patience" if name == "early_stopping_patience" else f"--{name.replace('_', '-')}"
                raise ConfigError(f"{flag} must be positive, got {getattr(self, name)}")
        for name, flag in (("early_stopping_min_delta", "--min-delta"), ("early_stopping_smoothing", "--smoothing")):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ConfigError(f"{flag} must be in [0, 1), got {getattr(self, name)}")
        for name in ("learning_rate", "lr_decay"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "clip_norm"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        return self

    def set_epoch_length(self, n_examples: int, n_tracks: int) -> int:
        """Fix `steps_per_epoch` of a run whose preset sizes its epochs by the data (None): one
        pass over the `n_examples` training crops of `n_tracks` songs (`epoch_steps`). A value
        already set (the command line, a paper-size preset, a resumed run's config.json) is kept.
        Returns it."""
        if self.steps_per_epoch is None:
            self.steps_per_epoch = epoch_steps(n_examples, n_tracks, int(self.batch_size))  # type: ignore[arg-type]
        return int(self.steps_per_epoch)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """A config from a JSON file (`train.py --config`): unknown keys and wrong types are errors.

        `overrides` (non-None values) replace the file's values, as command-line flags do.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a JSON config ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config is a JSON object of settings, got {type(data).__name__}")
        check_types(data, str(path))
        data.update({k: v for k, v in overrides.items() if v is not None})
        if "model" not in data:
            raise ConfigError(f"{path}: no \"model\" in the config and no --model")
        return cls(**data)

    @property
    def spectrogram(self) -> SpectrogramConfig:
        assert self.stft is not None, "call resolve() first"
        return SpectrogramConfig.from_dict(self.stft)

    @property
    def channels(self) -> int:
        """Audio channels the model takes at once (1 mono, 2 stereo): `model_channels`."""
        return model_channels(self.model, self.model_kwargs)

    def example_shape(self, frames: int | None = None) -> list[int]:
        """Shape of one model input: ([C,] frames, bins, 2), the channel axis for a stereo model
        only; `frames` defaults to a training crop's."""
        channels = [self.channels] if self.channels > 1 else []
        return [*channels, self.train_frames() if frames is None else int(frames), self.spectrogram.n_bins, 2]

    def train_frames(self) -> int:
        assert self.train_seconds is not None, "call resolve() first"
        spec = self.spectrogram
        return spec.n_frames(int(round(self.train_seconds * spec.sample_rate)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / CONFIG_FILE
        atomic_write(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "TrainConfig":
        path = Path(run_dir) / CONFIG_FILE
        if not Path(run_dir).is_dir():
            raise CheckpointError(f"{run_dir}: no such run directory")
        if not path.is_file():
            raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(cls)}
            config = cls(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable run config ({exc})") from None
        return config.resolve()
