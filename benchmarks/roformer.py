"""Paper-size BS-RoFormer against the PyTorch code it was ported from, side by side on this CPU:
the forward pass of one 8 s stereo chunk (audio in, audio out) and a training step at batch 2 of
8 s stereo segments, in TensorFlow execution variants and in the real reference
(ZFTurbo/Music-Source-Separation-Training's `BSRoformer`, run by benchmarks/peer_roformer.py in
the torch environment), with peak memory and, optionally, where our forward pass spends its time.

    python benchmarks/roformer.py --torch-python .venv-torch/bin/python --reference-repo DIR
        [--forward-rounds 5] [--train-rounds 3] [--no-forward] [--no-train] [--profile] [--quick]

Ours: the `bs-roformer` preset (D 384, 6 blocks, 8 heads of 64, 62 bands, stereo, one target,
44.1 kHz, n_fft 2048, hop 512, dropout 0.1), float32, weights seeded alike in every process.
  forward: `mss_tf.inference.chunks.separate_chunks` (STFT -> model -> iSTFT, the one call every
           separator and export makes per chunk) on one (1, 2, 352800) chunk, in a `tf.function`.
  train:   `Trainer.train_step` (the step train.py runs: forward, `--loss roformer_paper`,
           backward, global-norm clipping at 5, the non-finite guard, Adam at 5e-4) at batch 2
           on STFTs of 8 s stereo waveforms (the shards hold STFTs: no forward STFT in the step).
The reference: the same configuration (`peer_roformer.py` lists it); forward in eval mode under
inference_mode; train: its own loss (`model(x, target=y)`), backward, clip_grad_norm_(5), Adam.
At batch 2 x 8 s neither side fits in this machine's memory keeping every activation, so both
train with their transformers recomputed in the backward pass (`gradient_checkpointing=True`;
the reference's `use_torch_checkpoint=True`).

Every variant and the reference run in their own worker processes (peak RSS is per process) that
take turns, one call each per round, so a slow spell of the shared machine hits all alike; PyTorch
with torch.set_num_threads(N), TensorFlow with N intra- and inter-op threads (TF_NUM_*_THREADS=N; N:
--threads, default the machine's cores; 1 lets another job use the other core without either side
sharing its core). Workers
return freed memory to the system after each call (malloc_trim), so idle ones hold little.

Writes benchmarks/results/roformer.json, the "BS-RoFormer against PyTorch
(benchmarks/roformer.py)" section of benchmarks/RESULTS.md and the README block roformer-speed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from common import RESULTS_DIR, machine, machine_line, markdown_table, write_json, write_readme_block, write_section
from models import Worker, op_breakdown

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mss_tf.audio.spectrogram import stft  # noqa: E402
from mss_tf.config import TrainConfig  # noqa: E402
from mss_tf.inference.chunks import separate_chunks  # noqa: E402
from mss_tf.models.registry import build_model, get_preset, model_parameters  # noqa: E402
from mss_tf.training.loop import Trainer  # noqa: E402

PRESET = "bs-roformer"
# what a step at batch 2 x 8 s needs: measured on this machine (2026-12-02, 1 thread) with the
# transformers recomputed, a step held 5.9 GB of RSS at 2 x 1 s and 8.2 GB at 2 x 2 s (keeping every
# activation: 9.2 and 15.8 GB): some 21 GB at 2 x 8 s, more than this 24 GB machine has beside the
# reference's worker (the run with 2 x 8 s was killed for memory); --train-seconds makes the step fit
TRAIN_NOTE = ("Keeping every activation instead, a step of ours held 9.2 GB of RSS at batch 2 x 1 s and 15.8 GB at "
              "2 x 2 s against 5.9 and 8.2 GB recomputed (2026-12-02, this machine, one thread), so a step at the "
              "paper's 2 x 8 s (some 21 GB recomputed) does not fit here beside the reference's; the step is timed "
              "on shorter segments (`--train-seconds`), 3 s being the segment of the reference code's MUSDB18 configs.")
SECONDS = 8.0  # the training segment of the paper and of the public configs (chunk_size 352800)
TRAIN_BATCH = 2

# (label, model arguments, XLA jit_compile, environment); the first of each list is the default
# configuration. TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1: oneDNN's ops allocate with malloc instead of
# TensorFlow's pool for them (a BFC allocator, which keeps its high-water mark for the process's life).
SYSTEM_ALLOCATOR = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
FORWARD_VARIANTS = [
    ("fused blocks, blocked attention (default)", {}, False, {}),
    ("layer by layer, einsum attention (the reference's structure)",
     {"transformer_implementation": "layers", "attention_implementation": "einsum"}, False, {}),
    ("layer by layer, einsum attention, XLA jit_compile",
     {"transformer_implementation": "layers", "attention_implementation": "einsum"}, True, {}),
    ("fused blocks, einsum attention", {"attention_implementation": "einsum"}, False, {}),
    ("fused blocks, blocked attention, XLA jit_compile", {}, True, {}),
    ("fused blocks, blocked attention, oneDNN on the system allocator", {}, False, SYSTEM_ALLOCATOR),
]
TRAIN_VARIANTS = [
    ("fused blocks, blocked attention, gradient checkpointing", {"gradient_checkpointing": True}, False, {}),
    ("layer by layer, einsum attention, gradient checkpointing",
     {"transformer_implementation": "layers", "attention_implementation": "einsum", "gradient_checkpointing": True},
     False, {}),
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_memory() -> None:
    """Hand freed heap pages back to the system (glibc), so an idle worker holds little."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def waveforms(batch: int, seconds: float, seed: int) -> tf.Tensor:
    """(batch, 2, samples) random stereo audio at the preset's rate."""
    samples = int(round(seconds * get_preset(PRESET).stft.sample_rate))
    return 0.1 * tf.random.stateless_normal([batch, 2, samples], seed=[seed, 7])


