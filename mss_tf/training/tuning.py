"""Hyperparameter search with Keras Tuner over the shared training loop (`train.py --tune`).

Every trial trains with the same `Trainer` as `train.py` (not `model.fit`): the tuners here
override `Tuner.run_trial`, as keras-tuner documents for custom training loops. A trial:

1. `LoopHyperModel.build(hp)` declares the preset's search space (`mss_tf.models.search`),
   builds the model with the chosen values and runs it once on zeros, so its weights exist
   (keras-tuner's `get_best_models` loads weights into a freshly built model).
2. `Trainer.fit` trains it for `trial_epochs` x `trial_steps` in `TRIAL/run` (a run directory
   like any other: config.json, metrics.jsonl, TensorBoard logs, checkpoints). Hyperband's
   later rounds start from the weights of the trial they continue.
3. The best epoch's weights go to keras-tuner's checkpoint file and the objective
   (`val_loss`, lowest, or `val_usdr`, the mean validation uSDR over targets, highest) to the
   oracle (val_usdr by default: it compares trials whatever their loss weights). Out of memory or a non-finite loss marks the trial failed; the search goes on.

The search lives in `RUN/tuning/` (keras-tuner's project folder, plus `search.json` naming the
model, tuner, objective and space). Run the same command again and it continues: completed
trials are kept, an interrupted one restarts from its own latest checkpoint, and only the
remaining trials run. At the end (on the chief in distributed tuning) `RUN/tuning/summary.md`
and `.csv` list the trials by objective and `RUN/best_config.json` holds the best
hyperparameters with the preset's full training length, for `train.py --config`.

Distributed tuning (keras-tuner's chief/worker mode): every process runs the same command with
`KERASTUNER_TUNER_ID` (`chief` for the oracle, `tuner0`, `tuner1`, ... for workers),
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`; the chief serves the oracle and writes
the summary, the workers train trials. Workers share the run directory and need `--shards`
prepared beforehand (they must not build shards concurrently).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import keras_tuner as kt
import numpy as np
import tensorflow as tf

from mss_tf.checkpoints import BEST, CHECKPOINTS, restore_weights
from mss_tf.config import TrainConfig
from mss_tf.utils import atomic_write
from mss_tf.errors import ConfigError, TrainingError
from mss_tf.models.registry import build_model, get_preset, model_parameters, precision_scope, search_space
from mss_tf.models.search import SearchSpace, apply_overrides, load_overrides
from mss_tf.training.loop import METRICS, Trainer

TUNERS = {"bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband, "random": kt.RandomSearch}
OBJECTIVES = {"val_loss": "min", "val_usdr": "max"}
TUNING_DIR = "tuning"
SEARCH_FILE = "search.json"
BEST_CONFIG = "best_config.json"


@dataclasses.dataclass
class TuneOptions:
    tuner: str = "bayesian"
    max_trials: int = 6
    trial_epochs: int = 2
    trial_steps: int = 50
    objective: str = "val_usdr"
    search_space: str | None = None  # JSON file narrowing or replacing the preset's space

    def check(self) -> None:
        if self.tuner not in TUNERS:
            raise ConfigError(f"--tuner {self.tuner}: choose from {', '.join(TUNERS)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective {self.objective}: choose from {', '.join(OBJECTIVES)}")
        for name in ("max_trials", "trial_epochs", "trial_steps"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def resolve_space(model: str, overrides_file: str | None, objective: str = "val_usdr") -> SearchSpace:
    """The preset's search space, narrowed or replaced by a JSON file.

    With the objective `val_loss`, the loss's `loss_alpha` is not searched: losses with
    different weights are different scales, and their values cannot rank trials (val_usdr can).
    """
    space = search_space(model)
    if objective == "val_loss":
        space = SearchSpace([p for p in space.parameters if p.field != "loss_alpha"], space.model_kwargs)
    if overrides_file:
        overrides = load_overrides(overrides_file)
        if objective == "val_loss" and isinstance(overrides, dict) and overrides.get("loss_alpha") is not None:
            raise ConfigError(f"{overrides_file}: loss_alpha cannot be searched with --objective val_loss (losses "
                              "with different weights are not comparable); use --objective val_usdr")
        if objective == "val_loss" and isinstance(overrides, dict):
            overrides.pop("loss_alpha", None)  # a null: already left out
        space = apply_overrides(space, overrides, str(overrides_file))
    return space


def describe_space(model: str, overrides_file: str | None = None, objective: str = "val_usdr") -> str:
    """`train.py --model M --show-search-space`: the table of what a search varies."""
    space = resolve_space(model, overrides_file, objective)
    return (f"search space of {model} for --objective {objective} ({len(space.parameters)} hyperparameters):\n"
            f"{space.table()}")


class LoopHyperModel(kt.HyperModel):
    """Builds a preset's model from a trial's hyperparameters; the trial config comes with it."""

    def __init__(self, base: TrainConfig, space: SearchSpace) -> None:
        super().__init__(name=base.model)
        self.base = base
        self.space = space

    def values(self, hp: kt.HyperParameters) -> dict[str, Any]:
        return {p.name: p.register(hp) for p in self.space.parameters}

    def trial_config(self, hp: kt.HyperParameters) -> TrainConfig:
        config = copy.deepcopy(self.base)
        self.space.apply(self.values(hp), config, get_preset(config.model).kwargs)
        return config.resolve()

    def build(self, hp: kt.HyperParameters) -> Any:
        config = self.trial_config(hp)
        with precision_scope(config.precision):
            model = build_model(config.model, stft=config.spectrogram, **config.model_kwargs)
        model(tf.zeros([1, *config.example_shape()]), training=False)  # create the weights
        return model


class _LoopTuning:
    """Mixed into a keras-tuner Tuner: trials train with the shared Trainer."""

    def configure(self, trial_epochs: int, trial_steps: int, objective: str, progress: bool,
                  echo: Callable[[str], None]) -> None:
        self.trial_epochs, self.trial_steps = trial_epochs, trial_steps
        self.objective_name, self.progress, self.echo = objective, progress, echo

    def run_trial(self, trial: Any, train_data: Any, valid_ds: Any, **_: Any) -> dict[str, float]:
        hp = trial.hyperparameters
        epochs = int(hp.values.get("tuner/epochs", self.trial_epochs)) - int(hp.values.get("tuner/initial_epoch", 0))
        model = self._try_build(hp)  # Hyperband loads the weights of the trial this one continues
        config = self.hypermodel.trial_config(hp)
        config.epochs, config.steps_per_epoch = max(1, epochs), self.trial_steps
        config.early_stopping_patience = max(1, epochs)
        run_dir = Path(self.get_trial_dir(trial.trial_id)) / "run"
        chosen = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
        self.echo(f"trial {trial.trial_id}: {json.dumps(chosen, sort_keys=True, default=str)}")
        try:
            trainer = Trainer(model, config, run_dir)
            history = trainer.fit(train_data, valid_ds, progress=self.progress, log=lambda line: None,
                                  on_start=lambda: (run_dir.mkdir(parents=True, exist_ok=True), config.save(run_dir)))
        except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
            raise kt.errors.FailedTrialError(f"out of memory: {' '.join(str(exc).split())[:200]}") from None
        except TrainingError as exc:
            raise kt.errors.FailedTrialError(str(exc)) from None
        records = _read_metrics(run_dir)
        if not records or not any(math.isfinite(r.get("valid_loss", math.nan)) for r in records):
            raise kt.errors.FailedTrialError("the validation loss never was finite")
        best = _best_record(records, self.objective_name)
        restore_weights(model, run_dir, "best")
        model.save_weights(self._get_checkpoint_fname(trial.trial_id))
        # keras-tuner's record of how the model was built (Hyperband reads it before loading weights)
        Path(self._get_build_config_fname(trial.trial_id)).write_text(json.dumps(model.get_build_config()))
        for folder in (CHECKPOINTS, BEST):  # the trial's weights live on in keras-tuner's checkpoint
            shutil.rmtree(run_dir / folder, ignore_errors=True)
        self.echo(f"trial {trial.trial_id}: {self.objective_name} {_objective(best, self.objective_name):.4f} "
                  f"after {len(history)} epoch(s)")
        return {self.objective_name: _objective(best, self.objective_name)}


def _tuner_class(kind: str) -> type:
    return type(f"Loop{TUNERS[kind].__name__}", (_LoopTuning, TUNERS[kind]), {})


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _objective(record: dict[str, Any], name: str) -> float:
    if name == "val_usdr":
        values = list(record.get("valid_usdr", {}).values())
        return float(np.mean(values)) if values else math.nan
    return float(record.get("valid_loss", math.nan))


def _best_record(records: list[dict[str, Any]], objective: str) -> dict[str, Any]:
    sign = -1.0 if OBJECTIVES[objective] == "max" else 1.0
    finite = [r for r in records if math.isfinite(_objective(r, objective))]
    return min(finite, key=lambda r: sign * _objective(r, objective)) if finite else records[-1]


def _check_search_dir(folder: Path, identity: dict[str, Any]) -> None:
    """A search folder belongs to one model, tuner, objective and space; refuse another's."""
    path = folder / SEARCH_FILE
    if not path.is_file():
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{path}: unreadable search description; remove {folder} to start afresh") from None
    for key in ("model", "tuner", "objective", "space"):
        if existing.get(key) != identity[key]:
            what = existing.get(key) if key != "space" else "another search space"
            raise ConfigError(f"{folder}: holds a search with {key} {what}, not {identity[key] if key != 'space' else 'this one'}; "
                              "use another --run-dir")


