"""Separation speed and memory of `separate.py`'s streaming path, per preset.

    python benchmarks/inference.py [--quick] [--presets unet bsrnn-small ...]

Each configuration runs in its own child process (`--worker`), which does what `separate.py`
does for one file: loads a run directory (`Separator.from_run`: 10 s chunks unless a row says 5, 1 s overlap, one
chunk per call, float32) and streams a generated stereo 44.1 kHz 16-bit wav through
`mss_tf.inference.separate_file`, writing every target the model makes as 32-bit float wav.
The runs hold untrained weights of each preset (speed and memory do not depend on the values).

- **load s**: building the model and restoring its checkpoint (the worker has imported TensorFlow).
- **separate s**: the `separate_file` call (read, resample to the model's rate and back, every
  chunk's STFT, model and iSTFT, the first call's tracing, writing); **RTF** = separate s /
  audio s (below 1: faster than real time). One run per cell: these are wall-clock times on a
  shared machine, read them as +-10 %.
- **peak RSS**: the child process's maximum resident memory (`ru_maxrss` from `os.wait4`),
  everything included (TensorFlow's own few hundred MB).

Inputs: 30 s and 5 min for every preset, except the paper-size `bsrnn` and `bsrnn-se` (30 s
only: at about 4 s per second of stereo audio on 2 cores, 5 min would take about 20 min each).
Memory: a 60-minute file with `unet`, and the in-memory path (`load_audio`, `Separator.separate`,
`save_audio`: separate.py before streaming) on the 5-minute file for comparison.
The paper-size presets also run with TensorFlow's default thread pools (separate.py's
`--threads auto` gives BSRNNs one intra-op thread per two cores) and with 5 s chunks.
`--quick`: `unet`, `bsrnn-tiny` and `bsrnn-se-tiny` on 30 s only.

Writes benchmarks/results/inference.json and the "Inference (benchmarks/inference.py)" section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, machine_line, markdown_table, write_json, write_section

from mss_tf.checkpoints import write_untrained_run  # noqa: E402

PRESETS = ["unet", "bsrnn-tiny", "bsrnn-se-tiny", "bsrnn-small", "bsrnn-se-small", "bsrnn", "bsrnn-se"]
QUICK_PRESETS = ["unet", "bsrnn-tiny", "bsrnn-se-tiny"]
PAPER_PRESETS = {"bsrnn", "bsrnn-se"}  # 30 s only
LENGTHS = [30.0, 300.0]
RATE = 44100
HOUR_PRESET = "unet"
PAPER_SHORT_CHUNK = 5.0  # seconds: the paper-size BSRNNs also run with this chunk, for their memory
SECTION = "Inference (benchmarks/inference.py)"


def write_song(path: Path, seconds: float, rate: int = RATE, block_seconds: int = 60) -> int:
    """A stereo tone-and-noise song as 16-bit wav, written in blocks; returns its frame count."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    total = int(round(seconds * rate))
    with soundfile.SoundFile(str(path), "w", rate, 2, subtype="PCM_16") as song:
        for start in range(0, total, block_seconds * rate):
            n = min(block_seconds * rate, total - start)
            t = (start + np.arange(n)) / rate
            wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.1 * t))
            song.write(np.stack([wave + 0.05 * rng.standard_normal(n), 0.7 * wave + 0.05 * rng.standard_normal(n)], 1))
    return total


def run_with_peak_rss(command: list[str], timeout: float | None = None) -> tuple[subprocess.CompletedProcess, int | None]:
    """Run `command` in a child process; returns it and the child's peak RSS in bytes, measured by
    a parent process that waits for that one child (os.wait4's rusage)."""
    parent = ("import os, subprocess, sys\n"
              "child = subprocess.Popen(sys.argv[1:])\n"
              "_, status, usage = os.wait4(child.pid, 0)\n"
              "child.returncode = os.waitstatus_to_exitcode(status)\n"
              "print('peak_rss_kib', usage.ru_maxrss, file=sys.stderr)\n"
              "sys.exit(child.returncode)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", parent, *command], capture_output=True, text=True, env=env,
                            timeout=timeout)
    kib = [int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("peak_rss_kib ")]
    return result, (kib[-1] * 1024 if kib else None)


