"""Evaluation speed: museval's BSSEval v4 against the fast implementation, side by side.

    python benchmarks/evaluation.py [--quick] [--repeats 3] [--seconds 40]

Both score the same generated 4-source stereo tracks with the v4 image metrics (SDR, ISR,
SIR, SAR; time-invariant 512-tap filters, 1 s windows): `museval.evaluate(..., mode="v4")`
and `mss_tf.evaluation.bsseval.evaluate`. Two tracks: a synthetic one (coloured noise and
tones, estimates = filtered source + leakage + noise, as in tests/test_bsseval.py) and a
procedural demo song (the `make demo` generator; float32 stems, estimates = stem + mixture
leakage + noise). Runs are interleaved (museval, fast, museval,
fast, ...) so both see the same machine load; the table gives median wall times, the speedup
and the largest difference of any per-track median (nanmedian over windows, per source and
metric) and of any single window. Goal: at least 5x faster, medians within 0.05 dB.
Writes benchmarks/results/evaluation.json and the "Evaluation speed" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from common import machine, machine_line, markdown_table, write_json, write_section

SR = 44100
METRICS = ("SDR", "ISR", "SIR", "SAR")


def synthetic_track(seconds: float, seed: int = 0, nsrc: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Coloured full-band noise + a tone per source under a slow envelope; estimates: a short
    random filter of the source, leakage of the others, a little white noise."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    refs = np.empty((nsrc, n, 2))
    for j in range(nsrc):
        noise = signal.lfilter([1.0], [1.0, -(0.9, -0.5, 0.6, 0.3)[j % 4]], rng.standard_normal((n, 2)), axis=0)
        noise /= noise.std()
        tone = np.sin(2 * np.pi * 110 * 2 ** (0.58 * j) * t + rng.uniform(0, 2 * np.pi))[:, None]
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.2 * j) * t)[:, None]
        refs[j] = envelope * (0.3 * noise + 0.5 * tone * np.array([1.0, 0.6]))
    ests = np.empty_like(refs)
    for j in range(nsrc):
        taps = rng.standard_normal(8) * np.exp(-np.arange(8) / 2.0)
        taps[0] = 1.0
        leak = sum(0.1 * (k + 1) / nsrc * refs[k] for k in range(nsrc) if k != j)
        ests[j] = 0.8 * signal.lfilter(taps, [1.0], refs[j], axis=0) + leak + 0.05 * rng.standard_normal((n, 2))
    return refs, ests


def demo_song(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A procedural demo song (float32 stems, the demo set's balanced style) and estimates made from it."""
    from mss_tf.data.demo import generate_track, track_rng

    audio, _ = generate_track(track_rng(seed, "test", 0), seconds=seconds, style="balanced")
    refs = np.stack([audio[name] for name in ("drums", "bass", "other", "vocals")])
    rng = np.random.default_rng(seed)
    ests = (0.7 * refs + 0.1 * refs.sum(axis=0) + 0.003 * rng.standard_normal(refs.shape)).astype(np.float32)
    return refs, ests