def make_tuner(config: TrainConfig, run_dir: Path, options: TuneOptions, progress: bool = True,
               echo: Callable[[str], None] = print) -> Any:
    """The keras-tuner Tuner of a search in `run_dir/tuning` (reloaded when it exists)."""
    options.check()
    config.resolve()
    space = resolve_space(config.model, options.search_space, options.objective)
    folder = run_dir / TUNING_DIR
    identity = {"model": config.model, "tuner": options.tuner, "objective": options.objective,
                "space": space.to_dict()}
    _check_search_dir(folder, identity)
    objective = kt.Objective(options.objective, OBJECTIVES[options.objective])
    common = dict(hypermodel=LoopHyperModel(config, space), objective=objective, seed=config.seed,
                  directory=str(run_dir), project_name=TUNING_DIR, overwrite=False, max_consecutive_failed_trials=5)
    if options.tuner == "hyperband":
        tuner = _tuner_class("hyperband")(max_epochs=options.trial_epochs, factor=3, hyperband_iterations=1, **common)
    else:
        tuner = _tuner_class(options.tuner)(max_trials=options.max_trials, **common)
    tuner.configure(options.trial_epochs, options.trial_steps, options.objective, progress, echo)
    if not (folder / SEARCH_FILE).is_file() and _writes_results():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / SEARCH_FILE, json.dumps({**identity, "base_config": config.to_dict()}, indent=2))
    return tuner


