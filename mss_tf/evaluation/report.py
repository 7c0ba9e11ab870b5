"""Evaluation of a separator on MUSDB-layout tracks: per-track metrics, results.json, tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from mss_tf.data import musdb
from mss_tf.data.shards import atomic_write_text
from mss_tf.evaluation.metrics import energy_ratio, mean_over_tracks, usdr

RESULTS = "results.json"
SeparateFn = Callable[[np.ndarray, int], dict[str, np.ndarray]]


def mixture_as_estimate(audio: np.ndarray, sample_rate: int, targets: Sequence[str]) -> dict[str, np.ndarray]:
    """The lower-bound baseline: the mixture itself as the estimate of every target."""
    return {t: audio for t in targets}


def evaluate_tracks(
    separate: SeparateFn,
    tracks: Sequence[musdb.Track],
    targets: Sequence[str],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Separate each track's mixture (full length, stereo) and score every target with uSDR.

    Returns one row per track: {"track": name, "usdr": {target: dB}, "baseline_usdr": {...},
    "energy_ratio": {target: sum s_hat^2 / sum s^2}} where the baseline is the mixture as the
    estimate of each target (an energy ratio near 0 is a silenced target).
    """
    rows = []
    for track in tqdm(tracks, desc="evaluate", unit="track", disable=not progress):
        audio, rate = musdb.load_track(track, sources=("mixture",) + tuple(targets))
        mixture = audio["mixture"]
        estimates = separate(mixture, rate)
        rows.append(
            {
                "track": track.name,
                "usdr": {t: usdr(audio[t], estimates[t]) for t in targets},
                "baseline_usdr": {t: usdr(audio[t], mixture) for t in targets},
                "energy_ratio": {t: energy_ratio(audio[t], estimates[t]) for t in targets},
            }
        )
    return rows


def summarize(
    rows: list[dict[str, Any]], targets: Sequence[str], model: str, params: int | None, subset: str
) -> dict[str, Any]:
    """The results.json structure of DESIGN.md from per-track rows."""
    targets = list(targets)
    per_target = mean_over_tracks([r["usdr"] for r in rows], targets)
    baseline = mean_over_tracks([r["baseline_usdr"] for r in rows], targets)
    energy = mean_over_tracks([r["energy_ratio"] for r in rows], targets)
    return {
        "model": model,
        "params": params,
        "subset": subset,
        "tracks": rows,
        "targets": {t: {"usdr": per_target[t], "energy_ratio": energy[t]} for t in targets},
        "average": {"usdr": float(np.mean(list(per_target.values())))},
        "baseline": {
            "name": "mixture as estimate",
            "targets": {t: {"usdr": baseline[t]} for t in targets},
            "average": {"usdr": float(np.mean(list(baseline.values())))},
        },
    }


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    atomic_write_text(path, json.dumps(results, indent=2))
    return path


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table: one row per target, the model's uSDR beside the mixture baseline's and
    the estimate's energy relative to the reference's (near 0: a silenced target)."""
    lines = [
        f"{results['model']} on {len(results['tracks'])} {results['subset']} tracks (uSDR, dB)",
        f"{'target':<10} {'model':>8} {'mixture':>8} {'gain':>8} {'energy':>8}",
    ]
    rows = list(results["targets"].items()) + [("average", results["average"])]
    for name, values in rows:
        base = (results["baseline"]["average"] if name == "average" else results["baseline"]["targets"][name])["usdr"]
        energy = f"{values['energy_ratio']:>8.2f}" if "energy_ratio" in values else ""
        lines.append(f"{name:<10} {values['usdr']:>8.2f} {base:>8.2f} {values['usdr'] - base:>+8.2f} {energy}".rstrip())
    lines.append("(0 dB is what a silent estimate scores; the mixture column is the floor of returning the mixture;"
                 " energy = estimate / reference)")
    return "\n".join(lines)
