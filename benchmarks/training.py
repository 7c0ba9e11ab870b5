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
4. **bfloat16 on this CPU (AVX-512 BF16)**: inference time of a 3 s chunk at batch 1 for
   `bsrnn-small` and the paper-size `bsrnn`, float32 against mixed_bfloat16 with the fused
   (float32-only) BlockLSTM and with the Keras LSTM (whose matmuls run in bfloat16), the same
   weights, interleaved calls, with the output's signal-to-difference ratio against float32; and
   the quality cost: `bsrnn-small` trained for `--bf16-steps` steps in each precision (same seed,
   same data) and evaluated on the demo test songs in float32 and in mixed_bfloat16.

`--sections` runs a subset; each section keeps its own date and machine in
benchmarks/results/training.json, and the "Training loop (benchmarks/training.py)" section of
benchmarks/RESULTS.md is rendered from all of them.
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

from common import RESULTS_DIR, machine, machine_line, markdown_table, write_json, write_readme_block, write_section

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

PRESETS = ["unet", "bsrnn-tiny", "bsrnn-se-tiny", "bsrnn-small", "bsrnn-se-small"]
PRECISIONS = ["float32", "mixed_bfloat16", "mixed_float16"]
INPUT_PRESETS = ["unet", "bsrnn-small"]
SECTIONS = ["speed", "input", "paper", "bf16"]


def make_trainer(preset: str, precision: str, jit: bool, batch: int | None = None, seconds: float | None = None):
    """A Trainer of `preset` with its training defaults, built like train.py builds it."""
    import keras

    from mss_tf.config import TrainConfig
    from mss_tf.models.registry import build_model, get_preset
    from mss_tf.models.registry import precision_scope
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
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        row["error"] = f"{type(exc).__name__}: {(lines[-1] if lines else '')[:200]}"  # TF puts the cause last
        return row
    median = statistics.median(times)
    batch = int(config.batch_size)
    row.update({"batch": batch, "crop_seconds": float(config.train_seconds), "step_s": round(median, 4),
                "steps_per_s": round(1 / median, 2), "examples_per_s": round(batch / median, 2),
                "finite": bool(finite)})
    return row


def input_wait(preset: str, epochs: int, steps: int) -> dict[str, Any]:
    """`input_wait` of train_run on the demo shards: share of epoch time spent in next(iterator)."""
    from mss_tf.data.roots import data_dir
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
    """The loop's paper-size step in float32, then in mixed_bfloat16, each in its own worker
    taking turns with the PyTorch peer's (one step each per round). One TensorFlow worker at a
    time: a paper-size training step holds about 10 GB (BlockLSTM keeps every gate of every
    step for the backward pass), so two beside the peer do not fit in 24 GB."""
    from models import Worker

    script = str(Path(__file__).resolve())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    peer = None
    if torch_python and peer_repo:
        from mss_tf.config import TrainConfig

        threads = str(os.cpu_count() or 2)
        frames = TrainConfig(model="bsrnn", train_seconds=3.0).resolve().train_frames()  # the same input shape as ours
        peer = Worker([torch_python, str(Path(__file__).with_name("peer_torch.py")), "--repo", peer_repo, "--mode", "train",
                       "--batch", "2", "--frames", str(frames), "--threads", threads], dict(os.environ), 1)
    result: dict[str, Any] = {"rounds": rounds}
    peer_times: list[float] = []
    for precision in ("float32", "mixed_bfloat16"):
        worker = Worker([sys.executable, script, "--serve-paper-step", precision], env, 1)
        ours, theirs = [], []
        for index in range(rounds):
            ours.append(worker.run(precision))
            if peer:
                theirs.append(peer.run("pytorch"))
            print(f"paper step {precision} round {index + 1}/{rounds}: {ours[-1]:.2f} s"
                  + (f", PyTorch {theirs[-1]:.2f} s" if theirs else ""), flush=True)
        result[precision] = {"median_s": round(statistics.median(ours), 2), "times_s": [round(t, 2) for t in ours],
                             "first_call_s": round(worker.ready[0]["first_call_s"], 1)}
        if theirs:
            result[precision]["peer_median_s"] = round(statistics.median(theirs), 2)
            result[precision]["ratio"] = round(statistics.median(ours) / statistics.median(theirs), 3)
        worker.close()
        peer_times += theirs
    if peer:
        info = peer.ready[0]
        result["pytorch"] = {"median_s": round(statistics.median(peer_times), 2),
                             "times_s": [round(t, 2) for t in peer_times], "torch": info.get("torch"),
                             "params": info.get("params")}
        peer.close()
    return result