def _writes_results() -> bool:
    """Whether this process writes the summary: a lone tuner, or the chief of a distributed search."""
    return "KERASTUNER_ORACLE_IP" not in os.environ or is_chief()


def tune_run(config: TrainConfig, run_dir: Path, train_data: Any, valid_ds: Any, options: TuneOptions,
             progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the search, then write the summary and the best config."""
    if valid_ds is None and not is_chief():
        raise ConfigError("tuning needs a validation split: the shard folder has no valid/ subfolder")
    tuner = make_tuner(config, run_dir, options, progress, echo)
    started = time.monotonic()
    tuner.search(train_data, valid_ds, verbose=1 if progress else 0)
    result: dict[str, Any] = {"seconds": time.monotonic() - started, "tuner": tuner}
    if _writes_results():
        result.update(write_results(tuner, config, run_dir, options))
    return result


def is_chief() -> bool:
    """Whether this process is the oracle of a distributed search (it trains nothing)."""
    return "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") and "KERASTUNER_ORACLE_IP" in os.environ


def trial_rows(tuner: Any, options: TuneOptions) -> list[dict[str, Any]]:
    """One row per trial: id, status, objective, epochs and time trained, parameters, hyperparameters."""
    rows = []
    sign = -1.0 if OBJECTIVES[options.objective] == "max" else 1.0
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        records = _read_metrics(Path(tuner.get_trial_dir(trial_id)) / "run")
        best = _best_record(records, options.objective) if records else {}
        score = trial.score if trial.score is not None and trial.status == "COMPLETED" else None
        rows.append({
            "trial": trial_id, "status": str(trial.status), options.objective: score,
            "val_loss": best.get("valid_loss"), "val_usdr": _objective(best, "val_usdr") if best else None,
            "epochs": len(records), "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1),
            **values,
        })
    rows.sort(key=lambda r: (r[options.objective] is None, sign * (r[options.objective] or 0.0), r["trial"]))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_results(tuner: Any, config: TrainConfig, run_dir: Path, options: TuneOptions) -> dict[str, Any]:
    """summary.md / summary.csv in RUN/tuning, and RUN/best_config.json for `train.py --config`."""
    rows = trial_rows(tuner, options)
    folder = run_dir / TUNING_DIR
    names = [p.name for p in resolve_space(config.model, options.search_space, options.objective).parameters]
    columns = ["trial", "status", options.objective] + [c for c in ("val_loss", "val_usdr") if c != options.objective]
    columns += ["epochs", "seconds"] + names
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(folder / "summary.csv", buffer.getvalue())
    completed = [r for r in rows if r[options.objective] is not None]
    lines = [f"# Search: {config.model}, {options.tuner}, objective {options.objective} "
             f"({'higher' if OBJECTIVES[options.objective] == 'max' else 'lower'} is better)", "",
             f"{len(rows)} trials ({len(completed)} completed, {sum(r['status'] == 'FAILED' for r in rows)} failed), "
             f"{options.trial_epochs} epoch(s) of {options.trial_steps} steps each; best first.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    written: dict[str, Any] = {"rows": rows, "summary": folder / "summary.md"}
    if completed:
        best_hp = tuner.get_best_hyperparameters(1)[0]
        best = copy.deepcopy(tuner.hypermodel.trial_config(best_hp))
        full = TrainConfig(model=config.model).resolve()  # the preset's full training length
        best.epochs, best.steps_per_epoch = full.epochs, full.steps_per_epoch
        best.early_stopping_patience = config.early_stopping_patience
        best.data_root, best.shards = None, None
        data = best.to_dict()
        atomic_write(run_dir / BEST_CONFIG, json.dumps(data, indent=2) + "\n")
        model = tuner.hypermodel.build(best_hp)
        lines += ["", f"Best: trial {completed[0]['trial']} ({model_parameters(model):,} parameters); its settings "
                  f"with the preset's full training length are in `{BEST_CONFIG}`:", "",
                  f"    python train.py --config {run_dir / BEST_CONFIG}"]
        written["best_config"] = run_dir / BEST_CONFIG
    atomic_write(folder / "summary.md", "\n".join(lines) + "\n")
    return written
