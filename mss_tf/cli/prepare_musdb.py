"""Prepare MUSDB18 / MUSDB18-HQ, or any multitrack folder (--data: a stems folder, MoisesDB), as STFT
shards for a model preset, or check a shard folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mss_tf import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--check", type=Path, metavar="DIR",
                        help="verify a shard folder (or a folder of split folders) against its manifest and exit")
    parser.add_argument("--musdb-root", help="MUSDB18 (.stem.mp4) or MUSDB18-HQ (wav) folder (default: $MUSDB_PATH)")
    parser.add_argument("--data", help="a multitrack folder in any layout instead: MUSDB18(-HQ), stems "
                        "(ROOT/{train,valid,test}/<track>/<stem>.wav) or MoisesDB, detected from the folder")
    parser.add_argument("--layout", choices=["musdb", "stems", "moisesdb"],
                        help="with --data: read it in this layout (when detection is ambiguous)")
    parser.add_argument("--stem-map", help="with --data: JSON file grouping raw stems into targets, e.g. "
                        '{"guitar": ["guitar", "acoustic_guitar"], "other": "*rest*"}')
    parser.add_argument("--targets", nargs="+", metavar="NAME",
                        help="targets the quality filter checks (default: the preset's for MUSDB18, every target "
                        "of --data otherwise); the shards hold every target of the data")
    parser.add_argument("--out", type=Path, help="output folder; gets one shard folder per split (train/, valid/)")
    parser.add_argument("--model", help="preset whose STFT config and targets the shards are for (e.g. unet, bsrnn)")
    parser.add_argument("--channels", type=int, choices=[1, 2],
                        help="1: mono STFTs (the tracks downmixed), 2: stereo STFTs, both channels of every stem "
                        "(default: what the preset's model takes; train with --model-arg channels=2 on stereo shards)")
    parser.add_argument("--splits", default="train,valid", help="comma-separated splits to prepare (default train,valid)")
    parser.add_argument("--workers", type=int, default=1, help="tracks prepared in parallel processes (default 1)")
    parser.add_argument("--augment-copies", type=int, default=0,
                        help="pedalboard-augmented copies written beside each kept training crop (default 0)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip and report unreadable/bad tracks instead of stopping at the first one")
    parser.add_argument("--crop-seconds", type=float, default=6.0, help="crop length in seconds (default 6)")
    parser.add_argument("--overlap", type=float, default=0.5, help="overlap between consecutive crops (default 0.5)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype (default float16)")
    parser.add_argument("--gzip", action="store_true", help="GZIP-compress the TFRecord shards")
    parser.add_argument("--shard-mb", type=float, default=256, help="target shard size in MB (default 256)")
    parser.add_argument("--no-quality-filter", action="store_true",
                        help="keep every crop (default: drop crops whose target stems have RMS < 0.005 or < 30%% activity: on "
                        "MUSDB18 any such target drops the crop, on other --data only all of them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation draws (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mss_tf.config import model_channels
    from mss_tf.data import musdb
    from mss_tf.data.crops import CropConfig
    from mss_tf.data.prepare import PrepareConfig, check_shards, prepare_dataset
    from mss_tf.data.quality import targets_config
    from mss_tf.data.sources import DataSource
    from mss_tf.errors import ConfigError, DataError
    from mss_tf.models.registry import get_preset
    from mss_tf.training.run import quality_mode

    if args.check is not None:
        for row in check_shards(args.check):
            channels = {1: "mono", 2: "stereo"}.get(row["channels"], f"{row['channels']} channels")
            print(f"ok: {row['folder']}: {row['examples']} examples in {row['shards']} shards, {row['bytes'] / 1e6:.1f} MB, "
                  f"{channels}")
        return 0
    if args.out is None or args.model is None:
        raise ConfigError("--out and --model are required (or --check DIR)")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.augment_copies < 0:
        raise ConfigError(f"--augment-copies must be >= 0, got {args.augment_copies}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"{args.out}: exists and is not a folder")
    preset = get_preset(args.model)
    from mss_tf.cli.train import data_source

    args.shards = None
    source = data_source(args)
    if source is None:
        root = musdb.resolve_root(args.musdb_root)
        if root is None:
            raise DataError("no MUSDB folder: give --musdb-root DIR or set MUSDB_PATH (or --data DIR)")
        source = DataSource(Path(root))
    targets = [t.strip() for a in args.targets for t in a.split(",") if t.strip()] if args.targets else None
    if targets is None:
        targets = list(preset.kwargs.get("targets") or []) if source.plain_musdb else list(source.stems)
    source.check_targets(targets)
    augment = None
    if args.augment_copies:
        from mss_tf.data.augment import AugmentConfig

        augment = AugmentConfig()
    config = PrepareConfig(
        crops=CropConfig(seconds=args.crop_seconds, overlap=args.overlap),
        quality=None if args.no_quality_filter else targets_config(targets, mode=quality_mode(source.spec())),
        augment=augment,
        augment_copies=args.augment_copies,
        dtype=args.dtype,
        compression="GZIP" if args.gzip else "",
        shard_bytes=int(args.shard_mb * 2**20),
        seed=args.seed,
        channels=args.channels or model_channels(args.model),
    )
    started = time.monotonic()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    prepare_dataset(source, args.out, preset.stft, config, splits=splits, workers=args.workers,
                    skip_bad=args.skip_bad, progress=not args.quiet)
    for split in splits:
        manifest = json.loads((args.out / split / "manifest.json").read_text())
        quality = manifest.get("quality") or {}
        print(f"{split}: {manifest['n_examples']} {'stereo' if config.channels == 2 else 'mono'} examples "
              f"({manifest['n_augmented']} augmented) from "
              f"{len(manifest['tracks'])} tracks, {manifest['bytes'] / 1e6:.1f} MB; "
              f"quality filter rejected {quality.get('rejected', 0)} of {quality.get('crops', 0)} crops")
        for track, reason in manifest.get("skipped", {}).items():
            print(f"  skipped {track}: {reason}")
    print(f"prepared {args.out} in {time.monotonic() - started:.1f} s")
    return 0


def run() -> None:
    """The `mss-prepare` command (datasets/prepare_musdb.py): `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
