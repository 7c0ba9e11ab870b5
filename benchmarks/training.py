"""Training speed through the real loop (`mss_tf.training.loop.Trainer`), not a copy of its step.

    python benchmarks/training.py [--quick] [--torch-python .venv-torch/bin/python --peer-repo DIR]

1. **Steps and examples per second** of each preset, precision policy (float32, mixed_bfloat16,
   mixed_float16) and with/without XLA `jit_compile`: the loop's own distributed step (default
   strategy, all-reduce, global-norm clipping, coupled weight decay, loss scaling for float16,
   non-finite guard) on a fixed in-memory batch of the preset's crop length and batch size;
   median over `--steps` steps after a first (tracing) call. XLA cannot compile the fused
   BlockLSTM kernel, so BSRNN rows with XLA use the Keras LSTM (as `train.py --jit-compile` does).
2. **Input wait**: `train.py`'s loop on the demo set's shards (tf.data streaming, crops and
   online augmentation); the share of each epoch spent waiting for the next batch (`input_wait`
   in metrics.jsonl), epochs after the first.
3. **Paper-size BSRNN training step against the PyTorch peer** (amanteur/BandSplitRNN-PyTorch,
   V7 bands, mono, batch 2, 3 s, forward + backward + clipped Adam) with `--torch-python` and
   `--peer-repo` (a work tree of that repository): each side runs in its own process and they
   take turns, one step each per round, so a slow spell of the shared machine hits both alike.
   The TensorFlow side runs in float32 and in mixed_bfloat16.

Writes benchmarks/results/training.json and the "Training loop (benchmarks/training.py)" section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, machine_line, markdown_table, write_json, write_section

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

PRESETS = ["unet", "bsrnn-tiny", "bsrnn-se-tiny", "bsrnn-small", "bsrnn-se-small"]
PRECISIONS = ["float32", "mixed_bfloat16", "mixed_float16"]
INPUT_PRESETS = ["unet", "bsrnn-small"]


def make_trainer(preset: str, precision: str, jit: bool, batch: int | None = None, seconds: float | None = None):
    """A Trainer of `preset` with its training defaults, built like train.py builds it."""
    import keras

    from mss_tf.config import TrainConfig
    from mss_tf.models.registry import build_model, get_preset
    from mss_tf.training.distribute import precision_scope
    from mss_tf.training.loop import Trainer

    config = TrainConfig(model=preset, precision=precision, jit_compile=jit, batch_size=batch, train_seconds=seconds).resolve()
    if jit and get_preset(preset).model == "BSRNN":
        config.model_kwargs["lstm_implementation"] = "keras"
    keras.utils.set_random_seed(0)
    with precision_scope(precision):
        model = build_model(preset, **config.model_kwargs)
    trainer = Trainer(model, config, tempfile.mkdtemp(prefix="bench-training-"))
    spec = config.spectrogram
    shape = [int(config.batch_size), config.train_frames(), spec.n_bins, 2]
    mixture = 0.1 * tf.random.stateless_normal(shape, seed=[0, 1])
    targets = tf.stack([0.5 * mixture] * len(config.targets or []), axis=1)
    trainer._build(mixture)
    return trainer, mixture, targets, config


def loop_speed(preset: str, precision: str, jit: bool, steps: int) -> dict[str, Any]:
    """Median seconds per step of the loop's step on a fixed batch."""
    row: dict[str, Any] = {"preset": preset, "precision": precision, "jit": jit}
    try:
        trainer, mixture, targets, config = make_trainer(preset, precision, jit)
        start = time.perf_counter()
        float(trainer._train_step(mixture, targets)[0])
        row["first_call_s"] = round(time.perf_counter() - start, 2)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            loss, _, finite = trainer._train_step(mixture, targets)
            float(loss)
            times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a configuration TensorFlow cannot run is a result too
        row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        return row
    median = statistics.median(times)
    batch = int(config.batch_size)
    row.update({"batch": batch, "crop_seconds": float(config.train_seconds), "step_s": round(median, 4),
                "steps_per_s": round(1 / median, 2), "examples_per_s": round(batch / median, 2),
                "finite": bool(finite)})
    return row


