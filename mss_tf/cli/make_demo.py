"""Build the procedural demo set (MUSDB18-HQ layout, or instrument parts in the stems layout):
`python datasets/make_demo.py --out DIR [--layout stems]`."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from mss_tf import cli


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seconds_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Write synthetic songs (drums, bass, other, vocals and their exact sum as mixture) in the "
        "MUSDB18-HQ folder layout: OUT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav, stereo "
        "float32 wav. With --layout stems, the same songs as instrument parts instead: "
        "OUT/{train,valid,test}/<track>/<part>.wav for the parts a song plays (kick, snare, hats, bass, vocals "
        "and its other instruments: pad, organ, epiano or guitar, and arp) and mixture.wav, their sum, plus "
        "OUT/musdb_stem_map.json grouping the parts into the four MUSDB stems. Same flags, same bytes; a "
        "complete set with the same flags is reused, not rewritten.",
    )
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to create; an older demo set there is replaced, any other existing folder "
                        "is refused")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed; each track derives from it, its subset and its index (default 0)")
    parser.add_argument("--train", type=non_negative_int, default=16, help="number of training tracks (default 16)")
    parser.add_argument("--test", type=non_negative_int, default=4, help="number of test tracks (default 4)")
    parser.add_argument("--layout", choices=["musdb", "stems"], default="musdb",
                        help="musdb (default): the four MUSDB stems; stems: the instrument parts, a valid/ folder "
                        "and a stem map (the train and test songs are the musdb layout's of the same seed)")
    parser.add_argument("--valid", type=non_negative_int, default=None,
                        help="number of validation tracks, --layout stems only (default 2)")
    parser.add_argument("--seconds", type=seconds_value, default=12.0,
                        help="length of every track in seconds, at least 1 (default 12)")
    parser.add_argument("--sample-rate", type=int, default=44100,
                        help="sample rate in Hz (default 44100, as MUSDB18-HQ; 16000..192000 accepted)")
    parser.add_argument("--style", choices=["balanced", "sparse"], default="balanced",
                        help="balanced (default): every stem plays throughout at similar levels; sparse: stems up "
                        "to 20 dB apart and silent for stretches, as in real mixes (a harder second set)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.layout == "musdb" and args.valid is not None:
        parser.error("--valid needs --layout stems: the musdb layout has no valid folder")
    if args.layout == "stems" and args.valid is None:
        args.valid = 2
    if args.train + args.test + (args.valid or 0) == 0:
        counts = "--train, --valid and --test are all 0" if args.valid is not None else "--train and --test are both 0"
        parser.error(f"{counts}: the demo set needs at least one track")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mss_tf.data.demo import demo_set_is_complete, make_demo_set

    params = dict(seed=args.seed, n_train=args.train, n_test=args.test, seconds=args.seconds,
                  sample_rate=args.sample_rate, style=args.style, layout=args.layout, n_valid=args.valid)
    if demo_set_is_complete(args.out, **params):
        print(f"demo set already complete in {args.out} (same parameters); nothing written")
        return 0
    bar = None

    def progress(done: int, total: int) -> None:
        # the first call (done = 0) comes once the output folder has been checked
        nonlocal bar
        if args.quiet:
            return
        if done == 0:
            try:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="track", desc="demo set", file=sys.stderr)
            except ImportError:
                pass
        if bar is not None:
            bar.update(done - bar.n)
        else:
            print(f"  {done}/{total} tracks", file=sys.stderr)

    started = time.perf_counter()
    try:
        root = make_demo_set(args.out, progress=progress, **params)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    valid, layout = (f" + {args.valid} valid", ", stems layout") if args.layout == "stems" else ("", "")
    print(f"wrote demo set to {root.resolve()}: {args.train} train{valid} + {args.test} test tracks of "
          f"{args.seconds:g} s at {args.sample_rate} Hz (seed {args.seed}, {args.style}{layout}) in {elapsed:.1f} s")
    return 0


def run() -> None:
    """The `mss-make-demo` command (datasets/make_demo.py): `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
