"""Shared command-line plumbing: one-line errors with exit code 2, the data-root default."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from mss_tf.errors import MssError

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides the CLIs' own output
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main: Callable[[], int | None]) -> None:
    """Run a CLI's main; typed errors become `error: <message>` on stderr and exit code 2."""
    try:
        code = main()
    except MssError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def data_dir() -> Path:
    """Where cached data (demo set, shards) lives: `$MSS_TF_DATA`, default `./data`."""
    return Path(os.environ.get("MSS_TF_DATA", "data"))


def resolve_data_root(musdb_root: str | None, log: Callable[[str], None]) -> tuple[Path, bool]:
    """The MUSDB root to use and whether it is the built-in demo set (generated and cached)."""
    from mss_tf.data import musdb

    root = musdb.resolve_root(musdb_root)
    if root is not None:
        return root, False
    from mss_tf.data.demo import make_demo_set

    demo_root = data_dir() / "demo-musdb"
    banner = "=" * 72
    log(banner)
    log("No --musdb-root and no MUSDB_PATH: using the built-in procedural DEMO set")
    log(f"({demo_root}); results on it say nothing about real music.")
    log(banner)
    make_demo_set(demo_root)
    return demo_root, True