def input_wait(preset: str, epochs: int, steps: int) -> dict[str, Any]:
    """`input_wait` of train_run on the demo shards: share of epoch time spent in next(iterator)."""
    from mss_tf.cli import data_dir
    from mss_tf.config import TrainConfig
    from mss_tf.data.demo import make_demo_set
    from mss_tf.training.run import train_run

    root = data_dir() / "demo-musdb"
    make_demo_set(root)
    config = TrainConfig(model=preset, epochs=epochs, steps_per_epoch=steps, early_stopping_patience=10**6)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-input-"))
    result = train_run(config, run_dir, root, None, progress=False, echo=lambda line: None)
    later = result["history"][1:] or result["history"]
    return {"preset": preset, "batch": int(config.batch_size), "epochs": epochs, "steps_per_epoch": steps,
            "input_wait": round(statistics.mean(r["input_wait"] for r in later), 4),
            "step_s": round(statistics.mean(r["seconds"] / steps for r in later), 4)}


def serve_paper_step(precision: str) -> None:
    """Worker mode: the paper-size bsrnn's loop step (batch 2, 3 s); one timed step per "run" line."""
    trainer, mixture, targets, _ = make_trainer("bsrnn", precision, False, batch=2, seconds=3.0)
    start = time.perf_counter()
    float(trainer._train_step(mixture, targets)[0])
    print(json.dumps({"ready": precision, "first_call_s": time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run"):
            break
        start = time.perf_counter()
        float(trainer._train_step(mixture, targets)[0])
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def paper_step_vs_peer(torch_python: str | None, peer_repo: str | None, rounds: int) -> dict[str, Any]:
    from models import Worker

    script = str(Path(__file__).resolve())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = {p: Worker([sys.executable, script, "--serve-paper-step", p], env, 1) for p in ("float32", "mixed_bfloat16")}
    peer = None
    if torch_python and peer_repo:
        from mss_tf.config import TrainConfig

        threads = str(os.cpu_count() or 2)
        frames = TrainConfig(model="bsrnn", train_seconds=3.0).resolve().train_frames()  # the same input shape as ours
        peer = Worker([torch_python, str(Path(__file__).with_name("peer_torch.py")), "--repo", peer_repo, "--mode", "train",
                       "--batch", "2", "--frames", str(frames), "--threads", threads], dict(os.environ), 1)
    times: dict[str, list[float]] = {name: [] for name in [*workers, *(["pytorch"] if peer else [])]}
    for index in range(rounds):
        for name, worker in workers.items():
            times[name].append(worker.run(name))
        if peer:
            times["pytorch"].append(peer.run("pytorch"))
        print(f"paper step round {index + 1}/{rounds}:", {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    result: dict[str, Any] = {"rounds": rounds}
    for name, worker in workers.items():
        result[name] = {"median_s": round(statistics.median(times[name]), 2), "times_s": [round(t, 2) for t in times[name]],
                        "first_call_s": round(worker.ready[0]["first_call_s"], 1)}
        worker.close()
    if peer:
        info = peer.ready[0]
        result["pytorch"] = {"median_s": round(statistics.median(times["pytorch"]), 2),
                             "times_s": [round(t, 2) for t in times["pytorch"]], "torch": info.get("torch"),
                             "params": info.get("params")}
        peer.close()
    return result


def render(results: dict[str, Any]) -> str:
    lines = [machine_line(results["machine"]) + ("  (`--quick` run)" if results["quick"] else ""), ""]
    lines.append("The loop's own step (`Trainer._train_step`: default strategy, all-reduce, clipping at the preset's "
                 "norm, coupled weight decay, precision policy, loss scaling for float16, non-finite guard) on a "
                 f"fixed batch; median of {results['steps']} steps after a first (tracing) call. Batch and crop "
                 "length are the preset's training defaults.")
    lines.append("")
    rows = []
    for row in results["speed"]:
        name = [row["preset"], row["precision"], "XLA" if row["jit"] else "-"]
        if "error" in row:
            rows.append([*name, "", "", "", "", f"fails: {row['error']}"])
        else:
            rows.append([*name, row["batch"], f"{row['crop_seconds']:g} s", row["steps_per_s"], row["examples_per_s"],
                         f"{row['first_call_s']:.1f} s"])
    lines.append(markdown_table(["preset", "precision", "jit", "batch", "crop", "steps/s", "examples/s",
                                 "first call"], rows))
    if results["input"]:
        lines += ["", "Waiting for input, `train.py`'s loop on the demo set's shards (tf.data streaming, crops, online "
                  "augmentation), epochs after the first; goal: under 5% of step time.", ""]
        lines.append(markdown_table(
            ["preset", "batch", "epochs x steps", "seconds per step", "input wait"],
            [[r["preset"], r["batch"], f"{r['epochs']} x {r['steps_per_epoch']}", f"{r['step_s']:.3f}",
              f"{100 * r['input_wait']:.1f}%"] for r in results["input"]]))
    paper = results.get("paper")
    if paper:
        lines += ["", f"Paper-size `bsrnn` training step (V7, mono, batch 2, 3 s, forward + backward + Adam with "
                  f"clipping at 5), the loop's step in worker processes taking turns with the PyTorch peer, "
                  f"median of {paper['rounds']} rounds:", ""]
        rows = [[f"mss-tf loop, {p}", paper[p]["median_s"], " / ".join(map(str, paper[p]["times_s"]))]
                for p in ("float32", "mixed_bfloat16")]
        if "pytorch" in paper:
            rows.append([f"PyTorch peer (amanteur/BandSplitRNN-PyTorch, torch {paper['pytorch']['torch']})",
                         paper["pytorch"]["median_s"], " / ".join(map(str, paper["pytorch"]["times_s"]))])
        lines.append(markdown_table(["implementation", "median s", "each round s"], rows))
        if "pytorch" in paper:
            for p in ("float32", "mixed_bfloat16"):
                lines.append(f"\n{p}: {paper[p]['median_s'] / paper['pytorch']['median_s']:.2f} x the PyTorch peer's time.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="float32 and mixed_bfloat16 without XLA, 5 steps, no paper step")
    parser.add_argument("--presets", nargs="+", default=PRESETS, help=f"presets to time (default {PRESETS})")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per configuration (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the paper-size step comparison")
    parser.add_argument("--torch-python", help="python with torch: also time the PyTorch peer's training step")
    parser.add_argument("--peer-repo", help="work tree of amanteur/BandSplitRNN-PyTorch (for --torch-python)")
    parser.add_argument("--serve-paper-step", metavar="PRECISION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_paper_step:
        serve_paper_step(args.serve_paper_step)
        return
    steps = 5 if args.quick else args.steps
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "steps": steps, "speed": [], "input": []}
    precisions = PRECISIONS[:2] if args.quick else PRECISIONS
    for preset in args.presets:
        for precision in precisions:
            for jit in ([False] if args.quick else [False, True]):
                row = loop_speed(preset, precision, jit, steps)
                print(row, flush=True)
                results["speed"].append(row)
    for preset in INPUT_PRESETS:
        row = input_wait(preset, epochs=2 if args.quick else 3, steps=20 if args.quick else 60)
        print(row, flush=True)
        results["input"].append(row)
    if not args.quick:
        results["paper"] = paper_step_vs_peer(args.torch_python, args.peer_repo, args.rounds)
    path = write_json("training", results)
    write_section("Training loop (benchmarks/training.py)", render(results))
    print(f"wrote {path} and benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
