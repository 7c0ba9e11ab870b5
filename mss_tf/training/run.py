"""A training run end to end: data root -> cached shards -> datasets -> model -> Trainer (or the
NMF baseline's dictionary fit)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import tensorflow as tf

from mss_tf.checkpoints import CHECKPOINTS, checkpoint_history
from mss_tf.config import TrainConfig
from mss_tf.data.online import OnlineAugmentConfig
from mss_tf.data.pipeline import PipelineConfig, make_dataset, validation_dataset
from mss_tf.data.prepare import CropConfig, PrepareConfig, prepare_dataset, settings_key
from mss_tf.data.quality import targets_config
from mss_tf.data import musdb
from mss_tf.data.roots import data_dir, resolve_data_root
from mss_tf.data.shards import iterate_examples, read_manifest
from mss_tf.data.sources import DataSource
from mss_tf.errors import ConfigError
from mss_tf.models.registry import build_model, example_mixture, get_preset, is_neural, model_parameters
from mss_tf.training.distribute import check_batch, is_chief, make_strategy, precision_scope
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
    """Shard settings of a run: its crop length, the quality filter on its targets, and the
    model's channel count (mono or stereo STFTs). On MUSDB18 every target must pass the filter;
    on other data (`config.data`) one target passing keeps a crop (`quality_mode`)."""
    return PrepareConfig(crops=CropConfig(seconds=config.crop_seconds),
                         quality=targets_config(config.targets or [], mode=quality_mode(config.data)),
                         channels=config.channels)


def quality_mode(data: Mapping[str, Any] | None) -> str:
    """The quality filter's mode for a source `spec`: "all" for MUSDB18 (None), whose four stems
    play through most of a song; "any" for other data, whose finer stems (hi-hats, a guitar that
    plays one verse) are quiet or absent in most crops, so that "all" would drop nearly every crop."""
    return "all" if data is None else "any"


def default_shard_dir(data_root: Path, config: TrainConfig) -> Path:
    """`data/shards/<root name>-<hash of the STFT and shard settings>`: one folder per setting
    (`<root name>-stereo-<hash>` for a stereo model: its own settings, its own name; the hash
    also covers the layout and stem map of data other than MUSDB18: `config.data`)."""
    key = settings_key(config.spectrogram, prepare_config(config))
    if config.data is not None:
        key = hashlib.sha256(f"{key}{json.dumps(config.data, sort_keys=True)}".encode()).hexdigest()[:10]
    stereo = "-stereo" if config.channels == 2 else ""
    return data_dir() / "shards" / f"{data_root.resolve().name}{stereo}-{key}"


def set_seeds(seed: int, deterministic: bool = False) -> None:
    """Python, NumPy and TensorFlow seeds; `deterministic` also turns on TensorFlow op determinism."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class RunLog:
    """Prints a line and appends it to `run_dir/train.log`."""

    def __init__(self, run_dir: Path, echo: Callable[[str], None] = print) -> None:
        self.path = run_dir / "train.log"
        self.echo = echo

    def __call__(self, line: str) -> None:
        self.echo(line)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


# Settings a resumed run cannot change: they define the model, its data or the stream position.
FIXED_ON_RESUME = ("batch_size", "seed", "crop_seconds", "targets")


def check_resume(config: TrainConfig, run_dir: Path, model: str | None = None,
                 overrides: Mapping[str, Any] | None = None, config_file: bool = False,
                 model_args: bool = False) -> None:
    """A resume continues the run in `run_dir` (whose config.json is `config`) as it was set up:
    ConfigError, naming the run, for a request that contradicts it.

    Args:
        model: the preset asked for (None: not given).
        overrides: settings asked for (None values: not given); those of FIXED_ON_RESUME must
            equal the run's, the others (epochs, learning rate, ...) may change.
        config_file: a settings file was given too (a resumed run keeps its own config.json).
        model_args: architecture arguments were given too.
    """
    from mss_tf.models.registry import is_neural

    if model and model != config.model:
        raise ConfigError(f"{run_dir}: is a {config.model} run, not {model}")
    if config_file:
        raise ConfigError("--config and --resume together: a resumed run keeps its own config.json")
    if not is_neural(config.model):
        raise ConfigError(f"{run_dir}: is a {config.model} run, fitted in one go: there is nothing to resume "
                          "(fit again with --run-dir)")
    if model_args:
        raise ConfigError(f"{run_dir}: --model-arg cannot change the architecture of a run being resumed")
    for key in FIXED_ON_RESUME:
        value = (overrides or {}).get(key)
        if value is not None and value != getattr(config, key):
            raise ConfigError(f"{run_dir}: --{key.replace('_', '-')} {value} differs from the run's "
                              f"{getattr(config, key)}; a resumed run keeps it")