def worker(job: dict[str, Any]) -> None:
    """In the child: load the run, separate one file (streaming or in memory), print timings as JSON."""
    start = time.perf_counter()
    from mss_tf.inference import Separator, separate_file
    from mss_tf.threads import configure_threads, model_class_at

    intra = configure_threads(job["threads"], model_class_at(job["run"]))  # as separate.py does
    separator = Separator.from_run(job["run"], chunk_seconds=job["chunk_seconds"])
    loaded = time.perf_counter()
    out = Path(job["out"])
    outputs = {target: out / f"{target}.wav" for target in separator.targets}
    if job["mode"] == "streaming":
        info = separate_file(separator, job["input"], outputs)
        frames = info["frames"]
    else:  # separate.py before streaming: the whole file in memory
        from mss_tf.audio import io as audio_io

        audio, rate = audio_io.load_audio(job["input"])
        stems = separator.separate(audio, rate)
        for target, path in outputs.items():
            audio_io.save_audio(path, stems[target], rate)
        frames = audio.shape[0]
    done = time.perf_counter()
    print(json.dumps({"load_s": loaded - start, "separate_s": done - loaded, "frames": frames, "intra_op_threads": intra,
                      "targets": separator.targets, "model_rate": separator.sample_rate}), flush=True)


def measure(run: Path, song: Path, seconds: float, preset: str, mode: str, work: Path, threads: str = "auto",
            chunk_seconds: float = 10.0) -> dict[str, Any]:
    out = work / "out"
    job = {"run": str(run), "input": str(song), "out": str(out), "mode": mode, "threads": threads,
           "chunk_seconds": chunk_seconds}
    began = time.perf_counter()
    result, peak = run_with_peak_rss([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)])
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"{preset} {seconds:.0f} s {mode}: worker failed\n{result.stderr[-3000:]}")
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    import soundfile

    lengths = {soundfile.info(str(p)).frames for p in out.glob("*.wav")}
    shutil.rmtree(out, ignore_errors=True)
    row = {"preset": preset, "mode": mode, "audio_s": seconds, "model_rate": timing["model_rate"], "threads": threads,
           "intra_op_threads": timing["intra_op_threads"], "chunk_seconds": chunk_seconds,
           "targets": len(timing["targets"]), "load_s": round(timing["load_s"], 2),
           "separate_s": round(timing["separate_s"], 2), "rtf": round(timing["separate_s"] / seconds, 4),
           "process_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20) if peak else None,
           "outputs_full_length": lengths == {timing["frames"]}}
    print(row, flush=True)
    return row


def render(results: dict[str, Any]) -> str:
    lines = [machine_line(results["machine"]) + ("  (`--quick` run)" if results["quick"] else ""), "",
             "`separate.py`'s streaming path (`mss_tf.inference.separate_file`) in a child process per cell, on a "
             "generated stereo 44.1 kHz 16-bit wav: chunks as in the table with 1 s overlap, one chunk per call, float32, every "
             "target the model makes written as 32-bit float wav; untrained weights. separate s: the whole "
             "`separate_file` call (read, resample to the model's rate and back, STFT, model, iSTFT, first-call "
             "tracing, write); RTF = separate s / audio s. load s: model build and checkpoint restore (TensorFlow already imported). Peak RSS: the "
             "child's `ru_maxrss` (TensorFlow included). One run per cell.", ""]
    rows = [r for r in results["rows"] if r["mode"] == "streaming" and r["audio_s"] <= 300]
    lines.append(markdown_table(
        ["preset", "model rate", "targets", "audio", "chunk", "threads", "load s", "separate s", "RTF", "peak RSS"],
        [[r["preset"], f"{r['model_rate'] / 1000:g} kHz", r["targets"], _duration(r["audio_s"]),
          f"{r.get('chunk_seconds', 10.0):g} s", _threads(r), f"{r['load_s']:.1f}", f"{r['separate_s']:.1f}",
          f"{r['rtf']:.3f}", f"{r['peak_rss_mb']} MB"] for r in rows]))
    lines += ["", "threads: `--threads auto` (separate.py's default: BSRNNs run with one intra-op thread per two cores "
              "and two inter-op threads, the two directions of each BLSTM side by side; the U-Net keeps TensorFlow's "
              "default) or `default` (TensorFlow's own pools, for comparison)."]
    skipped = [p for p in results["presets"] if p in PAPER_PRESETS]
    if skipped:
        lines += ["", f"{', '.join(f'`{p}`' for p in skipped)}: 30 s only (at their RTF a 5-minute file takes "
                  f"many minutes each), also with TensorFlow's default threads and with {PAPER_SHORT_CHUNK:g} s chunks "
                  "(`--chunk-seconds`), which bound their memory lower."]
    memory = [r for r in results["rows"] if r["mode"] != "streaming" or r["audio_s"] > 300]
    if memory:
        lines += ["", "Memory against the song's length (the same `unet` run):", ""]
        same = [r for r in results["rows"] if r["preset"] == HOUR_PRESET and r["mode"] == "streaming"] + \
               [r for r in memory if r["mode"] != "streaming"]
        lines.append(markdown_table(
            ["path", "audio", "separate s", "RTF", "peak RSS"],
            [["streaming (separate.py)" if r["mode"] == "streaming" else "in memory (load_audio + separate + save_audio)",
              _duration(r["audio_s"]), f"{r['separate_s']:.1f}", f"{r['rtf']:.3f}", f"{r['peak_rss_mb']} MB"]
             for r in sorted(same, key=lambda r: (r["mode"] != "streaming", r["audio_s"]))]))
    load = results.get("load_average", {})
    if load:
        niced = results.get("nice", 0) > 0
        lines += ["", f"1-minute load average at the start and end of the run: {load.get('start')} and {load.get('end')} "
                  f"on {results['machine']['cores']} cores (the benchmark's own child keeps it near the core count)" + (
                      f"; this run was at nice {results['nice']} beside other work, so these times are upper bounds."
                      if niced else "; nothing else ran beside it.")]
    bad = [f"{r['preset']} {_duration(r['audio_s'])}" for r in results["rows"] if not r["outputs_full_length"]]
    lines += ["", "Every output has the input's length." if not bad else f"Outputs of the wrong length: {', '.join(bad)}."]
    return "\n".join(lines)


