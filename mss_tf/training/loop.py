"""The one custom training loop shared by every neural separator.

One training step, in a `tf.function` (the forward and backward pass optionally XLA-compiled):

1. each replica (`strategy.run`) computes its examples' loss in float32 (plus the coupled L2
   penalty ``weight_decay / 2 * sum w^2``, i.e. gradient + weight_decay * w as PyTorch's
   ``weight_decay``), divided by the number of replicas so that the summed gradients are those of
   the mean over the global batch; with ``mixed_float16`` the loss is scaled by the
   `LossScaleOptimizer`'s dynamic scale;
2. the gradients are all-reduced (summed) across replicas by the loop itself, so clipping sees
   the global norm of the whole batch's gradient (Keras clips per replica before it reduces);
3. a step whose loss or gradients are not finite is skipped (the float16 loss scale halves),
   counted and logged; ``max_nonfinite`` such steps in a row stop the run, keeping the last
   checkpoint (skipped steps never touch the weights);
4. Adam (``global_clipnorm`` = ``clip_norm``) applies the update.

Around it: the learning rate ``lr x lr_decay ** (epoch // lr_decay_epochs)`` set at each epoch,
validation every epoch (loss, per-target uSDR and energy ratio, `mss_tf.training.health`), early
stopping on the smoothed validation loss (`mss_tf.training.stopping`), checkpoints of the whole
training state (model, dropout generator states, optimizer with its loss scale, global step,
epoch, early-stopping state, non-finite counters, the running epoch loss) every
``checkpoint_every`` steps and at each epoch under ``run_dir/checkpoints`` and the best validation
state under ``run_dir/best``, per-epoch records in ``metrics.jsonl`` and TensorBoard under
``run_dir/logs``.

The data position is the global step: a training stream built by
`mss_tf.data.pipeline.make_dataset(start=global_step * batch_size)` yields exactly the examples
the uninterrupted run would have seen, so a resumed run (with ``deterministic``) ends with the
weights of one that never stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Union

import keras
import tensorflow as tf
from tqdm import tqdm

from mss_tf.checkpoints import (
    BEST, CHECKPOINTS, PATHS, check_weights, checkpoint_history, checkpoint_layout, model_variables, restore_checkpoint,
    restore_weights, rng_variables,
)
from mss_tf.config import TrainConfig
from mss_tf.data.pipeline import distribute
from mss_tf.errors import CheckpointError, DamagedCheckpointError, TrainingError
from mss_tf.losses import get_loss
from mss_tf.training import health, stopping, summaries
from mss_tf.training.distribute import check_batch, is_chief, worker_id

__all__ = ["BEST", "CHECKPOINTS", "METRICS", "Trainer", "model_variables", "restore_weights"]

METRICS = "metrics.jsonl"
STOPPING_KEY = "smoothed_loss/.ATTRIBUTES/VARIABLE_VALUE"  # in checkpoints that hold the stopping state
PROGRESS_EVERY = 20  # steps between progress-bar loss readouts (each one syncs with the device)

# A training stream: a dataset, or a function from the stream position (examples already
# seen) to the dataset starting there (what makes a resume exact).
TrainData = Union[tf.data.Dataset, Callable[[int], tf.data.Dataset]]


class PreReducedAdam(keras.optimizers.Adam):
    """Adam fed gradients the loop has already summed across replicas.

    Keras 3 all-reduces inside `apply` only on some strategies (those without merge_call, e.g.
    MultiWorkerMirroredStrategy) and clips before reducing; the loop reduces once, itself, so
    that ``global_clipnorm`` clips the norm of the whole batch's gradient on every strategy.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):  # noqa: D401 - Keras hook
        return list(grads_and_vars)


