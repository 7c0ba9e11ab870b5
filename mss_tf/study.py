"""The study in one command: NMF, U-Net, BSRNN, BSRNN-SE, BS-RoFormer and Mel-Band RoFormer trained
and evaluated alike.

    python -m mss_tf.study [--budget-minutes 90] [--musdb-root DIR] [--size cpu|paper] [--seeds 1]
                           [--ablation] [--question models|se [--quick]] [--out study]

Runs the project's own commands, so every number in the report is what a user would get:

1. `train.py` for each model (all four targets; NMF, the U-Net, and the CPU-sized BSRNN, BSRNN-SE,
   BS-RoFormer and Mel-Band RoFormer, or the paper-size ones with `--size paper`) with the same seed and the same budget:
   a share of `--budget-minutes` each (`--max-minutes`), or `--budget-steps` training steps each.
   The data is prepared once per STFT configuration (train.py caches shards by their settings).
2. `evaluate.py` on the same test tracks for each (museval BSSEval v4 and uSDR; `--fast` for the
   fast BSSEval), plus the IRM2 oracle at the U-Net's STFT (the ceiling) and the mixture (the floor).
3. `evaluate.py --compare`: the table and the quality-versus-complexity plots; then the training
   curves of all models in one figure, parameter counts, training time and separation speed,
   and with `--seeds N` each model's mean and spread over N trainings, in `OUT/REPORT.md`.

`--question se` asks whether Squeeze-and-Excitation helps BSRNN (issue 26): BSRNN-small against
BSRNN-SE-small and the ablation variants, the same `--budget-steps` (default 1000) for each, `--seeds`
(default 3) paired seeds each, evaluated alike; it writes `OUT/SE.md` (mss_tf.study_se: final SDRs,
validation curves, steps to fixed levels, paired differences with bootstrap intervals, a verdict,
the SE gates and SE's cost) instead of REPORT.md, with its runs in `OUT/runs/se/` and its state in
`OUT/se.json`. `--quick` runs the question in minutes for a test: the tiny presets, 2 seeds, no
ablation, 6 steps, fast BSSEval on the first 4 s of one test track.

`--ablation` adds BSRNN-SE variants: the SE blocks after each BLSTM or after each module (time and
band BLSTM pair), with reduction r in {4, 8, 16}. Run the same command again and finished runs
(those with results) are reused, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mss_tf import cli
from mss_tf.errors import ConfigError
from mss_tf.utils import atomic_write

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "cpu": ["nmf", "unet", "bsrnn-small", "bsrnn-se-small", "bs-roformer-small", "mel-roformer-small"],
    "paper": ["nmf", "unet", "bsrnn", "bsrnn-se", "bs-roformer", "mel-roformer"],
}
TRAIN_SHARE = 0.7  # of --budget-minutes for training; the rest evaluates
STEPS_PER_EPOCH = 100  # the budget is checked at each epoch's end
ABLATION = [(placement, r) for placement in ("blstm", "module") for r in (4, 8, 16)]
ORACLE, MIXTURE = "oracle-irm2", "mixture"
SE_MODELS = {"cpu": ["bsrnn-small", "bsrnn-se-small"], "paper": ["bsrnn", "bsrnn-se"], "quick": ["bsrnn-tiny", "bsrnn-se-tiny"]}
SE_BUDGET_STEPS = 1000  # per run of --question se: 21 runs of bsrnn(-se)-small at ~0.6 s a step on 2 cores, ~4 h
SE_EPOCHS = 10  # validation points per run of --question se
QUICK = {"seeds": 2, "budget_steps": 6, "tracks": 1, "max_seconds": 4.0, "fast": True}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m mss_tf.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=90.0,
                        help="the whole study's time: 70%% goes to training, shared equally by the trained models "
                        "(default 90: 12.6 minutes for each of the five neural models of --size cpu)")
    parser.add_argument("--budget-steps", type=int,
                        help="instead of a time share, train every model for this many steps")
    parser.add_argument("--musdb-root", help="MUSDB18(-HQ) folder (default: $MUSDB_PATH, else the demo set)")
    parser.add_argument("--data", help="instead: a multitrack folder in any layout (train.py --data), its targets "
                        "the models' (e.g. a stems folder with --stem-map)")
    parser.add_argument("--layout", choices=["musdb", "stems", "moisesdb"], help="with --data: its layout")
    parser.add_argument("--stem-map", help="with --data: JSON file grouping raw stems into targets")
    parser.add_argument("--size", choices=list(MODELS), default="cpu",
                        help="cpu: the -small BSRNN and RoFormer presets, which learn on 2 CPU cores in minutes; paper: the papers' sizes (GPU)")
    parser.add_argument("--models", nargs="+", help="presets to compare (default: nmf, unet, the BSRNN pair and the two RoFormers of --size)")
    parser.add_argument("--question", choices=["models", "se"], default="models",
                        help="models: every model under one budget (REPORT.md); se: does SE help BSRNN? (SE.md, issue 26)")
    parser.add_argument("--quick", action="store_true",
                        help="with --question se: the tiny presets, 2 seeds, 6 steps, one track (minutes; for a test)")
    parser.add_argument("--seeds", type=int, help="train each model this many times (seeds 0..N-1; default 1, 3 for --question se)")
    parser.add_argument("--ablation", action="store_true",
                        help="also train BSRNN-SE with SE after each BLSTM or each module, r in {4, 8, 16}")
    parser.add_argument("--tracks", type=int, help="evaluate the first N test tracks (default all)")
    parser.add_argument("--max-seconds", type=float, help="evaluate the first S seconds of each track")
    parser.add_argument("--fast", action="store_true", help="the fast BSSEval v4 instead of museval")
    parser.add_argument("--workers", type=int, default=2, help="BSSEval processes per evaluation (default 2)")
    parser.add_argument("--out", type=Path, default=Path("study"), help="study folder (default study/)")
    parser.add_argument("--readme", type=Path, metavar="README",
                        help="also put the report into this file's <!-- bench:study --> block (make study: README.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The trainings: one per model (and ablation variant) and seed."""
    from mss_tf.models.registry import get_preset, is_neural

    se = getattr(args, "question", "models") == "se"
    models = args.models or (SE_MODELS["quick" if args.quick else args.size] if se else MODELS[args.size])
    seeds = args.seeds or (QUICK["seeds"] if se and args.quick else 3 if se else 1)
    ablation = args.ablation or (se and not args.quick)
    jobs = []
    for preset in models:
        get_preset(preset)
        variants: list[tuple[str, dict[str, Any]]] = [(preset, {})]
        kwargs = get_preset(preset).kwargs
        if ablation and kwargs.get("squeeze_excitation"):
            default = ("blstm", int(kwargs.get("se_reduction", 16)))
            variants += [(f"{preset} SE/{placement} r={r}", {"se_placement": placement, "se_reduction": r})
                         for placement, r in ABLATION if (placement, r) != default]
        for label, model_args in variants:
            for seed in range(seeds if is_neural(preset) else 1):  # NMF's fit does not depend on a seed
                name = label.replace(" ", "_").replace("/", "-").replace("=", "")
                jobs.append({"label": label, "preset": preset, "model_args": model_args, "seed": seed,
                             "neural": is_neural(preset), "dir": f"{'se/' if se else ''}{name}-seed{seed}"})
    return jobs


