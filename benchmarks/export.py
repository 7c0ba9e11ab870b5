"""Exports side by side: SavedModel, LiteRT (float32, float16, int8) and ONNX of one trained run.

    python benchmarks/export.py --run runs/unet-demo [--seconds 30] [--musdb-root DIR]

Exports the run's best checkpoint in every format and variant (`python -m mss_tf.export`'s
`export_run`, the run's own chunk plan), then for each:

- **size MB**: the model file (LiteRT, ONNX) or the SavedModel folder, in MB (10^6 bytes).
- **load s**: opening it in its runtime in a fresh child process (`tf.saved_model.load`, the LiteRT
  interpreter with its tensors allocated, an ONNX Runtime session); the child has imported
  mss_tf and TensorFlow already.
- **RTF 1 / 2 threads**: separating `--seconds` of generated stereo audio at the model's rate with
  the chunk plan's overlap-add (`separate_model_rate`: for the SavedModel its `separate_chunks`
  signature, for LiteRT and ONNX one runtime call per chunk, `mss_tf.portable.PortableSeparator`),
  in a child process with 1 or 2 threads (TensorFlow's intra-op pool, the interpreter's threads,
  ONNX Runtime's intra-op threads), divided by the audio's duration; the first call included. Wall
  clock on a shared machine: read them as +-10 %.
- **uSDR per target** on the test songs (full length, stereo; the demo set unless `--musdb-root`),
  through `separate` (resampling with soxr to the model's rate and back, as separate.py does), the
  SavedModel's row being the reference; **cost dB** is the mean over targets of the SavedModel's
  uSDR minus the variant's; **difference dB** how far the variant's stems differ from the
  SavedModel's, below their energy (all songs and targets).

Writes benchmarks/results/export.json and the "Exports (benchmarks/export.py)" section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import machine, machine_line, markdown_table, write_json, write_section

SECTION = "Exports (benchmarks/export.py)"
VARIANTS = [("saved_model", "float32"), ("litert", "float32"), ("litert", "float16"), ("litert", "int8"),
            ("onnx", "float32")]
THREADS = (1, 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained run directory (train.py --run-dir)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio separated for the speed columns (default 30)")
    parser.add_argument("--musdb-root", type=Path, help="MUSDB18-HQ-layout folder (default: the demo set in data/demo-musdb)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-export"), help="where the exports go (replaced)")
    parser.add_argument("--no-write", action="store_true", help="print the table only; leave RESULTS.md alone")
    parser.add_argument("--worker", nargs=4, metavar=("FORMAT", "PATH", "THREADS", "SECONDS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def open_export(fmt: str, path: Path, threads: int | None) -> Any:
    """The export's separator in its runtime with `threads` threads (the SavedModel: None leaves
    TensorFlow's pools as they are, which can be set only before TensorFlow starts)."""
    if fmt == "saved_model":
        import tensorflow as tf

        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        from mss_tf.export import load_saved_model

        return load_saved_model(path)
    from mss_tf.portable import PortableSeparator

    return PortableSeparator(path, threads=threads or 1)


def worker(fmt: str, path: Path, threads: int, seconds: float) -> None:
    """In a child process: load time and real-time factor of one export; prints one JSON line."""
    import numpy as np

    import importlib

    for name in ("mss_tf", "tensorflow"):  # imported before the clock starts
        importlib.import_module(name)

    start = time.perf_counter()
    separator = open_export(fmt, path, threads)
    load = time.perf_counter() - start
    rate = separator.sample_rate
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    waves = np.stack([tone + 0.05 * rng.standard_normal(t.size), 0.7 * tone + 0.05 * rng.standard_normal(t.size)])
    start = time.perf_counter()
    separator.separate_model_rate(waves.astype(np.float32))
    print(json.dumps({"load_seconds": load, "rtf": (time.perf_counter() - start) / seconds}))