def as_channels_last(spec: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.math.real(spec), tf.math.imag(spec)], axis=-1)  # (..., T, F, 2)


def build(kwargs: dict[str, Any]) -> keras.Model:
    """The preset with these arguments, weights seeded: the same in every worker process."""
    keras.utils.set_random_seed(0)
    model = build_model(PRESET, **kwargs)
    model(tf.zeros([1, 2, 4, get_preset(PRESET).stft.n_bins, 2]), training=False)
    return model


def make_call(mode: str, kwargs: dict[str, Any], jit: bool, seconds: float) -> tuple[Callable[[], Any], keras.Model]:
    """One forward pass of a chunk, or one training step, as a no-argument call."""
    model = build(kwargs)
    spec = get_preset(PRESET).stft
    if mode == "forward":
        chunk = waveforms(1, seconds, seed=0)
        forward = tf.function(lambda pieces: separate_chunks(model, spec, pieces), jit_compile=jit)
        return (lambda: forward(chunk)), model
    config = TrainConfig(model=PRESET, batch_size=TRAIN_BATCH, loss="roformer_paper", jit_compile=jit,
                         model_kwargs=kwargs).resolve()
    trainer = Trainer(model, config)
    mixture = as_channels_last(stft(waveforms(TRAIN_BATCH, seconds, seed=0), spec))  # (2, 2, T, F, 2)
    targets = as_channels_last(stft(0.5 * waveforms(TRAIN_BATCH, seconds, seed=1), spec))[:, tf.newaxis]  # (2, 1, 2, T, F, 2)
    return (lambda: trainer.train_step(mixture, targets)[0]), model