def _run(command: list[str], log, verbose: bool = False) -> float:  # noqa: ANN001
    """Run one of the project's CLIs; its output goes to the study log. Returns its wall time."""
    started = time.monotonic()
    command = [*command, cli.VERBOSE_FLAG] if verbose else command
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    result = subprocess.run([sys.executable, *command], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ConfigError(f"{command[0]} failed (exit {result.returncode}); see {log.name}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    se = args.question == "se"
    if args.quick and not se:
        raise ConfigError("--quick is a setting of --question se")
    if se:  # the same number of steps for every run, whatever else the machine does
        for key, value in (QUICK if args.quick else {"budget_steps": SE_BUDGET_STEPS}).items():
            if key != "seeds" and getattr(args, key) in (None, False):
                setattr(args, key, value)
    if args.seeds is not None and args.seeds < 1 or args.budget_minutes <= 0 or (args.budget_steps is not None and args.budget_steps < 1):
        raise ConfigError("--seeds, --budget-minutes and --budget-steps must be positive")
    if args.data and args.musdb_root:
        raise ConfigError("--data and --musdb-root name the same thing; give one")
    if (args.layout or args.stem_map) and not args.data:
        raise ConfigError(f"{'--layout' if args.layout else '--stem-map'} needs --data DIR (the folder it describes)")
    args.seeds = args.seeds or (QUICK["seeds"] if args.quick else 3 if se else 1)
    jobs = plan(args)
    if se:
        from mss_tf.models.registry import get_preset

        presets = list(dict.fromkeys(j["preset"] for j in jobs))
        if len(presets) != 2 or get_preset(presets[0]).model != "BSRNN" or get_preset(presets[1]).model != "BSRNN" or \
                get_preset(presets[0]).kwargs.get("squeeze_excitation") or not get_preset(presets[1]).kwargs.get("squeeze_excitation"):
            raise ConfigError("--question se compares a BSRNN with a BSRNN-SE: --models PLAIN SE "
                              "(e.g. bsrnn-small bsrnn-se-small)")
    out = args.out.resolve()
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    neural = [j for j in jobs if j["neural"]]
    minutes = args.budget_minutes * TRAIN_SHARE / max(1, len(neural))
    data = ["--musdb-root", args.musdb_root] if args.musdb_root else []
    if args.data:
        data = ["--data", str(Path(args.data).resolve()), *(["--layout", args.layout] if args.layout else []),
                *(["--stem-map", str(Path(args.stem_map).resolve())] if args.stem_map else [])]
    evaluation = ["--workers", str(args.workers), "--quiet"] + (["--fast"] if args.fast else [])
    evaluation += (["--tracks", str(args.tracks)] if args.tracks else [])
    evaluation += (["--max-seconds", str(args.max_seconds)] if args.max_seconds else [])
    state_path = out / ("se.json" if se else "study.json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    state.update({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "minutes_per_model": None if args.budget_steps else minutes})
    # per step of the study ("<run>/train", "<run>/evaluate", ...): the command it ran and its wall
    # time. A finished run is reused only if it was made by the same commands (same budget, data,
    # seed and evaluation), so a changed budget or a stale study.json never mixes into the report.
    steps = state.setdefault("steps", {})

    def done(name: str, commands: dict[str, list[str]]) -> bool:
        return (runs / name / "results.json").is_file() and all(
            steps.get(f"{name}/{key}", {}).get("command") == command for key, command in commands.items())

    def record(key: str, command: list[str], log) -> None:  # noqa: ANN001
        steps[key] = {"command": command, "seconds": _run(command, log, args.verbose)}
        atomic_write(state_path, json.dumps(state, indent=2))

    with open(out / "study.log", "a") as log:
        for index, job in enumerate(jobs, 1):
            run = runs / job["dir"]
            train = ["train.py", "--model", job["preset"], "--run-dir", str(run), "--seed", str(job["seed"]),
                     "--quiet", *data]
            for key, value in job["model_args"].items():
                train += ["--model-arg", f"{key}={json.dumps(value)}"]
            if job["neural"]:
                if args.budget_steps:  # the same number of steps for every model
                    per_epoch = min(STEPS_PER_EPOCH, args.budget_steps)
                    if se:  # validation every tenth of the budget: the convergence curves
                        per_epoch = max(1, math.ceil(args.budget_steps / SE_EPOCHS))
                    train += ["--steps-per-epoch", str(per_epoch), "--epochs", str(math.ceil(args.budget_steps / per_epoch))]
                else:
                    train += ["--steps-per-epoch", str(STEPS_PER_EPOCH), "--epochs", "100000",
                              "--max-minutes", f"{minutes:.3f}"]
                train += ["--patience", "100000"]  # the budget ends the training, not early stopping
            evaluate = ["evaluate.py", "--run", str(run), "--label", job["label"], *evaluation]
            if done(job["dir"], {"train": train, "evaluate": evaluate}):
                print(f"[{index}/{len(jobs)}] {job['label']} seed {job['seed']}: done earlier", flush=True)
                continue
            print(f"[{index}/{len(jobs)}] {job['label']} seed {job['seed']}: training", flush=True)
            if run.exists():  # interrupted, or made by other commands: train again from scratch
                shutil.rmtree(run)
            record(f"{job['dir']}/train", train, log)
            print(f"[{index}/{len(jobs)}] {job['label']} seed {job['seed']}: evaluating", flush=True)
            record(f"{job['dir']}/evaluate", evaluate, log)
        for name, extra in () if se else ((ORACLE, ["--oracle", "irm2", "--preset", "unet", "--label", "oracle IRM2 (U-Net STFT)"]),
                            (MIXTURE, ["--mixture", "--label", "mixture"])):
            command = ["evaluate.py", *extra, "--out", str(runs / name), *data, *evaluation]
            if not done(name, {"evaluate": command}):
                print(f"{name}: evaluating", flush=True)
                shutil.rmtree(runs / name, ignore_errors=True)
                record(f"{name}/evaluate", command, log)
        first = [runs / j["dir"] for j in jobs if j["seed"] == 0]
        if not se:
                record("compare", ["evaluate.py", "--compare", *map(str, first), str(runs / ORACLE), str(runs / MIXTURE),
                               "--out", str(out)], log)
    # the whole study: the time of every step whose output is in this report
    current = {f"{j['dir']}/{k}" for j in jobs for k in ("train", "evaluate")}
    current |= set() if se else {f"{ORACLE}/evaluate", f"{MIXTURE}/evaluate", "compare"}
    state["steps"] = {k: v for k, v in steps.items() if k in current}
    state["study_seconds"] = sum(v["seconds"] for v in state["steps"].values())
    state.pop("train_seconds", None)  # the layout before per-step records
    atomic_write(state_path, json.dumps(state, indent=2))
    from mss_tf.study_report import readme_body, replace_block, write_report

    if se:
        from mss_tf.study_se import write_se_report

        report = write_se_report(out, jobs, state, cost_steps=2 if args.quick else 10, gate_crops=2 if args.quick else 8)
    else:
        report = write_report(out, jobs, state)
    print(report.read_text())
    block = "study-se" if se else "study"
    if args.readme is not None and not replace_block(args.readme, block, readme_body(report, "make study-se" if se else "make study")):
        raise ConfigError(f"{args.readme}: no <!-- bench:{block} --> block to write the report into")
    return 0


if __name__ == "__main__":
    cli.run(main)
