"""Does a speed switch change what a run learns? The digits recipe with each switch on, against
the plain recipe, over the same seeds.

    python benchmarks/switch_accuracy.py [--seeds 3] [--jobs N] [--epochs E]
                                         [--switch cuda_graph=true --switch=--fuse-seeds ...]
                                         [--json PATH]

Trains ``sweep`` runs of the ``digits`` recipe (real images, so the top-1 means something) with
``--seeds`` seeds, once plain and once with each ``--switch`` (a recipe override, or a sweep
option such as ``--fuse-seeds``; default: each switch of issue 21, ``cuda_graph=true`` and
``--fuse-seeds``, which cannot be on together), each in its own temporary folder, ``--jobs``
runs at a time, as a user would (the CLI, separate processes). It prints each seed's top-1
and every setting's mean and range; a switch passes when its mean top-1 lies within the plain
seeds' range (issue 21: "accuracy must not change"). The last lines are ``SWITCH: mean TOP1
within the plain range [LOW, HIGH]: yes|no``. A benchmark, not a test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from plan_accuracy import timm_scaling  # the CLI run from this checkout, as a user runs it

SWITCHES = ("cuda_graph=true", "--fuse-seeds")


def sweep(output: Path, seeds: int, jobs: int, overrides: list[str]) -> tuple[list[dict], float]:
    """The digits recipe's ``seeds`` runs with ``overrides``; their result.json files (by seed)
    and the sweep's wall time."""
    spec = output / "digits-seeds.yaml"
    spec.write_text("description: the digits recipe, seed by seed\nruns: [digits]\n")
    args = ["sweep", str(spec), "--seeds", str(seeds), "--jobs", str(jobs), "--output", str(output)]
    for text in overrides:  # a sweep option as it is, a recipe key with --set
        args += [text] if text.startswith("--") else ["--set", text]
    seconds = timm_scaling(*args, quiet=True)
    results = [json.loads(p.read_text()) for p in output.glob("*/result.json")]
    return sorted(results, key=lambda r: r["seed"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--epochs", type=int, help="[default: the recipe's 8]")
    parser.add_argument("--switch", action="append", help=f"[default: {' '.join(SWITCHES)}]")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    common = [f"epochs={args.epochs}"] if args.epochs else []
    switches = args.switch or list(SWITCHES)
    settings = {"plain": common, **{switch: [*common, switch] for switch in switches}}
    record: dict = {"seeds": args.seeds, "settings": {}}
    for name, overrides in settings.items():
        with tempfile.TemporaryDirectory(prefix="switch-accuracy-") as folder:
            results, wall = sweep(Path(folder), args.seeds, args.jobs, overrides)
        top1 = [r["top1"] for r in results]
        record["settings"][name] = {"top1": top1, "wall_s": wall, "device": results[0]["device"]}
        print(
            f"{name}: top-1 "
            + ", ".join(f"seed {r['seed']} {r['top1']:.2f}" for r in results)
            + f"; mean {statistics.mean(top1):.2f}, range {min(top1):.2f}-{max(top1):.2f}, "
            f"{wall:.0f} s on {results[0]['device']}"
        )
    plain = record["settings"]["plain"]["top1"]
    low, high = min(plain), max(plain)
    verdicts = []
    for switch in switches:
        mean = statistics.mean(record["settings"][switch]["top1"])
        record["settings"][switch]["within"] = within = low <= mean <= high
        verdicts.append(
            f"{switch}: mean {mean:.2f} within the plain range [{low:.2f}, {high:.2f}]: "
            + ("yes" if within else "no")
        )
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