def serve(mode: str, label: str, seconds: float) -> None:
    """Worker mode: build one variant, time a first call, then one call per "run" line on stdin."""
    variants = FORWARD_VARIANTS if mode == "forward" else TRAIN_VARIANTS
    _, kwargs, jit, _ = next(v for v in variants if v[0] == label)
    call, model = make_call(mode, kwargs, jit, seconds)
    start = time.perf_counter()
    np.asarray(call())
    first = time.perf_counter() - start
    release_memory()
    print(json.dumps({"ready": label, "first_call_s": first, "params": model_parameters(model),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "tensorflow": tf.__version__}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run"):
            break
        start = time.perf_counter()
        np.asarray(call())
        seconds_taken = time.perf_counter() - start
        release_memory()
        print(json.dumps({"seconds": seconds_taken, "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


def compare(mode: str, labels: list[str], rounds: int, args: argparse.Namespace) -> dict[str, Any]:
    """Start a worker per TensorFlow variant and one for the reference, then `rounds` rounds in
    which each takes one timed call in turn. Returns per-entry times, first call and peak RSS."""
    script = str(Path(__file__).resolve())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": str(args.threads),
           "TF_NUM_INTEROP_THREADS": str(args.threads)}
    entries: dict[str, Worker] = {}
    threads = args.threads
    variants = {v[0]: v for v in (FORWARD_VARIANTS if mode == "forward" else TRAIN_VARIANTS)}
    for label in labels:  # one at a time: a worker's first call (tracing, compiling) runs alone
        print(f"{mode}: starting {label}", flush=True)
        seconds = args.seconds if mode == "forward" else args.train_seconds
        argv = [sys.executable, script, "--serve", mode, label, "--seconds", str(seconds)]
        entries[label] = Worker(argv, {**env, **variants[label][3]}, 1)
    reference = None
    if args.torch_python and args.reference_repo:
        argv = [args.torch_python, str(Path(__file__).with_name("peer_roformer.py")), "--reference-repo",
                str(args.reference_repo), "--mode", mode, "--threads", str(threads), "--seconds", str(seconds)]
        if mode == "train":
            argv.append("--checkpoint")
        print(f"{mode}: starting the PyTorch reference", flush=True)
        reference = "PyTorch reference"
        entries[reference] = Worker(argv, dict(os.environ), 1)
    replies: dict[str, list[dict[str, Any]]] = {name: [] for name in entries}
    loads = []
    for index in range(rounds):
        load_before = os.getloadavg()[0]
        for name, worker in entries.items():
            worker.proc.stdin.write("run\n")
            worker.proc.stdin.flush()
            replies[name].append(worker._reply())
        loads.append([round(load_before, 2), round(os.getloadavg()[0], 2)])
        print(f"{mode} round {index + 1}/{rounds} (load {loads[-1]}):",
              {name[:32]: round(r[-1]["seconds"], 2) for name, r in replies.items()}, flush=True)
    rows = []
    for name, worker in entries.items():
        worker.close()
        ready = worker.ready[0]
        times = [r["seconds"] for r in replies[name]]
        row = {"name": name, "reference": name == reference, "median_s": round(statistics.median(times), 2),
               "times_s": [round(t, 2) for t in times], "first_call_s": round(ready["first_call_s"], 1),
               "peak_rss_mb": max([ready["peak_rss_mb"]] + [r["peak_rss_mb"] for r in replies[name]]),
               "params": ready["params"]}
        if name == reference:
            row.update({k: ready[k] for k in ("torch", "threads", "attn_dropout", "ff_dropout", "clip_norm", "checkpoint")})
        else:
            row["tensorflow"] = ready["tensorflow"]
        rows.append(row)
    return {"rounds": rounds, "loadavg_per_round": loads, "rows": rows}


# --- where the forward pass goes ----------------------------------------------------------------

MATMULS = ("MatMul", "Einsum")  # in op types: _MklMatMul, _MklNativeFusedMatMul, _MklBatchMatMulV2, ...


def stage_of(op_name: str, op_type: str) -> str:
    """The stage of the forward pass an op belongs to, from its name scope and type."""
    if "feed_forward" in op_name:
        return "feed-forward (norm, two matmuls, GELU)"
    if "rotary_embed" in op_name:
        return "attention: rotary embedding of q and k"
    if "/attend/" in op_name:
        return "attention: scores, softmax, weighted sum"
    if "attention" in op_name:
        if any(kind in op_type for kind in MATMULS):
            return "attention: q/k/v, gate and output projections"
        return "attention: norm, gates, reshapes"
    if "band_split" in op_name:
        return "band split"
    if "mask_" in op_name:
        return "mask estimation"
    if "transformer" in op_name:
        return "transposes between the time and band transformers, final norm"
    return "STFT, iSTFT, masking, transposes"


def serve_profile(label: str, seconds: float) -> None:
    """Worker mode: op time of one traced forward pass of a variant, by stage (op names)."""
    _, kwargs, jit, _ = next(v for v in FORWARD_VARIANTS if v[0] == label)
    call, _ = make_call("forward", kwargs, jit, seconds)
    np.asarray(call())
    profile = op_breakdown(call, key=stage_of)
    by_type = op_breakdown(call)
    print(json.dumps({"ready": label, "stages": profile, "types": by_type}), flush=True)


def profile_forward(args: argparse.Namespace) -> list[dict[str, Any]]:
    script = str(Path(__file__).resolve())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = []
    for label, *_ in FORWARD_VARIANTS[:2]:
        worker = Worker([sys.executable, script, "--serve-profile", label, "--seconds", str(args.seconds)], env, 1)
        worker.close()
        out.append(worker.ready[0])
        print("profile:", json.dumps(out[-1])[:400], flush=True)
    return out


# --- report -----------------------------------------------------------------------------------


def render_table(result: dict[str, Any], what: str) -> str:
    rows = result["rows"]
    reference = next((r for r in rows if r["reference"]), None)
    table = []
    for row in rows:
        name = f"{row['name']} (PyTorch {row['torch']})" if row["reference"] else row["name"]
        ratio = f"{row['median_s'] / reference['median_s']:.2f}" if reference else ""
        table.append([name, f"{row['median_s']:.1f}", f"{min(row['times_s']):.1f}-{max(row['times_s']):.1f}",
                      f"{row['first_call_s']:.0f}", f"{row['peak_rss_mb'] / 1024:.1f}", ratio])
    return markdown_table([what, "median s", "range s", "first call s", "peak RSS GB", "x reference"], table)


def summary(results: dict[str, Any]) -> str:
    parts = []
    for mode, what in (("forward", f"forward pass of one {results['seconds']:g} s chunk"),
                       ("train", f"training step at batch {TRAIN_BATCH} x {results['train_seconds']:g} s")):
        result = results.get(mode)
        if not result:
            continue
        rows = result["rows"]
        reference = next((r for r in rows if r["reference"]), None)
        if reference is None:
            continue
        ours = rows[0]
        best = min((r for r in rows if not r["reference"]), key=lambda r: r["median_s"])
        text = (f"{what}: {ours['median_s']:.1f} s ({ours['name']}) against the reference's {reference['median_s']:.1f} s "
                f"= {ours['median_s'] / reference['median_s']:.2f} x")
        if best is not ours:
            text += f" (fastest: {best['name']}, {best['median_s'] / reference['median_s']:.2f} x)"
        text += (f"; peak RSS {ours['peak_rss_mb'] / 1024:.1f} GB against {reference['peak_rss_mb'] / 1024:.1f} GB")
        parts.append(text)
    return "; ".join(parts) + "." if parts else ""


def loads(result: dict[str, Any]) -> str:
    values = [v for pair in result["loadavg_per_round"] for v in pair]
    return f"{min(values):.1f}-{max(values):.1f}"


def render(results: dict[str, Any], readme: bool = False) -> str:
    info = results["machine"]
    lines = []
    if readme:
        lines.append(f"Paper-size `bs-roformer` against the PyTorch reference it was ported from "
                     f"({info['date']}, {info['cores']} cores of {info['cpu']}, `benchmarks/roformer.py`; "
                     "medians of interleaved rounds, each side in its own process, PyTorch with "
                     f"torch.set_num_threads({results['threads']}), TensorFlow {results['threads']} intra-op "
                     f"thread(s)): {summary(results)}")
        if results.get("train") and results["train_seconds"] < SECONDS:
            lines.append(f"The training step is timed at {results['train_seconds']:g} s segments: at the paper's "
                         f"{SECONDS:g} s ours needs more memory than this machine has beside the reference's "
                         "(benchmarks/RESULTS.md).")
        return " ".join(lines)
    kept = "".join(f" The {mode} part is that of the run of {date} (not rerun this time)." for mode, date in
                   results.get("kept", {}).items())
    lines += [machine_line(info) + ("  (`--quick` run)" if results["quick"] else "") + kept, "",
              "Paper-size `bs-roformer` (D 384, 6 blocks of a time and a band transformer, 8 heads of 64, 62 bands, "
              "stereo, one target, dropout 0.1, float32) and the reference, ZFTurbo/Music-Source-Separation-Training's "
              f"`BSRoformer` in the same configuration (`benchmarks/peer_roformer.py`, commit {results['reference_commit']}), "
              "on this CPU. Each TensorFlow variant and the reference run in their own processes and take turns, one "
              "call each per round; median and range over the rounds; peak RSS of each process (the model, its "
              f"inputs and everything the call allocates). PyTorch with torch.set_num_threads({results['threads']}), "
              f"TensorFlow with {results['threads']} intra-op thread(s) (`--threads`).", ""]
    if results.get("forward"):
        result = results["forward"]
        lines += [f"Forward pass of one 8 s stereo chunk, audio in, audio out (ours: `separate_chunks`, STFT -> model "
                  f"-> iSTFT; the reference's forward holds its STFT and iSTFT), batch 1, {result['rounds']} rounds "
                  f"(load average {loads(result)} on {info['cores']} cores during the rounds):", "",
                  render_table(result, "forward, 8 s chunk"), ""]
    if results.get("train"):
        result = results["train"]
        lines += [f"Training step at batch {TRAIN_BATCH} of {results['train_seconds']:g} s stereo segments ({result['rounds']} rounds, load average "
                  f"{loads(result)}): ours `Trainer.train_step` with `--loss roformer_paper` on the segments' STFTs, "
                  "the reference its own loss (waveform L1 + multi-resolution STFT L1) on the waveforms; both clip "
                  "the global gradient norm at 5 and step Adam. Both recompute each transformer's activations in the "
                  "backward pass (ours `gradient_checkpointing=True`, the reference `use_torch_checkpoint=True`). "
                  f"{TRAIN_NOTE}", "",
                  render_table(result, f"training step, batch {TRAIN_BATCH} x {results['train_seconds']:g} s"), ""]
    text = summary(results)
    if text:
        lines += [f"Ratio (ours / reference): {text}", ""]
    for profile in results.get("profile", []):
        stages = profile["stages"]
        total = sum(stages["op_seconds"].values())
        rows = [[stage, f"{seconds:.2f}", f"{100 * seconds / total:.0f}%"] for stage, seconds in stages["op_seconds"].items()]
        lines += [f"Where the forward pass goes, {profile['ready']}: op time of one traced call by stage "
                  f"({stages['wall_s']:.1f} s wall, {total:.1f} s of op time on {stages['threads']} threads; "
                  "ops of TensorFlow's executor, each timed from start to end, so ops that run side by side count twice):",
                  "", markdown_table(["stage", "op s", "share"], rows), ""]
        top = list(profile["types"]["op_seconds"].items())[:6]
        lines += ["By op type: " + ", ".join(f"{op} {t:.2f} s" for op, t in top) + ".", ""]
    return "\n".join(lines).strip()


def reference_commit(repo: Path | None, given: str | None) -> str:
    if given:
        return given
    if repo is None:
        return "unknown"
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (pass --reference-commit)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", default=None, help="python with torch, einops, beartype, rotary-embedding-torch")
    parser.add_argument("--reference-repo", type=Path, default=None,
                        help="work tree or extracted copy of ZFTurbo/Music-Source-Separation-Training")
    parser.add_argument("--reference-commit", default=None, help="the commit that copy is of (read with git if a work tree)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="threads of each side: torch.set_num_threads and TF_NUM_INTRAOP_THREADS (default: the cores)")
    parser.add_argument("--forward-rounds", type=int, default=5)
    parser.add_argument("--train-rounds", type=int, default=3)
    parser.add_argument("--forward-variants", nargs="*", default=None, help="labels (default: all)")
    parser.add_argument("--train-variants", nargs="*", default=None, help="labels (default: all)")
    parser.add_argument("--no-forward", action="store_true")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also the op-time breakdown of our forward pass")
    parser.add_argument("--render", action="store_true", help="rewrite RESULTS.md and the README block from the JSON")
    parser.add_argument("--quick", action="store_true", help="1 s of audio, 1 round each: checks the plumbing")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="forward chunk length (default 8)")
    parser.add_argument("--train-seconds", type=float, default=SECONDS,
                        help="training segment length (default 8: the paper's; 3 s is the reference's MUSDB18 configs')")
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-profile", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], args.seconds)
        return
    if args.serve_profile:
        serve_profile(args.serve_profile, args.seconds)
        return
    if args.render:
        results = json.loads((RESULTS_DIR / "roformer.json").read_text())
        write_section("BS-RoFormer against PyTorch (benchmarks/roformer.py)", render(results))
        write_readme_block("roformer-speed", render(results, readme=True))
        print(render(results))
        return
    if args.quick:
        args.seconds, args.train_seconds, args.forward_rounds, args.train_rounds = 1.0, 1.0, 1, 1
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "seconds": args.seconds,
                               "train_seconds": args.train_seconds, "threads": args.threads,
                               "reference_commit": reference_commit(args.reference_repo, args.reference_commit)}
    name = "roformer_quick" if args.quick else "roformer"
    # a part not run this time (--no-forward, --no-train) is kept from the last run's JSON, with its date
    previous_path = RESULTS_DIR / f"{name}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    for mode, skipped in (("forward", args.no_forward), ("train", args.no_train)):
        if skipped and mode in previous:
            results[mode] = previous[mode]
            results.setdefault("kept", {})[mode] = previous.get("machine", {}).get("date", "unknown")
            if mode == "train":
                results["train_seconds"] = previous.get("train_seconds", results["train_seconds"])
    if not args.no_forward:
        labels = args.forward_variants or [v[0] for v in FORWARD_VARIANTS]
        results["forward"] = compare("forward", labels, args.forward_rounds, args)
        write_json(name, results)  # kept if the training part fails (e.g. out of memory)
    if not args.no_train:
        labels = args.train_variants or [v[0] for v in TRAIN_VARIANTS]
        results["train"] = compare("train", labels, args.train_rounds, args)
    if args.profile:
        results["profile"] = profile_forward(args)
    path = write_json(name, results)
    if not args.quick:
        write_section("BS-RoFormer against PyTorch (benchmarks/roformer.py)", render(results))
        if results.get("forward") and results.get("train"):
            write_readme_block("roformer-speed", render(results, readme=True))
    print(render(results))
    print(f"wrote {path}" + ("" if args.quick else " and benchmarks/RESULTS.md"))


if __name__ == "__main__":
    main()