def training_data(config: TrainConfig, shards: Path | None = None, musdb_root: str | None = None,
                  resume: Path | None = None, log: Callable[[str], None] = print) -> tuple[Path | None, Path | None]:
    """Where a run's examples come from, as `(data_root, shard_dir)` with one of them None: a
    prepared shard folder, else a MUSDB folder whose cached shards `ensure_shards` builds.

    `shards` wins; a resumed run (`resume`: its directory) given neither `shards` nor
    `musdb_root` trains on the shard folder it started with (`config.shards`); otherwise the MUSDB folder is
    `musdb_root`, `$MUSDB_PATH` or the built-in demo set (announced through `log`, generated
    once). ConfigError names a shard folder that is not there.
    """
    if resume and shards is None and musdb_root is None:
        if not config.shards or not Path(config.shards).is_dir():
            raise ConfigError(f"{resume}: the run's shard folder {config.shards!r} is gone; pass --shards DIR "
                              "or --musdb-root DIR to rebuild it")
        shards = Path(config.shards)
    if shards is not None:
        if not Path(shards).is_dir():
            raise ConfigError(f"{shards}: no such shard folder")
        return None, Path(shards)
    if musdb_root is None and config.data is not None:
        # settings of a run on other data (--config FILE): not the demo set in its place
        raise ConfigError(f"these settings train on {config.data['layout']} data (targets "
                          f"{', '.join(config.data['stems'])}); give --data DIR (and --stem-map FILE if it had one)")
    return resolve_data_root(musdb_root, log)[0], None


def ensure_shards(config: TrainConfig, data_root: Path | None, shard_dir: Path | None, progress: bool,
                  echo: Callable[[str], None], skip_bad: bool = False) -> Path:
    """The shard folder a run trains on: `shard_dir` as given, or the cached one for `data_root`
    and this config's STFT and shard settings (built the first time).

    A data root that is missing, not in its layout or lacks a stem is refused (DataError)
    before anything is printed or written. `config.data` says how to read it (None: MUSDB18)."""
    if shard_dir is not None:
        return shard_dir
    assert data_root is not None, "need a data root or a shard folder"
    source = DataSource.from_record(config.data, data_root)
    if source.layout == "musdb":
        musdb.find_tracks(data_root, "train", strict=not skip_bad)  # the checks preparation makes first
    else:
        source.split_tracks("train")
    shard_dir = default_shard_dir(data_root, config)
    echo(f"shards: {shard_dir} (built from {data_root} if missing)")
    prepare_dataset(source, shard_dir, config.spectrogram, prepare_config(config), progress=progress, skip_bad=skip_bad)
    return shard_dir


def make_datasets(config: TrainConfig, shard_dir: Path) -> tuple[Callable[[int], tf.data.Dataset], tf.data.Dataset | None]:
    """The training stream as a function of its position (a resumed run starts where it stopped)
    and the validation set (`validation_dataset`: every stored crop of every validation track,
    whole; None when the shards have no valid/ split).

    A config whose preset sizes epochs by the data gets its `steps_per_epoch` here: one pass over
    the training crops (`TrainConfig.set_epoch_length`)."""
    spec = config.spectrogram
    pipeline = PipelineConfig(
        batch_size=int(config.batch_size),  # type: ignore[arg-type]
        train_frames=config.train_frames(),
        augment=OnlineAugmentConfig.from_dict(config.online_augment) if config.online_augment else None,
    )
    targets = list(config.targets or [])
    channels = config.channels
    manifest = read_manifest(shard_dir / "train", spec, targets, channels=channels)  # a mismatched folder fails here
    config.set_epoch_length(int(manifest["n_examples"]), len(manifest["tracks"]))
    train_data = lambda start: make_dataset(  # noqa: E731
        shard_dir / "train", spec, targets, pipeline, training=True, seed=config.seed, start=start, channels=channels
    )
    valid_ds = None
    if (shard_dir / "valid").is_dir():
        valid_ds = validation_dataset(shard_dir / "valid", spec, targets, int(config.batch_size), channels=channels)  # type: ignore[arg-type]
    return train_data, valid_ds


