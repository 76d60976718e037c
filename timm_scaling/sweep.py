"""Sweeps: many training runs from one file, resumable and shardable, ending in a frontier.

A sweep file (:mod:`timm_scaling.sweep_file`) names its runs. Every run trains with
:func:`timm_scaling.train.train` into its own folder, so a finished run is skipped (an
interrupted sweep resumes) and ``--shard K/N`` takes every N-th run (with ``--fuse-seeds``,
every N-th model with its seeds), for a scheduler to spread a sweep over machines
(``timm-scaling collect`` merges their folders).

Imports no torch: a sweep's plan is checked before anything is trained.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timm_scaling.collecting import collect, results
from timm_scaling.errors import LossNotFinite, UserError
from timm_scaling.files import clear_stale_lock
from timm_scaling.packing import AUTO, Choice, choose_jobs, parse_jobs
from timm_scaling.plan import PLAN_FILE, measure, write
from timm_scaling.recipe_keys import kwargs_tag
from timm_scaling.recipes import Recipe
from timm_scaling.runs import (
    LOCK_FILE,
    REPORT_FILE,
    RESULT_FILE,
    ensure_rows,
    finished,
    read_result,
    run_folder,
)
from timm_scaling.seed_groups import check_fusable, seed_groups
from timm_scaling.sweep_file import Sweep, load_sweep, parse_shard, plan
from timm_scaling.workers import in_pool, packed_jobs, select_gpus, sharing

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    trained: list[Recipe]
    skipped: list[Recipe]
    pending: int  # runs of the whole sweep (all shards) not finished yet
    report: Path | None  # <output>/<sweep>/report.csv, once every run of the sweep is finished
    frontier: Any = None  # the frontier.Frontier of the report
    written: list[Path] = field(default_factory=list)  # the frontier's and curves' files


def check_names(recipes: Sequence[Recipe]) -> None:
    """Every model's name exists: ours by their grammar, the rest (timm's, or typos) in timm's
    registry, imported only for them. What ``--dry-run`` checks; training checks more."""
    from timm_scaling.scaling import is_model_name

    others = sorted({recipe.model for recipe in recipes if not is_model_name(recipe.model)})
    if others:
        from timm_scaling.catalog import resolve_model

        for name in others:
            resolve_model(name)


def _check_models(recipes: Sequence[Recipe]) -> None:
    """Every model's name and image size, checked (and its cost counted, on the meta device)
    before the first run trains: a typo in the 9th model fails the sweep now, not hours later."""
    from timm_scaling.train import check_model

    distinct = {(r.model, r.image_size, kwargs_tag(r.model_kwargs), r.dataset): r for r in recipes}
    for recipe in distinct.values():
        check_model(recipe)


def _train_group(
    group: list[Recipe], output: str | os.PathLike, progress: bool | None = None
) -> tuple[list[dict | None], LossNotFinite | None]:
    """Train a job's runs, resuming each: one run, or the seeds of one configuration fused.
    Returns each run's result (None for one that diverged) and the divergence, if one did: the
    sweep's other runs go on."""
    from timm_scaling.train import train
    from timm_scaling.train.fusing import train_fused

    try:
        if len(group) == 1:
            return [train(group[0], output, resume=True, progress=progress)], None
        return train_fused(group, output, progress=progress), None
    except LossNotFinite as err:
        done = [finished(output, recipe) for recipe in group]  # a fused seed may have finished
        return [read_result(d / RESULT_FILE) if d else None for d in done], err


def job_groups(recipes: Sequence[Recipe], fuse_seeds: bool) -> list[list[Recipe]]:
    """What each job trains: a run, or with ``fuse_seeds`` the seeds of one configuration."""
    return seed_groups(recipes) if fuse_seeds else [[recipe] for recipe in recipes]


def plan_path(output: str | os.PathLike, sweep: Sweep) -> Path:
    """The sweep's plan.csv: ``output/<sweep>/plan.csv``."""
    return Path(output) / sweep.name / PLAN_FILE


