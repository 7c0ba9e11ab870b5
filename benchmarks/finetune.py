"""Six targets from the generic stems layout, and fine-tuning against training from scratch.

    nice -n 19 python benchmarks/finetune.py     # everything (make bench-finetune; about 40 min on 2 cores)
    python benchmarks/finetune.py --quick        # a smoke run of the same steps (unet-tiny, few steps)
    python benchmarks/finetune.py --render       # tables from the JSON

Every step is a project command run as a user would run it:

1. **source**: `train.py --model unet` on the procedural demo set (MUSDB18 layout, four targets
   vocals, drums, bass, other) for `--source-steps` steps.
2. **data**: `datasets/make_demo.py --layout stems`, the same kind of songs with their parts as
   stems (kick, snare, hats, bass, vocals, the song's chord instrument and arpeggio), read through
   the stem map `six.json`: vocals, bass, kick, snare, chords (pad, organ, epiano or guitar:
   every song has one) and other (`*rest*`: hi-hats and arpeggio). Three targets the source
   separates (vocals, bass, other) and three it does not (kick and snare, its drums split, and
   chords, out of its other).
3. **scratch**: `train.py --model unet --data ... --stem-map six.json` for `--steps` steps in
   epochs of 100, validation uSDR per target after each; no early stopping (`--patience 1000`).
4. **fine-tuned**: the same command with `--init-from SOURCE` (every weight trains; the same
   learning rate, seed and data order), and with `--freeze body` as well.
5. Each run's best checkpoint: `evaluate.py --run RUN` (museval BSSEval v4 and uSDR per target on
   the test songs, with the mixture floor: the mixture as every estimate). The fine-tuned run is
   exported (`mss_tf.export`) and a test song separated by `separate.py` with the export: the
   energy of each written `<target>.wav` against its reference stem (a silenced target would be
   -inf dB).

Fine-tuning's benefit is counted in steps: for levels of average validation uSDR (the best the
scratch run reaches, and 0.5 to 3 dB under it), the first step at which each run reaches them. Results go to
`benchmarks/results/finetune.json` and the "Fine-tuning and six targets" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import HERE, RESULTS_DIR, machine, machine_line, markdown_table, write_json, write_section

REPO = HERE.parent
RESULTS = "finetune"
SECTION = "Fine-tuning and six targets (benchmarks/finetune.py)"
STEM_MAP = {"vocals": "vocals", "bass": "bass", "kick": "kick", "snare": "snare",
            "chords": ["pad", "organ", "epiano", "guitar"], "other": "*rest*"}
LEVELS = (3.0, 2.0, 1.0, 0.5, 0.0)  # dB under the scratch run's best average validation uSDR
EPOCH = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet", help="preset (default unet)")
    parser.add_argument("--source-steps", type=int, default=2000, help="steps of the demo-set source model (default 2000)")
    parser.add_argument("--steps", type=int, default=3000, help="steps of each six-target run (default 3000)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-finetune", help="run directories")
    parser.add_argument("--workers", type=int, default=2, help="evaluate.py workers (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="unet-tiny, 60 + 60 steps in epochs of 20, 6 short songs; results not written")
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from the JSON")
    return parser.parse_args(argv)


def run(command: list[Any], log: Path) -> float:
    """A project command (`train.py ...`, `evaluate.py ...`) in its own process; seconds taken."""
    started = time.monotonic()
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(map(str, command))}\n")
        handle.flush()
        subprocess.run([sys.executable, *map(str, command)], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                       check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.monotonic() - started


def curve(run_dir: Path) -> list[dict[str, Any]]:
    """Per epoch: the step reached and validation uSDR per target."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out.append({"step": record["step"], "valid_usdr": record["valid_usdr"]})
    return out


def first_step(points: list[dict[str, Any]], level: float) -> int | None:
    for point in points:
        if np.mean(list(point["valid_usdr"].values())) >= level:
            return int(point["step"])
    return None