class Trainer:
    """Trains a separator on `(mixture, targets)` batches (see the module doc).

    The model (and so its variables) must have been created under `strategy.scope()`.
    `run_dir` holds the checkpoints, metrics and logs of `fit`; without one, the Trainer only
    runs `train_step` (benchmarks, tests).
    """

    def __init__(
        self, model: keras.Model, config: TrainConfig, run_dir: str | Path | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        check_batch(self.strategy, int(config.batch_size))  # type: ignore[arg-type]
        self.chief = is_chief(self.strategy)
        self.loss_fn = get_loss(str(config.loss), alpha=float(config.loss_alpha), stft=config.spectrogram)  # type: ignore[arg-type]
        self.loss_scaling = config.precision == "mixed_float16"
        self.targets = list(config.targets or [])
        with self.strategy.scope():
            clip = float(config.clip_norm or 0) or None  # type: ignore[arg-type]
            inner = PreReducedAdam(learning_rate=float(config.learning_rate), global_clipnorm=clip)  # type: ignore[arg-type]
            self.optimizer = keras.optimizers.LossScaleOptimizer(inner) if self.loss_scaling else inner
            counter = lambda name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)  # noqa: E731
            self.global_step = counter("global_step")
            self.epoch = counter("epoch")  # completed epochs
            self.stale_epochs = counter("stale_epochs")
            self.nonfinite_total = counter("nonfinite_total")
            self.nonfinite_streak = counter("nonfinite_streak")
            self.epoch_steps = counter("epoch_finite_steps")
            self.epoch_loss = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_loss_sum")
            self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_valid_loss")
            # the early-stopping rule's smoothed loss and its best (stale_epochs counts epochs without progress)
            self.smoothed_loss = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="smoothed_valid_loss")
            self.smoothing_weight = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="smoothing_weight")
            self.best_smoothed_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_smoothed_loss")
            # consecutive epochs each target's estimate stayed nearly silent (checkpointed, so a
            # resumed run keeps counting)
            self.low_energy_epochs = tf.Variable(
                tf.zeros([len(self.targets)], tf.int64), trainable=False, name="low_energy_epochs"
            )
        # made in `_build`, once the model's variables exist
        self.checkpoint: tf.train.Checkpoint | None = None
        self.restored_from: str | None = None  # the checkpoint `restore` resumed from
        self.damaged: list[DamagedCheckpointError] = []  # the newer ones it passed over
        self.manager: tf.train.CheckpointManager | None = None
        self.best_manager: tf.train.CheckpointManager | None = None
        gradients = self._gradients
        if config.jit_compile:
            gradients = tf.function(gradients, jit_compile=True, reduce_retracing=True, autograph=False)
        self._compiled_gradients = gradients
        # autograph off: the step and the models use explicit TensorFlow control flow (tf.cond,
        # tf.while_loop), so converting their Python would only cost time at every trace (a third
        # of a tiny model's first step)
        self._train_step = tf.function(self._distributed_step, reduce_retracing=True, autograph=False)
        self._valid_step = tf.function(self._valid_step_fn, reduce_retracing=True, autograph=False)

    # ------------------------------------------------------------------ the step

    def train_step(self, mixture: Any, targets: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One training step, the one `fit` runs, on a global batch: forward and backward pass,
        coupled weight decay, the gradient all-reduce, global-norm clipping, the non-finite guard
        and Adam's update (at the optimizer's current learning rate). Creates the model's and the
        optimizer's variables on the first call. Returns (loss, gradient norm, finite).

        `mixture` (B, [C,] T, F, 2) and `targets` (B, S, [C,] T, F, 2) are tensors; under a
        strategy with several replicas, per-replica values (`mss_tf.data.pipeline.distribute`).
        """
        if not self.optimizer.built:
            sample = mixture
            if isinstance(mixture, tf.distribute.DistributedValues):
                sample = self.strategy.experimental_local_results(mixture)[0]
            self._build_variables(sample)
        return self._train_step(mixture, targets)

    def _gradients(self, mixture: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """This replica's mean loss over its examples and the gradients of its share of the objective."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            estimate = tf.cast(self.model(mixture, training=True), tf.float32)
            loss = self.loss_fn(tf.cast(targets, tf.float32), estimate)
            objective = loss
            if self.config.weight_decay:
                penalty = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
                objective = objective + 0.5 * float(self.config.weight_decay) * penalty  # type: ignore[arg-type]
            objective = objective / self.replicas
            if self.loss_scaling:
                objective = self.optimizer.scale_loss(objective)
        grads = tape.gradient(objective, variables)
        # dense gradients: a gather (the band split) gives IndexedSlices with repeated indices,
        # whose `values` have another norm than the gradient they sum to, so global-norm
        # clipping and the logged norm would depend on how the strategy reduced them
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        return loss, grads

    def _replica_step(self, mixture: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        context = tf.distribute.get_replica_context()
        loss, grads = self._compiled_gradients(mixture, targets)
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)  # the global batch's gradient
        loss = context.all_reduce(tf.distribute.ReduceOp.SUM, loss / self.replicas)  # its mean loss
        finite = tf.math.is_finite(loss)
        for g in grads:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        scale = tf.cast(self.optimizer.dynamic_scale, tf.float32) if self.loss_scaling else 1.0
        grad_norm = tf.linalg.global_norm(grads) / scale
        if self.loss_scaling:
            self.optimizer.apply(grads, self.model.trainable_variables)  # skips and lowers the scale if not finite
        else:
            self._apply_if_finite(grads, finite)
        return loss, grad_norm, finite

    def _apply_if_finite(self, grads: list[tf.Tensor], finite: tf.Tensor) -> None:
        """Apply `grads` unless `finite` is False (the same decision on every replica)."""
        variables = self.model.trainable_variables

        def update() -> tf.Tensor:
            self.optimizer.apply(grads, variables)
            return tf.constant(True)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, update, lambda: tf.constant(False))
            return

        # A cond whose branch calls merge_call (the optimizer does) must run in cross-replica
        # context: the same pattern as Keras' LossScaleOptimizer.
        def cross_replica(distribution: tf.distribute.Strategy, grads: Any, finite: Any) -> None:
            ok = distribution.experimental_local_results(finite)[0]

            def apply_all() -> tf.Tensor:
                distribution.extended.call_for_each_replica(lambda g: self.optimizer.apply(g, variables), args=(grads,))
                return tf.constant(True)

            tf.cond(ok, apply_all, lambda: tf.constant(False))

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, finite))

    def _distributed_step(self, mixture: Any, targets: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        loss, grad_norm, finite = self.strategy.run(self._replica_step, args=(mixture, targets))
        # every replica holds the same reduced values
        loss, grad_norm, finite = (self.strategy.experimental_local_results(x)[0] for x in (loss, grad_norm, finite))
        self.global_step.assign_add(1)
        self.nonfinite_total.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
        self.nonfinite_streak.assign(tf.where(finite, tf.constant(0, tf.int64), self.nonfinite_streak + 1))
        self.epoch_loss.assign_add(tf.where(finite, tf.cast(loss, tf.float64), tf.constant(0.0, tf.float64)))
        self.epoch_steps.assign_add(tf.cast(finite, tf.int64))
        return loss, grad_norm, finite

    def _valid_step_fn(self, mixture: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        estimate = tf.cast(self.model(mixture, training=False), tf.float32)
        energies = health.waveform_energies(targets, estimate, self.config.spectrogram)  # (3, B, S)
        return self.loss_fn(tf.cast(targets, tf.float32), estimate), energies, estimate

    # ------------------------------------------------------------------ state

    def _build_variables(self, mixture: tf.Tensor) -> None:
        """Create the model's and the optimizer's variables (a batch shows the input shape)."""
        with self.strategy.scope():
            if not self.model.built:
                self.model(tf.zeros([1, *mixture.shape[1:]], tf.float32), training=False)
            self.optimizer.build(self.model.trainable_variables)

    def _build(self, mixture: tf.Tensor) -> None:
        """Create model and optimizer variables so a checkpoint restores into them."""
        if self.run_dir is None:
            raise TrainingError("a Trainer without a run directory only runs train_step; fit needs run_dir")
        self._build_variables(mixture)
        if self.checkpoint is None:
            # a run resumed from a checkpoint of the older, positional layout keeps that layout
            self.weight_layout = self._saved_layout()
            self.checkpoint = tf.train.Checkpoint(**self._state_objects())
            if self.chief:
                self.manager = tf.train.CheckpointManager(
                    self.checkpoint, str(self.run_dir / CHECKPOINTS), max_to_keep=self.config.keep_checkpoints
                )
                self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / BEST), max_to_keep=1)

    def _state_objects(self, stopping_state: bool = True) -> dict[str, Any]:
        """What a checkpoint holds; without `stopping_state`, as checkpoints written before the
        smoothed early-stopping state existed."""
        objects = dict(
            model=model_variables(self.model, self.weight_layout), model_rng=rng_variables(self.model), optimizer=self.optimizer,
            global_step=self.global_step, epoch=self.epoch, best_loss=self.best_loss,
            stale_epochs=self.stale_epochs, low_energy_epochs=self.low_energy_epochs,
            nonfinite_total=self.nonfinite_total, nonfinite_streak=self.nonfinite_streak,
            epoch_loss=self.epoch_loss, epoch_steps=self.epoch_steps,
        )
        if stopping_state:
            objects.update(smoothed_loss=self.smoothed_loss, smoothing_weight=self.smoothing_weight,
                           best_smoothed_loss=self.best_smoothed_loss)
        return objects

    def _saved_layout(self) -> str:
        """How the newest readable checkpoint of the run keys its weights (PATHS for a new run)."""
        for path in checkpoint_history(self.run_dir / CHECKPOINTS):
            try:
                return checkpoint_layout(path)
            except DamagedCheckpointError:
                continue
        return PATHS

    def restore(self) -> int:
        """Resume from the newest intact checkpoint in the run directory; returns the global step
        reached (0 for a new run).

        A checkpoint whose files are damaged (a crash or a full disk while a run was copied, say)
        is passed over for the one before it: `restored_from` is the checkpoint restored and
        `damaged` the errors of those passed over. DamagedCheckpointError when none is intact;
        CheckpointError for a checkpoint of another model or configuration.
        """
        assert self.checkpoint is not None, "call _build first"
        self.restored_from, self.damaged = None, []
        folder = self.run_dir / CHECKPOINTS
        for path in checkpoint_history(folder):
            try:
                check_weights(path, model_variables(self.model, self.weight_layout),
                              f"the weights of a {self.config.model} run with this configuration")
                current = STOPPING_KEY in tf.train.load_checkpoint(path).get_variable_to_shape_map()
                checkpoint = self.checkpoint if current else tf.train.Checkpoint(**self._state_objects(stopping_state=False))
                status = restore_checkpoint(checkpoint, path)
                status.assert_existing_objects_matched()
                if not current:  # an older run: its smoothed loss starts again, from its best loss
                    self.smoothed_loss.assign(math.nan)
                    self.smoothing_weight.assign(0.0)
                    self.best_smoothed_loss.assign(self.best_loss)
            except DamagedCheckpointError as exc:
                self.damaged.append(exc)
                continue
            except (AssertionError, ValueError) as exc:
                raise CheckpointError(
                    f"{path}: this checkpoint does not hold the state of a {self.config.model} run with this "
                    f"configuration ({' '.join(str(exc).split())[:200]})"
                ) from None
            self.restored_from = path
            break
        if self.damaged and self.restored_from is None:
            raise DamagedCheckpointError(f"{self.damaged[0]}; no earlier intact checkpoint in {folder} to resume from")
        return int(self.global_step.numpy())

    def _save(self, best: bool = False) -> str | None:
        """Save the training state (atomically: TensorFlow writes the files, then the index).

        Under MultiWorkerMirroredStrategy every worker must save; the others write to a
        temporary folder and delete it, as TensorFlow documents.
        """
        assert self.checkpoint is not None
        step = int(self.global_step.numpy())
        if not self.chief:
            scratch = Path(tempfile.mkdtemp(prefix=f"mss-tf-{worker_id(self.strategy)}-"))
            try:
                self.checkpoint.write(str(scratch / "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None
        manager = self.best_manager if best else self.manager
        assert manager is not None
        return manager.save(checkpoint_number=step)

    # ------------------------------------------------------------------ validation

    def validate(self, dataset: tf.data.Dataset) -> tuple[dict[str, Any], tuple[tf.Tensor, ...] | None]:
        """Validation loss and per-target health, plus the first example (mixture, reference, estimate)."""
        total, count = 0.0, 0
        target_health = health.TargetHealth(self.targets)
        example = None
        for step, (mixture, targets) in enumerate(dataset):
            if self.config.validation_steps and step >= self.config.validation_steps:
                break
            loss, energies, estimate = self._valid_step(mixture, targets)
            total += float(loss) * int(mixture.shape[0])
            count += int(mixture.shape[0])
            target_health.update(energies)
            if example is None:
                example = (mixture[0], targets[0], estimate[0])
        return {"valid_loss": total / max(count, 1), **target_health.summary()}, example

    def _dead_target_warnings(self, energy_ratio: dict[str, float]) -> list[str]:
        """Count each target's nearly silent epochs; one warning per dead target, by name."""
        if not energy_ratio:
            return []
        previous = dict(zip(self.targets, self.low_energy_epochs.numpy().tolist()))
        counts = health.dead_targets(previous, energy_ratio)
        self.low_energy_epochs.assign([counts[t] for t in self.targets])
        return [health.dead_target_warning(t, n, energy_ratio[t]) for t, n in counts.items() if n >= health.DEAD_EPOCHS]

    def learning_rate(self, epoch: int) -> float:
        """The staircase schedule: lr x lr_decay ** (epoch // lr_decay_epochs), epoch counted from 0."""
        decay = float(self.config.lr_decay or 1.0)
        every = int(self.config.lr_decay_epochs or 1)
        return float(self.config.learning_rate) * decay ** (epoch // every)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        train_data: TrainData,
        valid_ds: tf.data.Dataset | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        on_start: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train until `epochs`, early stopping or `max_minutes`; returns this call's per-epoch records.

        `train_data` is a dataset, or a function from a stream position to the dataset that
        starts there (needed for an exact resume). Resumes from the run directory's latest
        checkpoint if there is one; `on_start` runs once that checkpoint restored (nothing is
        written to the run directory before: a mismatched one stays untouched).
        """
        config = self.config
        if config.steps_per_epoch is None:
            raise TrainingError("steps_per_epoch is not set: TrainConfig.set_epoch_length sizes it by the training data")
        make_stream = train_data if callable(train_data) else None
        first_ds = make_stream(0) if make_stream else train_data
        spec = first_ds.element_spec[0]
        sample = tf.zeros([1, *spec.shape[1:]]) if spec.shape[1:].is_fully_defined() else next(iter(first_ds))[0]
        self._build(sample)
        step = self.restore()  # before anything is written: a mismatched run directory stays untouched
        if on_start is not None:
            on_start()
        if self.chief:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        batch = int(config.batch_size)  # type: ignore[arg-type]
        if self.damaged:
            more = f" (and {len(self.damaged) - 1} more)" if len(self.damaged) > 1 else ""
            log(f"warning: {self.damaged[0]}{more}; resuming from the previous intact checkpoint {self.restored_from}")
        if step:
            log(f"resumed from {self.restored_from} at step {step} "
                f"(epoch {int(self.epoch.numpy()) + 1}, {step * batch} examples seen)")
        dataset = make_stream(step * batch) if make_stream and step else first_ds
        iterator = iter(distribute(dataset, self.strategy))
        log_dir = str(self.run_dir / "logs")
        writer = tf.summary.create_file_writer(log_dir) if self.chief else tf.summary.create_noop_writer()
        started = time.monotonic()
        history: list[dict[str, Any]] = []
        spe, epochs = int(config.steps_per_epoch), int(config.epochs)
        rule = self.stopping_rule()
        first_epoch = int(self.epoch.numpy())
        in_epoch = max(0, min(step - first_epoch * spe, spe))
        for epoch in range(first_epoch, epochs):
            learning_rate = self.learning_rate(epoch)
            self.optimizer.learning_rate.assign(learning_rate)
            if in_epoch == 0:
                self.epoch_loss.assign(0.0)
                self.epoch_steps.assign(0)
            skipped_before = int(self.nonfinite_total.numpy())
            epoch_start = last_summary = time.monotonic()
            waited, norms = 0.0, []
            bar = tqdm(total=spe, initial=in_epoch, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                       disable=not (progress and self.chief), leave=False)
            for position in range(in_epoch, spe):
                fetch = time.monotonic()
                mixture, targets = next(iterator)
                waited += time.monotonic() - fetch
                loss, grad_norm, _ = self._train_step(mixture, targets)
                step += 1
                bar.update()
                if step % PROGRESS_EVERY == 0:
                    bar.set_postfix(loss=f"{float(loss):.4f}")
                    self._check_nonfinite(step)
                if step % config.summary_every == 0:
                    now = time.monotonic()
                    norms.append(float(grad_norm))
                    with writer.as_default(step=step):
                        self._step_summaries(loss, grad_norm, learning_rate, config.summary_every / (now - last_summary))
                    last_summary = now
                if step % config.checkpoint_every == 0 and position < spe - 1:  # the epoch's end saves anyway
                    self._save()
            bar.close()
            in_epoch = 0
            self._check_nonfinite(step)
            finite_steps = int(self.epoch_steps.numpy())
            train_loss = float(self.epoch_loss.numpy()) / finite_steps if finite_steps else math.nan
            seconds = time.monotonic() - epoch_start
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": train_loss,
                "seconds": round(seconds, 2),
                "learning_rate": learning_rate,
                "input_wait": round(waited / max(seconds, 1e-9), 4),
                "skipped_steps": int(self.nonfinite_total.numpy()) - skipped_before,
            }
            if norms:
                record["grad_norm"] = sum(norms) / len(norms)
            warnings: list[str] = []
            example = None
            if valid_ds is not None:
                valid, example = self.validate(valid_ds)
                record.update(valid)
                warnings = self._dead_target_warnings(record.get("energy_ratio", {}))
            monitored = record.get("valid_loss", record["train_loss"])
            decision = stopping.update(rule, self._stopping_state(), monitored)
            self._set_stopping_state(decision.state)
            self.epoch.assign(epoch + 1)
            self._save()
            if decision.best:
                self._save(best=True)
            name = "valid_loss" if valid_ds is not None else "train_loss"
            record[f"best_{name}"] = decision.state.best_loss
            record[f"smoothed_{name}"] = decision.state.smoothed
            record["stale_epochs"] = decision.state.stale_epochs
            if self.chief:
                with writer.as_default(step=epoch + 1):
                    self._epoch_summaries(record, example)
                with open(self.run_dir / METRICS, "a") as handle:
                    handle.write(json.dumps(_json_safe(record)) + "\n")
            history.append(record)
            log(_format_record(record))
            for warning in warnings:
                log(warning)
            if decision.stop:
                log(f"early stopping: the smoothed {name.replace('_', ' ')} (EMA {rule.smoothing:g}) has not improved "
                    f"by {100 * rule.min_delta:g}% of its best ({decision.state.best_smoothed:.4f}) for {rule.patience} "
                    f"epochs; the best checkpoint ({name.replace('_', ' ')} {decision.state.best_loss:.4f}) is in "
                    f"{self.run_dir / BEST}")
                break
            if config.max_minutes and time.monotonic() - started > 60 * config.max_minutes:
                log(f"stopping: --max-minutes {config.max_minutes} reached")
                break
        writer.close()
        return history

    def stopping_rule(self) -> stopping.StoppingRule:
        """The early-stopping rule of the run's config."""
        config = self.config
        return stopping.StoppingRule(patience=int(config.early_stopping_patience),
                                     min_delta=float(config.early_stopping_min_delta),
                                     smoothing=float(config.early_stopping_smoothing))

    def _stopping_state(self) -> stopping.StoppingState:
        return stopping.StoppingState(
            best_loss=float(self.best_loss.numpy()), smoothed=float(self.smoothed_loss.numpy()),
            weight=float(self.smoothing_weight.numpy()),
            best_smoothed=float(self.best_smoothed_loss.numpy()), stale_epochs=int(self.stale_epochs.numpy()),
            epochs=int(self.epoch.numpy()),
        )

    def _set_stopping_state(self, state: stopping.StoppingState) -> None:
        self.best_loss.assign(state.best_loss)
        self.smoothed_loss.assign(state.smoothed)
        self.smoothing_weight.assign(state.weight)
        self.best_smoothed_loss.assign(state.best_smoothed)
        self.stale_epochs.assign(state.stale_epochs)

    def _check_nonfinite(self, step: int) -> None:
        streak = int(self.nonfinite_streak.numpy())
        if streak >= self.config.max_nonfinite:
            latest = tf.train.latest_checkpoint(str(self.run_dir / CHECKPOINTS))
            raise TrainingError(
                f"{streak} training steps in a row had a non-finite loss or gradient (up to step {step}); "
                f"stopped without saving: the last good checkpoint is {latest or 'none (no checkpoint yet)'}"
            )

    def _step_summaries(self, loss: tf.Tensor, grad_norm: tf.Tensor, learning_rate: float, steps_per_second: float) -> None:
        tf.summary.scalar("train/loss", loss)
        tf.summary.scalar("train/grad_norm", grad_norm)
        tf.summary.scalar("train/learning_rate", learning_rate)
        tf.summary.scalar("train/steps_per_second", steps_per_second)
        tf.summary.scalar("train/skipped_steps", self.nonfinite_total)
        if self.loss_scaling:
            tf.summary.scalar("train/loss_scale", self.optimizer.dynamic_scale)

    def _epoch_summaries(self, record: dict[str, Any], example: tuple[tf.Tensor, ...] | None) -> None:
        for key in ("train_loss", "valid_loss", "smoothed_valid_loss", "learning_rate", "input_wait"):
            if key in record and math.isfinite(record[key]):
                tf.summary.scalar(key, record[key])
        for key in ("valid_usdr", "energy_ratio"):
            for target, value in record.get(key, {}).items():
                tf.summary.scalar(f"{key}/{target}", value)
        if example is not None:
            summaries.write_example(*example, self.targets, self.config.spectrogram, step=record["epoch"])


def _json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null (JSON has no such numbers)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def _format_record(record: dict[str, Any]) -> str:
    """One log line: `epoch=3 train_loss=0.1234 ... valid_usdr[vocals=2.10 drums=4.31] energy_ratio[...]`."""
    formats = {"seconds": "{:.1f}", "learning_rate": "{:.2e}", "input_wait": "{:.3f}"}
    parts = []
    for key, value in record.items():
        if isinstance(value, dict):
            parts.append(f"{key}[" + " ".join(f"{t}={v:.2f}" for t, v in value.items()) + "]")
        elif isinstance(value, float):
            parts.append(f"{key}=" + formats.get(key, "{:.4f}").format(value))
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