def auto_jobs(
    sweep: Sweep,
    recipes: Sequence[Recipe],
    output: str | os.PathLike,
    gpus: str | None,
    fuse_seeds: bool = False,
    mps: bool = False,
) -> Choice:
    """What ``--jobs auto`` takes for training ``recipes`` of ``sweep``, and why."""
    groups = job_groups(recipes, fuse_seeds)
    return choose_jobs(groups, select_gpus(gpus), plan_path(output, sweep), mps)


def check_jobs(jobs: int | str, plan: bool = False) -> int | str:
    """``--jobs``: a count of 1 or more, or ``auto`` (not for a plan, measured at one count);
    returns it parsed."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            "a sweep trains its runs one process each: start one sweep per GPU with "
            "--shard K/N (and CUDA_VISIBLE_DEVICES) instead of `accelerate launch`"
        )
    jobs = parse_jobs(jobs)
    if jobs == AUTO and plan:
        raise UserError(
            "--plan --jobs auto: a plan measures the runs at one job count; plan with --jobs K "
            "for a few K (1, 2, 4), then train with --jobs auto"
        )
    return jobs


def run_sweep(
    name_or_path: str,
    seeds: int = 1,
    overrides: Sequence[str] = (),
    shard: str | None = None,
    output: str | os.PathLike = "runs",
    on_run: Callable[[int, int, Recipe, str], None] | None = None,
    jobs: int | str = 1,
    gpus: str | None = None,
    on_result: Callable[[Recipe, dict], None] | None = None,
    fuse_seeds: bool = False,
    mps: bool = False,
) -> SweepResult:
    """Train every unfinished run of this shard into ``output`` (a run interrupted mid-way
    resumes from its checkpoint), then, when the whole sweep is finished, write its runs' rows
    to ``output/<sweep>/report.csv`` and run the frontier there, with the runs' training curves.

    ``jobs`` > 1 trains that many runs at once, each in its own process with an equal share of
    the CPU threads: small models on a CPU use one core about as well as two, so two jobs on
    two cores finish a sweep nearly twice as fast. On G GPUs, job i trains on GPU i mod G
    (``gpus``: ``"0,1"`` uses only those; see :func:`job_environments`), as many jobs per GPU
    as the sweep's plan.csv says fit in its memory, if there is one (:func:`packed_jobs`).
    ``jobs="auto"``: the count the plan measured fastest (:func:`choose_jobs`).
    ``on_run(done, total, recipe, state)`` is called for each run finished before (state
    ``finished before``), as each starts (one job: ``training``) and as each ends (``trained``);
    ``on_result(recipe, result)`` as each run trained here finishes, with its result.json.

    ``fuse_seeds``: the seeds of each configuration train in one process as one vmapped step
    (:mod:`timm_scaling.train.fusing`), each still its own run folder and row. ``mps``: jobs
    that share a GPU run under NVIDIA's MPS (:func:`sharing`).

    Run folders are shared by every sweep with the same output, so a run two sweeps name is
    trained once; each sweep's report holds its own runs only."""
    from timm_scaling import curves, frontier

    jobs = check_jobs(jobs)
    sweep = load_sweep(name_or_path)
    everything = plan(sweep, seeds, overrides)
    mine = plan(sweep, seeds, overrides, parse_shard(shard), fuse_seeds)
    _check_models(mine)
    if fuse_seeds:
        for recipe in mine:
            check_fusable(recipe)
    done = [finished(output, r) is not None for r in mine]  # reads each run's recipe.yaml
    skipped = [r for r, d in zip(mine, done, strict=True) if d]
    for recipe in skipped:  # a finished run killed as it let go of its lock: no stray file
        clear_stale_lock(run_folder(output, recipe) / LOCK_FILE)
    trained = [r for r, d in zip(mine, done, strict=True) if not d]
    for dataset, data_dir in dict.fromkeys(
        (r.dataset, r.data_dir) for r in trained if not r.in_memory
    ):
        from timm_scaling import pipeline  # data not there: one line before any job starts

        pipeline.require(dataset, data_dir)
    notify = on_run or (lambda *_: None)
    landed = on_result or (lambda *_: None)
    # A row lost (a run killed before writing it) is put back, all in one write.
    ensure_rows([run_folder(output, recipe) for recipe in skipped], output)
    for i, recipe in enumerate(skipped, start=1):
        notify(i, len(mine), recipe, "finished before")
    groups = job_groups(trained, fuse_seeds)
    count = len(skipped)
    plan_csv = plan_path(output, sweep)
    if jobs == AUTO:
        choice = choose_jobs(groups, select_gpus(gpus), plan_csv, mps)
        jobs = choice.jobs
        log.warning(choice.why)
    diverged: list[tuple[Path, LossNotFinite]] = []

    def ended(_: int, group: list[Recipe], outcome: tuple[list[dict | None], Any]) -> None:
        nonlocal count
        results, error = outcome
        for recipe, result in zip(group, results, strict=True):
            if result is None:
                diverged.append((run_folder(output, recipe), error))
                continue
            count += 1
            landed(recipe, result)
            notify(count, len(mine), recipe, "trained")

    if jobs == 1 and gpus is None:
        for group in groups:
            for recipe in group:
                notify(count, len(mine), recipe, "training")
            ended(count, group, _train_group(group, output))
    elif groups:
        devices = select_gpus(gpus)
        jobs = packed_jobs(jobs, devices, plan_csv)
        with sharing(mps, jobs, devices) as shared:
            in_pool(_train_group, groups, jobs, devices, ended, output, False, shared=shared)
    if diverged:
        raise _diverged(diverged, len(trained))
    pending = sum(finished(output, r) is None for r in everything)
    if pending:
        return SweepResult(trained, skipped, pending, None)
    folder = Path(output) / sweep.name
    report = folder / REPORT_FILE
    collect(output, report, everything, prune=True)  # the sweep's own report: its runs only
    eval_sizes = {
        r.get("eval_images")
        for r in results(run_folder(output, r) / RESULT_FILE for r in everything)
    }
    eval_size = eval_sizes.pop() if len(eval_sizes) == 1 else None
    fr, written = frontier.run([report], eval_size=eval_size, out=folder)
    _, drawn = curves.run([run_folder(output, r) for r in everything], out=folder)
    return SweepResult(trained, skipped, 0, report, fr, written + drawn)


