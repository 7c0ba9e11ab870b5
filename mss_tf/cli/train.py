"""Train a separation model: `python train.py --model unet` (see --help)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mss_tf import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="preset name: unet, bsrnn, bsrnn-se, nmf, or a -tiny version (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets with their parameter counts and exit")
    parser.add_argument("--musdb-root", help="MUSDB18-HQ folder (default: $MUSDB_PATH, else the built-in demo set)")
    parser.add_argument("--data", help="a multitrack folder in any layout: MUSDB18(-HQ), stems "
                        "(ROOT/{train,valid,test}/<track>/<stem>.wav|flac) or MoisesDB, detected (README, \"Your own data\")")
    parser.add_argument("--layout", choices=["musdb", "stems", "moisesdb"], help="with --data: read it in this layout "
                        "(when it matches several)")
    parser.add_argument("--stem-map", help="with --data: JSON file grouping raw stems into targets, e.g. "
                        "{\"guitar\": [\"guitar\", \"acoustic_guitar\"], \"other\": \"*rest*\"}")
    parser.add_argument("--skip-bad", action="store_true", help="skip tracks that cannot be used (each named with its "
                        "reason) instead of stopping at the first")
    parser.add_argument("--init-from", type=Path, metavar="RUN_OR_EXPORT",
                        help="fine-tune: start from this run directory's best weights or SavedModel export (the "
                        "body and the heads of targets it has; new targets get new heads). --model defaults to its "
                        "preset, the model arguments and STFT are its own; --lr sets this run's learning rate")
    parser.add_argument("--freeze", choices=["none", "body"],
                        help="with --init-from: train every weight (none, default) or only the heads (body)")
    parser.add_argument("--shards", type=Path, help="prepared shard folder (with train/ and valid/); skips preparation")
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/<model>-<timestamp>)")
    parser.add_argument("--resume", type=Path, help="continue the run in this directory from its latest checkpoint")
    parser.add_argument("--config", type=Path, help="JSON file of settings (any field of config.json in a run directory); "
                        "flags given on the command line override it")
    parser.add_argument("--targets", nargs="+", metavar="NAME", help="targets to separate, in output order, e.g. "
                        "vocals, or lead keys bass drums (commas work too); any stems the data has (default: MUSDB18's "
                        "four, or every target of --data)")
    parser.add_argument("--epochs", type=int, help="at most this many epochs (default: the preset's: 100 for paper-size BSRNN and "
                        "RoFormers, else 200; early stopping or --max-minutes usually ends a run first)")
    parser.add_argument("--steps-per-epoch", type=int, help="training steps per epoch (default: the paper's 10,000 for "
                        "paper-size BSRNN and RoFormers; else one pass over the training crops, at least 64 crops per "
                        "training song)")
    parser.add_argument("--batch-size", type=int, help="global batch: examples per step over all replicas (default: the preset's)")
    parser.add_argument("--loss", help="loss by name: mag_phase_l2 (default: weighted magnitude + phase squared error), "
                        "mag_phase_l1 (the seed's weighted L1; silences sparse targets of multi-target models, see "
                        "README), bsrnn_paper (the BSRNN paper's L1 on real/imaginary parts and waveform) or "
                        "roformer_paper (the BS-RoFormer paper's waveform L1 + multi-resolution complex STFT L1 at "
                        "windows 4096/2048/1024/512/256, hop 147)")
    parser.add_argument("--alpha", type=float, help="weight of the magnitude term in mag_phase_* losses (default 0.5)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's, 1e-3)")
    parser.add_argument("--lr-decay", type=float, help="multiply the learning rate by this every --lr-decay-epochs epochs "
                        "(default: 0.98 for BSRNN presets, 1 = constant for the U-Net)")
    parser.add_argument("--lr-decay-epochs", type=int, help="epochs between learning-rate decays (default 2)")
    parser.add_argument("--weight-decay", type=float, help="coupled L2 weight decay: gradient + WD * weight (default: "
                        "1e-5 for the U-Net, 0 for BSRNN)")
    parser.add_argument("--clip-norm", type=float, help="clip the global gradient norm to this; 0 turns clipping off (default 5)")
    parser.add_argument("--patience", type=int, help="early stopping: stop after this many epochs in a row in which the "
                        "smoothed validation loss made no progress (default 10)")
    parser.add_argument("--min-delta", type=float, help="early stopping: the relative fall of the smoothed validation loss "
                        "below its best that counts as progress (default 0.002 = 0.2%%)")
    parser.add_argument("--smoothing", type=float, help="early stopping: factor of the exponential moving average of the "
                        "validation loss, in [0, 1); 0 watches the raw loss (default 0.8)")
    parser.add_argument("--crop-seconds", type=float, help="length of the crops stored in the shards (default 6)")
    parser.add_argument("--max-minutes", type=float, help="stop after the epoch in which this much time has passed")
    parser.add_argument("--seed", type=int, help="seed of Python, NumPy, TensorFlow, the data order, crops and "
                        "augmentation (default 0)")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="TensorFlow op determinism: two runs with one seed give identical losses (slower on GPUs)")
    parser.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker"],
                        help="tf.distribute strategy: auto (default: mirrored over all GPUs when there are several), "
                        "default (one device), mirrored (all local GPUs), multiworker (several machines, from TF_CONFIG)")
    parser.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                        help="Keras mixed-precision policy (default float32); mixed_float16 adds dynamic loss scaling")
    parser.add_argument("--jit-compile", action="store_true", default=None,
                        help="XLA-compile the forward and backward pass")
    parser.add_argument("--checkpoint-every", type=int, help="also save the training state every N steps (default 500); "
                        "an epoch's end always saves")
    parser.add_argument("--summary-every", type=int, help="TensorBoard step scalars every N steps (default 50)")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="override an architecture argument of the preset, e.g. fit_iterations=20 (value as JSON); repeatable")
    parser.add_argument("--export", action="store_true",
                        help="after training, export the best checkpoint as a float32 SavedModel to RUN_DIR/export "
                        "(waveform in, stems out; python -m mss_tf.export --help)")
    parser.add_argument("--export-format", choices=["saved_model", "litert", "onnx"], default="saved_model",
                        help="with --export: saved_model (default), litert (.tflite of one chunk, float32) or onnx; "
                        "a model the format cannot express is refused before training")
    tune = parser.add_argument_group("hyperparameter search (Keras Tuner over the same training loop)")
    tune.add_argument("--tune", action="store_true",
                      help="search hyperparameters instead of training once; the search lives in RUN_DIR/tuning, "
                      "running the command again continues it, and RUN_DIR/best_config.json is the winner")
    tune.add_argument("--tuner", choices=["bayesian", "hyperband", "random"], default="bayesian",
                      help="search algorithm (default bayesian)")
    tune.add_argument("--max-trials", type=int, default=6, help="trials to run (bayesian, random; default 6)")
    tune.add_argument("--trial-epochs", type=int, default=2,
                      help="epochs per trial (hyperband: the most any trial gets; default 2)")
    tune.add_argument("--trial-steps", type=int, default=50, help="training steps per trial epoch (default 50)")
    tune.add_argument("--objective", choices=["val_usdr", "val_loss"], default="val_usdr",
                      help="what a trial is judged by: val_usdr (mean validation uSDR over targets, higher; the "
                      "default) or val_loss (lower; the loss's alpha is then not searched, as losses with different "
                      "weights are not comparable)")
    tune.add_argument("--search-space", metavar="JSON",
                      help="narrow or replace the model's search space: {\"learning_rate\": {\"min\": 1e-4, "
                      "\"max\": 1e-3}, \"decoder_dropout\": null, \"replace\": false}")
    tune.add_argument("--show-search-space", action="store_true", help="print what --tune searches for --model and exit")
    parser.add_argument("--summary", action="store_true", help="print the model's layers and parameter count and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def parse_model_args(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings -> dict, values parsed as JSON when they are JSON, else kept as strings."""
    import json

    from mss_tf.errors import ConfigError

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mss_tf.config import TrainConfig
    from mss_tf.errors import ConfigError
    from mss_tf.models.registry import PRESETS, build_model, get_preset, is_neural, model_parameters

    if args.list:
        from mss_tf.models.registry import count_parameters

        width = max(len(name) for name in PRESETS)
        print(f"{'preset':<{width}} {'parameters':>12}  description")
        for name, preset in PRESETS.items():
            print(f"{name:<{width}} {count_parameters(preset):>12,}  {preset.description}")
        return 0
    overrides = {
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "learning_rate": args.lr, "lr_decay": args.lr_decay, "lr_decay_epochs": args.lr_decay_epochs,
        "weight_decay": args.weight_decay, "clip_norm": args.clip_norm, "early_stopping_patience": args.patience,
        "early_stopping_min_delta": args.min_delta, "early_stopping_smoothing": args.smoothing,
        "max_minutes": args.max_minutes, "seed": args.seed, "crop_seconds": args.crop_seconds, "loss": args.loss,
        "loss_alpha": args.alpha, "deterministic": args.deterministic, "strategy": args.strategy,
        "precision": args.precision, "jit_compile": args.jit_compile, "checkpoint_every": args.checkpoint_every,
        "summary_every": args.summary_every,
        "targets": [t.strip() for a in args.targets for t in a.split(",") if t.strip()] if args.targets else None,
    }
    source = data_source(args)
    if args.freeze is not None and args.init_from is None:
        raise ConfigError("--freeze needs --init-from RUN_OR_EXPORT (the model whose body it freezes)")
    if args.tune and args.init_from is not None:
        raise ConfigError("--tune with --init-from: the trials train from scratch; tune, then fine-tune the best "
                          "trial's run with --init-from")
    if args.resume and args.init_from is not None:
        raise ConfigError(f"--resume {args.resume} with --init-from: a resumed run continues from its own checkpoints")
    init = None
    if args.init_from is not None:
        from mss_tf.training.finetune import read_source

        init = read_source(args.init_from)
    if args.resume:
        from mss_tf.training.run import check_resume

        config = TrainConfig.load(args.resume)
        run_dir = args.resume
        check_resume(config, args.resume, args.model, overrides, config_file=args.config is not None,
                     model_args=bool(args.model_arg))
    elif args.config:
        config = TrainConfig.from_file(args.config, model=args.model)
        run_dir = None
    else:
        if not args.model and init is None:
            raise ConfigError("--model is required (or --resume DIR, --init-from RUN_OR_EXPORT, or --config FILE "
                              "with a \"model\")")
        config = TrainConfig(model=args.model or init.model)
        run_dir = None
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if source is not None:
        spec = source.spec()
        if args.resume and spec != config.data:
            raise ConfigError(f"{args.resume}: --data {args.data} is read differently from the run's data "
                              f"({config.data or 'MUSDB18'}); a resumed run keeps it")
        config.data = spec
        if config.targets is None and spec is not None:
            config.targets = list(source.stems)  # every target the data gives
        if config.targets is not None:
            source.check_targets(config.targets)
    get_preset(config.model)
    config.model_kwargs = {**config.model_kwargs, **parse_model_args(args.model_arg)}
    if init is not None:
        from mss_tf.training.finetune import configure

        configure(config, init, args.freeze or "none", model_given=bool(args.model) or args.config is not None)
    config.resolve()
    if args.export and args.export_format != "saved_model":  # refused before training, not after it
        from mss_tf.config import model_channels
        from mss_tf.portable import check_options

        check_options(args.export_format, "float32", get_preset(config.model).model, config.model,
                      model_channels(config.model, config.model_kwargs), channels=2)
    if args.show_search_space or args.tune:
        from mss_tf.training.tuning import TuneOptions, describe_space

        options = TuneOptions(tuner=args.tuner, max_trials=args.max_trials, trial_epochs=args.trial_epochs,
                              trial_steps=args.trial_steps, objective=args.objective, search_space=args.search_space)
        options.check()
        space = describe_space(config.model, args.search_space, args.objective)  # checks the JSON before any work
        if args.show_search_space:
            print(space)
            return 0
        if args.resume:
            raise ConfigError("--tune and --resume: run the same --tune command with the same --run-dir to continue a search")
        if config.strategy not in ("auto", "default"):
            raise ConfigError(f"--tune with --strategy {config.strategy}: each trial trains on one device; to use "
                              "several, run one tuner per device (distributed tuning, README)")
        return tune(args, config, options)
    if args.summary:
        import tensorflow as tf

        model = build_model(config.model, stft=config.spectrogram, **config.model_kwargs)
        spec = config.spectrogram
        if is_neural(config.model):
            model(tf.zeros([1, *config.example_shape()]))
            model.summary()
            print(f"{config.model}: {model_parameters(model):,} parameters")
        else:
            model.summary()
            print(f"{config.model}: {spec.n_bins * model.n_components:,} dictionary entries (fitted, not trained)")
        return 0

    from mss_tf.training.run import new_run_dir, train_run, training_data

    data_root, shards = training_data(config, args.shards, args.data or args.musdb_root, resume=args.resume)
    run_dir = run_dir or args.run_dir or new_run_dir(config.model)
    result = train_run(config, Path(run_dir), data_root, shards, progress=not args.quiet, skip_bad=args.skip_bad,
                       init=init)
    print(f"run directory: {run_dir}")
    if args.export and result["chief"]:
        from mss_tf.export import EXPORT_DIR, export_run

        kind = {"saved_model": "SavedModel", "litert": "LiteRT", "onnx": "ONNX"}[args.export_format]
        print(f"{kind}: {export_run(run_dir, Path(run_dir) / EXPORT_DIR, fmt=args.export_format)}")
    return 0


