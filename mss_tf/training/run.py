"""A training run end to end: data root -> cached shards -> datasets -> model -> Trainer."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from mss_tf.cli import data_dir
from mss_tf.config import TrainConfig
from mss_tf.data.online import OnlineAugmentConfig
from mss_tf.data.pipeline import PipelineConfig, make_dataset
from mss_tf.data.prepare import CropConfig, PrepareConfig, prepare_dataset, settings_key
from mss_tf.data.quality import targets_config
from mss_tf.models.registry import build_model, is_neural, model_parameters
from mss_tf.training.loop import Trainer


def new_run_dir(model: str, root: str | Path = "runs") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{model}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{model}-{stamp}-{suffix}"
    return path


def prepare_config(config: TrainConfig) -> PrepareConfig:
    """Shard settings of a run: its crop length, and the quality filter on its targets."""
    return PrepareConfig(crops=CropConfig(seconds=config.crop_seconds), quality=targets_config(config.targets or []))


def default_shard_dir(data_root: Path, config: TrainConfig) -> Path:
    """`data/shards/<root name>-<hash of the STFT and shard settings>`: one folder per setting."""
    key = settings_key(config.spectrogram, prepare_config(config))
    return data_dir() / "shards" / f"{data_root.resolve().name}-{key}"


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


class RunLog:
    """Prints a line and appends it to `run_dir/train.log`."""

    def __init__(self, run_dir: Path, echo: Callable[[str], None] = print) -> None:
        self.path = run_dir / "train.log"
        self.echo = echo

    def __call__(self, line: str) -> None:
        self.echo(line)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def train_run(
    config: TrainConfig,
    run_dir: Path,
    data_root: Path | None,
    shard_dir: Path | None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prepare (or reuse) shards, train the preset of `config` and save everything in `run_dir`."""
    config.resolve()
    set_seeds(config.seed)
    spec = config.spectrogram
    if shard_dir is None:
        assert data_root is not None, "need a data root or a shard folder"
        shard_dir = default_shard_dir(data_root, config)
        echo(f"shards: {shard_dir} (built from {data_root} if missing)")
        prepare_dataset(data_root, shard_dir, spec, prepare_config(config), progress=progress)
    if not is_neural(config.model):
        return _fit_nmf(config, run_dir, shard_dir, progress, echo)
    pipeline = PipelineConfig(
        batch_size=int(config.batch_size),  # type: ignore[arg-type]
        train_frames=config.train_frames(),
        augment=OnlineAugmentConfig.from_dict(config.online_augment) if config.online_augment else None,
    )
    targets = list(config.targets or [])
    train_ds = make_dataset(shard_dir / "train", spec, targets, pipeline, training=True, seed=config.seed)
    valid_ds = None
    if (shard_dir / "valid").is_dir():
        valid_ds = make_dataset(shard_dir / "valid", spec, targets, pipeline, training=False)
    # the run directory is created only once the data is known to be good
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir, echo)
    config.data_root = str(data_root) if data_root else config.data_root
    config.shards = str(shard_dir)
    config.save(run_dir)
    model = build_model(config.model, **config.model_kwargs)
    trainer = Trainer(model, config, run_dir)
    history = trainer.fit(train_ds, valid_ds, progress=progress, log=log)
    params = model_parameters(model)
    log(f"trained {config.model} ({params:,} parameters) in {run_dir}")
    return {"history": history, "params": params, "run_dir": str(run_dir)}


def _fit_nmf(config: TrainConfig, run_dir: Path, shard_dir: Path, progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """The NMF baseline learns its dictionaries from the training shards (no gradient loop)."""
    model = build_model(config.model, **config.model_kwargs)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir, echo)
    config.shards = str(shard_dir)
    config.save(run_dir)
    history = model.fit_from_shards(shard_dir / "train", config.spectrogram, progress=progress)
    model.save(run_dir)
    params = model_parameters(model)
    final = {target: float(losses[-1]) for target, losses in history.items()}
    log(f"fitted {config.model} ({params:,} dictionary entries) in {run_dir}; final beta-divergence {final}")
    return {"history": history, "params": params, "run_dir": str(run_dir)}
