"""`timm-scaling frontier` on the whole of timm's published results (issue 10's goal: under
10 s and under 300 printed lines): wall time of the command in a fresh process, its printed
lines, and its CPU time, side by side; measured here, never asserted in a test.

    python benchmarks/frontier_timm.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGENET = Path(__file__).resolve().parents[1] / "analysis" / "imagenet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    files = [str(IMAGENET / "results-imagenet.csv"), *map(str, IMAGENET.glob("benchmark-*.csv"))]
    walls, cpus, lines = [], [], 0
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            begin = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "timm_scaling", "frontier", *files, "--out", out],
                capture_output=True,
                text=True,
                env={**os.environ, "COLUMNS": "100"},
                check=True,
            )
            walls.append(time.perf_counter() - begin)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            lines = len(proc.stdout.splitlines()) + len(proc.stderr.splitlines())
    print(
        f"frontier, whole results file + benchmark: wall {statistics.median(walls):.1f} s, "
        f"CPU {statistics.median(cpus):.1f} s (median of {args.runs}; goal < 10 s), "
        f"{lines} lines printed (goal < 300)"
    )


if __name__ == "__main__":
    main()
