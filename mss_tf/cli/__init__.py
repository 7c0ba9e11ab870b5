"""The command-line programs: this package's modules are their mains, and this module their
shared plumbing; the library never imports it.

One module per command, each with `build_parser`, `main(argv)` (raises the typed errors of
`mss_tf.errors`) and `run()` (main under `run` below), which the console scripts of
pyproject.toml and the thin top-level scripts both call: `train` (`mss-train`, train.py),
`evaluate` (`mss-evaluate`, evaluate.py), `separate` (`mss-separate`, separate.py), `export`
(`mss-export`, python -m mss_tf.export), `convert` (`mss-convert`, python -m mss_tf.convert),
`make_demo` (`mss-make-demo`, datasets/make_demo.py) and `prepare_musdb` (`mss-prepare`,
datasets/prepare_musdb.py). `python -m mss_tf.study` is a command too (it runs train.py and
evaluate.py).

- `ArgumentParser`: a bad flag is one line, `error: ...`, on stderr and exit code 2 (no usage
  block); every program gets `--verbose`.
- Importing this module hides TensorFlow's C++ start-up lines (CUDA/cuDNN/TensorRT probes, CPU
  feature and oneDNN notes) unless `--verbose` is on the command line, so it must be imported
  before TensorFlow.
- `run`: a program's main, whose typed errors (`mss_tf.errors`) become one `error: ...` line
  and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, MutableMapping, NoReturn, Sequence

from mss_tf.errors import MssError

VERBOSE_FLAG = "--verbose"


def quiet_tensorflow(argv: Sequence[str], environ: MutableMapping[str, str] = os.environ) -> None:
    """Hide TensorFlow's C++ log lines below FATAL unless `--verbose` is in `argv`.

    They are printed from C++ while `import tensorflow` runs, so this must come first; a
    TF_CPP_MIN_LOG_LEVEL the user set is kept. Python warnings and our own messages still show.
    """
    if VERBOSE_FLAG not in argv:
        environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


quiet_tensorflow(sys.argv[1:])


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error: ...` line on stderr and exit code 2, with `--verbose`."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.add_argument(VERBOSE_FLAG, action="store_true",
                          help="also show TensorFlow's start-up and C++ log lines (hidden by default)")

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_separation_flags(parser: argparse.ArgumentParser) -> None:
    """The flags evaluate.py and separate.py share: how a model runs over a long signal."""
    parser.add_argument("--overlap", type=float,
                        help="overlap of consecutive chunks in seconds (default: a run's 1; a SavedModel's, the overlap "
                             "it was exported with)")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32",
                        help="the Keras dtype policy a run's model computes in (default float32); a SavedModel is "
                             "float32, and another value with one is refused")
    parser.add_argument("--threads", default="auto", metavar="auto|default|N",
                        help="TensorFlow CPU threads for the model: auto (BSRNNs: one intra-op thread per two cores, "
                             "the two directions of each BLSTM side by side; others: TensorFlow's default), default, "
                             "or N intra-op threads (default auto)")


def run(main: Callable[[], int | None]) -> None:
    """Run a CLI's main; typed errors become `error: <message>` on stderr and exit code 2. A
    reader that stops reading (`mss-train --list | head -3`) ends the program quietly, exit code
    1, as Python's documentation recommends for SIGPIPE, rather than with a traceback."""
    try:
        code = main()
    except MssError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(1)
    sys.exit(code or 0)
