"""Does a speed switch change what a run learns? The digits recipe with every switch on, against
the plain recipe, over the same seeds.

    python benchmarks/switch_accuracy.py [--seeds 3] [--jobs N] [--epochs E]
                                         [--switch cuda_graph=true ...] [--json PATH]

Trains ``sweep`` runs of the ``digits`` recipe (real images, so the top-1 means something) with
``--seeds`` seeds, once plain and once with the ``--switch`` overrides (default: every switch
that changes the update's speed and can be on at once, ``cuda_graph=true``), each in its own
temporary folder, ``--jobs`` runs at a time, as a user would (the CLI, separate processes). It
prints each seed's top-1 and every setting's mean and range; the switched runs pass when their
mean top-1 lies within the plain seeds' range (issue 21: "accuracy must not change"). The last
line is ``switched mean TOP1 within the plain range [LOW, HIGH]: yes|no``. A benchmark, not a
test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWITCHES = ("cuda_graph=true",)


def sweep(output: Path, seeds: int, jobs: int, overrides: list[str]) -> tuple[list[dict], float]:
    """The digits recipe's ``seeds`` runs with ``overrides``; their result.json files (by seed)
    and the sweep's wall time."""
    spec = output / "digits-seeds.yaml"
    spec.write_text("description: the digits recipe, seed by seed\nruns: [digits]\n")
    args = [sys.executable, "-m", "timm_scaling", "sweep", str(spec), "--seeds", str(seeds)]
    args += ["--jobs", str(jobs), "--output", str(output)]
    args += [arg for text in overrides for arg in ("--set", text)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    results = [json.loads(p.read_text()) for p in output.glob("*/result.json")]
    return sorted(results, key=lambda r: r["seed"]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--epochs", type=int, help="[default: the recipe's 8]")
    parser.add_argument("--switch", action="append", help=f"[default: {' '.join(SWITCHES)}]")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    common = [f"epochs={args.epochs}"] if args.epochs else []
    settings = {"plain": common, "switched": [*common, *(args.switch or SWITCHES)]}
    record: dict = {"switches": args.switch or list(SWITCHES), "seeds": args.seeds}
    for name, overrides in settings.items():
        with tempfile.TemporaryDirectory(prefix=f"switch-accuracy-{name}-") as folder:
            results, wall = sweep(Path(folder), args.seeds, args.jobs, overrides)
        top1 = [r["top1"] for r in results]
        record[name] = {"top1": top1, "wall_s": wall, "device": results[0]["device"]}
        print(
            f"{name} ({' '.join(overrides) or 'the recipe'}): top-1 "
            + ", ".join(f"seed {r['seed']} {r['top1']:.2f}" for r in results)
            + f"; mean {statistics.mean(top1):.2f}, range {min(top1):.2f}-{max(top1):.2f}, "
            f"{wall:.0f} s on {results[0]['device']}"
        )
    low, high = min(record["plain"]["top1"]), max(record["plain"]["top1"])
    mean = statistics.mean(record["switched"]["top1"])
    record["within"] = low <= mean <= high
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    verdict = "yes" if record["within"] else "no"
    print(f"switched mean {mean:.2f} within the plain range [{low:.2f}, {high:.2f}]: {verdict}")


if __name__ == "__main__":
    main()
