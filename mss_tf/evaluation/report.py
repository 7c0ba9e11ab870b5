"""Evaluation of a separator on MUSDB-layout tracks: per-track metrics, results.json, tables.

Every track is separated at full length (or its first `max_seconds`), stereo, and scored with

* uSDR per target (mean over tracks; the Music Demixing Challenge's "utterance" SDR), beside the
  mixture-as-estimate floor and the estimate's energy relative to the reference's;
* BSSEval v4 (museval, or the fast implementation): SDR, SIR, ISR and SAR per 1 s window,
  written per track in museval's JSON format (`museval/<subset>/<track>.json`) and aggregated
  with museval's `EvalStore` -- median over frames, then median over tracks: cSDR.

`workers` > 1 computes BSSEval in that many processes while the main process separates the
next tracks (separation uses TensorFlow's own threads; BSSEval is the slow part).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from mss_tf.data import musdb
from mss_tf.data.sources import DataSource
from mss_tf.utils import atomic_write
from mss_tf.errors import DataError
from mss_tf.evaluation.bss import ACCOMPANIMENT, track_medians
from mss_tf.evaluation.listen import write_excerpts
from mss_tf.evaluation.metrics import energy_ratio, mean_over_tracks, usdr

RESULTS = "results.json"
MUSEVAL_DIR = "museval"
BSS_CHOICES = ("museval", "fast", "none")
SeparateFn = Callable[..., dict[str, np.ndarray]]


def mixture_as_estimate(audio: np.ndarray, sample_rate: int, targets: Sequence[str]) -> dict[str, np.ndarray]:
    """The lower-bound baseline: the mixture itself as the estimate of every target."""
    return {t: audio for t in targets}


def _score_json(name: str, references: dict, estimates: dict, mixture: np.ndarray, rate: int, fast: bool) -> str:
    """BSSEval of one track as museval's per-track JSON (a top-level function: runs in workers)."""
    from mss_tf.evaluation.bss import metrics_function, score_track

    return score_track(name, references, estimates, mixture, rate, metrics_function(fast)).json


def _check_lengths(track: str, references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> None:
    for target, estimate in estimates.items():
        reference = references[target]
        if np.shape(estimate) != np.shape(reference):
            raise DataError(
                f"{track}: the estimate of {target} has shape {np.shape(estimate)} but its reference "
                f"{np.shape(reference)} (estimates must be (samples, channels) of the reference's length)"
            )


def evaluate_tracks(
    separate: SeparateFn,
    tracks: Sequence[musdb.Track],
    targets: Sequence[str],
    progress: bool = True,
    bss: str = "museval",
    workers: int = 1,
    max_seconds: float | None = None,
    out_dir: str | Path | None = None,
    subset: str = "test",
    listen_seconds: float = 0.0,
    source: DataSource | None = None,
) -> list[dict[str, Any]]:
    """Separate each track's mixture and score every target.

    `separate(mixture, rate)` returns {target: (samples, channels)}; an object with
    `uses_references = True` (the oracles) is called `.separate(mixture, rate, references)`.
    `bss`: "museval" (BSSEval v4, the reference), "fast" (mss_tf.evaluation.bsseval) or "none"
    (uSDR only). With `out_dir`, each track's museval JSON goes to out_dir/museval/<subset>/,
    and with `listen_seconds` > 0 too, its listening excerpts to out_dir/listen/ (mss_tf.evaluation.listen).
    `source` reads the tracks (default: MUSDB18 tracks); its "mixture" is the mixture file, or
    the sum of the stems in a layout without one, and the floor is measured against it.

    Returns one row per track: {"track", "seconds", "separate_seconds", "usdr": {target: dB},
    "baseline_usdr": {...} (the mixture as the estimate), "energy_ratio": {...} (sum s_hat^2 /
    sum s^2: near 0 is a silenced target), "bss": museval's TrackStore JSON (with `bss`),
    "listen": {target: the excerpt's window and uSDR} (with `listen_seconds`)}.
    """
    if bss not in BSS_CHOICES:
        raise DataError(f"unknown BSSEval implementation {bss!r} (choose from {', '.join(BSS_CHOICES)})")
    targets = list(targets)
    source = source or DataSource(Path("."))
    source.check_targets(targets, "targets")
    uses_references = bool(getattr(separate, "uses_references", False))
    if uses_references:
        separate = separate.separate
    pool = None
    if bss != "none" and workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Future | str]] = []
    try:
        bar = tqdm(tracks, desc="evaluate", unit="track", disable=not progress)
        for track in bar:
            bar.set_postfix_str(track.name[:40])
            audio, rate = source.load(track)
            available = list(source.stems)
            if max_seconds is not None:
                audio = {k: v[: int(round(max_seconds * rate))] for k, v in audio.items()}
            mixture = audio["mixture"]
            references = {t: audio[t] for t in available}
            started = time.perf_counter()
            estimates = separate(mixture, rate, references) if uses_references else separate(mixture, rate)
            seconds = time.perf_counter() - started
            estimates = {t: np.asarray(estimates[t], np.float32) for t in targets}
            _check_lengths(track.name, references, estimates)
            row = {
                "track": track.name,
                "seconds": round(mixture.shape[0] / rate, 3),
                "separate_seconds": round(seconds, 3),
                "usdr": {t: usdr(references[t], estimates[t]) for t in targets},
                "baseline_usdr": {t: usdr(references[t], mixture) for t in targets},
                "energy_ratio": {t: energy_ratio(references[t], estimates[t]) for t in targets},
            }
            if out_dir is not None and listen_seconds > 0:
                row["listen"] = write_excerpts(out_dir, track.name, mixture, references, estimates, rate, targets,
                                               listen_seconds)
            if bss != "none":
                job = (track.name, references, estimates, mixture, rate, bss == "fast")
                pending.append((row, pool.submit(_score_json, *job) if pool else _score_json(*job)))
            rows.append(row)
        for row, result in pending:
            row["bss"] = json.loads(result.result() if isinstance(result, Future) else result)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if out_dir is not None and bss != "none":
        folder = Path(out_dir) / MUSEVAL_DIR / subset
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            atomic_write(folder / f"{row['track']}.json", json.dumps(row["bss"], indent=2))
    return rows


