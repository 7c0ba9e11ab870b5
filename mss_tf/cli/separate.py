"""Split audio files into stems with a trained run or an exported SavedModel.

    python separate.py song.mp3 album/ --model runs/unet-demo --out stems/
    python separate.py song.wav --model runs/unet-demo/export --out stems/ --format flac --wiener 1

Writes OUT/<file name>/<target>.<format> for every input (a folder stands for the audio files
in it), at the input's sample rate and channel count, at full length (nothing is cut). Each
file is streamed: read, resampled, separated in overlapping chunks and written block by block
(mss_tf.inference.separate_file), so memory does not grow with the song (wav, flac, ogg, mp3;
other formats such as m4a are decoded whole first). Each stem is written under a temporary
name and renamed into place when complete. A file that cannot be read or separated is reported
and skipped; the others go on, and the exit code is 2 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mss_tf import cli

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".aiff", ".aif", ".m4a", ".mp4")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE",
                        help="audio files (wav, flac, mp3, ogg, ...) or folders of them")
    parser.add_argument("--model", type=Path, required=True,
                        help="a train.py run directory (its best checkpoint) or a SavedModel (train.py --export)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: OUT/<file name>/<target>.<format>")
    parser.add_argument("--format", choices=["wav", "flac"], default="wav",
                        help="wav: 32-bit float, exact; flac: 16-bit, clipped to [-1, 1] (default wav)")
    parser.add_argument("--targets", nargs="+", metavar="NAME", help="write only these stems (default: all the model makes)")
    parser.add_argument("--chunk-seconds", type=float,
                        help="separation chunk length in seconds (default: a run's 10, 5 for BSRNNs, which need more "
                             "memory per second; a SavedModel's, the chunk it was exported with)")
    parser.add_argument("--chunks-per-call", type=int, default=1, metavar="K",
                        help="chunks separated together in one model call (default 1; more is faster on a GPU, "
                        "costs memory in proportion, same output)")
    parser.add_argument("--wiener", type=int, default=0, metavar="N",
                        help="multichannel Wiener post-filter with N EM iterations on stereo input (default 0: off)")
    cli.add_separation_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; a folder becomes its audio files (sorted, recursively)."""
    from mss_tf.errors import DataError

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise DataError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            files += found
        else:
            files.append(path)
    return files


def load_separator(args: argparse.Namespace):
    """A run directory's Separator or an export's, with the same options (mss_tf.export.load_separator)."""
    from mss_tf.export import load_separator as load

    return load(args.model, precision=args.precision, chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap,
                chunks_per_call=args.chunks_per_call, wiener_iterations=args.wiener)


def output_names(files: list[Path]) -> list[str]:
    """One folder name per input: the file's stem, made unique with its parent's name if needed."""
    names = [f.stem for f in files]
    return [f"{f.parent.name}-{f.stem}" if names.count(f.stem) > 1 else f.stem for f in files]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mss_tf.errors import ConfigError, MssError

    if args.wiener < 0:
        raise ConfigError(f"--wiener must be >= 0, got {args.wiener}")
    if args.chunks_per_call < 1:
        raise ConfigError(f"--chunks-per-call must be >= 1, got {args.chunks_per_call}")
    from mss_tf.threads import configure_threads, model_class_at, parse_threads

    threads = parse_threads(args.threads)
    files = expand_inputs(args.inputs)
    configure_threads(threads, model_class_at(args.model))  # before TensorFlow's first op
    separator = load_separator(args)
    targets = args.targets or separator.targets
    missing = [t for t in targets if t not in separator.targets]
    if missing:
        raise ConfigError(f"--targets {' '.join(missing)}: {args.model} separates only {', '.join(separator.targets)}")

    from tqdm import tqdm

    from mss_tf.inference import separate_file

    failed: list[str] = []
    for index, (path, name) in enumerate(zip(files, output_names(files)), 1):
        outputs = {target: args.out / name / f"{target}.{args.format}" for target in targets}
        bars: list = []

        def progress(done: int, total: int | None, rate: int) -> None:
            """One bar per file, in seconds of audio written."""
            if args.quiet:
                return
            if not bars:
                bars.append(tqdm(total=round(total / rate, 1) if total else None, unit="s", leave=False,
                                 desc=f"[{index}/{len(files)}] {path.name[:40]}"))
            bars[0].n = round(done / rate, 1)
            bars[0].refresh()

        try:
            result = separate_file(separator, path, outputs, progress=progress)
        except MssError as exc:
            failed.append(" ".join(str(exc).split()))
            tqdm.write(f"error: {failed[-1]}", file=sys.stderr)
            continue
        finally:
            for bar in bars:
                bar.close()
        tqdm.write(f"{path} -> {args.out / name}/ ({', '.join(targets)}; {result['seconds']:.1f} s)")
    if failed:
        print(f"{len(failed)} of {len(files)} files failed:", file=sys.stderr)
        for message in failed:
            print(f"  {message}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The `mss-separate` command (separate.py): `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
