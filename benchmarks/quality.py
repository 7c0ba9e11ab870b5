"""Separation quality per target of each preset after the same wall-clock training budget.

    python benchmarks/quality.py [--minutes 8] [--models unet bsrnn-tiny bsrnn-se-tiny nmf]

Every neural preset trains on the procedural demo set (all four targets, the preset's own
training defaults, early stopping off so each gets the whole budget) for `--minutes` of
training time, one preset at a time; NMF fits its dictionaries (it has no budget to spend).
Each is evaluated on the demo test songs (full length, stereo, uSDR per target) beside the
mixture-as-estimate floor. Writes `benchmarks/results/quality.json`, the training curves
(`benchmarks/results/quality_curves.png`: validation uSDR per target against training
minutes) and the "Separation quality" section of `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, machine, machine_line, markdown_table, write_json, write_section

from mss_tf import TARGETS
from mss_tf.utils import atomic_path

DEFAULT_MODELS = ["unet", "bsrnn-tiny", "bsrnn-se-tiny", "bsrnn-small", "bsrnn-se-small", "nmf"]
# Validation runs once per epoch; epochs of roughly 20-40 s on 2 CPU cores give curves with
# enough points without spending much of the budget on validation.
STEPS_PER_EPOCH = {"unet": 200, "unet-tiny": 200}
DEFAULT_STEPS_PER_EPOCH = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="training time per neural preset (default 8)")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help=f"presets to compare (default {DEFAULT_MODELS})")
    parser.add_argument("--musdb-root", type=Path, help="MUSDB18-HQ-layout folder (default: the demo set in data/demo-musdb)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-quality"), help="where the runs are written (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--no-write", action="store_true", help="print the table only; leave RESULTS.md alone")
    return parser.parse_args(argv)


def train_and_evaluate(
    model: str, root: Path, run_dir: Path, *, minutes: float | None = None, steps: int | None = None,
    loss: str | None = None, seed: int = 0, precision: str = "float32",
) -> dict[str, Any]:
    """Train `model` on all four targets for `minutes` of training time or `steps` steps (early
    stopping off) in `precision`, evaluate its best checkpoint (in float32) on the test songs,
    return results.json's dict with `train_seconds`, `steps` and the validation `curve` added."""
    from mss_tf.config import TrainConfig
    from mss_tf.evaluation import report
    from mss_tf.models.registry import is_neural
    from mss_tf.training.run import train_run

    config = TrainConfig(model=model, model_kwargs={"targets": list(TARGETS)}, seed=seed, loss=loss, precision=precision)
    if is_neural(model):
        config.steps_per_epoch = STEPS_PER_EPOCH.get(model, DEFAULT_STEPS_PER_EPOCH)
        if steps is not None:
            config.epochs = max(1, steps // config.steps_per_epoch)
        else:
            config.epochs = 1_000_000  # the budget ends training
            config.max_minutes = minutes
        config.early_stopping_patience = 1_000_000
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.monotonic()
    train_run(config, run_dir, root, None, progress=False, echo=lambda line: print(f"  [{model}] {line}", flush=True))
    train_seconds = time.monotonic() - started
    results = evaluate_run(run_dir, root)
    results["loss"] = config.loss
    results["precision"] = precision
    results["train_seconds"] = round(train_seconds, 1)
    results["curve"] = _curve(run_dir)
    results["steps"] = config.steps_per_epoch * len(results["curve"]) if is_neural(model) else 0
    # seconds of (mono) training audio the model saw: what its minutes bought
    results["audio_seconds_seen"] = results["steps"] * int(config.batch_size) * float(config.train_seconds)
    report.write_results(results, run_dir)
    return results


def evaluate_run(run_dir: Path, root: Path, precision: str = "float32") -> dict[str, Any]:
    """uSDR per target of a run's best checkpoint, run in `precision`, on the test songs of `root`
    (full length, stereo; uSDR only, no BSSEval), with `separate_seconds`."""
    from mss_tf.data import musdb
    from mss_tf.evaluation import report
    from mss_tf.inference import Separator
    from mss_tf.models.registry import model_parameters

    separator = Separator.from_run(run_dir, precision=precision)
    rows = report.evaluate_tracks(separator.separate, musdb.split_tracks(root, "test"), separator.targets,
                                  progress=False, bss="none")  # uSDR: these benchmarks compare training budgets
    results = report.summarize(rows, separator.targets, separator.name, model_parameters(separator.model), "test")
    results["separate_seconds"] = round(results["separate_seconds"], 1)  # separation alone, summed over tracks
    return results


def _curve(run_dir: Path) -> list[dict[str, Any]]:
    """Per epoch: training minutes so far and validation uSDR per target (empty for NMF)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    curve, minutes = [], 0.0
    for line in path.read_text().splitlines():
        record = json.loads(line)
        minutes += record["seconds"] / 60.0
        curve.append({"epoch": record["epoch"], "minutes": round(minutes, 2), "valid_usdr": record.get("valid_usdr", {})})
    return curve


def plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TARGETS), figsize=(4 * len(TARGETS), 3.2), sharex=True, sharey=True)
    for ax, target in zip(axes, TARGETS):
        for result in results:
            curve = [p for p in result["curve"] if target in p["valid_usdr"]]
            if curve:  # NMF has no training curve (its test score is in the table)
                ax.plot([p["minutes"] for p in curve], [p["valid_usdr"][target] for p in curve], marker=".", label=result["model"])
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_title(f"{target}: validation uSDR")
        ax.set_xlabel("training minutes")
    axes[0].set_ylabel("dB (0 dB = silence)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def markdown(results: list[dict[str, Any]], minutes: float, info: dict[str, Any], data: str) -> str:
    header = ["model", "params", "train steps", "audio seen (min)", "train min (NMF: fit)"] + [f"{t} uSDR" for t in TARGETS] + ["average"]
    rows = []
    for r in results:
        spent = r["curve"][-1]["minutes"] if r["curve"] else r["train_seconds"] / 60
        seen = f"{r['audio_seconds_seen'] / 60:.0f}" if r["steps"] else ""
        rows.append([r["model"], f"{r['params']:,}", r["steps"] or "fit", seen, f"{spent:.1f}"]
                    + [f"{r['targets'][t]['usdr']:.2f}" for t in TARGETS] + [f"{r['average']['usdr']:.2f}"])
    base = results[0]["baseline"]
    rows.append(["mixture (floor)", "0", "", "", ""] + [f"{base['targets'][t]['usdr']:.2f}" for t in TARGETS]
                + [f"{base['average']['usdr']:.2f}"])
    curve_rows = []
    for r in results:
        for point in r["curve"]:
            values = [point["valid_usdr"].get(t) for t in TARGETS]
            curve_rows.append([r["model"], point["epoch"], f"{point['minutes']:.1f}"] + [f"{v:.2f}" for v in values])
    nmf = next((r for r in results if r["model"] == "nmf"), None)
    verdict = ""
    if nmf is not None:
        beaten = [r["model"] for r in results if r is not nmf and r["average"]["usdr"] > nmf["average"]["usdr"]]
        behind = [r["model"] for r in results if r is not nmf and r["model"] not in beaten]
        verdict = (f"Above NMF's average ({nmf['average']['usdr']:.2f} dB): {', '.join(beaten) or 'none'}; "
                   f"not above: {', '.join(behind) or 'none'}.")
    return "\n\n".join(filter(None, [
        machine_line(info),
        f"`python benchmarks/quality.py --minutes {minutes:g}` on {data}: each neural preset trained for the same "
        f"{minutes:g} minutes of wall-clock training time (all four targets, the preset's training defaults, "
        "validation every epoch, early stopping off; the best validation checkpoint is evaluated), NMF fitted once. "
        "Test songs separated at full length in stereo; uSDR in dB per target (0 dB is what a silent estimate "
        "scores; the mixture row is the floor of returning the mixture).",
        markdown_table(header, rows),
        verdict,
        "Training curves (validation uSDR per target on the 2 validation songs' crops against training minutes; "
        "NMF has none): "
        "![quality curves](results/quality_curves.png)",
        "<details><summary>Curve values</summary>\n\n"
        + markdown_table(["model", "epoch", "minutes"] + [f"{t}" for t in TARGETS], curve_rows) + "\n\n</details>",
    ]))


def main() -> None:
    args = parse_args()
    from mss_tf.data.roots import data_dir
    from mss_tf.data import demo

    root = args.musdb_root or demo.make_demo_set(data_dir() / "demo-musdb")
    data = f"`{args.musdb_root}`" if args.musdb_root else "the procedural demo set (16 train + 4 test songs of 12 s)"
    info = machine()
    results = []
    for model in args.models:
        print(f"{model}: training for {args.minutes:g} min", flush=True)
        result = train_and_evaluate(model, root, args.work_dir / model, minutes=args.minutes, seed=args.seed)
        print(f"{model}: " + " ".join(f"{t}={result['targets'][t]['usdr']:.2f}" for t in TARGETS)
              + f" average={result['average']['usdr']:.2f}", flush=True)
        results.append(result)
    body = markdown(results, args.minutes, info, data)
    print(body)
    if args.no_write:
        return
    write_json("quality", {"machine": info, "minutes": args.minutes, "results": results})
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot_curves(results, RESULTS_DIR / "quality_curves.png")
    write_section("Separation quality (benchmarks/quality.py)", body)


if __name__ == "__main__":
    main()
