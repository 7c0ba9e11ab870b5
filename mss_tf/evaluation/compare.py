"""Comparison of evaluated models: one Markdown and CSV table, box plots and the trade-off plot.

Input: the results.json of each evaluation (run directories, `evaluate.py --out` folders of a
SavedModel, an oracle or the mixture). Output, in one folder:

* `comparison.md` / `comparison.csv`: one row per model with its parameter count and real-time
  factor of separation, then cSDR and uSDR per target and their averages (higher is better);
* `sdr_boxplot.png`: per target, the per-track SDR (median over frames; uSDR where BSSEval was
  not run) of every model across tracks;
* `index.html`: the listening report (mss_tf.evaluation.listen_page): the table, the plots and
  per track and target the excerpts each evaluation stored, with spectrograms;
* `tradeoff.png`: average SDR against parameters and against separation time (RTF) -- how much
  quality each unit of complexity buys. Models without parameters (oracles, the mixture, NMF
  counted by its dictionaries) are drawn as reference lines where they have none.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mss_tf.utils import atomic_path, atomic_write
from mss_tf.errors import DataError
from mss_tf.evaluation.report import load_results

MARKDOWN = "comparison.md"
CSV = "comparison.csv"
BOXPLOT = "sdr_boxplot.png"
TRADEOFF = "tradeoff.png"


def _value(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return None if value is None or not np.isfinite(value) else float(value)


def _label(results: dict[str, Any], path: Path) -> str:
    return str(results.get("label") or results.get("model") or path.name)


def load_folders(paths: Sequence[str | Path]) -> list[tuple[str, Path, dict[str, Any]]]:
    """(label, folder, results) of each evaluated folder; labels are made unique with the folder name."""
    loaded = [(Path(p), load_results(p)) for p in paths]
    if not loaded:
        raise DataError("--compare needs at least one evaluated folder")
    labels = [_label(r, p) for p, r in loaded]
    out = []
    for (path, results), label in zip(loaded, labels):
        if labels.count(label) > 1:
            label = f"{label} ({path.name})"
        out.append((label, path if path.is_dir() else path.parent, results))
    return out


def load_all(paths: Sequence[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """(label, results) of each folder; labels are made unique with the folder name."""
    return [(label, results) for label, _, results in load_folders(paths)]


def targets_of(models: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Targets in the order the first model lists them, then any others."""
    order: list[str] = []
    for _, results in models:
        order += [t for t in results["targets"] if t not in order]
    return order


def table_rows(models: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    targets = targets_of(models)
    header = ["model", "params", "RTF"] + [f"{t} cSDR" for t in targets] + ["avg cSDR"]
    header += [f"{t} uSDR" for t in targets] + ["avg uSDR"]
    rows = []
    for label, results in models:
        row: list[Any] = [label, results.get("params") or 0, results.get("rtf")]
        row += [_value(results["targets"].get(t, {}), "csdr") for t in targets] + [_value(results["average"], "csdr")]
        row += [_value(results["targets"].get(t, {}), "usdr") for t in targets] + [_value(results["average"], "usdr")]
        rows.append(row)
    return header, rows


def _format(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column == "params":
        return f"{int(value):,}"
    if column == "RTF":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def describe(models: list[tuple[str, dict[str, Any]]]) -> str:
    """The sentence above the table: the split, the number of tracks, what each column means."""
    subsets = sorted({r.get("subset", "?") for _, r in models})
    tracks = sorted({len(r.get("tracks", [])) for _, r in models})
    return (f"Models on the {'/'.join(subsets)} split ({'/'.join(map(str, tracks))} tracks); SDR in dB, higher "
            "is better. cSDR: BSSEval v4 (museval) median over 1 s frames, then over tracks; uSDR: mean over "
            "tracks of the whole-track SDR (0 dB = a silent estimate). RTF: separation seconds per second of "
            "audio on the machine that evaluated it. '-': not measured.")


def markdown(models: list[tuple[str, dict[str, Any]]]) -> str:
    header, rows = table_rows(models)
    lines = [describe(models), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        lines.append("| " + " | ".join(_format(v, c) for v, c in zip(row, header)) + " |")
    return "\n".join(lines) + "\n"


def csv_text(models: list[tuple[str, dict[str, Any]]]) -> str:
    header, rows = table_rows(models)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (round(v, 4) if isinstance(v, float) else v) for v in row])
    return buffer.getvalue()


def per_track_sdr(results: dict[str, Any], target: str) -> list[float]:
    """Per-track SDR of a target: the BSSEval median over frames, else the uSDR."""
    values = []
    for row in results.get("tracks", []):
        bss = row.get("bss", {}).get(target, {})
        value = bss.get("SDR") if bss else row.get("usdr", {}).get(target)
        if value is not None and np.isfinite(value):
            values.append(float(value))
    return values


def _save_figure(figure: Any, path: Path) -> None:
    with atomic_path(path) as tmp:  # keeps the .png suffix, which savefig reads the format from
        figure.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_boxes(models: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = targets_of(models)
    figure, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets) + 1, 4.2), sharey=True, squeeze=False)
    for axis, target in zip(axes[0], targets):
        data = [per_track_sdr(results, target) for _, results in models]
        labels = [label for label, _ in models]
        keep = [i for i, d in enumerate(data) if d]
        axis.boxplot([data[i] for i in keep], vert=True, showmeans=True)
        axis.set_xticks(range(1, len(keep) + 1), [labels[i] for i in keep], rotation=45, ha="right", fontsize=8)
        axis.set_title(target)
        axis.axhline(0.0, color="grey", lw=0.6, ls=":")
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("SDR per track (dB; BSSEval median over frames)")
    figure.suptitle("SDR across tracks per target (box: quartiles, line: median, triangle: mean)", fontsize=10)
    _save_figure(figure, path)
    plt.close(figure)


