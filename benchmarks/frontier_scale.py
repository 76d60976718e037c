"""The frontier on many configurations: the Pareto step sorted against every pair, side by side.

    python benchmarks/frontier_scale.py --rows 100000 --whole-rows 10000

Prints (a) the Pareto mask's time at ``--pairwise`` points, sorted and pairwise, and their ratio
(the masks must agree); (b) the sorted Pareto step at ``--rows`` points, with the process's peak
memory; (c) the whole frontier (read, fits, bootstrap, verdicts, plot and its SVG) on a
report.csv of ``--whole-rows`` configurations. Goal (issue 20): the Pareto step at 100,000 rows
in under 5 s and 1 GB. Asserts no time.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from timm_scaling.frontier import pareto_front, run
from timm_scaling.report import write_rows

METHODS = ("d", "w", "r", "phi")


def pairwise(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The definition, every pair compared: N x N arrays."""
    no_worse = (xs[None, :] <= xs[:, None]) & (ys[None, :] >= ys[:, None])
    better = (xs[None, :] < xs[:, None]) | (ys[None, :] > ys[:, None])
    return ~(no_worse & better).any(axis=1)


def seconds(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def report(path: Path, rows: int, rng: np.random.Generator) -> None:
    """``rows`` configurations: four methods, costs spread over two decades, top-1 rising with
    log cost plus noise (each row its own model name, so each is a point)."""
    gmacs = 10 ** rng.uniform(-1.5, 0.5, rows)
    top1 = np.clip(80 + 5 * np.log10(gmacs) + rng.normal(0, 1, rows), 0, 100)
    write_rows(
        path,
        (
            {
                "model": f"effnet_b0_{METHODS[i % 4]}{1 + i / rows:.6f}".replace(".", "p"),
                "method": ("depth", "width", "resolution", "compound")[i % 4],
                "gmacs": float(g),
                "top1": float(t),
                "seed": 0,
                "recipe": "scale",
            }
            for i, (g, t) in enumerate(zip(gmacs, top1, strict=True))
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pairwise", type=int, default=5_000, help="points of the side by side")
    parser.add_argument("--whole-rows", type=int, default=10_000, help="rows of the whole run")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    xs, ys = rng.random(args.pairwise), rng.random(args.pairwise)
    t_sorted, mask = seconds(pareto_front, xs, ys)
    t_pairs, expected = seconds(pairwise, xs, ys)
    assert (mask == expected).all(), "the sorted and pairwise Pareto masks differ"
    print(
        f"(a) Pareto at {args.pairwise:,} points: sorted {t_sorted * 1e3:.1f} ms, pairwise "
        f"{t_pairs * 1e3:.1f} ms: {t_pairs / t_sorted:.0f}x"
    )
    xs, ys = rng.random(args.rows), rng.random(args.rows)
    t_big, _ = seconds(pareto_front, xs, ys)
    print(
        f"(b) Pareto at {args.rows:,} points, sorted: {t_big * 1e3:.1f} ms, process peak "
        f"memory {peak_mb():.0f} MB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.csv"
        report(path, args.whole_rows, rng)
        t_all, _ = seconds(lambda: run([path], draws=200, out=Path(tmp) / "out"))
    print(
        f"(c) frontier on {args.whole_rows:,} rows (200 bootstrap draws): {t_all:.1f} s, "
        f"process peak memory {peak_mb():.0f} MB"
    )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
