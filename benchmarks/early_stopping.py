"""Does the default early stopping stop a model that is still learning? And what does the larger
validation set cost per epoch?

    nice -n 19 env TF_NUM_INTRAOP_THREADS=1 python benchmarks/early_stopping.py            # everything
    python benchmarks/early_stopping.py --models unet --sets demo sparse30 --minutes 30    # a part
    python benchmarks/early_stopping.py --validation-only                                  # the cost part
    python benchmarks/early_stopping.py --render                                           # tables from the JSON

Runs (`--models` x `--sets`), one at a time, each through `train.py` with the preset's defaults and
`--max-minutes` (the done-when case of issue 27: a model trained for 30 minutes should run until its
validation stops improving for real, and end within 0.2 dB of what `--patience 1000` reaches in the
same time):

1. **default**: `train.py --model M --max-minutes T`; the step at which it stopped and why (early
   stopping or the time budget), then the test uSDR per target of its best checkpoint.
2. **continued**: when the default stopped early, a copy of its run directory resumed with
   `--patience 1000` for the rest of the T minutes (`--resume`: the same run, continued), and its
   test uSDR; when it did not stop, the default run is its own continuation.
3. with `--runs baseline`: the rule before issue 27 on the same data and seed (`--steps-per-epoch
   100 --smoothing 0 --min-delta 0`: a new minimum of the raw validation loss within 10 epochs of
   100 steps), trained for at most T minutes: the step where it stopped and its test uSDR.

Each run's validation curve is also replayed through the other rule (`mss_tf.training.stopping`):
where the raw rule would have stopped the default run, and whether the default rule would have
stopped the baseline's 100-step epochs within `make demo`'s 20.

Data sets: `demo` is the procedural demo set `make demo` uses (16 train + 4 test songs of 12 s, 2 of
the 16 held out for validation); `sparse30` is the procedural set made with another seed and the
other style, with longer songs (`make_demo.py --seed 1 --style sparse --seconds 30 --train 12
--test 4`: stems up to 20 dB apart and silent for stretches, 10 training and 2 validation songs of
30 s, 4 test songs).

The cost part (always run unless `--no-validation`): for the U-Net on the demo set, the time of one
validation pass over the validation set before issue 27 (the first 3 s of every stored crop) and
now (every stored crop whole), the median of interleaved repeats, beside the time of a training
step, as shares of `make demo`'s epochs (100 steps) and of the data-sized epochs.

Results accumulate in `benchmarks/results/early_stopping.json` (a rerun of one model and set
replaces that entry only) and are written to the "Early stopping" section of
`benchmarks/RESULTS.md`. Run it niced with one TensorFlow thread on a shared machine: its
subprocesses inherit both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (HERE, RESULTS_DIR, machine, machine_line, markdown_table, write_json, write_readme_block,
                    write_section)
from quality import evaluate_run

from mss_tf import TARGETS

REPO = HERE.parent
RESULTS = "early_stopping"
# set name -> (folder under data/, make_demo_set arguments)
SETS = {
    "demo": ("demo-musdb", {"seed": 0}),
    "sparse30": ("demo-sparse-30s", {"seed": 1, "style": "sparse", "seconds": 30.0, "n_train": 12, "n_test": 4}),
}
SET_TEXT = {
    "demo": "demo set (14 train + 2 valid songs of 12 s)",
    "sparse30": "sparse set, seed 1 (10 train + 2 valid songs of 30 s)",
}
BASELINE = ["--steps-per-epoch", "100", "--smoothing", "0", "--min-delta", "0", "--patience", "10"]
LONG_PATIENCE = "1000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["unet", "bsrnn-se-small"], help="presets (default unet bsrnn-se-small)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS), help="data sets (default both)")
    parser.add_argument("--minutes", type=float, default=30.0, help="the time budget of every run (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--runs", nargs="+", default=["default"], choices=["default", "baseline"],
                        help="default: the preset's defaults, continued with --patience 1000 if they stop early; "
                        "baseline: the rule before issue 27 (default: default)")
    parser.add_argument("--validation-only", action="store_true", help="only the validation-cost part")
    parser.add_argument("--no-validation", action="store_true", help="skip the validation-cost part")
    parser.add_argument("--repeats", type=int, default=7, help="validation passes timed per set (default 7)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-early-stopping"), help="where runs are written")
    parser.add_argument("--no-write", action="store_true", help="print the tables only; leave RESULTS.md alone")
    parser.add_argument("--render", action="store_true", help="rewrite the RESULTS.md section from the JSON (no training)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- the runs


def _train(arguments: list[str], log: Path) -> float:
    """Run train.py with `arguments` (output appended to `log`); returns its wall time in seconds."""
    started = time.monotonic()
    with open(log, "a") as handle:
        subprocess.run([sys.executable, str(REPO / "train.py"), *arguments, "--quiet"], stdout=handle,
                       stderr=subprocess.STDOUT, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.monotonic() - started


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _summary(run_dir: Path, seconds: float) -> dict[str, Any]:
    """How a run ended: its last step and epoch, whether early stopping ended it, its epoch
    length, the stopping state at the end and the test uSDR of its best checkpoint."""
    records = _records(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    log = (run_dir / "train.log").read_text()
    last = records[-1]
    best = min(records, key=lambda r: r["valid_loss"] if r.get("valid_loss") is not None else float("inf"))
    evaluation = evaluate_run(run_dir, Path(config["data_root"]))
    return {
        "steps": last["step"], "epochs": last["epoch"], "steps_per_epoch": config["steps_per_epoch"],
        "early_stopped": "early stopping:" in log, "wall_minutes": round(seconds / 60.0, 2),
        "train_minutes": round(sum(r["seconds"] for r in records) / 60.0, 2),
        "best_step": best["step"], "stale_epochs": last.get("stale_epochs"),
        "smoothing": config.get("early_stopping_smoothing"), "min_delta": config.get("early_stopping_min_delta"),
        "patience": config["early_stopping_patience"],
        "curve": [{"step": r["step"], "valid_loss": r.get("valid_loss"), "smoothed": r.get("smoothed_valid_loss")}
                  for r in records],
        "usdr": {t: evaluation["targets"][t]["usdr"] for t in TARGETS},
        "average": evaluation["average"]["usdr"],
    }


def measure(model: str, set_name: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The default run and its continuation, and/or the old rule, for one model and set (`args.runs`)."""
    work = args.work_dir / f"{model}-{set_name}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "train.log"
    common = ["--model", model, "--musdb-root", str(root), "--seed", str(args.seed)]
    result: dict[str, Any] = {"model": model, "set": set_name, "minutes": args.minutes, "seed": args.seed}
    if "default" in args.runs:
        result.update(_default_and_continued(work, common, log, args))
    if "baseline" in args.runs:
        baseline_dir = work / "baseline"
        shutil.rmtree(baseline_dir, ignore_errors=True)
        print(f"{model} / {set_name}: the rule before issue 27: {' '.join(BASELINE)}", flush=True)
        seconds = _train([*common, "--run-dir", str(baseline_dir), "--max-minutes", f"{args.minutes:g}",
                          "--epochs", "100000", *BASELINE], log)
        result["baseline"] = _summary(baseline_dir, seconds)
        print(f"  baseline stopped at step {result['baseline']['steps']}: average uSDR "
              f"{result['baseline']['average']:.2f} dB", flush=True)
    return result