INFERENCE_VARIANTS = [  # (label, precision, lstm implementation)
    ("float32, fused BlockLSTM", "float32", "auto"),
    ("mixed_bfloat16, fused BlockLSTM (float32 LSTM)", "mixed_bfloat16", "auto"),
    ("float32, Keras LSTM", "float32", "keras"),
    ("mixed_bfloat16, Keras LSTM", "mixed_bfloat16", "keras"),
]


def bf16_inference(preset: str, rounds: int) -> list[dict[str, Any]]:
    """Forward pass of a 3 s chunk at batch 1 in each INFERENCE_VARIANTS, the same weights,
    one call of each per round; median seconds and the output's SNR against float32 (dB)."""
    import keras

    from mss_tf.models.registry import build_model
    from mss_tf.models.registry import precision_scope
    from mss_tf.config import TrainConfig

    config = TrainConfig(model=preset, train_seconds=3.0).resolve()
    spec = config.spectrogram
    x = 0.1 * tf.random.stateless_normal([1, config.train_frames(), spec.n_bins, 2], seed=[0, 2])
    keras.utils.set_random_seed(0)
    weights = None
    forwards, outputs = {}, {}
    for label, precision, lstm in INFERENCE_VARIANTS:
        with precision_scope(precision):
            model = build_model(preset, lstm_implementation=lstm)
        model(x[:, :8], training=False)
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights(weights)
        forwards[label] = tf.function(lambda inputs, m=model: tf.cast(m(inputs, training=False), tf.float32))
        start = time.perf_counter()
        outputs[label] = forwards[label](x).numpy()
        print(f"  {preset} {label}: first call {time.perf_counter() - start:.1f} s", flush=True)
    times: dict[str, list[float]] = {label: [] for label in forwards}
    for _ in range(rounds):
        for label, forward in forwards.items():
            start = time.perf_counter()
            forward(x).numpy()
            times[label].append(time.perf_counter() - start)
    reference = outputs[INFERENCE_VARIANTS[0][0]]
    rows = []
    for label, precision, lstm in INFERENCE_VARIANTS:
        error = float(np.sum((outputs[label] - reference) ** 2))
        snr = 10 * np.log10(float(np.sum(reference**2)) / error) if error > 0 else float("inf")
        rows.append({"preset": preset, "variant": label, "precision": precision, "lstm": lstm,
                     "median_s": round(statistics.median(times[label]), 3),
                     "times_s": [round(t, 3) for t in times[label]], "snr_vs_float32_db": round(snr, 1)})
        print(rows[-1], flush=True)
    return rows


def bf16_quality(steps: int, work_dir: Path) -> list[dict[str, Any]]:
    """bsrnn-small trained `steps` steps in float32 and in mixed_bfloat16, each evaluated in both."""
    from quality import evaluate_run, train_and_evaluate

    from mss_tf.data.roots import data_dir
    from mss_tf.data.demo import make_demo_set

    root = make_demo_set(data_dir() / "demo-musdb")
    rows = []
    for train_precision in ("float32", "mixed_bfloat16"):
        run_dir = work_dir / f"bsrnn-small-{train_precision}"
        trained = train_and_evaluate("bsrnn-small", root, run_dir, steps=steps, precision=train_precision)
        for infer_precision in ("float32", "mixed_bfloat16"):
            result = trained if infer_precision == "float32" else evaluate_run(run_dir, root, infer_precision)
            row = {"train_precision": train_precision, "inference_precision": infer_precision,
                   "steps": trained["steps"], "train_seconds": trained["train_seconds"],
                   "separate_seconds": result["separate_seconds"],
                   "usdr": {t: round(v["usdr"], 3) for t, v in result["targets"].items()},
                   "average": round(result["average"]["usdr"], 3)}
            print(row, flush=True)
            rows.append(row)
    return rows


