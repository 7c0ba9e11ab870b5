"""Train a separation model: `python train.py --model unet` (see --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mss_tf import cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="preset name: unet, bsrnn, bsrnn-se, nmf, or a -tiny version (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets with their parameter counts and exit")
    parser.add_argument("--musdb-root", help="MUSDB18-HQ folder (default: $MUSDB_PATH, else the built-in demo set)")
    parser.add_argument("--shards", type=Path, help="prepared shard folder (with train/ and valid/); skips preparation")
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/<model>-<timestamp>)")
    parser.add_argument("--resume", type=Path, help="continue the run in this directory from its latest checkpoint")
    parser.add_argument("--epochs", type=int, help="number of epochs (default 10)")
    parser.add_argument("--steps-per-epoch", type=int, help="training steps per epoch (default 100)")
    parser.add_argument("--batch-size", type=int, help="examples per step (default: the preset's)")
    parser.add_argument("--loss", help="loss by name: mag_phase_l2 (default: weighted magnitude + phase squared error), "
                        "mag_phase_l1 (the seed's weighted L1; silences sparse targets of multi-target models, see "
                        "README) or bsrnn_paper (the BSRNN paper's L1 on real/imaginary parts and waveform)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--crop-seconds", type=float, help="length of the crops stored in the shards (default 6)")
    parser.add_argument("--max-minutes", type=float, help="stop after the epoch in which this much time has passed")
    parser.add_argument("--seed", type=int, help="random seed for data order, crops and initialisation (default 0)")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="override an architecture argument of the preset, e.g. fit_iterations=20 (value as JSON); repeatable")
    parser.add_argument("--summary", action="store_true", help="print the model's layers and parameter count and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


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


def main() -> int:
    args = parse_args()
    from mss_tf.config import TrainConfig
    from mss_tf.errors import ConfigError
    from mss_tf.models.registry import PRESETS, build_model, get_preset, is_neural

    if args.list:
        from mss_tf.models.registry import count_parameters

        print(f"{'preset':<14} {'parameters':>12}  description")
        for name, preset in PRESETS.items():
            print(f"{name:<14} {count_parameters(preset):>12,}  {preset.description}")
        return 0
    if args.resume:
        config = TrainConfig.load(args.resume)
        run_dir = args.resume
    else:
        if not args.model:
            raise ConfigError("--model is required (or --resume DIR)")
        config = TrainConfig(model=args.model)
        run_dir = None
    overrides = {
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "learning_rate": args.lr, "max_minutes": args.max_minutes, "seed": args.seed,
        "crop_seconds": args.crop_seconds, "loss": args.loss,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    get_preset(config.model)
    config.model_kwargs = {**config.model_kwargs, **parse_model_args(args.model_arg)}
    config.resolve()
    if args.summary:
        import tensorflow as tf

        model = build_model(config.model, **config.model_kwargs)
        spec = config.spectrogram
        if is_neural(config.model):
            model(tf.zeros([1, config.train_frames(), spec.n_bins, 2]))
            model.summary()
            print(f"{config.model}: {model.count_params():,} parameters")
        else:
            model.summary()
            print(f"{config.model}: {spec.n_bins * model.n_components:,} dictionary entries (fitted, not trained)")
        return 0

    from mss_tf.training.run import new_run_dir, train_run

    if args.shards is not None:
        if not args.shards.is_dir():
            raise ConfigError(f"{args.shards}: no such shard folder")
        data_root = None
    else:
        data_root, _ = cli.resolve_data_root(args.musdb_root, print)
    run_dir = run_dir or args.run_dir or new_run_dir(config.model)
    train_run(config, Path(run_dir), data_root, args.shards, progress=not args.quiet)
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    cli.run(main)