def data_source(args: argparse.Namespace):  # noqa: ANN201
    """The `DataSource` of --data/--layout/--stem-map (None without --data: MUSDB18 as before);
    ConfigError for --layout/--stem-map without --data or --data with --musdb-root."""
    from mss_tf.errors import ConfigError

    if args.data is None:
        for flag, value in (("--layout", args.layout), ("--stem-map", args.stem_map)):
            if value is not None:
                raise ConfigError(f"{flag} needs --data DIR (the folder it describes)")
        return None
    if args.musdb_root is not None:
        raise ConfigError("--data and --musdb-root name the same thing; give one")
    if args.shards is not None:
        raise ConfigError("--data and --shards: the shard folder already holds its data; give one")
    from mss_tf.data.sources import DataSource

    return DataSource.open(args.data, args.layout, args.stem_map)


def tune(args: argparse.Namespace, config, options) -> int:
    """train.py --tune: prepare the data once, then search (or continue the search in --run-dir)."""
    import os

    from mss_tf.errors import ConfigError
    from mss_tf.training.run import ensure_shards, make_datasets, new_run_dir, set_seeds, training_data
    from mss_tf.training.tuning import is_chief, tune_run

    run_dir = Path(args.run_dir or new_run_dir(f"{config.model}-tune"))
    set_seeds(config.seed, config.deterministic)
    train_data = valid_ds = None
    if not is_chief():  # the oracle of a distributed search trains nothing
        if args.shards is None and "KERASTUNER_ORACLE_IP" in os.environ:
            raise ConfigError("distributed tuning workers need --shards DIR prepared beforehand "
                              "(python datasets/prepare_musdb.py ...): they must not build shards concurrently")
        data_root, shards = training_data(config, args.shards, args.data or args.musdb_root)
        shards = ensure_shards(config, data_root, shards, not args.quiet, print, skip_bad=args.skip_bad)
        config.data_root, config.shards = (str(data_root) if data_root else None), str(shards)
        train_data, valid_ds = make_datasets(config, shards)
    result = tune_run(config, run_dir, train_data, valid_ds, options, progress=not args.quiet)
    if "summary" in result:
        print(result["summary"].read_text())
    print(f"search directory: {run_dir / 'tuning'}")
    return 0


def run() -> None:
    """The `mss-train` command (train.py): `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