def readme_bf16(results: dict[str, Any]) -> str:
    """The README's summary of what bfloat16 buys on this CPU (from the speed, paper and bf16 sections)."""
    bf16, speed, paper = results["bf16"], results.get("speed", {}).get("rows", []), results.get("paper", {})
    parts = [f"On this CPU ({bf16['machine']['date']}, {bf16['machine']['cores']} cores of {bf16['machine']['cpu']}):"]

    def step(preset: str, precision: str) -> float | None:
        row = next((r for r in speed if r["preset"] == preset and r["precision"] == precision and not r["jit"]), None)
        return row.get("step_s") if row else None

    ratios = [f"{p} {step(p, 'mixed_bfloat16') / step(p, 'float32'):.2f}x" for p in PRESETS
              if step(p, "float32") and step(p, "mixed_bfloat16")]
    if ratios:
        parts.append("a `mixed_bfloat16` training step takes " + ", ".join(ratios) + " the float32 step's time;")
    if paper.get("mixed_bfloat16") and paper.get("float32"):
        parts.append(f"(paper-size `bsrnn`: {paper['mixed_bfloat16']['median_s']} s against "
                     f"{paper['float32']['median_s']} s);")
    for preset in ("bsrnn-small", "bsrnn"):
        rows = {r["variant"]: r for r in bf16.get("inference", []) if r["preset"] == preset}
        if rows:
            base = rows[INFERENCE_VARIANTS[0][0]]["median_s"]
            fused = rows[INFERENCE_VARIANTS[1][0]]
            keras_bf16 = rows[INFERENCE_VARIANTS[3][0]]
            parts.append(f"`{preset}` inference of a 3 s chunk {fused['median_s'] / base:.2f}x float32's time with "
                         f"the fused LSTM ({keras_bf16['median_s'] / base:.2f}x with the Keras LSTM in bfloat16, output "
                         f"{keras_bf16['snr_vs_float32_db']:.0f} dB from float32's);")
    quality = {(r["train_precision"], r["inference_precision"]): r for r in bf16.get("quality", [])}
    if quality:
        f32, b16 = quality[("float32", "float32")], quality[("mixed_bfloat16", "mixed_bfloat16")]
        parts.append(f"`bsrnn-small` trained {f32['steps']} steps on the demo set scores {b16['average']:.2f} dB average "
                     f"uSDR trained and run in bfloat16 against {f32['average']:.2f} dB in float32 "
                     f"({quality[('float32', 'mixed_bfloat16')]['average']:.2f} dB for the float32 model run in bfloat16).")
    return " ".join(parts) + " Details: `benchmarks/RESULTS.md`, \"Training loop\"."


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    speed = results.get("speed")
    if speed:
        lines += [machine_line(speed["machine"]) + ("  (`--quick` run)" if speed["quick"] else ""), ""]
        lines += render_speed(speed)
    if results.get("input"):
        lines += ["", machine_line(results["input"]["machine"]), ""] + render_input(results["input"]["rows"])
    if results.get("paper"):
        lines += ["", machine_line(results["paper"]["machine"]), ""] + render_paper(results["paper"])
    if results.get("bf16"):
        lines += ["", "### bfloat16 on this CPU", "", machine_line(results["bf16"]["machine"]), ""]
        lines += render_bf16(results["bf16"])
    return "\n".join(lines)


