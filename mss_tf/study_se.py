"""study/SE.md: does Squeeze-and-Excitation help BSRNN? The report of `python -m mss_tf.study --question se`.

From the study's runs (their `metrics.jsonl`, one record per epoch with the validation uSDR per
target, and `results.json` from evaluate.py) it writes: the final cSDR/uSDR per target and variant
(mean ± std over seeds and the per-seed values), the validation curves (mean over seeds with a
min-max band), the steps to reach fixed validation levels, the paired difference of each SE variant
minus plain BSRNN with a bootstrap interval, and one sentence with the rule that produced it. From
one trained BSRNN-SE it reads the SE gates (the excitation of every block on test crops) and it
measures what SE costs in parameters and in time per training step.

The verdict rule (`verdict`): "higher" when the 95% bootstrap interval of the paired difference in
final test uSDR (average over targets; resampled over seeds and tracks) lies above 0; "faster" when
that of the paired difference in validation uSDR averaged over the first half of the training's
epochs (resampled over seeds) lies above 0; "both" when both hold. When neither does: "neither" if
both intervals lie below +GAIN dB (a gain of GAIN dB or more is ruled out), else "too noisy to tell
at this size". With fewer than MIN_SEEDS paired seeds every measure is unclear (so --quick, with 2
seeds, always answers "too noisy to tell at this size").
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mss_tf.evaluation.compare import _save_figure
from mss_tf.evaluation.report import load_results
from mss_tf.machine import machine, machine_line
from mss_tf.training.loop import METRICS
from mss_tf.utils import atomic_write

REPORT = "SE.md"
CURVES = "se_curves.png"
GATES = "se_gates.png"
LEVELS = (2.0, 3.0, 4.0)  # dB of average validation uSDR
BOOTSTRAP = 2000  # resamples
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
GAIN = 0.2  # dB: an interval entirely below this rules out a gain worth having
MIN_SEEDS = 3  # fewer paired seeds judge nothing (a bootstrap over 2 values says little)
VERDICTS = ("faster", "higher", "both", "neither", "too noisy to tell at this size")


def records(run: Path) -> list[dict[str, Any]]:
    """The epoch records of a run's metrics.jsonl (empty when it has none)."""
    path = Path(run) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def curve(run_records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and validation uSDR averaged over targets, one value per epoch."""
    steps = np.array([r["step"] for r in run_records if r.get("valid_usdr")], dtype=np.int64)
    usdr = np.array([np.mean(list(r["valid_usdr"].values())) for r in run_records if r.get("valid_usdr")])
    return steps, usdr


def steps_to_level(steps: np.ndarray, usdr: np.ndarray, level: float) -> int | None:
    """The first step whose validation uSDR reaches `level` dB; None when none does."""
    reached = np.flatnonzero(np.asarray(usdr) >= level)
    return int(steps[reached[0]]) if reached.size else None


def early_usdr(steps: np.ndarray, usdr: np.ndarray) -> float:
    """Validation uSDR averaged over the epochs of the first half of the training (at least the first
    epoch): the area under the early curve, which is higher for a run that converges faster."""
    early = steps <= steps[-1] / 2
    early[0] = True
    return float(np.mean(usdr[early]))


def bootstrap_ci(differences: np.ndarray, resamples: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile bootstrap interval.

    Args:
        differences: (seeds,) or (seeds, tracks): seeds and tracks are resampled independently
            (with replacement), each resample's statistic is the mean of the selected block.
        resamples: bootstrap resamples.
        seed: of the numpy generator (the same interval on every run).
        confidence: interval coverage.

    Returns: (mean, low, high).
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[:, np.newaxis] if d.ndim == 1 else d  # (S, T)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, d.shape[0], size=(resamples, d.shape[0]))  # (R, S)
    cols = rng.integers(0, d.shape[1], size=(resamples, d.shape[1]))  # (R, T)
    means = np.array([d[np.ix_(r, c)].mean() for r, c in zip(rows, cols)])  # (R,)
    tail = 100 * (1 - confidence) / 2
    return float(d.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def judge(low: float, high: float, gain: float = GAIN) -> str:
    """"better" (interval above 0), "not better" (interval below +gain), else "unclear"."""
    if low > 0:
        return "better"
    return "not better" if high < gain else "unclear"


def verdict(higher: str, faster: str) -> str:
    """One of VERDICTS from the judgements (`judge`) of final SDR and of early convergence."""
    if higher == "better" and faster == "better":
        return "both"
    if higher == "better":
        return "higher"
    if faster == "better":
        return "faster"
    return "neither" if higher == faster == "not better" else VERDICTS[-1]


def _track_usdr(results: dict[str, Any]) -> dict[str, float]:
    """Whole-track uSDR averaged over targets, by track name."""
    return {row["track"]: float(np.mean(list(row["usdr"].values()))) for row in results["tracks"]}


def _spread(values: Sequence[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{values[0]:.2f}" if len(values) == 1 else f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def paired(out: Path, plain: list[dict[str, Any]], variant: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired differences variant minus plain over the seeds both have: final test uSDR per seed and
    track, early validation uSDR per seed; their bootstrap intervals and judgements."""
    by_seed = {j["seed"]: j for j in plain}
    pairs = [(by_seed[j["seed"]], j) for j in variant if j["seed"] in by_seed]
    final, early, seeds = [], [], []
    for p, v in pairs:
        tp, tv = _track_usdr(load_results(out / "runs" / p["dir"])), _track_usdr(load_results(out / "runs" / v["dir"]))
        tracks = sorted(set(tp) & set(tv))
        final.append([tv[t] - tp[t] for t in tracks])
        early.append(early_usdr(*curve(records(out / "runs" / v["dir"]))) -
                     early_usdr(*curve(records(out / "runs" / p["dir"]))))
        seeds.append(v["seed"])
    final_ci, early_ci = bootstrap_ci(np.array(final)), bootstrap_ci(np.array(early))
    enough = len(seeds) >= MIN_SEEDS
    higher, faster = (judge(*final_ci[1:]), judge(*early_ci[1:])) if enough else ("unclear", "unclear")
    return {"seeds": seeds, "tracks": tracks, "final": final, "early": early, "final_ci": final_ci,
            "early_ci": early_ci, "higher": higher, "faster": faster, "verdict": verdict(higher, faster)}


def plot_curves(out: Path, groups: dict[str, list[dict[str, Any]]]) -> Path:
    """Validation uSDR (average over targets) against steps: per variant the mean over seeds and a
    min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for label, jobs in groups.items():
        curves = [curve(records(out / "runs" / j["dir"])) for j in jobs]
        length = min(len(s) for s, _ in curves)
        steps = curves[0][0][:length]
        values = np.stack([u[:length] for _, u in curves])  # (seeds, epochs)
        line, = axis.plot(steps, values.mean(axis=0), marker=".", label=f"{label} ({len(jobs)} seeds)")
        axis.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    for level in LEVELS:
        axis.axhline(level, color="grey", lw=0.5, ls=":")
    axis.set_xlabel("training step")
    axis.set_ylabel("validation uSDR, mean over targets (dB)")
    axis.set_title("BSRNN with and without SE: mean over seeds, min-max band")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    path = out / CURVES
    _save_figure(figure, path)
    plt.close(figure)
    return path


def read_gates(run: Path, crops: int = 4, crop_seconds: float = 3.0) -> dict[str, Any]:
    """The excitation (the sigmoid scale of each of N channels) of every SE block of a trained BSRNN-SE,
    on `crops` crops of the test tracks: each block's `call` is wrapped for one eager forward pass.

    The squeeze averages over frames and bands, so within a crop a block scales each channel by one
    value at every frame and band: what can vary is across channels and across inputs.

    Returns: {"blocks": names, "scales": (crops, blocks, N) array, "crops": crop names}.
    """
    import tensorflow as tf

    from mss_tf.audio.spectrogram import stft
    from mss_tf.config import TrainConfig
    from mss_tf.data.musdb import find_tracks, load_track
    from mss_tf.inference.separator import Separator

    config = TrainConfig.load(run)
    separator = Separator.from_run(run)
    model, spec = separator.model, separator.stft_config
    blocks = model.se_blocks
    names = [f"{b.path.split('/')[-3].replace('band_sequence_', 'm')}/{b.path.split('/')[-2].replace('_rnn', '')}"
             for b in blocks]
    captured: list[np.ndarray] = []
    originals = [b.call for b in blocks]

    def hook(block, original):  # noqa: ANN001, ANN202
        def call(x, valid_frames=None):  # noqa: ANN001, ANN202
            captured.append(block.excite_dense(block.squeeze_dense(block.squeeze(x, valid_frames))).numpy())
            return original(x, valid_frames=valid_frames)
        return call

    root = load_results(run).get("data_root") or config.data_root
    tracks = find_tracks(root, "test")
    length = int(crop_seconds * spec.sample_rate)
    scales, crop_names = [], []
    try:
        for block, original in zip(blocks, originals):
            block.call = hook(block, original)
        for index in range(crops):
            track = tracks[index % len(tracks)]
            audio, _ = load_track(track, spec.sample_rate, mono=True, sources=("mixture",))
            mixture = audio["mixture"][:, 0]
            start = (index // len(tracks)) * length % max(1, len(mixture) - length)
            piece = mixture[start:start + length]
            z = stft(tf.constant(piece[np.newaxis]), spec)  # (1, T, F) complex
            captured.clear()
            model(tf.stack([tf.math.real(z), tf.math.imag(z)], axis=-1), training=False)  # (1, T, F, 2)
            scales.append(np.concatenate(captured, axis=0))  # (blocks, N)
            crop_names.append(f"{track.name} @ {start / spec.sample_rate:.1f} s")
    finally:
        for block, original in zip(blocks, originals):
            block.call = original
    return {"blocks": names, "scales": np.stack(scales), "crops": crop_names}


def plot_gates(out: Path, gates: dict[str, Any]) -> Path:
    """Per SE block, a box of its excitation values over channels and crops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = gates["scales"]  # (crops, blocks, N)
    figure, axis = plt.subplots(figsize=(max(5, 0.7 * scales.shape[1] + 2), 3.5))
    axis.boxplot([scales[:, b].ravel() for b in range(scales.shape[1])], labels=gates["blocks"])
    axis.set_ylim(-0.02, 1.02)
    axis.set_ylabel("excitation (sigmoid scale)")
    axis.set_title(f"SE gates: every channel of every block on {scales.shape[0]} test crops")
    axis.tick_params(axis="x", labelrotation=45, labelsize=7)
    axis.grid(alpha=0.3)
    path = out / GATES
    _save_figure(figure, path)
    plt.close(figure)
    return path


def measure_cost(presets: list[tuple[str, str, dict[str, Any]]], steps: int = 4, warmup: int = 2) -> list[dict[str, Any]]:
    """Parameters (exact, `model_parameters`) and time per training step of each (label, preset,
    overrides), timed in this process with the variants' steps interleaved (A, B, A, B, ...), so a
    busy machine slows them alike. A step: the forward pass on a batch of the preset's training
    crops (random STFT values), an L2 loss, its gradients and an Adam update. Returns per variant
    {label, params, seconds (median over `steps` steps)}."""
    import keras
    import tensorflow as tf

    from mss_tf.models.registry import build_model, get_preset, model_parameters

    entries = []
    for label, name, overrides in presets:
        preset = get_preset(name)
        model = build_model(preset, **overrides)
        frames = preset.stft.n_frames(int(preset.training.train_seconds * preset.stft.sample_rate))
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal((preset.training.batch_size, frames, preset.stft.n_bins, 2)), tf.float32)
        model(x[:1], training=False)
        optimizer = keras.optimizers.Adam(1e-3)

        @tf.function
        def step(x=x, model=model, optimizer=optimizer):  # noqa: ANN001, ANN202
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True)))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        for _ in range(warmup):
            step()
        entries.append({"label": label, "params": model_parameters(model), "step": step, "seconds": []})
    for _ in range(steps):
        for entry in entries:
            started = time.perf_counter()
            float(entry["step"]())
            entry["seconds"].append(time.perf_counter() - started)
    return [{"label": e["label"], "params": e["params"], "seconds": float(np.median(e["seconds"]))} for e in entries]


