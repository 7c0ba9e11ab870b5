"""Model speed on CPU: parameters, forward time (3 s / 30 s of mono audio, batch 1 / 4),
training-step time (batch 2) and real-time factor of every neural preset; for the paper-size
BSRNN also the execution variants (Keras LSTM, XLA jit_compile, the fused LSTM kernel with and
without oneDNN, and with one BLSTM direction per core), the achieved GFLOP/s, a per-stage
profile of its forward pass and, with --torch-python, PyTorch of the same configuration: a
compact in-file implementation and, with --peer-repo, the public peer amanteur/BandSplitRNN-PyTorch
(benchmarks/peer_torch.py --mode forward). The variants and PyTorch run in worker processes
that take turns, one call each per round, so a slow spell of a shared machine hits all of them
alike.

    python benchmarks/models.py [--quick] [--torch-python .venv-torch/bin/python [--peer-repo DIR]]

Writes benchmarks/results/models.json and the "Models (benchmarks/models.py)" section of
benchmarks/RESULTS.md. `--quick` (about a minute) times only 3 s at batch 1 and the training
step, with the paper-size presets once each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from common import machine, machine_line, markdown_table, write_json, write_readme_block, write_section

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from mss_tf.config import TrainConfig  # noqa: E402
from mss_tf.models.registry import build_model, get_preset, model_parameters  # noqa: E402
from mss_tf.training.loop import Trainer  # noqa: E402

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


def train_step_fn(model: keras.Model, preset: str, batch: int) -> Callable[[tf.Tensor, tf.Tensor], Any]:
    """The step `train.py` trains with (`Trainer.train_step`: the preset's loss, weight decay and
    clipping, the non-finite guard, Adam), at the preset's training defaults and this batch."""
    config = TrainConfig(model=preset, batch_size=batch).resolve()
    return Trainer(model, config).train_step


def mixture(preset: str, seconds: float, batch: int) -> tf.Tensor:
    stft = get_preset(preset).stft
    frames = stft.n_frames(int(seconds * stft.sample_rate))
    return tf.random.stateless_normal([batch, frames, stft.n_bins, 2], seed=[0, 1])


TORCH_REFERENCE = r"""
import json, sys, time, torch, torch.nn as nn
torch.set_num_threads(int(sys.argv[2]))
widths, frames = json.loads(sys.argv[1]), int(sys.argv[3])
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
    start = time.perf_counter(); model(x); first = time.perf_counter() - start
    print(json.dumps({"ready": "pytorch", "first_call_s": first, "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters())}), flush=True)
    for line in sys.stdin:  # one timed forward pass per "run ..." line, so runs interleave with TensorFlow's
        if not line.startswith("run"):
            break
        start = time.perf_counter(); model(x); print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""

def direction_threads() -> int:
    """Intra-op threads of the "a BLSTM direction per core" variant: the cores shared by the two
    directions of a block, which TensorFlow runs side by side on 2 inter-op threads."""
    return max(1, (os.cpu_count() or 2) // 2)


# Execution variants of the paper-size bsrnn (3 s, batch 1):
# (label, lstm_implementation, jit_compile, oneDNN, intra-op threads (0: TensorFlow's default, one per core)).
VARIANTS = [
    ("tf.function, Keras LSTM", "keras", False, True, 0),
    ("XLA jit_compile, Keras LSTM", "keras", True, True, 0),
    ("tf.function, fused BlockLSTM, oneDNN off", "fused", False, False, 0),
    ("tf.function, fused BlockLSTM (default on CPU)", "fused", False, True, 0),
    ("tf.function, fused BlockLSTM, intra-op threads = cores / 2 (a BLSTM direction per core)", "fused", False, True, -1),
]


def set_threads(intra: int) -> None:
    """Before TensorFlow starts: intra > 0 -> that many intra-op threads and 2 inter-op threads
    (the two BLSTM directions side by side); -1 -> direction_threads(); 0 -> TensorFlow's defaults."""
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(direction_threads() if intra < 0 else intra)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, tf.config.threading.get_inter_op_parallelism_threads()))


