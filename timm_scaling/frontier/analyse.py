"""The pipeline: read -> points -> fits -> verdicts -> outputs."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from timm_scaling.errors import UserError
from timm_scaling.frontier.fit import (
    Curves,
    bootstrap_means,
    fit_groups,
    pareto_front,
    power_laws,
)
from timm_scaling.frontier.names import assign_groups
from timm_scaling.frontier.plot import plot
from timm_scaling.frontier.points import aggregate
from timm_scaling.frontier.read import canonical_column, metric, read_results
from timm_scaling.frontier.render import to_json, to_markdown
from timm_scaling.frontier.results import FORMATS, REFERENCE, Frontier, Group
from timm_scaling.frontier.verdict import compare_groups
from timm_scaling.report import atomic_write


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


def analyse(
    rows: pd.DataFrame,
    x: str = "gmacs",
    y: str = "top1",
    group: str = "method",
    at: Sequence[float] = (),
    reference: str = REFERENCE,
    eval_size: int | None = None,
    draws: int = 2000,
    seed: int = 0,
) -> Frontier:
    """Every number of the frontier for rows read by :func:`read_results`."""
    check_options(at, eval_size, draws)
    xm, ym = metric(x), metric(y)
    points = aggregate(rows, x, y, assign_groups(rows, group))
    front = pareto_front(
        [p.x for p in points], [p.y for p in points], not xm.higher_is_better, ym.higher_is_better
    )
    for point, on in zip(points, front, strict=True):
        point.on_front = bool(on)
    means = np.array([p.y for p in points])
    replicates = bootstrap_means([p.runs for p in points], draws, np.random.default_rng(seed))
    curves = Curves(points, x)
    fits = fit_groups(curves, replicates, means)
    laws = power_laws(curves, means, replicates, ym)
    groups = []
    for name in curves.members:
        levels = 10 ** curves.distinct(name)
        fit, fit_note = fits[name]
        law, law_note = laws[name]
        groups.append(
            Group(
                name=name,
                models=[points[i].model for i in curves.members[name]],
                distinct_costs=len(levels),
                cost_range=[float(levels[0]), float(levels[-1])],
                fit=fit,
                fit_note=fit_note,
                power_law=law,
                power_law_note=law_note,
            )
        )
    notes = []
    if all(p.n < 2 for p in points):
        notes.append("n=1 per model (one run each): no intervals, and no claim either way")
    if reference not in curves.members:
        notes.append(
            f"no {reference!r} group, so no verdict; groups: {', '.join(curves.members)} "
            "(choose one with --reference)"
        )
    if eval_size is None and ym.unit == "%":
        notes.append(
            "noise floor: pass --eval-size N (the evaluation set's size) to report the binomial "
            "standard error sqrt(p(1-p)/N) of each accuracy"
        )
    if "dataset" in rows.columns and rows["dataset"].nunique() > 1:
        names = ", ".join(map(str, rows["dataset"].dropna().unique()))
        notes.append(f"rows come from several datasets ({names}): compare one at a time")
    verdicts = (
        compare_groups(curves, means, replicates, reference, at, xm, ym, eval_size)
        if reference in curves.members
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
        front=[p.model for p in sorted(points, key=lambda p: p.x) if p.on_front],
        verdicts=verdicts,
        notes=notes,
        bootstrap_draws=draws,
        seed=seed,
        eval_size=eval_size,
        panels=panels,
    )


def write_outputs(fr: Frontier, out: str | os.PathLike) -> list[Path]:
    """frontier.json, frontier.md, frontier.png and frontier.svg in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "frontier.json", to_json(fr))
    atomic_write(out / "frontier.md", to_markdown(fr))
    return [out / "frontier.json", out / "frontier.md", *plot(fr, out)]


def run(
    paths: Sequence[str | os.PathLike],
    x: str = "gmacs",
    y: str = "top1",
    group: str = "method",
    at: Sequence[float] = (),
    reference: str = REFERENCE,
    eval_size: int | None = None,
    draws: int = 2000,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> tuple[Frontier, list[Path]]:
    """Read ``paths``, analyse, and write every output into ``out`` (default: beside the first
    CSV). Returns the frontier and the files written."""
    if not paths:
        raise UserError("pass one or more CSV files: timm-scaling frontier report.csv")
    check_options(at, eval_size, draws)
    x, y = canonical_column(x), canonical_column(y)
    rows, warnings = read_results(paths, x, y)
    fr = analyse(rows, x, y, group, at, reference, eval_size, draws, seed)
    fr.warnings = warnings
    written = write_outputs(fr, Path(paths[0]).parent if out is None else out)
    return fr, written
