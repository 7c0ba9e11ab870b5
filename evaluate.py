"""Evaluate a trained run (or the mixture baseline) on MUSDB-layout test tracks (see --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mss_tf import TARGETS, cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, help="run directory written by train.py (uses its best checkpoint)")
    what.add_argument("--mixture", action="store_true", help="score the mixture as the estimate of every target")
    parser.add_argument("--musdb-root", help="MUSDB18-HQ folder (default: $MUSDB_PATH, else the run's data, else the demo set)")
    parser.add_argument("--subset", default="test", choices=["train", "valid", "test"], help="split to evaluate (default test)")
    parser.add_argument("--tracks", type=int, help="evaluate only the first N tracks of the split")
    parser.add_argument("--out", type=Path, help="folder for results.json (default: the run directory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    from mss_tf.data import musdb
    from mss_tf.errors import ConfigError
    from mss_tf.evaluation import report

    if args.run is not None:
        from mss_tf.config import TrainConfig
        from mss_tf.inference import Separator

        config = TrainConfig.load(args.run)
        separator = Separator.from_run(args.run)
        root = musdb.resolve_root(args.musdb_root) or (Path(config.data_root) if config.data_root else None)
        if root is None:
            root, _ = cli.resolve_data_root(None, print)
        targets = separator.targets
        separate = separator.separate
        name = config.model
        from mss_tf.models.registry import model_parameters

        params = model_parameters(separator.model)
        out = args.out or args.run
    else:
        root, _ = cli.resolve_data_root(args.musdb_root, print)
        targets = list(TARGETS)
        name, params = "mixture", 0
        separate = lambda audio, rate: report.mixture_as_estimate(audio, rate, targets)  # noqa: E731
        if args.out is None:
            raise ConfigError("--mixture needs --out DIR")
        out = args.out
    tracks = musdb.split_tracks(root, args.subset)
    if args.tracks:
        tracks = tracks[: args.tracks]
    rows = report.evaluate_tracks(separate, tracks, targets, progress=not args.quiet)
    results = report.summarize(rows, targets, name, params, args.subset)
    path = report.write_results(results, out)
    print(report.format_table(results))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