def serve_variants(labels: list[str], intra: int) -> None:
    """Worker mode: build the named variants, then time one forward pass per "run LABEL" line on stdin."""
    set_threads(intra)
    x = mixture("bsrnn", 3.0, 1)
    reference = build_model("bsrnn")
    reference(x[:, :4])
    forwards = {}
    for label, implementation, jit, *_ in VARIANTS:
        if label not in labels:
            continue
        model = build_model("bsrnn", lstm_implementation=implementation)
        model(x[:, :4])
        model.set_weights(reference.get_weights())  # same weights in every variant (and process: seeded)
        forward = forward_fn(model, jit)
        start = time.perf_counter()
        np.asarray(forward(x))
        forwards[label] = forward
        print(json.dumps({"ready": label, "first_call_s": time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run "):
            break
        label = line[4:].strip()
        start = time.perf_counter()
        np.asarray(forwards[label](x))
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


class Worker:
    """A benchmark process that answers "run LABEL" with one timed call (lets runs interleave)."""

    def __init__(self, argv: list[str], env: dict[str, str], expected: int) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = [self._reply() for _ in range(expected)]

    def _reply(self) -> dict[str, Any]:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark worker {self.proc.args[:3]} exited with {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def call(self, label: str) -> dict[str, Any]:
        """One timed call: the worker's reply ({"seconds": ...} and whatever else it reports)."""
        self.proc.stdin.write(f"run {label}\n")
        self.proc.stdin.flush()
        return self._reply()

    def run(self, label: str) -> float:
        return float(self.call(label)["seconds"])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare_variants(
    torch_python: str | None, peer_repo: str | None, rounds: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time every variant and the PyTorch implementations in worker processes, one call each per
    round, interleaved, so that all of them see the same machine conditions; report medians over
    the rounds. Returns (TensorFlow variants, PyTorch references)."""
    x = mixture("bsrnn", 3.0, 1)
    frames = int(x.shape[1])
    model = build_model("bsrnn")
    flops = model_flops(model, frames, 1)
    script = str(Path(__file__).resolve())
    workers: list[tuple[Worker, list[str]]] = []
    for onednn, intra in sorted({(v[3], v[4]) for v in VARIANTS}, reverse=True):
        labels = [label for label, _, _, flag, threads in VARIANTS if (flag, threads) == (onednn, intra)]
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
        argv = [sys.executable, script, "--serve", *labels, "--serve-threads", str(intra)]
        workers.append((Worker(argv, env, len(labels)), labels))
    threads = str(os.cpu_count() or 2)  # PyTorch: torch.set_num_threads(cores), its default
    torch_workers: dict[str, Worker] = {}
    if torch_python:
        candidates = {"PyTorch reference (in-file, LayerNorm blocks)": [
            torch_python, "-c", TORCH_REFERENCE, json.dumps(model.band_widths), threads, str(frames)]}
        if peer_repo:
            candidates["PyTorch peer amanteur/BandSplitRNN-PyTorch"] = [
                torch_python, str(Path(__file__).with_name("peer_torch.py")), "--repo", peer_repo, "--mode", "forward",
                "--batch", "1", "--frames", str(frames), "--threads", threads]
        for name, argv in candidates.items():
            try:
                torch_workers[name] = Worker(argv, dict(os.environ), 1)
            except (OSError, RuntimeError) as exc:
                print(f"{name} failed: {exc}", file=sys.stderr)
    first = {r["ready"]: r["first_call_s"] for worker, _ in workers for r in worker.ready}
    times: dict[str, list[float]] = {label: [] for label, *_ in VARIANTS}
    torch_times: dict[str, list[float]] = {name: [] for name in torch_workers}
    for round_index in range(rounds):
        for worker, labels in workers:
            for label in labels:
                times[label].append(worker.run(label))
        for name, worker in torch_workers.items():
            torch_times[name].append(worker.run("pytorch"))
        print(f"round {round_index + 1}/{rounds}:", {k[:40]: round(v[-1], 2) for k, v in {**times, **torch_times}.items()},
              flush=True)
    for worker, _ in workers:
        worker.close()
    variants = []
    for label, implementation, jit, onednn, intra in VARIANTS:
        median = statistics.median(times[label])
        variants.append({"variant": label, "lstm": implementation, "jit": jit, "onednn": onednn,
                         "intra_op_threads": direction_threads() if intra < 0 else intra,
                         "first_call_s": round(first[label], 2), "time_s": round(median, 3),
                         "times_s": [round(t, 3) for t in times[label]], "gflop": round(flops["total_gflop"], 1),
                         "gflop_per_s": round(flops["total_gflop"] / median, 1)})
    references = []
    for name, worker in torch_workers.items():
        worker.close()
        info = worker.ready[0]
        median = statistics.median(torch_times[name])
        references.append({"source": name, "peer": "peer" in name, "torch": info["torch"], "threads": int(threads),
                           "seconds": round(median, 3), "times_s": [round(t, 3) for t in torch_times[name]],
                           "params": info["params"], "gflop_per_s": round(flops["total_gflop"] / median, 1)})
    if not references:
        references.append({"source": "the issue's figure (no PyTorch run)", "peer": False, "seconds": REFERENCE_SECONDS,
                           "gflop_per_s": round(flops["total_gflop"] / REFERENCE_SECONDS, 1)})
    return variants, references


# --- per-stage profile of the paper-size forward pass --------------------------------------


def stage_flops(model: keras.Model, frames: int) -> dict[str, float]:
    """GFLOP (2 x multiply-adds, exact band widths) of each stage of a batch-1 forward pass."""
    k, n, h, m = len(model.band_widths), model.feature_dim, model.lstm_hidden, model.mask_hidden
    values = sum(model.band_widths) * 2 * model.channels
    positions = frames * k
    block = positions * (2 * 4 * h * (n + h) + 2 * h * n)  # both directions + projection, per block
    return {"band split": 2 * frames * values * n / 1e9,
            "time-axis blocks": 2 * model.num_modules * block / 1e9,
            "band-axis blocks": 2 * model.num_modules * block / 1e9,
            "mask estimation": 2 * len(model.targets) * (positions * n * m + frames * m * 2 * values) / 1e9}


def op_breakdown(forward: Callable[[], Any], key: Callable[[str, str], str] | None = None) -> dict[str, Any]:
    """Op time by type over one traced forward pass (tf.profiler), summed over TensorFlow's threads;
    `key(op name, op type)` groups by something else."""
    import collections
    import glob
    import tempfile

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        np.asarray(forward())
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    by_type: collections.Counter = collections.Counter()
    threads = set()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "op name:op type"
                if ":" in name and not name.endswith(":Process"):  # not the executor's own span
                    op, op_type = name.rsplit(":", 1)
                    by_type[key(op, op_type) if key else op_type] += event.duration_ps / 1e12
                    threads.add(line.name)
    return {"wall_s": round(wall, 3), "threads": len(threads),
            "op_seconds": {op: round(t, 3) for op, t in by_type.most_common()}}


def serve_profile(intra: int, rounds: int) -> None:
    """Worker mode: per-stage times of the paper-size bsrnn forward pass (3 s, batch 1) with the
    given thread setting, each stage its own tf.function on the activations it sees in the
    model, interleaved over `rounds`; the BLSTM recurrences (BlockLSTM, both directions) of one
    block alone; and the op-type breakdown of one traced forward pass. Prints one JSON line."""
    set_threads(intra)
    x = mixture("bsrnn", 3.0, 1)
    model = build_model("bsrnn")
    model(x[:, :4])
    frames, modules = int(x.shape[1]), model.num_modules
    flat = tf.reshape(x, [1, frames, -1])  # (1, T, F*2), as BSRNN.call builds it for mono
    features = model.band_split(flat)  # (1, T, K, N)
    block = model.band_sequence[0]
    after_time = block.time_rnn(features)
    n = model.feature_dim

    def sequence(rnn: Any, y: tf.Tensor) -> tf.Tensor:  # the block's normalised time-major input (S, M, N)
        seq = tf.transpose(y, rnn._perm)  # (T, 1, K, N) or (K, 1, T, N)
        return rnn.norm(tf.reshape(seq, [seq.shape[0], -1, n]))

    time_seq, band_seq = sequence(block.time_rnn, features), sequence(block.band_rnn, after_time)
    forward = forward_fn(model, jit=False)
    stages = {  # name: (call, times per forward pass)
        "band split": (tf.function(lambda: model.band_split(flat)), 1),
        "time-axis blocks": (tf.function(lambda: block.time_rnn(features)), modules),
        "  of which BLSTM recurrences": (tf.function(lambda: block.time_rnn.blstm.directions(time_seq)), modules),
        "band-axis blocks": (tf.function(lambda: block.band_rnn(after_time)), modules),
        "  of which BLSTM recurrences ": (tf.function(lambda: block.band_rnn.blstm.directions(band_seq)), modules),
        "mask estimation": (tf.function(lambda: model.mask_estimators[0](after_time)), 1),
        "whole forward pass": (lambda: forward(x), 1),
    }
    times: dict[str, list[float]] = {name: [] for name in stages}
    for call, _ in stages.values():
        tf.nest.map_structure(np.asarray, call())
    for _ in range(rounds):
        for name, (call, _) in stages.items():
            start = time.perf_counter()
            tf.nest.map_structure(np.asarray, call())
            times[name].append(time.perf_counter() - start)
    flops = stage_flops(model, frames)
    rows = []
    for name, (_, count) in stages.items():
        seconds = count * statistics.median(times[name])
        gflop = flops.get(name.strip(), None)
        if name.strip() == "of which BLSTM recurrences":
            gflop = 2 * modules * frames * len(model.band_widths) * 2 * 4 * model.lstm_hidden * (n + model.lstm_hidden) / 1e9
        if name == "whole forward pass":
            gflop = model_flops(model, frames, 1)["total_gflop"]
        rows.append({"stage": name, "calls": count, "seconds": round(seconds, 3),
                     "gflop": round(gflop, 2) if gflop else None,
                     "gflop_per_s": round(gflop / seconds, 1) if gflop else None})
    try:
        ops = op_breakdown(lambda: forward(x))
    except Exception as exc:  # noqa: BLE001 - the profiler's file layout is not a stable API
        ops = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    print(json.dumps({"ready": "profile", "intra_op_threads": direction_threads() if intra < 0 else intra,
                      "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                      "stages": rows, "ops": ops}), flush=True)


def profile_stages(rounds: int) -> list[dict[str, Any]]:
    """The per-stage profile (serve_profile) with TensorFlow's default threads and with a BLSTM
    direction per core, each in its own process."""
    script = str(Path(__file__).resolve())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    profiles = []
    for intra in (0, -1):
        worker = Worker([sys.executable, script, "--serve-profile", str(intra), "--rounds", str(rounds)], env, 1)
        profiles.append(worker.ready[0])
        worker.close()
        print("profile:", json.dumps(profiles[-1])[:600], flush=True)
    return profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s at batch 1 and the training step only")
    parser.add_argument("--presets", nargs="+", default=PAPER_PRESETS + TINY_PRESETS, help="presets to time")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per cell after the first (median)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of the bsrnn execution-variant comparison and of the stage profile (median)")
    parser.add_argument("--cell-budget", type=float, default=900.0,
                        help="skip a cell whose time, extrapolated from 3 s at batch 1, exceeds this many seconds")
    parser.add_argument("--torch-python", default=None,
                        help="python interpreter with torch installed: also time a PyTorch BSRNN of the same configuration")
    parser.add_argument("--peer-repo", default=None,
                        help="work tree of amanteur/BandSplitRNN-PyTorch (with --torch-python): also time its forward pass")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-stage profile of the paper-size bsrnn")
    parser.add_argument("--serve", nargs="+", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-profile", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_variants(args.serve, args.serve_threads)
        return
    if args.serve_profile is not None:
        serve_profile(args.serve_profile, args.rounds)
        return
    info = machine()
    cells = [(3.0, 1)] if args.quick else [(3.0, 1), (3.0, 4), (30.0, 1), (30.0, 4)]
    results: dict[str, Any] = {"machine": info, "quick": args.quick, "presets": [], "variants": [], "references": [],
                               "profile": []}

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
        row["params"] = model_parameters(model)
        training = get_preset(preset).training
        x = mixture(preset, training.train_seconds, 2)
        targets = tf.tile(x[:, tf.newaxis], [1, len(model.targets), 1, 1, 1]) * 0.5
        step = train_step_fn(model, preset, batch=2)
        first, median = timed(lambda: step(x, targets), 1 if preset in PAPER_PRESETS else args.repeats)
        row["train_step"] = {"seconds": training.train_seconds, "batch": 2, "first_call_s": round(first, 3), "time_s": round(median, 3)}
        print(preset, "train step", row["train_step"], flush=True)
        results["presets"].append(row)
        model = step = None  # free this preset before the next

    if results["presets"]:  # keep the preset table even if the comparison below fails
        write_json("models", results)
        write_section("Models (benchmarks/models.py)", render(results))
    if "bsrnn" in args.presets:
        peer_repo = args.peer_repo if args.torch_python else None
        results["variants"], results["references"] = compare_variants(args.torch_python, peer_repo, args.rounds)
        print("references:", results["references"], flush=True)
        if not args.no_profile and not args.quick:
            results["profile"] = profile_stages(args.rounds)

    path = write_json("models", results)
    if results["presets"]:
        write_section("Models (benchmarks/models.py)", render(results))
    if results["variants"]:
        write_readme_block("bsrnn-speed", render_variants(results, readme=True))
    print(f"wrote {path} and benchmarks/RESULTS.md")


def render(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [machine_line(info) + ("  (`--quick` run)" if results["quick"] else ""), ""]
    lines.append("CPU only, float32, `tf.function` graphs, random input, TensorFlow's default threads; time = median "
                 "wall-clock seconds per call after a first (tracing) call; RTF = time / (audio seconds x batch). "
                 "GFLOP counts 2 x multiply-adds of the whole model from its configuration.")
    lines.append("")
    header = ["preset", "params"] + [f"fwd {int(c['seconds'])} s x{c['batch']} (RTF)" for c in results["presets"][0]["forward"]] + ["train step 2 x chunk"]
    rows = []
    for row in results["presets"]:
        cells = []
        for cell in row["forward"]:
            cells.append(f"skipped ({cell['skipped']})" if "skipped" in cell else f"{cell['time_s']:.3f} s ({cell['rtf']:.3f})")
        step = row["train_step"]
        rows.append([row["preset"], f"{row['params']:,}", *cells, f"{step['time_s']:.3f} s ({step['seconds']:g} s chunks)"])
    lines.append(markdown_table(header, rows))
    if results["variants"]:
        lines += ["", render_variants(results)]
    if results.get("profile"):
        lines += ["", render_profile(results)]
    return "\n".join(lines)


def render_variants(results: dict[str, Any], readme: bool = False) -> str:
    """The paper-size bsrnn execution variants against PyTorch (RESULTS.md and the README block)."""
    variants, references = results["variants"], results["references"]
    rounds = len(variants[0]["times_s"])
    when = f" ({results['machine']['date']}, {results['machine']['cores']} cores of {results['machine']['cpu']}, `benchmarks/models.py`)" if readme else ""
    lines = [f"Paper-size `bsrnn` (V7, 41 bands), one 3 s chunk at batch 1, the same weights in every TensorFlow variant{when}; "
             f"median and range of {rounds} interleaved rounds (each variant and PyTorch take turns, one call "
             "each per round, in their own processes; PyTorch with torch.set_num_threads(cores)):", ""]
    rows = [[v["variant"], f"{v['time_s']:.2f}", f"{min(v['times_s']):.2f}-{max(v['times_s']):.2f}",
             f"{v['first_call_s']:.1f}", f"{v['gflop_per_s']:.1f}"] for v in variants]
    for ref in references:
        spread = f"{min(ref['times_s']):.2f}-{max(ref['times_s']):.2f}" if "times_s" in ref else ""
        label = f"{ref['source']} (PyTorch {ref['torch']})" if "torch" in ref else ref["source"]
        rows.append([label, f"{ref['seconds']:.2f}", spread, "", f"{ref['gflop_per_s']:.1f}"])
    lines.append(markdown_table(["variant", "median s", "range s", "first call s", "GFLOP/s"], rows))
    best = min(variants, key=lambda v: v["time_s"])
    default = next(v for v in variants if "default on CPU" in v["variant"])
    ref = next((r for r in references if r.get("peer")), references[0])
    name = "the PyTorch peer's" if ref.get("peer") else f"{ref['source']}'s"
    lines += ["", f"Fastest TensorFlow variant: {best['variant']}, {best['time_s']:.2f} s = "
                  f"{best['time_s'] / ref['seconds']:.2f} x {name} time ({best['gflop']:.0f} GFLOP per 3 s chunk, "
                  f"{best['gflop_per_s']:.0f} GFLOP/s); the default configuration: {default['time_s'] / ref['seconds']:.2f} x."]
    others = [r for r in references if r is not ref]
    for other in others:
        lines[-1] += f" Against {other['source']}: {best['time_s'] / other['seconds']:.2f} x (default: {default['time_s'] / other['seconds']:.2f} x)."
    return "\n".join(lines)


def render_profile(results: dict[str, Any]) -> str:
    """Per-stage profile of the paper-size bsrnn forward pass, per thread setting."""
    lines = ["Where a paper-size `bsrnn` forward pass (3 s, batch 1) goes: each stage timed alone as its own "
             "`tf.function` on the activations it sees in the model (one block x 12 for the BLSTM blocks; "
             "\"BLSTM recurrences\" = the two BlockLSTM ops of a block, running side by side), median of "
             f"{len(results['variants'][0]['times_s']) if results['variants'] else ''} rounds; GFLOP from the configuration.", ""]
    header = ["stage"]
    for profile in results["profile"]:
        header += [f"s ({profile['intra_op_threads'] or 'default'} intra-op threads)", "GFLOP/s"]
    header.insert(1, "GFLOP")
    rows = []
    for i, stage in enumerate(results["profile"][0]["stages"]):
        row = [stage["stage"].strip().replace("of which", "- of which"), f"{stage['gflop']:.1f}" if stage["gflop"] else ""]
        for profile in results["profile"]:
            cell = profile["stages"][i]
            row += [f"{cell['seconds']:.2f}", f"{cell['gflop_per_s']:.0f}" if cell["gflop_per_s"] else ""]
        rows.append(row)
    lines.append(markdown_table(header, rows))
    for profile in results["profile"]:
        ops = profile["ops"]
        if "op_seconds" not in ops:
            continue
        total = sum(ops["op_seconds"].values())
        top = list(ops["op_seconds"].items())[:5]
        shares = ", ".join(f"{op} {t:.2f} s ({100 * t / total:.0f}%)" for op, t in top)
        threads = (f"{profile['intra_op_threads']} intra-op, {profile['inter_op_threads']} inter-op threads"
                   if profile["intra_op_threads"] else "TensorFlow's default threads")
        lines += ["", f"Op time of one traced forward pass ({threads}; {ops['wall_s']:.2f} s wall, {total:.2f} s of op time "
                      f"on {ops['threads']} threads): {shares}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
