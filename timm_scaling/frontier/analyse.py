"""The pipeline: read -> select -> points -> fits -> verdicts -> outputs."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from timm_scaling.errors import UserError
from timm_scaling.files import atomic_write
from timm_scaling.frontier.fit import (
    Curves,
    bootstrap_means,
    fit_groups,
    pareto_front,
    power_laws,
)
from timm_scaling.frontier.names import assign_groups
from timm_scaling.frontier.plot import plot
from timm_scaling.frontier.points import (
    aggregate,
    drop_repeats,
    select_models,
    settings,
    where,
)
from timm_scaling.frontier.read import canonical_column, metric, read_results
from timm_scaling.frontier.render import to_json, to_markdown
from timm_scaling.frontier.results import FORMATS, REFERENCE, Frontier, Group
from timm_scaling.frontier.verdict import compare_groups
from timm_scaling.outputs import check_output

# A data set whose accuracy is chance by construction (random images, see data.py).
CHANCE_DATASETS = ("synthetic",)
GROUPS_LISTED = 12


def check_options(
    at: Sequence[float], eval_size: int | None, draws: int, fmt: str = "table"
) -> None:
    """Raise UserError (exit 2) for an option value the analysis cannot use."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if any(not (math.isfinite(c) and c > 0) for c in at):
        raise UserError(f"--at takes costs above 0 (a log axis); got {list(at)}")
    if eval_size is not None and eval_size < 1:
        raise UserError(f"--eval-size is the evaluation set's size, 1 or more; got {eval_size}")
    if draws < 100:
        raise UserError(f"--bootstrap needs 100 draws or more for a 95% interval; got {draws}")