def _default_and_continued(work: Path, common: list[str], log: Path, args: argparse.Namespace) -> dict[str, Any]:
    default_dir = work / "default"
    shutil.rmtree(default_dir, ignore_errors=True)
    print(f"{common[1]} / {work.name}: default run, --max-minutes {args.minutes:g}", flush=True)
    seconds = _train([*common, "--run-dir", str(default_dir), "--max-minutes", f"{args.minutes:g}"], log)
    default = _summary(default_dir, seconds)
    print(f"  stopped at step {default['steps']} ({'early stopping' if default['early_stopped'] else 'time budget'}), "
          f"average uSDR {default['average']:.2f} dB", flush=True)
    result: dict[str, Any] = {"default": default}
    remaining = args.minutes - default["wall_minutes"]
    if default["early_stopped"] and remaining > 0.5:
        continued_dir = work / "continued"
        shutil.rmtree(continued_dir, ignore_errors=True)
        shutil.copytree(default_dir, continued_dir)
        print(f"  continued: --resume --patience {LONG_PATIENCE} for {remaining:.1f} more minutes", flush=True)
        seconds = _train(["--resume", str(continued_dir), "--patience", LONG_PATIENCE, "--max-minutes", f"{remaining:.2f}"],
                         log)
        continued = _summary(continued_dir, seconds)
        continued["wall_minutes"] = round(default["wall_minutes"] + continued["wall_minutes"], 2)
        result["continued"] = continued
        print(f"  continued to step {continued['steps']}: average uSDR {continued['average']:.2f} dB", flush=True)
    return result


