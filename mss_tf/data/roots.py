"""Where the data comes from: the cache folder (`$MSS_TF_DATA`) and the MUSDB root of a run.

Without `--musdb-root` and `$MUSDB_PATH`, the built-in procedural demo set is generated (once)
in the cache folder and announced loudly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mss_tf.data import musdb


def data_dir() -> Path:
    """Where cached data (demo set, shards) lives: `$MSS_TF_DATA`, default `./data`."""
    return Path(os.environ.get("MSS_TF_DATA", "data"))


def resolve_data_root(musdb_root: str | None, log: Callable[[str], None]) -> tuple[Path, bool]:
    """The MUSDB root to use and whether it is the built-in demo set (generated and cached)."""
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