def bss_aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """museval's EvalStore over the rows' per-track JSON: {target: {metric: median over frames,
    then median over tracks}}."""
    import museval
    from museval.aggregate import json2df

    store = museval.EvalStore(frames_agg="median", tracks_agg="median")
    for row in rows:
        store.add_track(json2df(row["bss"], row["track"]))
    table = store.agg_frames_tracks_scores()
    out: dict[str, dict[str, float]] = {}
    for (target, metric), value in table.items():
        out.setdefault(str(target), {})[str(metric)] = float(value)
    return out


def summarize(
    rows: list[dict[str, Any]], targets: Sequence[str], model: str, params: int | None, subset: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results.json structure (README, "Evaluation") from per-track rows."""
    targets = list(targets)
    per_target = mean_over_tracks([r["usdr"] for r in rows], targets)
    baseline = mean_over_tracks([r["baseline_usdr"] for r in rows], targets)
    energy = mean_over_tracks([r["energy_ratio"] for r in rows], targets)
    results: dict[str, Any] = {
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
    audio_seconds = float(sum(r.get("seconds", 0.0) for r in rows))
    separate_seconds = float(sum(r.get("separate_seconds", 0.0) for r in rows))
    results["audio_seconds"] = round(audio_seconds, 3)
    results["separate_seconds"] = round(separate_seconds, 3)
    results["rtf"] = separate_seconds / audio_seconds if audio_seconds > 0 else None
    if rows and all("bss" in r for r in rows):
        aggregated = bss_aggregate(rows)
        for t in targets:
            if t in aggregated:
                results["targets"][t].update({"csdr": aggregated[t]["SDR"], "sir": aggregated[t]["SIR"],
                                              "isr": aggregated[t]["ISR"], "sar": aggregated[t]["SAR"]})
        if ACCOMPANIMENT in aggregated:
            a = aggregated[ACCOMPANIMENT]
            results[ACCOMPANIMENT] = {"csdr": a["SDR"], "sir": a["SIR"], "isr": a["ISR"], "sar": a["SAR"]}
        scored = [results["targets"][t]["csdr"] for t in targets if "csdr" in results["targets"][t]]
        if len(scored) == len(targets):
            results["average"]["csdr"] = float(np.mean(scored))
        for row in rows:  # the frames stay in the museval JSON files; results.json keeps medians
            row["bss"] = track_medians(row["bss"])
    results.update(extra or {})
    return results


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    atomic_write(path, json.dumps(results, indent=2))
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """results.json of a folder (a run directory or an evaluation's --out)."""
    path = Path(path)
    file = path / RESULTS if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no {RESULTS} (evaluate it first: python evaluate.py --run {path})")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _cell(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.2f}"


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table: one row per target with cSDR, SIR, ISR, SAR (BSSEval v4, median of
    medians), uSDR beside the mixture's, and the estimate's energy relative to the reference's."""
    has_bss = any("csdr" in v for v in results["targets"].values())
    lines = [f"{results['model']} on {len(results['tracks'])} {results['subset']} tracks (dB)"]
    header = f"{'target':<14}"
    if has_bss:
        header += f" {'cSDR':>7} {'SIR':>7} {'ISR':>7} {'SAR':>7}"
    header += f" {'uSDR':>7} {'mixture':>8} {'gain':>7} {'energy':>7}"
    lines.append(header)
    rows = list(results["targets"].items())
    if ACCOMPANIMENT in results:
        rows.append((ACCOMPANIMENT, results[ACCOMPANIMENT]))
    rows.append(("average", results["average"]))
    for name, values in rows:
        line = f"{name:<14}"
        if has_bss:
            line += "".join(f" {_cell(values.get(k)):>7}" for k in ("csdr", "sir", "isr", "sar"))
        if "usdr" in values:
            base = (results["baseline"]["average"] if name == "average" else results["baseline"]["targets"][name])["usdr"]
            energy = f"{values['energy_ratio']:.2f}" if "energy_ratio" in values else ""
            line += f" {values['usdr']:>7.2f} {base:>8.2f} {values['usdr'] - base:>+7.2f} {energy:>7}"
        lines.append(line.rstrip())
    notes = ["cSDR: BSSEval v4 SDR, median over 1 s frames then over tracks" if has_bss else "",
             "uSDR: mean over tracks; 0 dB is what a silent estimate scores; mixture: the floor of returning the "
             "mixture; energy: estimate / reference"]
    lines.append("(" + "; ".join(n for n in notes if n) + ")")
    if results.get("rtf") is not None:
        lines.append(f"separation: {results['separate_seconds']:.1f} s for {results['audio_seconds']:.1f} s of audio "
                     f"(real-time factor {results['rtf']:.3f})")
    return "\n".join(lines)