# ----------------------------------------------------------------------------- validation cost


def validation_cost(root: Path, repeats: int) -> dict[str, Any]:
    """Seconds of one validation pass of the U-Net on the demo set over the old and the new
    validation set (interleaved, median of `repeats`), and of one training step."""
    import tensorflow as tf

    from mss_tf.config import TrainConfig
    from mss_tf.data.pipeline import PipelineConfig, make_dataset, validation_dataset
    from mss_tf.data.shards import read_manifest
    from mss_tf.models.registry import build_model
    from mss_tf.training.loop import Trainer
    from mss_tf.training.run import ensure_shards, make_datasets

    config = TrainConfig(model="unet").resolve()
    shards = ensure_shards(config, root, None, progress=False, echo=print)
    train, _ = make_datasets(config, shards)
    spec, targets = config.spectrogram, list(config.targets or [])
    batch = int(config.batch_size)  # type: ignore[arg-type]
    sets = {
        # before issue 27: the first training-length piece (3 s) of every stored crop
        "before": make_dataset(shards / "valid", spec, targets, PipelineConfig(batch_size=batch,
                               train_frames=config.train_frames()), training=False),
        "now": validation_dataset(shards / "valid", spec, targets, batch),
    }
    trainer = Trainer(build_model("unet", stft=spec, **config.model_kwargs), config)
    iterator = iter(train(0))
    trainer.train_step(*next(iterator))
    step_times = []
    for _ in range(40):
        mixture, reference = next(iterator)
        started = time.perf_counter()
        trainer.train_step(mixture, reference)
        step_times.append(time.perf_counter() - started)
    times: dict[str, list[float]] = {name: [] for name in sets}
    audio: dict[str, float] = {}
    for name, ds in sets.items():  # the first pass traces the function: not timed
        trainer.validate(ds)
        frames = sum(int(m.shape[0]) * int(m.shape[1]) for m, _ in ds)
        audio[name] = frames * spec.hop / spec.sample_rate
    for _ in range(repeats):
        for name, ds in sets.items():
            started = time.perf_counter()
            trainer.validate(ds)
            times[name].append(time.perf_counter() - started)
    manifest = read_manifest(shards / "valid")
    step = statistics.median(step_times)
    result = {"valid_crops": int(manifest["n_examples"]), "valid_songs": len(manifest["tracks"]), "step_s": step,
              "steps_per_epoch": int(config.steps_per_epoch)}  # type: ignore[arg-type]
    for name in sets:
        seconds = statistics.median(times[name])
        result[name] = {"seconds": seconds, "audio_seconds": round(audio[name], 1), "range": [min(times[name]), max(times[name])],
                        "share_of_100_steps": seconds / (seconds + 100 * step),
                        "share_of_epoch": seconds / (seconds + int(config.steps_per_epoch) * step)}  # type: ignore[arg-type]
    tf.keras.backend.clear_session()
    return result


# ----------------------------------------------------------------------------- tables


def _row_text(name: str, run: dict[str, Any]) -> list[Any]:
    ended = "early stopping" if run["early_stopped"] else "time budget"
    return ([name, f"{run['steps']:,} ({run['epochs']} x {run['steps_per_epoch']})", ended, f"{run['best_step']:,}",
             f"{run['wall_minutes']:.1f}"] + [f"{run['usdr'][t]:.2f}" for t in TARGETS] + [f"{run['average']:.2f}"])