def _threads(row: dict[str, Any]) -> str:
    mode = row.get("threads", "default")
    intra = row.get("intra_op_threads")
    return f"{mode} ({intra} intra-op)" if intra else f"{mode} (TF default)"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="unet, bsrnn-tiny and bsrnn-se-tiny on 30 s only; no memory rows")
    parser.add_argument("--presets", nargs="+", help=f"presets to time (default {' '.join(PRESETS)})")
    parser.add_argument("--no-memory", action="store_true", help="skip the 60-minute and in-memory rows")
    parser.add_argument("--work-dir", type=Path, default=None, help="where runs and songs are written (default: a temporary folder)")
    parser.add_argument("--print-only", action="store_true", help="print the RESULTS.md section instead of writing any result")
    parser.add_argument("--render", action="store_true", help="rewrite the RESULTS.md section from results/inference.json and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.render:
        from common import RESULTS_DIR

        write_section(SECTION, render(json.loads((RESULTS_DIR / "inference.json").read_text())))
        return
    presets = args.presets or (QUICK_PRESETS if args.quick else PRESETS)
    lengths = LENGTHS[:1] if args.quick else LENGTHS
    memory = not (args.quick or args.no_memory)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "presets": presets, "rows": [],
                               "load_average": {"start": round(os.getloadavg()[0], 2)}, "nice": os.nice(0)}
    work = Path(tempfile.mkdtemp(prefix="mss-bench-inference-", dir=args.work_dir))
    try:
        songs = {}
        for seconds in lengths + ([3600.0] if memory else []):
            songs[seconds] = work / f"song-{seconds:.0f}s.wav"
            write_song(songs[seconds], seconds)
        for preset in presets + ([HOUR_PRESET] if memory and HOUR_PRESET not in presets else []):
            run = write_untrained_run(work / "runs" / preset, preset)
            for seconds in lengths:
                if preset in presets and not (preset in PAPER_PRESETS and seconds > 30):
                    results["rows"].append(measure(run, songs[seconds], seconds, preset, "streaming", work))
            if preset in PAPER_PRESETS:  # TensorFlow's default threads, and half the chunk (memory)
                results["rows"].append(measure(run, songs[30.0], 30.0, preset, "streaming", work, threads="default"))
                results["rows"].append(measure(run, songs[30.0], 30.0, preset, "streaming", work,
                                               chunk_seconds=PAPER_SHORT_CHUNK))
            if memory and preset == HOUR_PRESET:
                results["rows"].append(measure(run, songs[3600.0], 3600.0, preset, "streaming", work))
                results["rows"].append(measure(run, songs[300.0], 300.0, preset, "in memory", work))
            if not args.print_only:
                write_json("inference", results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_average"]["end"] = round(os.getloadavg()[0], 2)
    if args.print_only:
        print(render(results))
        return
    path = write_json("inference", results)
    write_section(SECTION, render(results))
    print(f"wrote {path} and benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
