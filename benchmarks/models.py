"""Model speed on CPU: parameters, forward time (3 s / 30 s of mono audio, batch 1 / 4),
training-step time (batch 2) and real-time factor of every neural preset; for the paper-size
BSRNN also the execution variants (tf.function, XLA jit_compile, fused LSTM kernel), the
achieved GFLOP/s and, with --torch-python, a PyTorch implementation of the same configuration
timed in the same run.

Writes benchmarks/results/models.json and the "Models (benchmarks/models.py)" section of
benchmarks/RESULTS.md. `--quick` (about a minute) times only 3 s at batch 1 and the training
step, with the paper-size presets once each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from common import machine, machine_line, markdown_table, write_json, write_section

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from mss_tf.losses import get_loss  # noqa: E402
from mss_tf.models.registry import build_model, get_preset  # noqa: E402

PAPER_PRESETS = ["bsrnn", "bsrnn-se"]
TINY_PRESETS = ["bsrnn-tiny", "bsrnn-se-tiny", "unet", "unet-tiny"]
REFERENCE_SECONDS = 4.0  # the PyTorch figure for bsrnn, 3 s, batch 1, this machine type


def model_flops(model: keras.Model, frames: int, batch: int) -> dict[str, float]:
    """Multiply-adds x 2 of a BSRNN forward pass, counted from its configuration (exact widths, no padding)."""
    k, n, h, m = len(model.band_widths), model.feature_dim, model.lstm_hidden, model.mask_hidden
    values = sum(model.band_widths) * 2 * model.channels
    positions = batch * frames * k
    blstm = 2 * model.num_modules * positions * 2 * 4 * h * (n + h)  # 2 paths, 2 directions
    projection = 2 * model.num_modules * positions * 2 * h * n
    band_split = batch * frames * values * n
    masks = len(model.targets) * (positions * n * m + batch * frames * m * 2 * values)
    macs = blstm + projection + band_split + masks
    return {"total_gflop": 2 * macs / 1e9, "blstm_gflop": 2 * blstm / 1e9}


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first call seconds incl. tracing/compilation, median of `repeats` further calls)."""
    start = time.perf_counter()
    np.asarray(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def forward_fn(model: keras.Model, jit: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    return tf.function(lambda x: model(x, training=False), jit_compile=jit, reduce_retracing=True)


def train_step_fn(model: keras.Model, preset: str, jit: bool) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    loss_fn = get_loss(get_preset(preset).training.loss, alpha=0.5, stft=get_preset(preset).stft)
    optimizer = keras.optimizers.Adam(1e-3)

    def step(mixture: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, model(mixture, training=True))
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, model.trainable_variables), 5.0)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return tf.function(step, jit_compile=jit)


def mixture(preset: str, seconds: float, batch: int) -> tf.Tensor:
    stft = get_preset(preset).stft
    frames = stft.n_frames(int(seconds * stft.sample_rate))
    return tf.random.stateless_normal([batch, frames, stft.n_bins, 2], seed=[0, 1])


TORCH_REFERENCE = r'''
import json, sys, time, statistics, torch, torch.nn as nn
torch.set_num_threads(int(sys.argv[2]))
widths, frames, repeats = json.loads(sys.argv[1]), int(sys.argv[3]), int(sys.argv[4])
N, H, M, L = 128, 256, 512, 12

class ResRNN(nn.Module):  # GroupNorm(1, N) over features at each position, BLSTM(2N), Linear back to N
    def __init__(s):
        super().__init__(); s.norm = nn.LayerNorm(N); s.rnn = nn.LSTM(N, H, batch_first=True, bidirectional=True); s.proj = nn.Linear(2 * H, N)
    def forward(s, x):  # (batch, steps, N)
        return x + s.proj(s.rnn(s.norm(x))[0])

class BSRNN(nn.Module):
    def __init__(s):
        super().__init__()
        s.split = nn.ModuleList([nn.Sequential(nn.LayerNorm(2 * w), nn.Linear(2 * w, N)) for w in widths])
        s.time = nn.ModuleList([ResRNN() for _ in range(L)]); s.band = nn.ModuleList([ResRNN() for _ in range(L)])
        s.mask = nn.ModuleList([nn.Sequential(nn.LayerNorm(N), nn.Linear(N, M), nn.Tanh(), nn.Linear(M, 4 * w), nn.GLU()) for w in widths])
    def forward(s, spec):  # (B, T, F, 2)
        B, T = spec.shape[:2]
        bands = torch.split(spec, widths, dim=2)
        x = torch.stack([f(b.reshape(B, T, -1)) for f, b in zip(s.split, bands)], 2)  # (B, T, K, N)
        K = x.shape[2]
        for t, b in zip(s.time, s.band):
            x = t(x.transpose(1, 2).reshape(B * K, T, N)).reshape(B, K, T, N).transpose(1, 2)
            x = b(x.reshape(B * T, K, N)).reshape(B, T, K, N)
        mask = torch.cat([f(x[:, :, k]).reshape(B, T, -1, 2) for k, f in enumerate(s.mask)], 2)
        re = mask[..., 0] * spec[..., 0] - mask[..., 1] * spec[..., 1]
        im = mask[..., 0] * spec[..., 1] + mask[..., 1] * spec[..., 0]
        return torch.stack([re, im], -1)

model = BSRNN().eval()
x = torch.randn(1, frames, sum(widths), 2)
with torch.inference_mode():
    model(x); times = []
    for _ in range(repeats):
        t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
print(json.dumps({"torch": torch.__version__, "params": sum(p.numel() for p in model.parameters()), "seconds": statistics.median(times)}))
'''