def _replay(run: dict[str, Any], rule: Any) -> tuple[int | None, int]:
    """Where `rule` would have stopped `run` (its step; None: not within the run) and the most
    epochs in a row without progress it counted in the run's first 20 epochs."""
    from mss_tf.training.stopping import StoppingState, update

    state, most = StoppingState(), 0
    for index, point in enumerate(run["curve"]):
        decision = update(rule, state, float("nan") if point["valid_loss"] is None else point["valid_loss"])
        state = decision.state
        if index < 20:
            most = max(most, state.stale_epochs)
        if decision.stop:
            return point["step"], most
    return None, most


def _verdict(entry: dict[str, Any]) -> str:
    from mss_tf.training.stopping import StoppingRule

    label = f"{entry['model']} / {entry['set']} ({entry['minutes']:g} min, {SET_TEXT[entry['set']]})"
    parts = []
    default = entry.get("default")
    final = entry.get("continued", default)
    if default:
        if default["early_stopped"]:
            gap = final["average"] - default["average"]
            parts.append(f"the default stopped at step {default['steps']:,}; continuing it to step {final['steps']:,} "
                         f"changed the average test uSDR by {gap:+.2f} dB ({'within' if gap <= 0.2 else 'NOT within'} 0.2 dB)")
        else:
            parts.append(f"the default did not stop within the budget (step {default['steps']:,}, "
                         f"{default['stale_epochs']} epoch(s) without progress at the end, of {default['patience']})")
        raw_step, _ = _replay(default, StoppingRule(patience=10))
        parts.append("the raw rule (a new minimum within 10 epochs) on the same validation curve would "
                     + (f"have stopped it at step {raw_step:,}" if raw_step else "not have stopped it either"))
    base = entry.get("baseline")
    if base:
        text = (f"the rule before issue 27 {'stopped' if base['early_stopped'] else 'ran'} at step {base['steps']:,} "
                f"with {base['average']:.2f} dB")
        if final:
            text += f", {base['average'] - final['average']:+.2f} dB from the default's end"
        rule = StoppingRule(patience=int(default["patience"]) if default else 10,
                            min_delta=float(default["min_delta"]) if default else 0.002,
                            smoothing=float(default["smoothing"]) if default else 0.8)
        step, most = _replay(base, rule)
        stopped = f"have stopped it at step {step:,}" if step else "not have stopped it"
        text += (f"; the default rule on its 100-step epochs would {stopped} (at most {most} epoch(s) in a row without "
                 f"progress in the first 20, of the {rule.patience} that stop a run: `make demo`'s 20 epochs of 100 steps "
                 f"{'run whole' if most < rule.patience else 'may stop early'})")
        parts.append(text)
    return f"- {label}: " + "; ".join(parts) + "."