def write_se_report(out: Path, jobs: list[dict[str, Any]], state: dict[str, Any], cost_steps: int = 4,
                    gate_crops: int = 4) -> Path:
    """study/SE.md (and its figures) from the runs of `jobs` (the first label is plain BSRNN, the
    second the SE preset, then the ablation variants)."""
    args = state["args"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(job["label"], []).append(job)
    labels = list(groups)
    plain, main = labels[0], labels[1]
    results = {j["dir"]: load_results(out / "runs" / j["dir"]) for j in jobs}
    targets = list(results[jobs[0]["dir"]]["targets"])
    first = results[jobs[0]["dir"]]
    data_root = first.get("data_root", "?")
    curves_path = plot_curves(out, groups)

    # final numbers per variant: mean ± std over seeds
    header = ["variant", "params", "seeds", "avg cSDR", "avg uSDR", *[f"{t} uSDR" for t in targets],
              *[f"{t} cSDR" for t in targets]]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, mine in groups.items():
        rs = [results[j["dir"]] for j in mine]
        row = [label, f"{rs[0]['params']:,}", str(len(mine)),
               _spread([r["average"].get("csdr") for r in rs]), _spread([r["average"]["usdr"] for r in rs])]
        row += [_spread([r["targets"][t]["usdr"] for r in rs]) for t in targets]
        row += [_spread([r["targets"][t].get("csdr") for r in rs]) for t in targets]
        table.append("| " + " | ".join(row) + " |")

    # every run
    runs_header = ["variant", "seed", "steps", "final valid uSDR", "test avg uSDR", "test avg cSDR"]
    runs_table = ["| " + " | ".join(runs_header) + " |", "|" + "---|" * len(runs_header)]
    for job in jobs:
        steps, usdr = curve(records(out / "runs" / job["dir"]))
        r = results[job["dir"]]
        csdr = r["average"].get("csdr")
        runs_table.append(f"| {job['label']} | {job['seed']} | {int(steps[-1]):,} | {usdr[-1]:.2f} | "
                          f"{r['average']['usdr']:.2f} | {'-' if csdr is None else f'{csdr:.2f}'} |")

    # steps to reach each level: on the mean curve, and how many seeds reach it
    level_header = ["variant", *[f"{level:g} dB" for level in LEVELS]]
    levels = ["| " + " | ".join(level_header) + " |", "|" + "---|" * len(level_header)]
    for label, mine in groups.items():
        curves = [curve(records(out / "runs" / j["dir"])) for j in mine]
        length = min(len(s) for s, _ in curves)
        mean = np.mean([u[:length] for _, u in curves], axis=0)
        cells = []
        for level in LEVELS:
            at = steps_to_level(curves[0][0][:length], mean, level)
            reached = sum(steps_to_level(s, u, level) is not None for s, u in curves)
            cells.append(("not reached" if at is None else f"{at:,}") + f" ({reached}/{len(curves)} seeds)")
        levels.append("| " + " | ".join([label, *cells]) + " |")

    # paired differences, each SE variant minus plain
    comparisons = {label: paired(out, groups[plain], groups[label]) for label in labels[1:]}
    diff_header = ["variant − plain", "seeds", "test uSDR diff [95% CI]", "early valid uSDR diff [95% CI]",
                   "higher?", "faster?", "verdict"]
    diffs = ["| " + " | ".join(diff_header) + " |", "|" + "---|" * len(diff_header)]
    for label, c in comparisons.items():
        f, e = c["final_ci"], c["early_ci"]
        diffs.append(f"| {label} | {len(c['seeds'])} | {_signed(f[0])} [{_signed(f[1])}, {_signed(f[2])}] | "
                     f"{_signed(e[0])} [{_signed(e[1])}, {_signed(e[2])}] | {c['higher']} | {c['faster']} | "
                     f"{c['verdict']} |")
    c = comparisons[main]
    per_track = ["| seed | " + " | ".join(c["tracks"]) + " | early valid |", "|---|" + "---|" * (len(c["tracks"]) + 1)]
    per_track += [f"| {s} | " + " | ".join(_signed(v) for v in row) + f" | {_signed(e)} |"
                  for s, row, e in zip(c["seeds"], c["final"], c["early"])]
    sentences = {
        "both": "SE converges faster and ends higher",
        "higher": "SE ends higher (its faster convergence is not shown)",
        "faster": "SE converges faster (a higher final SDR is not shown)",
        "neither": "SE neither converges faster nor ends higher (a gain of %g dB or more is ruled out)" % GAIN,
        VERDICTS[-1]: "the data cannot tell whether SE helps: too noisy to tell at this size",
    }
    answer = (f"**Answer ({c['verdict']}).** For {main} against {plain}, {len(c['seeds'])} paired seeds and "
              f"{len(c['tracks'])} test track{'s' if len(c['tracks']) != 1 else ''}: {sentences[c['verdict']]}; test uSDR difference "
              f"{_signed(c['final_ci'][0])} dB [{_signed(c['final_ci'][1])}, {_signed(c['final_ci'][2])}], early "
              f"validation uSDR difference {_signed(c['early_ci'][0])} dB [{_signed(c['early_ci'][1])}, "
              f"{_signed(c['early_ci'][2])}].")

    # the SE blocks: gates of seed 0 of the SE preset, and the cost
    se_run = out / "runs" / groups[main][0]["dir"]
    gates = read_gates(se_run, crops=gate_crops)
    gates_path = plot_gates(out, gates)
    scales = gates["scales"]  # (crops, blocks, N)
    gate_header = ["block", "mean", "min", "max", "std over channels", "std over crops"]
    gate_table = ["| " + " | ".join(gate_header) + " |", "|" + "---|" * len(gate_header)]
    for b, name in enumerate(gates["blocks"]):
        s = scales[:, b]  # (crops, N)
        gate_table.append(f"| {name} | {s.mean():.3f} | {s.min():.3f} | {s.max():.3f} | "
                          f"{s.std(axis=1).mean():.3f} | {s.std(axis=0).mean():.3f} |")
    cost = measure_cost([(label, groups[label][0]["preset"], groups[label][0]["model_args"]) for label in labels],
                        steps=cost_steps)
    base = cost[0]
    cost_table = ["| variant | params | vs plain | s per training step | vs plain |", "|---|---|---|---|---|"]
    cost_table += [f"| {e['label']} | {e['params']:,} | {100 * (e['params'] / base['params'] - 1):+.2f}% | "
                   f"{e['seconds']:.3f} | {100 * (e['seconds'] / base['seconds'] - 1):+.1f}% |" for e in cost]

    demo = "demo" in Path(str(data_root)).name
    lines = [
        "# Does Squeeze-and-Excitation help BSRNN?", "",
        f"{machine_line(machine())} Data: `{data_root}`{' (the procedural demo set)' if demo else ''}, "
        f"{len(first['tracks'])} test track{'s' if len(first['tracks']) != 1 else ''}{'' if not args.get('max_seconds') else ', first %g s of each' % args['max_seconds']}. "
        f"{args['budget_steps']:,} training steps per run; seeds 0..{max(j['seed'] for j in jobs)} for every variant "
        f"(paired: a seed's runs see the same data in the same order); BSSEval: "
        f"{'fast v4' if args.get('fast') else 'museval v4'}. Whole question: "
        f"{state.get('study_seconds', 0) / 60:.0f} min (`python -m mss_tf.study --question se"
        f"{' --quick' if args.get('quick') else ''}`).", "",
        answer, "",
        f"The rule: a measure is *better* when the {100 * CONFIDENCE:g}% bootstrap interval ({BOOTSTRAP} resamples, "
        f"numpy seed {BOOTSTRAP_SEED}) of the paired difference SE minus plain lies above 0, *not better* when it lies "
        f"below +{GAIN:g} dB. *higher*: final test uSDR (average over targets; seeds and tracks resampled); *faster*: "
        "validation uSDR averaged over the epochs of the first half of training (seeds resampled). The answer is "
        "*both*, *higher* or *faster* from the measures that are better, *neither* when both are not better, "
        f"else *too noisy to tell at this size*, as is every measure with fewer than {MIN_SEEDS} paired seeds. "
        "The first epochs count in *faster*: at initialisation the gates are near 0.5, which halves each residual "
        "branch, so a difference there may come from the start rather than the speed. With few seeds the bootstrap interval is optimistic (narrow); "
        "read it with the per-seed values below.", "",
        "## Final separation (mean ± std over seeds, dB)", "", *table, "",
        "## Every run", "", *runs_table, "",
        "## Convergence", "",
        f"![validation uSDR against steps]({curves_path.name})", "",
        "Steps at which the mean curve over seeds first reaches each average validation uSDR, and how many seeds "
        "reach it within the budget:", "", *levels, "",
        "## Paired differences (dB)", "", *diffs, "",
        f"{main} minus {plain}, per seed and test track (final uSDR, average over targets) and per seed (early "
        "validation uSDR):", "", *per_track, "",
        "## The SE blocks", "",
        f"Excitation of every SE block of `{se_run.name}` on {scales.shape[0]} test crops of "
        f"{3.0:g} s ({', '.join(gates['crops'])}). A block's squeeze averages over frames and bands, so it scales "
        "each channel by one value at every frame and band of a crop: it can vary only across channels and "
        "inputs. Gates near a constant (small std over channels and crops) scale the block's output by a fixed "
        "gain, which the projection before it could have learned.", "",
        f"![SE gates per block]({gates_path.name})", "", *gate_table, "",
        f"Cost, measured in one process ({cost_steps} interleaved training steps each, median; random STFT batches "
        "of the preset's training shape):", "", *cost_table, "",
    ]
    path = out / REPORT
    atomic_write(path, "\n".join(lines))
    return path