def _listed(names: Sequence[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > GROUPS_LISTED else ""
    return ", ".join(names[:GROUPS_LISTED]) + more


def _check_reference(reference: str, groups: Sequence[str]) -> None:
    if reference in groups:
        return
    close = difflib.get_close_matches(reference, groups, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(
        f"--reference {reference!r} is not a group here: {hint}groups: {_listed(groups)}"
    )


def analyse(
    rows: pd.DataFrame,
    x: str = "gmacs",
    y: str = "top1",
    group: str = "method",
    at: Sequence[float] = (),
    reference: str | None = None,
    eval_size: int | None = None,
    draws: int = 2000,
    seed: int = 0,
    models: Sequence[str] = (),
    conditions: Sequence[str] = (),
) -> Frontier:
    """Every number of the frontier for rows read by :func:`read_results`.

    ``conditions`` (``--where COLUMN=VALUE``) filter the rows; ``models`` (fnmatch globs) pick
    the analysed ones, the others are kept as grey context for the plot. ``reference`` None:
    ``compound`` if there is such a group (a note otherwise); a name that is no group: an error.
    """
    check_options(at, eval_size, draws)
    xm, ym = metric(x), metric(y)
    rows = where(rows, conditions)
    groups_of = assign_groups(rows, group)  # an unknown --group fails before the rows' checks
    present = settings(rows, group)
    rows, repeats = drop_repeats(rows, present)
    groups_of = groups_of.loc[rows.index]
    picked = select_models(rows["model"], models) if models else pd.Series(True, rows.index)
    unselected = aggregate(rows[~picked], x, y, groups_of[~picked]) if models else []
    rows, groups_of = rows[picked], groups_of[picked]
    points = aggregate(rows, x, y, groups_of)
    front = pareto_front(
        [p.x for p in points], [p.y for p in points], not xm.higher_is_better, ym.higher_is_better
    )
    for point, on in zip(points, front, strict=True):
        point.on_front = bool(on)
    means = np.array([p.y for p in points])
    replicates, draws, draws_note = _replicates(points, draws, seed)
    curves = Curves(points, x)
    names = list(curves.members)
    if reference is not None:
        _check_reference(reference, names)
    reference = reference or REFERENCE
    fits = fit_groups(curves, replicates, means)
    laws = power_laws(curves, means, replicates, ym)
    groups = []
    for name in names:
        levels = 10 ** curves.distinct(name)
        fit, fit_note = fits[name]
        law, law_note = laws[name]
        groups.append(
            Group(
                name=name,
                models=[points[i].name for i in curves.members[name]],
                distinct_costs=len(levels),
                cost_range=[float(levels[0]), float(levels[-1])],
                fit=fit,
                fit_note=fit_note,
                power_law=law,
                power_law_note=law_note,
            )
        )
    notes = [draws_note] if draws_note else []
    if all(p.n < 2 for p in points):
        notes.append(
            "n=1 per point (one run each): no intervals"
            + (
                " from runs; the verdicts' intervals are the evaluation's noise alone"
                if eval_size and ym.unit == "%"
                else ", and no claim either way (--eval-size N gives the evaluation's noise)"
            )
        )
    if reference not in curves.members:
        notes.append(
            f"no {reference!r} group, so no verdict; groups: {_listed(names)} "
            "(choose one with --reference)"
        )
    if eval_size is None and ym.unit == "%":
        notes.append(
            "noise floor: pass --eval-size N (the evaluation set's size) to report the binomial "
            "standard error sqrt(p(1-p)/N) of each accuracy"
        )
    datasets = (
        sorted(map(str, rows["dataset"].dropna().unique())) if "dataset" in rows.columns else []
    )
    chance = [d for d in datasets if d in CHANCE_DATASETS]
    if chance:
        notes.append(
            f"no verdict: dataset {chance[0]} is random images with random labels, so every "
            "model's accuracy is chance and no difference between groups means anything "
            "(it measures speed and cost, not accuracy)"
        )
    verdicts = (
        compare_groups(curves, means, replicates, reference, at, xm, ym, eval_size)
        if reference in curves.members and not chance
        else []
    )
    panels = [
        c
        for c in points[0].costs
        if all(math.isfinite(p.costs[c]) and p.costs[c] > 0 for p in points)
    ]
    return Frontier(
        x=xm,
        y=ym,
        group_by=group,
        reference=reference,
        sources=sorted(set(rows["source"])) if "source" in rows.columns else [],
        points=points,
        groups=groups,
        front=[p.name for p in sorted(points, key=lambda p: p.x) if p.on_front],
        verdicts=verdicts,
        notes=notes,
        warnings=repeats,
        bootstrap_draws=draws,
        seed=seed,
        eval_size=eval_size,
        panels=panels,
        settings=_setting_text(rows, present),
        unselected=unselected,
    )


def _setting_text(rows: pd.DataFrame, present: Sequence[str]) -> dict[str, str]:
    """What every row shares (dataset, epochs, recipe), for the plot's title."""
    shared = {}
    for column in present:
        values = rows[column].dropna().astype(str).unique()
        if len(values) == 1:
            shared[column] = str(values[0]).removesuffix(".0")
    return shared


def write_outputs(fr: Frontier, out: str | os.PathLike, everything: bool = False) -> list[Path]:
    """frontier.json, frontier.md, frontier.png and frontier.svg in ``out``."""
    out = Path(out)
    check_output(out, "frontier.json, frontier.md, frontier.png and frontier.svg")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "frontier.json", to_json(fr))
    atomic_write(out / "frontier.md", to_markdown(fr, everything))
    return [out / "frontier.json", out / "frontier.md", *plot(fr, out)]


# Bootstrap replicates kept at once: draws x points floats (8 bytes each), 400 MB at most.
MAX_REPLICATES = 50_000_000


def _replicates(points, draws: int, seed: int) -> tuple[np.ndarray | None, int, str | None]:
    """Each point's bootstrapped means (draws x points), the draws made, and a note where they
    were fewer than asked. None where every point is one run: its means cannot be resampled
    (a million one-run rows asked 16 GB of constant columns)."""
    if all(p.n < 2 for p in points):
        return None, draws, None
    fitting = max(100, MAX_REPLICATES // len(points))
    note = None
    if fitting < draws:
        note = (
            f"{fitting} bootstrap draws, not {draws}: {len(points)} points' replicates must fit "
            f"in memory ({MAX_REPLICATES:,} numbers); the intervals' last digit is noisier"
        )
        draws = fitting
    replicates = bootstrap_means([p.runs for p in points], draws, np.random.default_rng(seed))
    return replicates, draws, note


def run(
    paths: Sequence[str | os.PathLike],
    x: str = "gmacs",
    y: str = "top1",
    group: str = "method",
    at: Sequence[float] = (),
    reference: str | None = None,
    eval_size: int | None = None,
    draws: int = 2000,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    models: Sequence[str] = (),
    conditions: Sequence[str] = (),
    measure_missing: bool = False,
    everything: bool = False,
) -> tuple[Frontier, list[Path]]:
    """Read ``paths``, analyse, and write every output into ``out`` (default: beside the first
    CSV). Returns the frontier and the files written."""
    if not paths:
        raise UserError("pass one or more CSV files: timm-scaling frontier report.csv")
    check_options(at, eval_size, draws)
    x, y = canonical_column(x), canonical_column(y)
    rows, warnings = read_results(paths, x, y, measure_missing)
    fr = analyse(rows, x, y, group, at, reference, eval_size, draws, seed, models, conditions)
    fr.warnings = warnings + fr.warnings
    written = write_outputs(fr, Path(paths[0]).parent if out is None else out, everything)
    return fr, written