def _diverged(diverged: list[tuple[Path, LossNotFinite]], runs: int) -> LossNotFinite:
    """One error for the runs of a sweep that diverged (each went on to the end)."""
    folders = ", ".join(str(folder) for folder, _ in diverged)
    return LossNotFinite(
        f"{len(diverged)} of the {runs} run(s) trained diverged ({folders}) and have no "
        f"result, so the sweep has no report; the others finished. The first: {diverged[0][1]}"
    )


def plan_sweep(
    name_or_path: str,
    seeds: int = 1,
    overrides: Sequence[str] = (),
    shard: str | None = None,
    output: str | os.PathLike = "runs",
    on_run: Callable[[int, int, Recipe], None] | None = None,
    jobs: int = 1,
    gpus: str | None = None,
    seconds: float | None = None,
    mps: bool = False,
) -> tuple[list[dict[str, Any]], Path]:
    """Measure each run of this shard briefly (:func:`timm_scaling.plan.measure`), ``jobs`` at
    a time on the GPUs as :func:`run_sweep` would train them, so the times include the jobs'
    contention (under MPS with ``mps``, as the sweep would train them); write
    ``output/<sweep>/plan.csv``. Returns its rows (in the sweep's order) and
    path. Nothing is trained, no run folder is made. ``on_run(done, total, recipe)`` as each
    measurement starts (one job) or ends (several)."""
    jobs = check_jobs(jobs, plan=True)
    sweep = load_sweep(name_or_path)
    mine = plan(sweep, seeds, overrides, parse_shard(shard))
    notify = on_run or (lambda *_: None)
    rows: dict[Recipe, dict[str, Any]] = {}
    if jobs == 1 and gpus is None:
        for i, recipe in enumerate(mine):
            notify(i, len(mine), recipe)
            rows[recipe] = measure(recipe, seconds)
    else:

        def done(i: int, recipe: Recipe, row: dict[str, Any]) -> None:
            rows[recipe] = row
            notify(i, len(mine), recipe)

        devices = select_gpus(gpus)
        with sharing(mps, jobs, devices) as shared:
            in_pool(measure, mine, jobs, devices, done, seconds, shared=shared)
    ordered = [rows[recipe] for recipe in mine]
    return ordered, write(plan_path(output, sweep), ordered, jobs, mps)
