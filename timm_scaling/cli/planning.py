"""``--plan`` and ``--plan-from`` of train and sweep: measure runs here, or project them from
another machine's record; print the table and write it beside the runs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import typer

from timm_scaling.errors import UserError

PLAN_HELP = (
    "Train nothing: measure each run briefly on this machine (the real loop, the recipe's "
    "settings; synthetic data of the same shape where the data set is absent) and write its "
    "projected time and peak memory to plan.csv."
)
PLAN_SECONDS = typer.Option(
    help="With --plan: seconds of timed updates per run.", show_default="20 on a GPU, 5 on a CPU"
)
PLAN_FROM_HELP = (
    "Train and measure nothing: project each run's time on another machine from its record, "
    "a plan.csv that --plan wrote there, or a shipped one (h100); written to "
    "plan-from-<record>.csv."
)


def show_plan(rows: list, path: Path, seconds: float | None, jobs: int | None = None) -> None:
    """The plan's table and summary lines, then where it was written (and how long it took)."""
    from timm_scaling import plan

    typer.echo(plan.render(rows))
    for line in plan.summary(rows, jobs):
        typer.echo(line)
    took = f" (measured in {plan.duration(seconds)})" if seconds is not None else ""
    typer.echo(f"wrote {path}{took}")


def check_plan(plan_from: str | None, resume: bool = False, processes: int | None = None) -> None:
    """What a plan cannot be asked for with it, before anything is built."""
    option = "--plan-from projects" if plan_from else "--plan measures"
    if resume:
        raise UserError(f"{option} a run without training it: drop --resume")
    if (processes or 1) > 1:
        raise UserError(f"{option} the run in one process: drop --num-processes")


def project_runs(runs: Sequence, plan_from: str, folder: Path, jobs: int | None = None) -> None:
    """Project ``runs`` from the record ``plan_from``; write ``folder/plan-from-<record>.csv``."""
    from timm_scaling import plan, projection
    from timm_scaling.files import atomic_write
    from timm_scaling.tables import csv_text

    rows, device = projection.project(runs, plan_from)
    path = folder / f"plan-from-{Path(plan_from).stem}.csv"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, csv_text(rows, plan.COLUMNS))
    show_plan(rows, path, None, jobs)
    for line in projection.summary(rows, device):
        typer.echo(line)


def measure_one(recipe, output: Path, seconds: float | None) -> None:
    """``train --plan``: measure the run here, into ``output/plan.csv``."""
    import logging

    from timm_scaling import plan

    plan.budget(False, seconds)  # a bad --plan-seconds fails before the model
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    started = time.perf_counter()
    row = plan.measure(recipe, seconds)
    path = plan.write(output / plan.PLAN_FILE, [row])
    show_plan([row], path, time.perf_counter() - started)


def measure_sweep(
    sweep: str,
    spec,
    runs: Sequence,
    *,
    seeds: int,
    overrides: Sequence[str],
    shard: str | None,
    output: Path,
    jobs: int,
    gpus: str | None,
    mps: bool,
    seconds: float | None,
) -> None:
    """``sweep --plan``: measure the sweep's runs here, ``jobs`` at a time on ``gpus`` (under
    MPS with ``mps``), into its plan.csv under ``output``; say which job count was fastest
    where the file holds several."""
    import sys

    from tqdm import tqdm

    from timm_scaling import sweep as sweeps
    from timm_scaling.plan import budget

    budget(False, seconds)  # a bad --plan-seconds fails before any model is built
    started = time.perf_counter()
    terminal = sys.stderr.isatty()
    with tqdm(
        total=len(runs),
        desc=f"{sweep} plan",
        unit="run",
        dynamic_ncols=True,
        disable=not terminal,
    ) as bar:

        def measured(i: int, total: int, recipe) -> None:
            bar.n = i
            bar.set_postfix_str(f"{recipe.model} s{recipe.seed}")
            bar.refresh()

        rows, path = sweeps.plan_sweep(
            sweep, seeds, overrides, shard, output, measured, jobs, gpus, seconds, mps
        )
        bar.n = len(runs)
    show_plan(rows, path, time.perf_counter() - started, jobs)
    choice = sweeps.auto_jobs(spec, runs, output, gpus, mps=mps)
    if choice.compared > 1:  # the plan.csv holds other job counts too
        typer.echo(choice.why)