def label_offsets(anchors: Sequence[tuple[float, float]], width: float = 90.0, height: float = 11.0) -> list[float]:
    """Vertical offsets (points) for labels written up and to the right of points at `anchors`
    (x, y in points), so that no two labels overlap: a label that would cover one above it
    moves down by a line until it is clear."""
    placed: list[tuple[float, float]] = []
    offsets = [0.0] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda i: -anchors[i][1]):
        x, y = anchors[i]
        offset = 4.0
        while any(abs(x - px) < width and abs(y + offset - py) < height for px, py in placed):
            offset -= height
        placed.append((x, y + offset))
        offsets[i] = offset
    return offsets


def _annotate_apart(axis, points: list[tuple[str, float, float]]) -> None:
    if not points:
        return
    axis.autoscale_view()
    scale = 72.0 / axis.figure.dpi  # display pixels -> points
    anchors = [tuple(v * scale for v in axis.transData.transform((x, y))) for _, x, y in points]
    for (label, x, y), offset in zip(points, label_offsets(anchors)):
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, offset), fontsize=8)


def plot_tradeoff(models: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    key = "csdr" if all(_value(r["average"], "csdr") is not None for _, r in models) else "usdr"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (field, xlabel) in zip(axes, [("params", "parameters"), ("rtf", "separation time (RTF, s per s of audio)")]):
        points: list[tuple[str, float, float]] = []
        for i, (label, results) in enumerate(models):
            y = _value(results["average"], key)
            x = results.get(field)
            if y is None:
                continue
            colour = colours[i % len(colours)]
            if x is None or x <= 0:  # no parameters / not timed: a reference line
                axis.axhline(y, color=colour, ls="--", lw=1.0, label=f"{label} ({y:.2f})")
            else:
                axis.scatter([x], [y], color=colour, s=40, zorder=3, label=f"{label} ({y:.2f})")
                points.append((label, x, y))
        axis.set_xscale("log")
        _annotate_apart(axis, points)
        axis.set_xlabel(xlabel + " (log scale)")
        axis.set_ylabel(f"average {'cSDR' if key == 'csdr' else 'uSDR'} (dB)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    figure.suptitle("Separation quality against complexity", fontsize=10)
    _save_figure(figure, path)
    plt.close(figure)


def write_comparison(paths: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write the table (Markdown, CSV), both plots and the listening page (index.html, with the
    excerpts the evaluations stored: mss_tf.evaluation.listen_page) of the evaluated folders into out_dir."""
    from mss_tf.evaluation import listen_page

    folders = load_folders(paths)
    models = [(label, results) for label, _, results in folders]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / MARKDOWN, "csv": out_dir / CSV, "boxplot": out_dir / BOXPLOT,
               "tradeoff": out_dir / TRADEOFF}
    atomic_write(written["markdown"], markdown(models))
    atomic_write(written["csv"], csv_text(models))
    plot_boxes(models, written["boxplot"])
    plot_tradeoff(models, written["tradeoff"])
    written["page"] = listen_page.write_page(folders, out_dir, table_rows(models), [BOXPLOT, TRADEOFF], describe(models))
    return written
