"""Run configuration: a preset's defaults resolved with command-line overrides, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.models.registry import get_preset

CONFIG_FILE = "config.json"


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
    epochs: int = 10
    steps_per_epoch: int = 100
    validation_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    clip_norm: float | None = None
    train_seconds: float | None = None
    loss: str | None = None
    loss_alpha: float | None = None
    crop_seconds: float = 6.0
    online_augment: dict[str, Any] | None = dataclasses.field(default_factory=lambda: _default_online_augment())
    early_stopping_patience: int = 10
    max_minutes: float | None = None
    seed: int = 0
    keep_checkpoints: int = 3
    stft: dict[str, int] | None = None
    targets: list[str] | None = None
    data_root: str | None = None
    shards: str | None = None

    def resolve(self) -> "TrainConfig":
        """Fill every None field from the preset; returns self."""
        preset = get_preset(self.model)
        for field in dataclasses.fields(preset.training):
            if getattr(self, field.name) is None:
                setattr(self, field.name, getattr(preset.training, field.name))
        if self.stft is None:
            self.stft = preset.stft.to_dict()
        if self.targets is None:
            self.targets = list(self.model_kwargs.get("targets", preset.kwargs.get("targets")))
        self.model_kwargs = {**self.model_kwargs, "targets": self.targets}
        from mss_tf.losses import LOSSES

        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r} (choose from {', '.join(sorted(LOSSES))})")
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        return self

    @property
    def spectrogram(self) -> SpectrogramConfig:
        assert self.stft is not None, "call resolve() first"
        return SpectrogramConfig.from_dict(self.stft)

    def train_frames(self) -> int:
        assert self.train_seconds is not None, "call resolve() first"
        spec = self.spectrogram
        return spec.n_frames(int(round(self.train_seconds * spec.sample_rate)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: str | Path) -> Path:
        from mss_tf.data.shards import atomic_write_text

        path = Path(run_dir) / CONFIG_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
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
