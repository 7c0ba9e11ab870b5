"""Which loss lets every target of a multi-target separator learn: the evidence behind the default.

    python benchmarks/losses.py [--model unet] [--steps 800] [--seeds 0 1] [--losses ...]

Two synthetic sets in MUSDB18-HQ layout: the demo set (balanced: every stem plays throughout at
similar levels) and a sparse set (`make_demo.py --style sparse --seed 1`: stems up to 20 dB
apart, each silent for stretches). On each, the preset is trained for the same number of steps
with each loss and seed (all four targets, the preset's other defaults) and evaluated per target
on the test songs. A second table shows, from the training shards, the best single mask a network
that cannot yet tell bins apart can give each target under an absolute and a squared error: the
|X|-weighted median and the energy-weighted mean of the target's share |S| / |X|.
Writes `benchmarks/results/losses.json` and the "Losses" section of `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, machine, machine_line, markdown_table, write_json, write_readme_block, write_section
from quality import train_and_evaluate

from mss_tf import TARGETS

# set name -> (folder under data/, make_demo_set arguments); "demo" is the set `make demo` uses
SETS = {"demo": ("demo-musdb", {"seed": 0, "style": "balanced"}), "sparse": ("demo-sparse", {"seed": 1, "style": "sparse"})}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet", help="preset to train (default unet)")
    parser.add_argument("--steps", type=int, default=800, help="training steps per run (default 800, as `make demo` had)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--losses", nargs="+", default=["mag_phase_l1", "mag_phase_l2", "bsrnn_paper"],
                        help="losses to compare (default: the seed's L1, the default squared error, the BSRNN paper's)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS), help="data sets (default both)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-losses"), help="where the runs are written")
    parser.add_argument("--no-write", action="store_true", help="print the tables only; leave RESULTS.md alone")
    parser.add_argument("--render", action="store_true",
                        help="rewrite the RESULTS.md section and README block from benchmarks/results/losses.json (no training)")
    return parser.parse_args(argv)


def blind_masks(shard_dir: Path) -> dict[str, dict[str, float]]:
    """Per target: the one mask m minimising sum |m|X| - |S|| (the |X|-weighted median of the share
    |S|/|X|) and sum (m|X| - |S|)^2 (sum |X||S| / sum |X|^2) over every bin of the training shards."""
    from mss_tf.data import shards

    mixture, stems = [], []
    for example in shards.iterate_examples(shard_dir / "train"):
        mixture.append(np.sqrt(np.sum(np.asarray(example["mixture"], np.float64) ** 2, -1)).ravel())  # |X|
        stems.append(np.sqrt(np.sum(np.asarray(example["stems"], np.float64) ** 2, -1)).reshape(len(TARGETS), -1))
    x = np.concatenate(mixture)  # (bins,)
    s = np.concatenate(stems, axis=1)  # (S, bins)
    out = {}
    for i, target in enumerate(TARGETS):
        share = s[i] / np.maximum(x, 1e-8)
        order = np.argsort(share)
        weights = np.cumsum(x[order])
        median = float(share[order][np.searchsorted(weights, weights[-1] / 2)])
        out[target] = {"l1": median, "l2": float(np.sum(x * s[i]) / np.sum(x**2))}
    return out


def main() -> None:
    args = parse_args()
    if args.render:
        data = json.loads((RESULTS_DIR / "losses.json").read_text())
        runs, masks, info = data["runs"], data["blind_masks"], data["machine"]
        args.model, args.steps = runs[0]["model"], runs[0]["steps"]
        args.seeds = list(dict.fromkeys(run["seed"] for run in runs))
        write_section("Losses (benchmarks/losses.py)", markdown(runs, masks, args, info))
        write_readme_block("losses", readme_summary(runs, masks, args, info))
        return
    from mss_tf.data.roots import data_dir
    from mss_tf.data import demo

    info = machine()
    runs: list[dict[str, Any]] = []
    masks: dict[str, dict[str, dict[str, float]]] = {}
    for set_name in args.sets:
        folder, params = SETS[set_name]
        root = demo.make_demo_set(data_dir() / folder, **params)
        for loss in args.losses:
            for seed in args.seeds:
                print(f"{set_name} / {loss} / seed {seed}: {args.steps} steps", flush=True)
                run_dir = args.work_dir / f"{set_name}-{loss}-{seed}"
                result = train_and_evaluate(args.model, root, run_dir, steps=args.steps, loss=loss, seed=seed)
                runs.append({"set": set_name, "loss": loss, "seed": seed, **result})
                print("  " + " ".join(f"{t}={result['targets'][t]['usdr']:.2f}" for t in TARGETS), flush=True)
        shard_dir = Path(json.loads((args.work_dir / f"{set_name}-{args.losses[0]}-{args.seeds[0]}" / "config.json").read_text())["shards"])
        masks[set_name] = blind_masks(shard_dir)
    body = markdown(runs, masks, args, info)
    print(body)
    if not args.no_write:
        write_json("losses", {"machine": info, "runs": runs, "blind_masks": masks})
        write_section("Losses (benchmarks/losses.py)", body)
        write_readme_block("losses", readme_summary(runs, masks, args, info))


def _mask_rows(masks: dict[str, Any]) -> list[list[str]]:
    return [[set_name, loss] + [f"{masks[set_name][t][key]:.3f}" for t in TARGETS]
            for set_name in masks for loss, key in (("absolute error (L1): median share", "l1"),
                                                    ("squared error (L2): mean share", "l2"))]


def markdown(runs: list[dict[str, Any]], masks: dict[str, Any], args: argparse.Namespace, info: dict[str, Any]) -> str:
    header = ["set", "loss", "seed"] + [f"{t} uSDR (energy)" for t in TARGETS] + ["average"]
    rows = []
    for run in runs:
        rows.append([run["set"], run["loss"], run["seed"]]
                    + [f"{run['targets'][t]['usdr']:.2f} ({run['targets'][t]['energy_ratio']:.2f})" for t in TARGETS]
                    + [f"{run['average']['usdr']:.2f}"])
    for set_name in dict.fromkeys(run["set"] for run in runs):
        base = next(run for run in runs if run["set"] == set_name)["baseline"]
        rows.append([set_name, "mixture (floor)", ""] + [f"{base['targets'][t]['usdr']:.2f}" for t in TARGETS]
                    + [f"{base['average']['usdr']:.2f}"])
    mask_rows = _mask_rows(masks)
    return "\n\n".join([
        machine_line(info),
        f"`python benchmarks/losses.py --model {args.model} --steps {args.steps} --seeds "
        f"{' '.join(map(str, args.seeds))}`: `{args.model}` trained for {args.steps} steps on all four targets with "
        "each loss, evaluated on the test songs at full length (uSDR in dB; in brackets the estimate's energy "
        "relative to the reference's: near 0 is a silenced target, and 0 dB is what silence scores). "
        "demo = the procedural demo set; sparse = `make_demo.py --style sparse --seed 1`.",
        markdown_table(header, rows),
        "The best single mask for every bin (what a network that cannot yet tell where a target is converges "
        "to), from the training shards:",
        markdown_table(["set", "loss: optimum"] + list(TARGETS), mask_rows),
    ])


def readme_summary(runs: list[dict[str, Any]], masks: dict[str, Any], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Mean over seeds per set and loss: uSDR per target and, in brackets, the energy ratio."""
    rows = []
    for set_name in dict.fromkeys(run["set"] for run in runs):
        for loss in dict.fromkeys(run["loss"] for run in runs):
            group = [run for run in runs if run["set"] == set_name and run["loss"] == loss]
            cells = []
            for t in TARGETS:
                usdr = np.mean([run["targets"][t]["usdr"] for run in group])
                energy = np.mean([run["targets"][t]["energy_ratio"] for run in group])
                cells.append(f"{usdr:.2f} ({energy:.2f})")
            rows.append([set_name, loss] + cells + [f"{np.mean([run['average']['usdr'] for run in group]):.2f}"])
        base = next(run for run in runs if run["set"] == set_name)["baseline"]
        rows.append([set_name, "mixture (floor)"] + [f"{base['targets'][t]['usdr']:.2f}" for t in TARGETS]
                    + [f"{base['average']['usdr']:.2f}"])
    return (f"`{args.model}`, {args.steps} training steps, all four targets, mean of seeds "
            f"{', '.join(map(str, args.seeds))} ({info['date']}, {info['cores']} cores of {info['cpu']}, "
            "`benchmarks/losses.py`); uSDR in dB on the test songs, in brackets the estimate's energy relative to "
            "the reference's:\n\n"
            + markdown_table(["set", "loss"] + list(TARGETS) + ["average"], rows)
            + "\n\nThe best single mask for every bin of the training crops under each loss:\n\n"
            + markdown_table(["set", "loss: optimum"] + list(TARGETS), _mask_rows(masks)))


if __name__ == "__main__":
    main()