def markdown(data: dict[str, Any]) -> str:
    info = data["machine"]
    parts = [machine_line(info), (
        "`benchmarks/early_stopping.py`, seed 0, one run at a time with "
        "`TF_NUM_INTRAOP_THREADS=1` (niced, or pinned to one core) on a machine shared with other jobs (so the steps a budget buys vary "
        "between runs). **default**: `train.py --model M --max-minutes T` with every other setting the "
        "preset's (epochs sized by the data, validation on every stored crop of the validation songs, the "
        "smoothed stopping rule); **continued**: the default run resumed with `--patience 1000` for the rest of "
        "the T minutes (only when the default stopped early; otherwise the default is its own continuation); "
        "**rule before issue 27**: the same data and seed with `--steps-per-epoch 100 --smoothing 0 "
        "--min-delta 0 --patience 10`. Test uSDR in dB of the best checkpoint on the full test songs; "
        "\"best step\": the step of that checkpoint; minutes: wall time of the training commands.")]
    header = ["model / set / run", "steps (epochs x steps)", "ended by", "best step", "minutes"] + list(TARGETS) + ["average"]
    rows = []
    for entry in data["runs"]:
        label = f"{entry['model']} / {entry['set']}"
        for key, name in (("default", "default"), ("continued", "continued"), ("baseline", "rule before issue 27")):
            if key in entry:
                rows.append(_row_text(f"{label} / {name}", entry[key]))
    if rows:
        parts += [markdown_table(header, rows), "\n".join(_verdict(entry) for entry in data["runs"])]
    cost = data.get("validation")
    if cost:
        parts.append(
            f"Validation cost, `unet` on the demo set ({cost['valid_songs']} validation songs, {cost['valid_crops']} stored "
            f"crops of 6 s), median of interleaved passes (measured {cost['date']}): before issue 27 (the first 3 s of each "
            f"crop, {cost['before']['audio_seconds']:g} s of audio) {cost['before']['seconds']:.3f} s per validation; now "
            f"(every crop whole, {cost['now']['audio_seconds']:g} s) {cost['now']['seconds']:.3f} s "
            f"({cost['now']['seconds'] / cost['before']['seconds']:.2f}x); a training step takes {cost['step_s']:.3f} s. "
            f"Share of an epoch spent validating: `make demo`'s 100-step epochs {100 * cost['before']['share_of_100_steps']:.1f}% "
            f"before, {100 * cost['now']['share_of_100_steps']:.1f}% now (+{20 * (cost['now']['seconds'] - cost['before']['seconds']):.1f} s "
            f"over its 20 epochs); the data-sized epoch of {cost['steps_per_epoch']} steps: "
            f"{100 * cost['now']['share_of_epoch']:.1f}%.")
    return "\n\n".join(parts)


def readme_summary(data: dict[str, Any]) -> str:
    """The README's block: one line per model and set, and the validation cost."""
    info = data["machine"]
    lines = [f"{info['date']}, {info['cores']} cores of {info['cpu']} shared with other jobs, "
             "`benchmarks/early_stopping.py` (per-target uSDR: `benchmarks/RESULTS.md`, \"Early stopping\"):", ""]
    lines += [_verdict(entry) for entry in data["runs"]]
    cost = data.get("validation")
    if cost:
        lines += ["", f"Validating on every crop whole costs the U-Net {cost['now']['seconds']:.2f} s an epoch on the demo set "
                  f"against {cost['before']['seconds']:.2f} s for the first 3 s of each crop "
                  f"({100 * cost['now']['share_of_100_steps']:.1f}% of a 100-step epoch of `make demo`, "
                  f"{100 * cost['now']['share_of_epoch']:.1f}% of a data-sized one)."]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    path = RESULTS_DIR / f"{RESULTS}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    if not args.render:
        from mss_tf.data import demo
        from mss_tf.data.roots import data_dir

        data["machine"] = machine()
        roots = {name: demo.make_demo_set(data_dir() / SETS[name][0], **SETS[name][1])
                 for name in (["demo"] if args.validation_only else args.sets)}
        if not args.no_validation:
            data["validation"] = {**validation_cost(roots["demo"] if "demo" in roots else
                                                    demo.make_demo_set(data_dir() / "demo-musdb"), args.repeats),
                                  "date": data["machine"]["date"]}
            if not args.no_write:
                write_json(RESULTS, data)
        if not args.validation_only:
            for model in args.models:
                for set_name in args.sets:
                    entry = measure(model, set_name, roots[set_name], args)
                    earlier = [r for r in data["runs"] if (r["model"], r["set"]) == (model, set_name)]
                    if earlier and "default" in args.runs:  # a new default run replaces its continuation
                        earlier[0].pop("continued", None)
                    entry = {**(earlier[0] if earlier else {}), **entry}
                    data["runs"] = [r for r in data["runs"] if (r["model"], r["set"]) != (model, set_name)] + [entry]
                    data["runs"].sort(key=lambda r: (r["model"] != "unet", r["model"], list(SETS).index(r["set"])))
                    if not args.no_write:
                        write_json(RESULTS, data)  # after every run: a long measurement keeps what it finished
    body = markdown(data)
    print(body)
    if not args.no_write:
        write_section("Early stopping (benchmarks/early_stopping.py)", body)
        write_readme_block("early-stopping", readme_summary(data))


if __name__ == "__main__":
    main()
