"""What a measurement ran on: date, CPU, cores, Python and TensorFlow versions (benchmarks, the study)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"Measured {info['date']} on {info['cores']} cores of {info['cpu']} ({info['machine']}), "
            f"Python {info['python']}, TensorFlow {info['tensorflow']}.")
