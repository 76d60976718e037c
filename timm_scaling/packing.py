"""``sweep --jobs auto``: as many runs at once as the sweep's plan measured fastest.

``sweep NAME --plan --jobs K`` measures every run K at a time, as the sweep would train them,
so its times include the jobs' contention (on a GPU: several processes sharing it; on a CPU:
its cores). plan.csv keeps the rows of each K it was measured at, with and without MPS
(``--mps``); ``--jobs auto`` projects the sweep's wall time with each K from the plans measured
as the sweep trains and takes the fastest, the fewest jobs among those
within ``CLOSE`` of it (packing more buys nothing measurable then). A run's configuration is
measured once for all its seeds (a seed costs what another does). Then the GPUs' memory caps
it (:func:`timm_scaling.workers.packed_jobs`).

Imports no torch.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from timm_scaling.errors import UserError
from timm_scaling.plan import duration, how, measured, read_plan, wall_time
from timm_scaling.recipes import Recipe

AUTO = "auto"
# Job counts whose projected wall times lie within this share of the fastest are a tie.
CLOSE = 0.05


def parse_jobs(text: str | int) -> int | str:
    """``--jobs``: a number of runs at once (1 or more), or ``auto``."""
    if str(text).strip().lower() == AUTO:
        return AUTO
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise UserError(
            f"--jobs {text}: give the runs to train at once (1 or more), or --jobs auto for "
            "the fastest count the sweep's plan measured"
        )
    return jobs


def configuration(run: Recipe | Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What a run's speed depends on, for a recipe and a plan row alike (not its seed)."""
    if isinstance(run, Recipe):
        return run.name, run.model, str(run.image_size), str(run.batch_size)
    return tuple(str(run.get(key)) for key in ("recipe", "model", "img_size", "batch_size"))


def projections(
    rows: Sequence[Mapping[str, Any]], groups: Sequence[Sequence[Recipe]], mps: bool = False
) -> dict[int, float]:
    """Each job count the plan measured every configuration of ``groups`` at (under MPS with
    ``mps``, else without) -> the wall time of training ``groups`` (each group one job's work)
    that many at a time."""
    epoch_s: dict[int, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in (row for row in rows if how(row)[1] == str(mps).lower()):
        jobs, seconds = measured(row, "jobs"), measured(row, "epoch_s")
        if jobs and seconds and jobs == int(jobs):  # else not measured, or not a plan's
            epoch_s[int(jobs)][configuration(row)].append(seconds)
    times = {}
    for count, per_configuration in epoch_s.items():
        if all(configuration(run) in per_configuration for group in groups for run in group):
            run_s = [
                sum(
                    statistics.mean(per_configuration[configuration(run)]) * run.epochs
                    for run in group
                )
                for group in groups
            ]
            times[count] = wall_time(run_s, count)
    return times


class Choice(NamedTuple):
    """What ``--jobs auto`` takes: the job count, a line saying why, and how many measured job
    counts it compared (0 without a plan)."""

    jobs: int
    why: str
    compared: int


def choose_jobs(
    groups: Sequence[Sequence[Recipe]], gpus: Sequence[str], plan_csv: Path, mps: bool = False
) -> Choice:
    """``--jobs auto`` from the plans measured as the sweep trains (with or without MPS).
    Without one of every run: one job per GPU (one on a CPU)."""
    rows = read_plan(plan_csv) if plan_csv.is_file() else []
    times = projections(rows, groups, mps)
    if not times:
        jobs = max(1, len(gpus))
        asked = "`--plan --jobs K" + " --mps" * mps + "`"
        why = (
            f"--jobs auto: {jobs} (no plan measured these runs{' under MPS' * mps}; measure "
            f"with {asked} for a few K, and --jobs auto takes the fastest)"
        )
        return Choice(jobs, why, 0)
    fastest = min(times.values())
    jobs = min(k for k, seconds in times.items() if seconds <= fastest * (1 + CLOSE))
    listed = ", ".join(f"{duration(times[k])} with {k}" for k in sorted(times))
    under = " under MPS" * mps
    why = f"--jobs auto: {jobs}, by {plan_csv} (projected{under} {listed})"
    return Choice(jobs, why, len(times))
