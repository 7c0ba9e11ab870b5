"""The one custom training loop shared by every neural separator."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf
from tqdm import tqdm

from mss_tf.config import TrainConfig
from mss_tf.errors import CheckpointError
from mss_tf.losses import get_loss
from mss_tf.training import health

CHECKPOINTS = "checkpoints"
BEST = "best"
METRICS = "metrics.jsonl"
PROGRESS_EVERY = 20  # steps between progress-bar loss readouts (each one syncs with the device)


class Trainer:
    """Trains a separator on `(mixture, targets)` batches with a custom `tf.GradientTape` loop.

    Adam, PyTorch-style coupled L2 weight decay (`grad += wd * w`), global-norm clipping,
    validation loss every epoch, early stopping on it, per-target validation uSDR and
    estimate/reference energy ratio every epoch with a warning naming any dead target
    (`mss_tf.training.health`), a rolling `CheckpointManager` under
    `run_dir/checkpoints` (resumed automatically) and the best validation checkpoint under
    `run_dir/best`, per-epoch metrics in `metrics.jsonl` and TensorBoard under `run_dir/logs`.
    """

    def __init__(self, model: keras.Model, config: TrainConfig, run_dir: str | Path) -> None:
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir)
        self.loss_fn = get_loss(str(config.loss), alpha=float(config.loss_alpha), stft=config.spectrogram)  # type: ignore[arg-type]
        self.optimizer = keras.optimizers.Adam(learning_rate=float(config.learning_rate))  # type: ignore[arg-type]
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_valid_loss")
        self.stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="stale_epochs")
        self.targets = list(config.targets or [])
        # consecutive epochs each target's estimate stayed nearly silent (checkpointed, so a
        # resumed run keeps counting)
        self.low_energy_epochs = tf.Variable(
            tf.zeros([len(self.targets)], tf.int64), trainable=False, name="low_energy_epochs"
        )
        # the checkpoint and its managers are made in `_build`, once the model's variables exist
        self.checkpoint: tf.train.Checkpoint | None = None
        self.manager: tf.train.CheckpointManager | None = None
        self.best_manager: tf.train.CheckpointManager | None = None
        self._train_step = tf.function(self._train_step_fn, reduce_retracing=True)
        self._valid_step = tf.function(self._valid_step_fn, reduce_retracing=True)

    def _build(self, mixture: tf.Tensor) -> None:
        """Create model and optimizer variables so a checkpoint restores into them."""
        if not self.model.built:
            self.model(mixture, training=False)
        self.optimizer.build(self.model.trainable_variables)
        if self.checkpoint is None:
            self.checkpoint = tf.train.Checkpoint(
                model=model_variables(self.model), optimizer=self.optimizer, epoch=self.epoch,
                best_loss=self.best_loss, stale_epochs=self.stale_epochs,
                low_energy_epochs=self.low_energy_epochs,
            )
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, str(self.run_dir / CHECKPOINTS), max_to_keep=self.config.keep_checkpoints
            )
            self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / BEST), max_to_keep=1)

    def _train_step_fn(self, mixture: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            estimate = self.model(mixture, training=True)
            loss = self.loss_fn(targets, estimate)
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        if self.config.weight_decay:
            grads = [g + float(self.config.weight_decay) * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]
        grads, grad_norm = tf.clip_by_global_norm(grads, float(self.config.clip_norm))  # type: ignore[arg-type]
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss, grad_norm

    def _valid_step_fn(self, mixture: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        estimate = self.model(mixture, training=False)
        energies = health.waveform_energies(targets, estimate, self.config.spectrogram)  # (3, B, S)
        return self.loss_fn(targets, estimate), energies

    def restore(self) -> int:
        """Resume from the latest checkpoint in the run directory; returns the epoch reached."""
        assert self.checkpoint is not None and self.manager is not None, "call _build first"
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def validate(self, dataset: tf.data.Dataset) -> dict[str, Any]:
        """Validation loss and per-target health: {"valid_loss", "valid_usdr", "energy_ratio"}."""
        total, count = 0.0, 0
        target_health = health.TargetHealth(self.targets)
        for step, (mixture, targets) in enumerate(dataset):
            if self.config.validation_steps and step >= self.config.validation_steps:
                break
            loss, energies = self._valid_step(mixture, targets)
            total += float(loss) * int(mixture.shape[0])
            count += int(mixture.shape[0])
            target_health.update(energies)
        return {"valid_loss": total / max(count, 1), **target_health.summary()}

    def _dead_target_warnings(self, energy_ratio: dict[str, float]) -> list[str]:
        """Count each target's nearly silent epochs; one warning per dead target, by name."""
        if not energy_ratio:
            return []
        previous = dict(zip(self.targets, self.low_energy_epochs.numpy().tolist()))
        counts = health.dead_targets(previous, energy_ratio)
        self.low_energy_epochs.assign([counts[t] for t in self.targets])
        return [health.dead_target_warning(t, n, energy_ratio[t]) for t, n in counts.items() if n >= health.DEAD_EPOCHS]

    def fit(
        self,
        train_ds: tf.data.Dataset,
        valid_ds: tf.data.Dataset | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> list[dict[str, Any]]:
        """Train until `epochs`, early stopping or `max_minutes`; returns the per-epoch metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        iterator = iter(train_ds)
        first = next(iterator)
        self._build(first[0])
        start_epoch = self.restore()
        if start_epoch:
            log(f"resumed from {self.manager.latest_checkpoint} at epoch {start_epoch}")
        writer = tf.summary.create_file_writer(str(self.run_dir / "logs"))
        started = time.monotonic()
        history: list[dict[str, Any]] = []
        pending = [first]
        for epoch in range(start_epoch, int(self.config.epochs)):
            epoch_start = time.monotonic()
            losses = []
            bar = tqdm(total=self.config.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                       unit="step", disable=not progress, leave=False)
            for step in range(int(self.config.steps_per_epoch)):
                mixture, targets = pending.pop() if pending else next(iterator)
                loss, _ = self._train_step(mixture, targets)
                losses.append(loss)  # stays on the device: no host round-trip per step
                if step % PROGRESS_EVERY == 0:
                    bar.set_postfix(loss=f"{float(loss):.4f}")
                bar.update()
            bar.close()
            train_loss = float(tf.reduce_mean(tf.stack(losses)))
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "seconds": round(time.monotonic() - epoch_start, 2),
                "learning_rate": float(self.config.learning_rate),  # type: ignore[arg-type]
            }
            warnings: list[str] = []
            if valid_ds is not None:
                record.update(self.validate(valid_ds))
                warnings = self._dead_target_warnings(record.get("energy_ratio", {}))
            monitored = record.get("valid_loss", record["train_loss"])
            improved = monitored < float(self.best_loss.numpy())
            self.epoch.assign(epoch + 1)
            if improved:
                self.best_loss.assign(monitored)
                self.stale_epochs.assign(0)
            else:
                self.stale_epochs.assign_add(1)
            self.manager.save(checkpoint_number=epoch + 1)
            if improved:
                self.best_manager.save(checkpoint_number=epoch + 1)
            with writer.as_default(step=epoch + 1):
                for key in ("train_loss", "valid_loss"):
                    if key in record:
                        tf.summary.scalar(key, record[key])
                for key in ("valid_usdr", "energy_ratio"):
                    for target, value in record.get(key, {}).items():
                        tf.summary.scalar(f"{key}/{target}", value)
            with open(self.run_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            history.append(record)
            log(_format_record(record))
            for warning in warnings:
                log(warning)
            if int(self.stale_epochs.numpy()) >= self.config.early_stopping_patience:
                log(f"early stopping: no improvement for {self.config.early_stopping_patience} epochs")
                break
            if self.config.max_minutes and time.monotonic() - started > 60 * self.config.max_minutes:
                log(f"stopping: --max-minutes {self.config.max_minutes} reached")
                break
        writer.close()
        return history


def _format_record(record: dict[str, Any]) -> str:
    """One log line: `epoch=3 train_loss=0.1234 ... valid_usdr[vocals=2.10 drums=4.31] energy_ratio[...]`."""
    formats = {"seconds": "{:.1f}", "learning_rate": "{:.2e}"}
    parts = []
    for key, value in record.items():
        if isinstance(value, dict):
            parts.append(f"{key}[" + " ".join(f"{t}={v:.2f}" for t, v in value.items()) + "]")
        elif isinstance(value, float):
            parts.append(f"{key}=" + formats.get(key, "{:.4f}").format(value))
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def model_variables(model: keras.Model) -> dict[str, tf.Variable]:
    """Every variable of a built model, keyed by its position in `model.weights`.

    Checkpoints track this mapping rather than the model object: Keras 3 layers held in Python
    lists (encoder/decoder stacks, BSRNN modules) are invisible to `tf.train.Checkpoint`'s
    object graph, which would silently save and restore only part of the model. Keras variable
    paths are not stable keys either (auto-named layers get `_1`, `_2` suffixes per process);
    the order of `model.weights` is fixed by the architecture, and a restore checks shapes.
    """
    return {f"w{i:05d}": v for i, v in enumerate(model.weights)}


def restore_weights(model: keras.Model, run_dir: str | Path, which: str = "best") -> str:
    """Load trained weights from a run directory ("best", else the latest checkpoint).

    The model must be built; every one of its variables must be found in the checkpoint.
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / BEST, run_dir / CHECKPOINTS] if which == "best" else [run_dir / CHECKPOINTS]
    for folder in candidates:
        latest = tf.train.latest_checkpoint(str(folder))
        if latest:
            status = tf.train.Checkpoint(model=model_variables(model)).restore(latest)
            try:
                status.assert_existing_objects_matched()
            except AssertionError as exc:
                raise CheckpointError(f"{latest}: checkpoint does not hold this model's weights ({str(exc)[:200]})") from None
            status.expect_partial()
            return latest
    raise CheckpointError(f"{run_dir}: run directory has no checkpoints")