def run_museval(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    import museval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array(museval.evaluate(refs, ests, win=SR, hop=SR, mode="v4"))


def run_fast(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    from mss_tf.evaluation.bsseval import evaluate

    return np.array(evaluate(refs, ests, win=SR, hop=SR))


def compare(track: str, refs: np.ndarray, ests: np.ndarray, repeats: int) -> dict:
    times: dict[str, list[float]] = {"museval": [], "fast": []}
    results: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in (("museval", run_museval), ("fast", run_fast)):
            start = time.perf_counter()
            results[name] = fn(refs, ests)
            times[name].append(time.perf_counter() - start)
            print(f"  {track}: {name} {times[name][-1]:.2f} s", flush=True)
    ref, fast = results["museval"], results["fast"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median_diff = np.abs(np.nanmedian(fast, axis=2) - np.nanmedian(ref, axis=2))  # (metric, source)
    finite = np.isfinite(ref) & np.isfinite(fast)
    window_diff = np.where(finite, np.abs(fast - ref), 0.0)
    med = {name: float(np.median(values)) for name, values in times.items()}
    return {
        "track": track,
        "seconds": refs.shape[1] / SR,
        "sources": refs.shape[0],
        "windows": int(ref.shape[2]),
        "nan_windows": int(np.isnan(ref).all(axis=(0, 1)).sum()),
        "same_nan": bool(np.array_equal(np.isnan(fast), np.isnan(ref))),
        "times_s": times,
        "median_s": med,
        "speedup": med["museval"] / med["fast"],
        "max_median_diff_db": {m: float(np.nanmax(median_diff[i])) for i, m in enumerate(METRICS)},
        "max_window_diff_db": {m: float(window_diff[i].max()) for i, m in enumerate(METRICS)},
        "museval_medians_db": {m: [round(float(v), 3) for v in np.nanmedian(ref[i], axis=1)]
                               for i, m in enumerate(METRICS)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0, help="track length in seconds (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each implementation (default 3)")
    parser.add_argument("--quick", action="store_true", help="10 s tracks, one run each (about a minute)")
    args = parser.parse_args()
    seconds, repeats = (10.0, 1) if args.quick else (args.seconds, args.repeats)

    from importlib.metadata import version

    info = machine()
    info["museval"] = version("museval")
    # warm-up (imports, FFT plans) on a short track, untimed
    refs, ests = synthetic_track(2.0, seed=9)
    run_museval(refs, ests)
    run_fast(refs, ests)

    rows = []
    for track, make in (("synthetic", synthetic_track), ("demo song", demo_song)):
        refs, ests = make(seconds)
        rows.append(compare(track, refs, ests, repeats))

    goal = {"speedup": 5.0, "median_db": 0.05}
    passed = all(r["speedup"] >= goal["speedup"] and max(r["max_median_diff_db"].values()) <= goal["median_db"]
                 and r["same_nan"] for r in rows)
    write_json("evaluation", {"machine": info, "repeats": repeats, "goal": goal, "goal_met": passed, "tracks": rows})

    def db(x: float) -> str:
        return f"{x:.1e}"

    table = markdown_table(
        ["track", "length", "windows (NaN)", "museval s", "fast s", "speedup",
         "max Δ median SDR / ISR / SIR / SAR (dB)", "max Δ any window (dB)", "same NaNs"],
        [[r["track"], f"{r['seconds']:g} s, {r['sources']} stereo sources", f"{r['windows']} ({r['nan_windows']})",
          f"{r['median_s']['museval']:.2f}", f"{r['median_s']['fast']:.2f}", f"{r['speedup']:.1f}x",
          " / ".join(db(r["max_median_diff_db"][m]) for m in METRICS),
          db(max(r["max_window_diff_db"].values())), "yes" if r["same_nan"] else "NO"] for r in rows])
    body = "\n\n".join([
        machine_line(info) + f" museval {info['museval']}. `python benchmarks/evaluation.py"
        f"{' --quick' if args.quick else ''}`, median of {repeats} interleaved run(s) per implementation.",
        "BSSEval v4 image metrics (1 s windows, 512-tap time-invariant filters): `museval.evaluate(mode=\"v4\")` "
        "against `mss_tf.evaluation.bsseval.evaluate` (`evaluate.py --fast`) on the same tracks. The synthetic "
        "track is coloured noise and tones with filtered, leaky, noisy estimates; the demo song is the procedural "
        "`make demo` generator (float32 stems) with estimates = stem + mixture leakage + noise. "
        "Δ median: the largest difference of any per-track median (over windows, per source and metric). "
        f"Goal: at least {goal['speedup']:g}x faster with every median within {goal['median_db']} dB: "
        f"{'met' if passed else 'NOT met'}.",
        table,
    ])
    write_section("Evaluation speed (benchmarks/evaluation.py)", body)
    print(body)


if __name__ == "__main__":
    main()
