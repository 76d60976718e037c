"""How close `--plan` comes to the real run: the plan of a run against the run itself.

    python benchmarks/plan_accuracy.py [--recipe digits] [--epochs 3] [--set key=value ...]

Runs ``timm-scaling train RECIPE --epochs N --plan``, then the same run for real, both in a
temporary folder, as a user would (separate processes), and prints the plan's projected run
time, the run's ``train_time_s`` (train and evaluation of every epoch, as the plan projects)
and their ratio; the goal on a CPU is a ratio within 0.6-1.4 for `digits --epochs 3`. The last
line is ``plan/real=R``. A benchmark, not a test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timm_scaling(*args: str, quiet: bool = False) -> float:
    """Run the CLI from this checkout (its stdout dropped if ``quiet``); returns its wall time
    in seconds."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    started = time.perf_counter()
    stdout = subprocess.DEVNULL if quiet else None
    subprocess.run(
        [sys.executable, "-m", "timm_scaling", *args], env=env, check=True, stdout=stdout
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="digits")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    common = [args.recipe, "--epochs", str(args.epochs)]
    common += [a for text in args.overrides for a in ("--set", text)]
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as folder:
        output = Path(folder)
        plan_wall = timm_scaling("train", *common, "--plan", "--output", str(output))
        with (output / "plan.csv").open() as handle:
            (plan,) = list(csv.DictReader(handle))
        real_wall = timm_scaling("train", *common, "--output", str(output))
        (result,) = [json.loads(p.read_text()) for p in output.glob("*/result.json")]
    projected, real = float(plan["run_s"]), float(result["train_time_s"])
    print(f"machine: {result['device']}, torch {result['torch']}, model {result['model']}")
    print(
        f"plan: {projected:.1f} s projected ({plan['updates_measured']} updates measured, "
        f"{plan_wall:.1f} s wall for the plan command)"
    )
    print(f"real: {real:.1f} s train_time_s ({real_wall:.1f} s wall for the train command)")
    print(f"plan/real={projected / real:.2f}")


if __name__ == "__main__":
    main()