def stem_energy(work: Path, track_dir: Path, targets: list[str]) -> dict[str, float]:
    """dB of each `separate.py` output `work/stems/<track>/<target>.wav` against the track's
    reference target (its stems summed through the map): 0 is the right loudness, silence -inf."""
    from mss_tf.audio import io as audio_io
    from mss_tf.data.sources import DataSource

    source = DataSource.open(track_dir.parent.parent, stem_map_file=work / "six.json")
    track = [t for t in source.split_tracks("test") if t.name == track_dir.name][0]
    refs, _ = source.load(track)
    out = {}
    for target in targets:
        estimate, _ = audio_io.load_audio(work / "stems" / track_dir.name / f"{target}.wav")
        ref_power = float(np.mean(np.square(refs[target], dtype=np.float64)))
        est_power = float(np.mean(np.square(estimate, dtype=np.float64)))
        out[target] = round(10 * np.log10(est_power / ref_power), 2) if est_power > 0 else float("-inf")
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from mss_tf.data.roots import data_dir

    started = time.monotonic()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "log.txt"
    model = "unet-tiny" if args.quick else args.model
    epoch = 20 if args.quick else EPOCH
    source_steps, steps = (60, 60) if args.quick else (args.source_steps, args.steps)
    common = ["--steps-per-epoch", epoch, "--patience", 1000, "--seed", 0, "--quiet"]
    if args.quick:
        common += ["--crop-seconds", 2]
    seconds: dict[str, float] = {}

    data = work / "demo-stems" if args.quick else data_dir() / "demo-stems"
    demo = ["--train", 4, "--valid", 1, "--test", 1, "--seconds", 6] if args.quick else []
    seconds["data"] = run(["datasets/make_demo.py", "--layout", "stems", "--out", data, "--quiet", *demo], log)
    musdb = ["--musdb-root", work / "demo-musdb"] if args.quick else []
    if args.quick:
        run(["datasets/make_demo.py", "--out", work / "demo-musdb", "--train", 4, "--test", 1, "--seconds", 6,
             "--quiet"], log)
    stem_map = work / "six.json"
    stem_map.write_text(json.dumps(STEM_MAP, indent=1) + "\n")
    source = work / "source"
    seconds["source"] = run(["train.py", "--model", model, *musdb, "--run-dir", source,
                             "--epochs", source_steps // epoch, *common], log)
    six = ["--data", data, "--stem-map", stem_map, "--epochs", steps // epoch, *common]
    runs = {"scratch": ["--model", model], "fine-tuned": ["--init-from", source],
            "fine-tuned, body frozen": ["--init-from", source, "--freeze", "body"]}
    results: dict[str, Any] = {}
    for name, extra in runs.items():
        run_dir = work / name.replace(", ", "-").replace(" ", "-")
        seconds[name] = run(["train.py", *extra, *six, "--run-dir", run_dir], log)
        run(["evaluate.py", "--run", run_dir, "--workers", args.workers, "--quiet",
             *(["--fast"] if args.quick else [])], log)
        evaluated = json.loads((run_dir / "results.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        results[name] = {"curve": curve(run_dir), "test": {t: evaluated["targets"][t] for t in STEM_MAP},
                         "average": evaluated["average"], "floor": evaluated["baseline"],
                         "init_from": config.get("init_from"), "seconds": round(seconds[name], 1)}
    tuned = work / "fine-tuned"
    run(["-m", "mss_tf.export", tuned, tuned / "export"], log)
    track = sorted(p for p in (data / "test").iterdir() if p.is_dir())[0]
    song = work / f"{track.name}.wav"
    shutil.copyfile(track / "mixture.wav", song)
    run(["separate.py", song, "--model", tuned / "export", "--out", work / "stems"], log)
    results["fine-tuned"]["separated"] = {"song": track.name, "energy_db": stem_energy(work, track, list(STEM_MAP))}
    best = max(np.mean(list(p["valid_usdr"].values())) for p in results["scratch"]["curve"])
    levels = [round(best - below, 2) for below in LEVELS]
    for name in runs:
        results[name]["steps_to"] = {str(level): first_step(results[name]["curve"], level) for level in levels}
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "model": model,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "source_steps": source_steps, "steps": steps, "epoch": epoch, "stem_map": STEM_MAP,
            "levels": levels, "source_seconds": round(seconds["source"], 1), "runs": results}


def render(result: dict[str, Any]) -> str:
    runs = result["runs"]
    names = list(runs)
    targets = list(result["stem_map"])
    lines = [
        f"{machine_line(result['machine'])} `python benchmarks/finetune.py` "
        f"(`make bench-finetune`), {result['minutes']:.0f} min. `{result['model']}` on the demo songs' parts as stems "
        "(`datasets/make_demo.py --layout stems`) through the stem map "
        f"`{json.dumps(result['stem_map'])}`: six targets, three of them (kick, snare, chords) not in MUSDB18. "
        f"Each run {result['steps']:,} steps in epochs of {result['epoch']}, seed 0, no early stopping. "
        f"*fine-tuned*: `train.py --init-from` a `{result['model']}` trained on the four-target demo set for "
        f"{result['source_steps']:,} steps ({result['source_seconds'] / 60:.1f} min; vocals, bass and other heads "
        "reused, kick, snare and chords new), every weight training; *body frozen*: `--freeze body` too.",
        "",
        "Steps to reach an average validation uSDR (the best the scratch run reaches, and 0.5, 1, 2 and 3 dB under "
        "it; validated every epoch; minutes are wall time on a shared machine, the comparison is in steps):",
        "",
        markdown_table(["run", *[f"{level:.2f} dB" for level in result["levels"]], "best valid uSDR", "minutes"],
                       [[name, *[f"{s:,}" if s is not None else "not reached" for s in runs[name]["steps_to"].values()],
                         f"{max(np.mean(list(p['valid_usdr'].values())) for p in runs[name]['curve']):.2f}",
                         f"{runs[name]['seconds'] / 60:.1f}"] for name in names]),
        "",
        "Test songs, best checkpoint, `evaluate.py` (cSDR: museval BSSEval v4, median over frames, median over "
        "songs; uSDR over the whole song, mean over songs), dB; *mixture* is the floor (the mixture as every "
        "estimate's uSDR):",
        "",
    ]
    header = ["run", *[f"{t} cSDR / uSDR" for t in targets], "average cSDR / uSDR"]

    def pair(scores: dict[str, Any]) -> str:
        return f"{scores['csdr']:.2f} / {scores['usdr']:.2f}" if "csdr" in scores else f"- / {scores['usdr']:.2f}"

    rows = [[name, *[pair(runs[name]["test"][t]) for t in targets], pair(runs[name]["average"])] for name in names]
    floor = runs[names[0]]["floor"]
    rows.append(["mixture", *[pair(floor["targets"][t]) for t in targets], pair(floor["average"])])
    lines.append(markdown_table(header, rows))
    separated = runs["fine-tuned"]["separated"]
    lines += ["", f"`separate.py` with the fine-tuned run's SavedModel on `{separated['song']}`: level of each "
              "written stem against its reference (dB; 0 is the reference's loudness, a silenced target -inf):", "",
              markdown_table(targets, [[f"{separated['energy_db'][t]:+.2f}" for t in targets]])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = RESULTS_DIR / f"{RESULTS}.json"
    if args.render:
        result = json.loads(path.read_text())
    else:
        result = measure(args)
        if args.quick:
            print(render(result))
            return 0
        write_json(RESULTS, result)
    write_section(SECTION, render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