def train_run(
    config: TrainConfig,
    run_dir: Path,
    data_root: Path | None,
    shard_dir: Path | None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    skip_bad: bool = False,
    init: Any = None,
) -> dict[str, Any]:
    """Prepare (or reuse) shards, train the preset of `config` and save everything in `run_dir`
    (`skip_bad`: tracks that cannot be used are skipped, each named, when the shards are built;
    `init`: the `finetune.read_source` of `config.init_from`, when the caller has read it)."""
    config.resolve()
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs any op
    strategy = make_strategy(config.strategy) if is_neural(config.model) else None
    if strategy is not None:
        check_batch(strategy, int(config.batch_size))  # type: ignore[arg-type]
    set_seeds(config.seed, config.deterministic)
    if shard_dir is None and config.strategy == "multiworker":
        raise ConfigError("--strategy multiworker needs --shards DIR prepared beforehand "
                          "(python datasets/prepare_musdb.py ...): workers must not build shards concurrently")
    shard_dir = ensure_shards(config, data_root, shard_dir, progress, echo, skip_bad)
    config.data_root = str(data_root) if data_root else config.data_root  # evaluate.py's default data
    if strategy is None:
        return _fit_nmf(config, run_dir, shard_dir, progress, echo)
    train_data, valid_ds = make_datasets(config, shard_dir)
    if config.jit_compile and get_preset(config.model).model == "BSRNN":
        # XLA cannot compile the fused BlockLSTM kernel; the Keras LSTM has the same weights
        config.model_kwargs.setdefault("lstm_implementation", "keras")
    source = init_source(config, run_dir, init)
    with strategy.scope(), precision_scope(config.precision):
        model = build_model(config.model, stft=config.spectrogram, **config.model_kwargs)
        if config.init_from is not None:
            start_from(model, config, source, echo)
    trainer = Trainer(model, config, run_dir, strategy)
    chief = is_chief(strategy)
    log = RunLog(run_dir, echo) if chief else echo
    config.shards = str(shard_dir)

    def start() -> None:
        """Runs once the data and any checkpoint in `run_dir` are known to be good."""
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            config.save(run_dir)
        log(f"training {config.model} on {strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), "
            f"global batch {config.batch_size}, {config.precision}{', XLA' if config.jit_compile else ''}"
            f"{', deterministic' if config.deterministic else ''}, seed {config.seed}, epochs of "
            f"{config.steps_per_epoch} steps (at most {config.epochs}), early stopping after {config.early_stopping_patience} "
            f"epochs without progress")

    history = trainer.fit(train_data, valid_ds, progress=progress, log=log, on_start=start)
    params = model_parameters(model)
    log(f"trained {config.model} ({params:,} parameters) in {run_dir}")
    return {"history": history, "params": params, "run_dir": str(run_dir), "chief": chief}


def init_source(config: TrainConfig, run_dir: Path, read: Any = None) -> Any:
    """The weights a fine-tuning run (`config.init_from`) starts from (`read`: the caller's
    `finetune.read_source` of it, not read again); None for other runs and for a run directory
    with checkpoints of its own (a resume restores those, not the source)."""
    if config.init_from is None or checkpoint_history(run_dir / CHECKPOINTS):
        return None
    from mss_tf.training import finetune

    return read if read is not None else finetune.read_source(config.init_from["path"])


def start_from(model: Any, config: TrainConfig, source: Any, echo: Callable[[str], None]) -> None:
    """Load `source` (`init_source`) into `model` when given, and freeze its body if the run asks."""
    from mss_tf.training import finetune

    record = config.init_from
    if source is not None:
        spec = config.spectrogram
        model(example_mixture(model, spec.n_frames(spec.hop * 8), spec.n_bins), training=False)
        loaded = finetune.load_weights(model, config.targets, source)
        record.update(loaded)
        echo(f"starting from {record['path']} ({record['model']}): heads of {', '.join(loaded['reused']) or 'no target'}"
             f" reused, {', '.join(loaded['new']) or 'none'} new; "
             f"{'body frozen' if record['freeze'] == 'body' else 'every weight trains'}")
    if record["freeze"] == "body":
        finetune.freeze_body(model)


def _fit_nmf(config: TrainConfig, run_dir: Path, shard_dir: Path, progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """The NMF baseline learns its dictionaries from the training shards' examples (no gradient loop)."""
    train_dir = shard_dir / "train"
    manifest = read_manifest(train_dir, config.spectrogram, targets=config.targets, channels=config.channels)
    if list(manifest["stems"]) != list(musdb.TARGETS):  # data other than MUSDB18: its stems decide the hidden rest
        config.model_kwargs = {**config.model_kwargs, "stems": list(manifest["stems"])}
    model = build_model(config.model, **config.model_kwargs)
    # every stored example once, in file order: the model reads examples, never the shard format
    examples = iterate_examples(train_dir, manifest)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir, echo)
    config.shards = str(shard_dir)
    config.save(run_dir)
    history = model.fit(examples, stems=manifest["stems"], stft=manifest["stft"], progress=progress)
    model.save(run_dir)
    params = model_parameters(model)
    final = {target: float(losses[-1]) for target, losses in history.items()}
    log(f"fitted {config.model} ({params:,} dictionary entries) in {run_dir}; final beta-divergence {final}")
    return {"history": history, "params": params, "run_dir": str(run_dir), "chief": True}
