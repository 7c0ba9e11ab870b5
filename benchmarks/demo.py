"""Run `make demo` (timed) and put what it printed into README.md's Results and Evaluation blocks.

    python benchmarks/demo.py [--repo DIR]

`--repo` is the checkout to run `make demo` in (default: this one); a fresh clone measures the
whole first-run experience, set-up excluded when its venv already exists. Writes:

* README.md `<!-- bench:demo -->`: the date, machine, wall time, the evaluation table printed by
  `evaluate.py --run` and the comparison table of the demo U-Net against the IRM2 oracle and
  the mixture (`runs/demo-report/comparison.md`);
* docs/demo_tradeoff.png and docs/demo_sdr_boxplot.png: the report's plots, shown in README.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, machine, machine_line, write_readme_block

REPO = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run `make demo` in (default: this one)")
    args = parser.parse_args()
    info = machine()
    started = time.monotonic()
    result = subprocess.run(["make", "demo"], cwd=args.repo, capture_output=True, text=True)
    seconds = time.monotonic() - started
    sys.stdout.write(result.stdout[-4000:])
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"make demo failed with exit code {result.returncode}")
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("unet on "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("separation:"))
    table = "\n".join(lines[start : end + 1])
    report = args.repo / "runs" / "demo-report"
    comparison = (report / "comparison.md").read_text().strip()
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    for name in ("tradeoff.png", "sdr_boxplot.png"):
        shutil.copyfile(report / name, docs / f"demo_{name}")
    where = "a fresh clone" if args.repo.resolve() != REPO else "this checkout"
    body = "\n".join([
        f"`make demo` in {where}: {machine_line(info)} Wall time {seconds / 60:.0f} min {seconds % 60:.0f} s "
        "(demo set, shards, 2,000 training steps; the U-Net evaluated with and without the Wiener filter, the IRM2 "
        "oracle and the mixture; the report).",
        "",
        "```",
        table,
        "```",
        "",
        comparison,
        "",
        "![average SDR against parameters and separation time](docs/demo_tradeoff.png)",
        "",
        "![per-track SDR per target](docs/demo_sdr_boxplot.png)",
    ])
    write_readme_block("demo", body)
    print(f"README.md updated ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
