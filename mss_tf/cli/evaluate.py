"""Evaluate a model on MUSDB-layout tracks with museval (BSSEval v4) and uSDR, or compare evaluations.

    python evaluate.py --run runs/unet-demo                      # a train.py run (best checkpoint)
    python evaluate.py --saved-model runs/unet-demo/export       # an exported SavedModel
    python evaluate.py --oracle irm2 --preset unet --out DIR     # ideal ratio masks at the U-Net's STFT
    python evaluate.py --mixture --out DIR                       # the mixture as every estimate
    python evaluate.py --compare DIR DIR ... --out DIR           # table (md, csv), plots, index.html

Each evaluation writes results.json (cSDR, SIR, ISR, SAR per target: median over 1 s frames,
then over tracks; uSDR: mean over tracks) and museval's per-track JSON files under
museval/<subset>/ in its output folder, and listening excerpts (--listen-seconds) in listen/,
which --compare gathers with the table and plots into one page, OUT/index.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mss_tf import TARGETS, cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, help="run directory written by train.py (its best checkpoint; see --which)")
    what.add_argument("--saved-model", type=Path, help="SavedModel written by train.py --export or python -m mss_tf.export")
    what.add_argument("--oracle", choices=["irm1", "irm2", "ibm"],
                      help="ideal masks from the references at the STFT of --preset: irm1 (magnitude ratio), irm2 "
                           "(power ratio), ibm (binary); the ceiling of a mask-based model")
    what.add_argument("--mixture", action="store_true", help="score the mixture as the estimate of every target (the floor)")
    what.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                      help="evaluated folders (holding results.json) to put in one table and plots in --out")
    parser.add_argument("--musdb-root", help="MUSDB18(-HQ) folder (default: $MUSDB_PATH, else the run's data, else the demo set)")
    parser.add_argument("--data", help="a multitrack folder in any layout (MUSDB18, stems, MoisesDB; default: the run's data)")
    parser.add_argument("--layout", choices=["musdb", "stems", "moisesdb"], help="with --data: read it in this layout")
    parser.add_argument("--stem-map", help="with --data: JSON file grouping raw stems into targets (default: the run's)")
    parser.add_argument("--subset", default="test", choices=["train", "valid", "test"], help="split to evaluate (default test)")
    parser.add_argument("--tracks", nargs="+", metavar="N|NAME",
                        help="one number: the first N tracks of the split; otherwise track names (or parts of names)")
    parser.add_argument("--max-seconds", type=float, help="evaluate only the first S seconds of each track")
    parser.add_argument("--workers", type=int, default=1, help="processes computing BSSEval in parallel (default 1)")
    parser.add_argument("--fast", action="store_true",
                        help="the fast BSSEval v4 (mss_tf.evaluation.bsseval; within 0.05 dB of museval) instead of museval")
    parser.add_argument("--usdr-only", action="store_true", help="skip BSSEval: uSDR, energy and the mixture floor only")
    parser.add_argument("--out", type=Path,
                        help="folder for results.json and museval/ (default: the run directory; runs/eval-NAME for --saved-model "
                             "and --oracle; required with --mixture); with --compare: the folder for the table and plots")
    parser.add_argument("--label", help="the name this evaluation goes by in comparisons (default: the preset or method)")
    parser.add_argument("--preset", default="bsrnn", help="with --oracle: the model preset whose STFT the masks use (default bsrnn)")
    parser.add_argument("--targets", nargs="+", metavar="NAME", help="with --oracle/--mixture: targets (default: every "
                        "target of the data)")
    parser.add_argument("--which", choices=["best", "latest"], default="best", help="with --run: which checkpoint (default best)")
    parser.add_argument("--chunk-seconds", type=float,
                        help="separation chunk length in seconds (default: a run's 10, 5 for BSRNNs, which need more "
                             "memory per second; a SavedModel's, the chunk it was exported with)")
    parser.add_argument("--wiener", type=int, default=0, metavar="N",
                        help="with --run/--saved-model: multichannel Wiener post-filter (norbert, N EM iterations) on "
                             "the stereo estimates; results go to RUN/eval-wiener-N unless --out (default 0: off)")
    parser.add_argument("--listen-seconds", type=float, default=10.0, metavar="S",
                        help="an evaluation stores, per track and target, an S-second excerpt (where the target's "
                             "reference is loudest) of the mixture, the reference and the estimate in OUT/listen/, "
                             "which --compare gathers into OUT/index.html (default 10; 0: none)")
    cli.add_separation_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked before anything is loaded or built: a bad value is one line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        if args.out is None:
            parser.error("--compare needs --out DIR for the table and plots")
        return args
    if args.mixture and args.out is None:
        parser.error("--mixture needs --out DIR for its results (there is no run directory to write into)")
    if args.tracks and len(args.tracks) == 1 and args.tracks[0].lstrip("-").isdigit() and int(args.tracks[0]) < 1:
        parser.error(f"--tracks {args.tracks[0]}: need at least one track")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.max_seconds is not None and not args.max_seconds > 0:
        parser.error(f"--max-seconds must be positive, got {args.max_seconds}")
    if args.chunk_seconds is not None and not (args.chunk_seconds > 0 and 0 <= (args.overlap or 0) < args.chunk_seconds):
        parser.error(f"--chunk-seconds {args.chunk_seconds} / --overlap {args.overlap}: need 0 <= overlap < chunk")
    if args.wiener < 0:
        parser.error(f"--wiener must be >= 0, got {args.wiener}")
    if args.data is None and (args.layout or args.stem_map):
        parser.error("--layout and --stem-map need --data DIR (the folder they describe)")
    if args.data is not None and args.musdb_root is not None:
        parser.error("--data and --musdb-root name the same thing; give one")
    if args.listen_seconds < 0:
        parser.error(f"--listen-seconds must be >= 0, got {args.listen_seconds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        from mss_tf.evaluation import compare

        written = compare.write_comparison(args.compare, args.out)
        print(written["markdown"].read_text())
        for kind, path in written.items():
            if kind != "page":
                print(f"{kind}: {path}")
        print(f"listening report: {written['page']}")
        return 0
    from mss_tf.threads import configure_threads, model_class_at, parse_threads

    threads = parse_threads(args.threads)
    config = None
    if args.run is not None:
        from mss_tf.config import TrainConfig
        from mss_tf.models.registry import get_preset

        config = TrainConfig.load(args.run)  # read once; Separator.from_run below reuses it
        model_class = get_preset(config.model).model
    else:
        model_class = model_class_at(args.saved_model) if args.saved_model is not None else None
    configure_threads(threads, model_class)  # before TensorFlow's first op

    from mss_tf.data import musdb
    from mss_tf.data.roots import resolve_data_root
    from mss_tf.evaluation import report

    from mss_tf.data.sources import DataSource

    chunking = {"chunk_seconds": args.chunk_seconds, "overlap_seconds": args.overlap, "wiener_iterations": args.wiener}
    suffix = f" + MWF{args.wiener}" if args.wiener else ""
    root = None
    source = DataSource.open(args.data, args.layout, args.stem_map) if args.data is not None else None
    if config is not None:
        from mss_tf.inference import Separator
        from mss_tf.models.registry import model_parameters

        separator = Separator.from_run(args.run, which=args.which, precision=args.precision, config=config, **chunking)
        root = musdb.resolve_root(args.musdb_root) or (Path(config.data_root) if config.data_root else None)
        if source is None and args.musdb_root is None and config.data is not None and root is not None:
            source = DataSource.from_record(config.data, root)  # the run's layout and stem map
        method, targets, name = separator.separate, separator.targets, config.model + suffix
        params = model_parameters(separator.model)
        out = args.out or (args.run / f"eval-wiener-{args.wiener}" if args.wiener else args.run)
    elif args.saved_model is not None:
        from mss_tf.export import load_saved_model

        separator = load_saved_model(args.saved_model, precision=args.precision, **chunking)  # as a run: OverlapAdd
        method, targets, name = separator.separate, separator.targets, separator.name + suffix
        params = separator.params
        out = args.out or Path("runs") / f"eval-{args.saved_model.resolve().name}{'-wiener-%d' % args.wiener if args.wiener else ''}"
    elif args.oracle is not None:
        from mss_tf.evaluation.oracle import OracleSeparator
        from mss_tf.models.registry import get_preset

        oracle = OracleSeparator(args.oracle, get_preset(args.preset).stft,
                                 args.targets or list(source.stems if source else TARGETS))
        method, targets, params = oracle, oracle.targets, 0
        name = f"oracle {args.oracle.upper()} ({args.preset} STFT)"
        out = args.out or Path("runs") / f"eval-oracle-{args.oracle}-{args.preset}"
    else:
        targets = args.targets or list(source.stems if source else TARGETS)
        name, params = "mixture", 0

        def method(audio, rate):  # noqa: ANN001
            return report.mixture_as_estimate(audio, rate, targets)

        out = args.out
    if source is not None:
        root = source.root
    elif root is None:
        root, _ = resolve_data_root(args.musdb_root, print)
    source = source or DataSource(Path(root))
    source.check_targets(targets, "the targets")
    tracks = musdb.select_tracks(source.split_tracks(args.subset), args.tracks, root, args.subset)
    bss = "none" if args.usdr_only else ("fast" if args.fast else "museval")
    rows = report.evaluate_tracks(method, tracks, targets, progress=not args.quiet, bss=bss, workers=args.workers,
                                  max_seconds=args.max_seconds, out_dir=out, subset=args.subset,
                                  listen_seconds=args.listen_seconds, source=source)
    extra = {"label": args.label or name, "bss": bss, "data_root": str(root),
             **({"data": source.spec()} if source.spec() is not None else {})}
    if args.max_seconds:
        extra["max_seconds"] = args.max_seconds
    results = report.summarize(rows, targets, name, params, args.subset, extra)
    path = report.write_results(results, out)
    print(report.format_table(results))
    print(f"results: {path}")
    return 0


def run() -> None:
    """The `mss-evaluate` command (evaluate.py): `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