def measure(fmt: str, path: Path, threads: int, seconds: float) -> dict[str, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": str(threads)}
    result = subprocess.run([sys.executable, __file__, "--run", "-", "--worker", fmt, str(path), str(threads),
                             str(seconds)], capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{fmt} {path}: worker failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def size_mb(fmt: str, path: Path) -> float:
    if fmt == "saved_model":
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    meta = json.loads((path / "mss_tf.json").read_text())
    return (path / meta["file"]).stat().st_size / 1e6


def quality(fmt: str, path: Path, root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """uSDR per target (and the mixture's) of an export on the test songs of `root`, and its stems."""
    from mss_tf.data import musdb
    from mss_tf.evaluation import report

    separator = open_export(fmt, path, threads=None if fmt == "saved_model" else 2)
    stems: list[dict[str, Any]] = []

    def separate(mixture: Any, rate: int) -> dict[str, Any]:
        stems.append(separator.separate(mixture, rate))
        return stems[-1]

    rows = report.evaluate_tracks(separate, musdb.split_tracks(root, "test"), separator.targets, progress=False,
                                  bss="none")
    return report.summarize(rows, separator.targets, separator.name, 0, "test"), stems


def difference_db(reference: list[dict[str, Any]], stems: list[dict[str, Any]]) -> float:
    """How far below the reference stems (all songs and targets) the difference lies, in dB."""
    import numpy as np

    signal = sum(float(np.sum(np.square(r[t], dtype=np.float64))) for r in reference for t in r)
    error = sum(float(np.sum(np.square(r[t].astype(np.float64) - s[t]))) for r, s in zip(reference, stems) for t in r)
    return float(10 * np.log10(signal / max(error, 1e-30)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        fmt, path, threads, seconds = args.worker
        worker(fmt, Path(path), int(threads), float(seconds))
        return 0
    import shutil

    from mss_tf.data import demo
    from mss_tf.data.roots import data_dir
    from mss_tf.export import export_run

    root = args.musdb_root or demo.make_demo_set(data_dir() / "demo-musdb")  # reuses a complete demo set
    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    rows, results = [], []
    reference = None
    for fmt, variant in VARIANTS:
        out = args.work_dir / f"{fmt}-{variant}"
        start = time.perf_counter()
        export_run(args.run, out, fmt=fmt, variant=variant)
        export_seconds = time.perf_counter() - start
        speed = {n: measure(fmt, out, n, args.seconds) for n in THREADS}
        scores, stems = quality(fmt, out, root)
        usdr = {t: v["usdr"] for t, v in scores["targets"].items()}
        reference = reference or (usdr, stems)
        cost = sum(reference[0][t] - usdr[t] for t in usdr) / len(usdr)
        difference = difference_db(reference[1], stems) if fmt != "saved_model" else None
        entry = {"format": fmt, "variant": variant, "size_mb": size_mb(fmt, out), "export_seconds": export_seconds,
                 "load_seconds": speed[1]["load_seconds"], "rtf": {str(n): speed[n]["rtf"] for n in THREADS},
                 "usdr": usdr, "mixture_usdr": {t: v["usdr"] for t, v in scores["baseline"]["targets"].items()},
                 "cost_db": cost, "difference_db": difference}
        results.append(entry)
        print(json.dumps(entry), flush=True)
        rows.append([fmt, variant, f"{entry['size_mb']:.1f}", f"{entry['load_seconds']:.2f}",
                     f"{speed[1]['rtf']:.3f}", f"{speed[2]['rtf']:.3f}",
                     *[f"{usdr[t]:.2f}" for t in usdr], f"{cost:+.3f}",
                     "-" if difference is None else f"{difference:.1f}"])
    targets = list(results[0]["usdr"])
    mixture = results[0]["mixture_usdr"]
    rows.append(["(mixture as estimate)", "", "", "", "", "", *[f"{mixture[t]:.2f}" for t in targets], "", ""])
    config = json.loads((args.run / "config.json").read_text())
    table = markdown_table(["format", "variant", "size MB", "load s", "RTF 1 thread", "RTF 2 threads",
                            *[f"{t} uSDR" for t in targets], "cost dB", "difference dB"], rows)
    body = (f"{machine_line(machine())}\n\n`python benchmarks/export.py --run {args.run} --seconds {args.seconds:g}`: the run "
            f"{config['model']} ({args.run}), exported with its own chunk plan; speed on {args.seconds:g} s of stereo "
            f"audio at the model's rate, one child process per cell; uSDR (dB) per target on the test songs of "
            f"{root} (full length, stereo, through soxr resampling as separate.py); cost dB: the SavedModel's "
            f"mean uSDR minus the row's; difference dB: how far the row's stems differ from the SavedModel's, "
            f"below their energy, over all songs and targets (tests/test_portable.py asserts 60 dB or more for "
            f"float32 exports).\n\n{table}\n")
    if not args.no_write:
        write_json("export", {"machine": machine(), "run": str(args.run), "model": config["model"],
                              "seconds": args.seconds, "root": str(root), "results": results})
        write_section(SECTION, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
