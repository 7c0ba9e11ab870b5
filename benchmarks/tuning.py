"""Run a small hyperparameter search on the demo set and put its summary into README.md.

    python benchmarks/tuning.py [--model unet] [--max-trials 4] [--trial-epochs 2] [--trial-steps 100]

Runs `train.py --model MODEL --tune` (Bayesian optimisation over the model's search space, each
trial trained by the shared loop) in a fresh run directory under runs/, timed, and writes the
README.md block `<!-- bench:tune -->`: the date, machine, command, wall time and the search's
summary table (RUN/tuning/summary.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from common import HERE, machine, machine_line, write_readme_block

REPO = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--tuner", default="bayesian")
    parser.add_argument("--max-trials", type=int, default=4)
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--trial-steps", type=int, default=100)
    args = parser.parse_args()
    run = REPO / "runs" / f"{args.model}-tune-demo"
    shutil.rmtree(run, ignore_errors=True)
    command = ["train.py", "--model", args.model, "--tune", "--tuner", args.tuner, "--max-trials", str(args.max_trials),
               "--trial-epochs", str(args.trial_epochs), "--trial-steps", str(args.trial_steps),
               "--run-dir", str(run.relative_to(REPO)), "--quiet"]
    info = machine()
    started = time.monotonic()
    result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"the search failed with exit code {result.returncode}")
    summary = (run / "tuning" / "summary.md").read_text().strip()
    summary = summary.replace(f"    python train.py --config {run / 'best_config.json'}",
                              f"    python train.py --config {run.relative_to(REPO) / 'best_config.json'}")
    body = "\n".join([
        f"{machine_line(info)} On the demo set, {seconds / 60:.0f} min {seconds % 60:.0f} s:",
        "",
        "```bash",
        f".venv/bin/python {' '.join(command)}",
        "```",
        "",
        summary.replace("# Search:", "**Search:**", 1),
    ])
    write_readme_block("tune", body)
    print(summary)
    print(f"README.md updated ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
