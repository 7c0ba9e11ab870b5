"""study/REPORT.md from a finished study folder (see mss_tf.study): tables, curves, caveats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mss_tf.utils import atomic_write
from mss_tf.evaluation.compare import _save_figure
from mss_tf.evaluation.report import load_results
from mss_tf.machine import machine, machine_line
from mss_tf.training.loop import METRICS

CURVES = "training_curves.png"


def _records(run: Path) -> list[dict[str, Any]]:
    path = run / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_curves(out: Path, jobs: list[dict[str, Any]]) -> Path:
    """Mean validation uSDR over targets against training time, every trained model in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for job in jobs:
        records = _records(out / "runs" / job["dir"])
        if not job["neural"] or job["seed"] != 0 or not records:
            continue
        minutes = np.cumsum([r.get("seconds", 0.0) for r in records]) / 60
        usdr = [float(np.mean(list(r.get("valid_usdr", {}).values()) or [np.nan])) for r in records]
        axis.plot(minutes, usdr, marker=".", label=job["label"])
    axis.set_xlabel("training time (minutes)")
    axis.set_ylabel("validation uSDR, mean over targets (dB)")
    axis.set_title("Training curves (seed 0)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    path = out / CURVES
    _save_figure(figure, path)
    plt.close(figure)
    return path


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def model_rows(out: Path, jobs: list[dict[str, Any]], state: dict[str, Any], targets: list[str]) -> list[list[str]]:
    """Per model (label): parameters, training steps and minutes, RTF, and SDRs as mean ± std over seeds."""
    labels = list(dict.fromkeys(j["label"] for j in jobs))
    rows = []
    for label in labels:
        mine = [j for j in jobs if j["label"] == label]
        results = [load_results(out / "runs" / j["dir"]) for j in mine]
        steps = [(_records(out / "runs" / j["dir"]) or [{}])[-1].get("step") for j in mine]
        train_minutes = [state["steps"].get(f"{j['dir']}/train", {}).get("seconds", np.nan) / 60 for j in mine]
        row = [label, f"{results[0]['params']:,}", str(len(mine)),
               "-" if steps[0] is None else f"{int(np.mean(steps)):,}", f"{np.nanmean(train_minutes):.1f}",
               f"{np.mean([r['rtf'] for r in results]):.3f}"]
        for key in ("csdr", "usdr"):
            row.append(_spread([r["average"][key] for r in results if r["average"].get(key) is not None]))
        row += [_spread([r["targets"][t]["csdr"] for r in results if r["targets"].get(t, {}).get("csdr") is not None])
                for t in targets]
        rows.append(row)
    return rows


def write_report(out: Path, jobs: list[dict[str, Any]], state: dict[str, Any]) -> Path:
    args = state["args"]
    curves = plot_curves(out, jobs)
    comparison = (out / "comparison.md").read_text().strip()
    first = load_results(out / "runs" / jobs[0]["dir"])
    targets = list(dict.fromkeys(t for j in jobs for t in load_results(out / "runs" / j["dir"])["targets"]))
    data_root = first.get("data_root", "?")
    demo = "demo" in Path(str(data_root)).name
    budget = (f"{args['budget_steps']:,} training steps per model" if args.get("budget_steps")
              else f"{state['minutes_per_model']:.1f} training minutes per model (70% of a {args['budget_minutes']:g}-minute "
                   "budget, shared equally)")
    header = ["model", "params", "seeds", "steps", "train min", "RTF", "avg cSDR", "avg uSDR"]
    header += [f"{t} cSDR" for t in targets]
    rows = model_rows(out, jobs, state, targets)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    lines = [
        "# Study: model complexity against separation quality", "",
        f"{machine_line(machine())} Data: `{data_root}`{' (the procedural demo set)' if demo else ''}, "
        f"{len(first['tracks'])} test tracks{'' if not args.get('max_seconds') else ', first %g s of each' % args['max_seconds']}. "
        f"Budget: {budget}; size `{args['size']}`; seeds 0..{args['seeds'] - 1}; "
        f"BSSEval: {'fast v4' if args.get('fast') else 'museval v4'}. "
        f"Whole study: {state.get('study_seconds', 0) / 60:.0f} min (`python -m mss_tf.study`).", "",
        "**What these numbers are.** Every model was trained by `train.py` with the same seed and budget and "
        "evaluated by `evaluate.py` on the same tracks; cSDR is the BSSEval v4 median over 1 s frames then over tracks, "
        "uSDR the mean over tracks of whole-track SDR (0 dB is what silence scores), in dB, higher is better. The "
        "IRM2 oracle is the ceiling of a mask at the U-Net's STFT, the mixture the floor.", "",
        "**What they are not.** " + ("The demo set is synthetic (procedural instruments), not MUSDB18: these numbers "
                                     "rank models on it and say nothing of their quality on real music. "
                                     if demo else "") +
        ("CPU-sized presets trained for minutes are not the paper's models: paper-size numbers need a GPU, the "
         "full MUSDB18 and days of training. " if args["size"] == "cpu" else "") +
        ("With one seed a difference of a few tenths of a dB may be noise; `--seeds 3` shows the spread."
         if args["seeds"] == 1 else "± is the standard deviation over the seeds."), "",
        "## Models (mean ± std over seeds)", "",
        *table, "",
        "## Comparison with the oracle and the mixture (seed 0)", "",
        comparison, "",
        "![quality against parameters and separation time](tradeoff.png)", "",
        "![per-track SDR per target](sdr_boxplot.png)", "",
        f"![training curves]({curves.name})", "",
        "Listen to excerpts of every test track, per target and model, with their spectrograms: `index.html` beside "
        "this report (written by the study's `evaluate.py --compare`; not kept in git).", "",
    ]
    path = out / "REPORT.md"
    atomic_write(path, "\n".join(lines))
    return path


def replace_block(path: Path, name: str, body: str) -> bool:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a Markdown file
    (atomically); False when the file has no such block."""
    text = path.read_text()
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start not in text or end not in text:
        return False
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    atomic_write(path, f"{before}{start}\n{body.strip()}\n{end}{after}")
    return True


def readme_body(report: Path, command: str = "make study") -> str:
    """A report (REPORT.md, SE.md) for the README: headings one level down, images from the study folder."""
    folder = report.parent.name
    text = report.read_text().replace("](", f"]({folder}/").replace(f"]({folder}/http", "](http")
    lines = [("#" + line if line.startswith("#") else line) for line in text.splitlines()]
    return "\n".join(lines[1:]).strip() + f"\n\n(Generated from `{folder}/{report.name}` by `{command}`.)"