def torch_reference(python: str, widths: list[int], frames: int, repeats: int) -> dict[str, Any] | None:
    """Time the PyTorch BSRNN (same configuration) forward pass in another interpreter."""
    try:
        done = subprocess.run(
            [python, "-c", TORCH_REFERENCE, json.dumps(widths), str(tf.config.threading.get_intra_op_parallelism_threads() or 2),
             str(frames), str(repeats)], capture_output=True, text=True, timeout=1800, check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        print(f"PyTorch reference failed: {exc}", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s at batch 1 and the training step only")
    parser.add_argument("--presets", nargs="+", default=PAPER_PRESETS + TINY_PRESETS, help="presets to time")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per cell after the first (median)")
    parser.add_argument("--cell-budget", type=float, default=240.0,
                        help="skip a cell whose time, extrapolated from 3 s at batch 1, exceeds this many seconds")
    parser.add_argument("--torch-python", default=None,
                        help="python interpreter with torch installed: also time a PyTorch BSRNN of the same configuration")
    args = parser.parse_args()
    info = machine()
    cells = [(3.0, 1)] if args.quick else [(3.0, 1), (3.0, 4), (30.0, 1), (30.0, 4)]
    results: dict[str, Any] = {"machine": info, "quick": args.quick, "presets": [], "variants": [], "reference": {}}

    for preset in args.presets:
        model = build_model(preset)
        row: dict[str, Any] = {"preset": preset, "forward": [], "train_step": None}
        base = None
        for seconds, batch in cells:
            x = mixture(preset, seconds, batch)
            if base is not None and base * seconds / 3.0 * batch > args.cell_budget:
                row["forward"].append({"seconds": seconds, "batch": batch, "skipped": f"estimated {base * seconds / 3 * batch:.0f} s"})
                continue
            forward = forward_fn(model, jit=False)
            repeats = 1 if (base or 0) * seconds / 3.0 * batch > 20 else args.repeats
            first, median = timed(lambda: forward(x), repeats)
            base = base or median
            cell = {"seconds": seconds, "batch": batch, "first_call_s": round(first, 3), "time_s": round(median, 3),
                    "rtf": round(median / (seconds * batch), 4)}
            if preset.startswith("bsrnn"):
                flops = model_flops(model, int(x.shape[1]), batch)
                cell["gflop"] = round(flops["total_gflop"], 1)
                cell["gflop_per_s"] = round(flops["total_gflop"] / median, 1)
            row["forward"].append(cell)
            print(preset, cell, flush=True)
        row["params"] = model.count_params()
        training = get_preset(preset).training
        x = mixture(preset, training.train_seconds, 2)
        targets = tf.tile(x[:, tf.newaxis], [1, len(model.targets), 1, 1, 1]) * 0.5
        if preset.startswith("bsrnn"):
            # the Keras LSTM's while-loop gradient keeps every step's gates: at paper size, batch 2
            # of 3 s it needs more than 12 GB; the fused kernel (same weights) keeps ~7 tensors per step
            model = build_model(preset, lstm_implementation="fused")
            row["train_lstm"] = "fused"
        step = train_step_fn(model, preset, jit=False)
        first, median = timed(lambda: step(x, targets), 1 if preset in PAPER_PRESETS else args.repeats)
        row["train_step"] = {"seconds": training.train_seconds, "batch": 2, "first_call_s": round(first, 3), "time_s": round(median, 3)}
        print(preset, "train step", row["train_step"], flush=True)
        results["presets"].append(row)

    if "bsrnn" in args.presets:
        x = mixture("bsrnn", 3.0, 1)
        frames = int(x.shape[1])
        keras_model = build_model("bsrnn")
        keras_model(x[:, :4])
        flops = model_flops(keras_model, frames, 1)
        variants = [("tf.function, Keras LSTM", "keras", False), ("XLA jit_compile, Keras LSTM", "keras", True),
                    ("tf.function, fused BlockLSTMV2", "fused", False)]
        for label, implementation, jit in variants:
            model = build_model("bsrnn", lstm_implementation=implementation)
            model(x[:, :4])
            model.set_weights(keras_model.get_weights())
            forward = forward_fn(model, jit)
            first, median = timed(lambda: forward(x), args.repeats)
            variant = {"variant": label, "first_call_s": round(first, 2), "time_s": round(median, 3),
                       "gflop": round(flops["total_gflop"], 1), "gflop_per_s": round(flops["total_gflop"] / median, 1)}
            results["variants"].append(variant)
            print("bsrnn 3 s batch 1:", variant, flush=True)
        reference = {"source": "issue", "seconds": REFERENCE_SECONDS}
        if args.torch_python:
            measured = torch_reference(args.torch_python, keras_model.band_widths, frames, args.repeats)
            if measured:
                reference = {"source": f"measured, PyTorch {measured['torch']}", "seconds": round(measured["seconds"], 3),
                             "params": measured["params"]}
        reference["gflop_per_s"] = round(flops["total_gflop"] / reference["seconds"], 1)
        results["reference"] = reference
        print("reference:", reference, flush=True)

    path = write_json("models", results)
    write_section("Models (benchmarks/models.py)", render(results))
    print(f"wrote {path} and benchmarks/RESULTS.md")


def render(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [machine_line(info) + ("  (`--quick` run)" if results["quick"] else ""), ""]
    lines.append("CPU only, float32, `tf.function` graphs, random input; time = median wall-clock seconds per call "
                 "after a first (tracing) call; RTF = time / (audio seconds x batch). "
                 "GFLOP counts 2 x multiply-adds of the whole model from its configuration.")
    lines.append("")
    header = ["preset", "params"] + [f"fwd {int(c['seconds'])} s x{c['batch']} (RTF)" for c in results["presets"][0]["forward"]] + ["train step 2 x chunk"]
    rows = []
    for row in results["presets"]:
        cells = []
        for cell in row["forward"]:
            cells.append(f"skipped ({cell['skipped']})" if "skipped" in cell else f"{cell['time_s']:.3f} s ({cell['rtf']:.3f})")
        step = row["train_step"]
        lstm = ", fused LSTM" if row.get("train_lstm") == "fused" else ""
        rows.append([row["preset"], f"{row['params']:,}", *cells, f"{step['time_s']:.3f} s ({step['seconds']:g} s chunks{lstm})"])
    lines.append(markdown_table(header, rows))
    if results["variants"]:
        lines += ["", "Paper-size `bsrnn` (V7, 41 bands), one 3 s chunk at batch 1:", ""]
        rows = [[v["variant"], f"{v['time_s']:.2f}", f"{v['first_call_s']:.1f}", f"{v['gflop_per_s']:.1f}"] for v in results["variants"]]
        ref = results["reference"]
        rows.append([f"PyTorch reference ({ref['source']})", f"{ref['seconds']:.2f}", "", f"{ref['gflop_per_s']:.1f}"])
        lines.append(markdown_table(["variant", "time s", "first call s", "GFLOP/s"], rows))
        best = min(results["variants"], key=lambda v: v["time_s"])
        lines += ["", f"Best TensorFlow variant: {best['variant']}, {best['time_s']:.2f} s = "
                      f"{best['time_s'] / ref['seconds']:.2f} x the PyTorch reference ({best['gflop']:.0f} GFLOP per 3 s chunk)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
