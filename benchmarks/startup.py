"""What the start-up hook costs every Python process in this environment.

Prints the import time of `timm_scaling_autoload` as `python -X importtime` reports it, and the
wall time of interpreter start-up with the hook on and off (TIMM_SCALING_AUTOLOAD=0), side by
side. The goal (issue 2) is under 20 ms; it is measured here, never asserted in a test.

    python benchmarks/startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def start_time_ms(runs: int, **env: str) -> float:
    environ = {**os.environ, **env}
    samples = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=environ, check=True)
        samples.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(samples)


def hook_import_us() -> int:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True
    ).stderr
    for line in out.splitlines():
        if line.rstrip().endswith("timm_scaling_autoload"):
            return int(line.split("|")[1])  # cumulative microseconds
    raise SystemExit("timm_scaling_autoload was not imported at start-up: is the wheel installed?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    on = start_time_ms(args.runs)
    off = start_time_ms(args.runs, TIMM_SCALING_AUTOLOAD="0")
    imported = hook_import_us()
    print(f"python: {sys.version.split()[0]}  runs: {args.runs} (medians)")
    print(f"interpreter start, hook on : {on:7.1f} ms")
    print(f"interpreter start, hook off: {off:7.1f} ms")
    print(f"import of timm_scaling_autoload: {imported / 1e3:.2f} ms")
    print(f"on/off={on / off:.3f} hook_ms={imported / 1e3:.2f}")


if __name__ == "__main__":
    main()