def render_speed(results: dict[str, Any]) -> list[str]:
    lines = []
    lines.append("The loop's own step (`Trainer._train_step`: default strategy, all-reduce, clipping at the preset's "
                 "norm, coupled weight decay, precision policy, loss scaling for float16, non-finite guard) on a "
                 f"fixed batch; median of {results['steps']} steps after a first (tracing) call. Batch and crop "
                 "length are the preset's training defaults.")
    lines.append("")
    rows = []
    for row in results["rows"]:
        name = [row["preset"], row["precision"], "XLA" if row["jit"] else "-"]
        if "error" in row:
            error = row["error"].split(" Detected at node")[0]  # TensorFlow's traceback of the graph adds nothing
            rows.append([*name, "", "", "", "", f"fails: {error}"])
        else:
            rows.append([*name, row["batch"], f"{row['crop_seconds']:g} s", row["steps_per_s"], row["examples_per_s"],
                         f"{row['first_call_s']:.1f} s"])
    lines.append(markdown_table(["preset", "precision", "jit", "batch", "crop", "steps/s", "examples/s",
                                 "first call"], rows))
    return lines


def render_input(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["Waiting for input, `train.py`'s loop on the demo set's shards (tf.data streaming, crops, online "
             "augmentation), epochs after the first; goal: under 5% of step time.", ""]
    lines.append(markdown_table(
        ["preset", "batch", "epochs x steps", "seconds per step", "input wait"],
        [[r["preset"], r["batch"], f"{r['epochs']} x {r['steps_per_epoch']}", f"{r['step_s']:.3f}",
          f"{100 * r['input_wait']:.1f}%"] for r in rows]))
    return lines


def render_paper(paper: dict[str, Any]) -> list[str]:
    lines = []
    if paper:
        lines += [f"Paper-size `bsrnn` training step (V7, mono, batch 2, 3 s, forward + backward + Adam with "
                  f"clipping at 5): the loop's step in a worker process taking turns with the PyTorch peer's, one "
                  f"step each per round, {paper['rounds']} rounds in float32, then {paper['rounds']} in "
                  "mixed_bfloat16 (one TensorFlow worker at a time: each holds about 10 GB); medians:", ""]
        rows = [[f"mss-tf loop, {p}", paper[p]["median_s"], " / ".join(map(str, paper[p]["times_s"]))]
                for p in ("float32", "mixed_bfloat16")]
        if "pytorch" in paper:
            rows.append([f"PyTorch peer (amanteur/BandSplitRNN-PyTorch, torch {paper['pytorch']['torch']})",
                         paper["pytorch"]["median_s"], " / ".join(map(str, paper["pytorch"]["times_s"]))])
        lines.append(markdown_table(["implementation", "median s", "each round s"], rows))
        if "pytorch" in paper:
            for p in ("float32", "mixed_bfloat16"):
                lines.append(f"\n{p}: {paper[p]['ratio']:.2f} x the PyTorch peer's time in the same rounds "
                             f"({paper[p]['median_s']} s against {paper[p]['peer_median_s']} s).")
    return lines


def render_bf16(bf16: dict[str, Any]) -> list[str]:
    lines = []
    if bf16.get("inference"):
        lines += [f"Inference, one 3 s chunk at batch 1 (`tf.function`, the same weights in every variant), median of "
                  f"{bf16['rounds']} interleaved rounds. TensorFlow's fused BlockLSTM has no bfloat16 kernel, so "
                  "with it only the band split, norms, dense layers and mask estimation run in bfloat16; the Keras LSTM "
                  "runs its matmuls in bfloat16 too. SNR: the output against the float32 fused output.", ""]
        lines.append(markdown_table(["preset", "variant", "median s", "x float32 fused", "SNR vs float32"], [
            [r["preset"], r["variant"], f"{r['median_s']:.3f}",
             f"{r['median_s'] / next(q['median_s'] for q in bf16['inference'] if q['preset'] == r['preset']):.2f}",
             "exact" if r["snr_vs_float32_db"] == float("inf") else f"{r['snr_vs_float32_db']:.1f} dB"]
            for r in bf16["inference"]]))
    if bf16.get("quality"):
        from mss_tf import TARGETS

        lines += ["", f"Quality cost: `bsrnn-small` trained {bf16['quality'][0]['steps']} steps on the demo set in "
                  "each precision (same seed and data), evaluated on the demo test songs (uSDR dB, full length, "
                  "stereo) with the model run in each precision.", ""]
        lines.append(markdown_table(
            ["trained in", "run in", "train min"] + list(TARGETS) + ["average"],
            [[r["train_precision"], r["inference_precision"], f"{r['train_seconds'] / 60:.1f}"]
             + [f"{r['usdr'][t]:.2f}" for t in TARGETS] + [f"{r['average']:.2f}"]
             for r in bf16["quality"]]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="float32 and mixed_bfloat16 without XLA, 5 steps, no paper step")
    parser.add_argument("--presets", nargs="+", default=PRESETS, help=f"presets to time (default {PRESETS})")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per configuration (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the paper-size step comparison")
    parser.add_argument("--torch-python", help="python with torch: also time the PyTorch peer's training step")
    parser.add_argument("--peer-repo", help="work tree of amanteur/BandSplitRNN-PyTorch (for --torch-python)")
    parser.add_argument("--bf16-steps", type=int, default=1200, help="training steps of each bfloat16 quality run")
    parser.add_argument("--bf16-rounds", type=int, default=5, help="interleaved rounds of the bfloat16 inference timing")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="what to measure (default: all; --quick skips paper and bf16); the others keep their "
                             "last results")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-training"),
                        help="where the bfloat16 quality runs are written (replaced)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite RESULTS.md's section and README's block from results/training.json")
    parser.add_argument("--serve-paper-step", metavar="PRECISION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_paper_step:
        serve_paper_step(args.serve_paper_step)
        return
    if args.render:
        results = json.loads((RESULTS_DIR / "training.json").read_text())
        write_section("Training loop (benchmarks/training.py)", render(results))
        if results.get("bf16"):
            write_readme_block("bf16", readme_bf16(results))
        print("rewrote benchmarks/RESULTS.md and README.md from benchmarks/results/training.json")
        return
    sections = [s for s in args.sections if not (args.quick and s in ("paper", "bf16"))]
    steps = 5 if args.quick else args.steps
    path = RESULTS_DIR / "training.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if "speed" in results and isinstance(results["speed"], list):  # the first layout: one machine for all
        results = {}
    if "speed" in sections:
        speed: dict[str, Any] = {"machine": machine(), "quick": args.quick, "steps": steps, "rows": []}
        precisions = PRECISIONS[:2] if args.quick else PRECISIONS
        for preset in args.presets:
            for precision in precisions:
                for jit in ([False] if args.quick else [False, True]):
                    row = loop_speed(preset, precision, jit, steps)
                    print(row, flush=True)
                    speed["rows"].append(row)
        results["speed"] = speed
        write_json("training", results)
    if "input" in sections:
        rows = []
        for preset in INPUT_PRESETS:
            row = input_wait(preset, epochs=2 if args.quick else 3, steps=20 if args.quick else 60)
            print(row, flush=True)
            rows.append(row)
        results["input"] = {"machine": machine(), "rows": rows}
        write_json("training", results)
    if "paper" in sections:
        results["paper"] = {"machine": machine(), **paper_step_vs_peer(args.torch_python, args.peer_repo, args.rounds)}
        write_json("training", results)
    if "bf16" in sections:
        bf16: dict[str, Any] = {"machine": machine(), "rounds": args.bf16_rounds, "inference": []}
        for preset in ("bsrnn-small", "bsrnn"):
            bf16["inference"] += bf16_inference(preset, args.bf16_rounds)
        bf16["quality"] = bf16_quality(args.bf16_steps, args.work_dir)
        results["bf16"] = bf16
        write_readme_block("bf16", readme_bf16(results))
    path = write_json("training", results)
    write_section("Training loop (benchmarks/training.py)", render(results))
    print(f"wrote {path} and benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
