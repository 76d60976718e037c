"""The plot: accuracy against each cost column, groups coloured, fits and the Pareto front."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from timm_scaling.frontier.fit import Curves, pareto_front
from timm_scaling.frontier.read import metric
from timm_scaling.frontier.render import axis_label
from timm_scaling.frontier.results import (
    MAX_LABELLED,
    METHOD_COLOURS,
    MIN_FIT_COSTS,
    MIN_POWER_COSTS,
    OTHER_COLOURS,
    SHARED_GROUP,
    Frontier,
)


def _colours(names: Sequence[str]) -> dict[str, str]:
    others = iter(OTHER_COLOURS * (1 + len(names) // len(OTHER_COLOURS)))
    return {n: METHOD_COLOURS.get(n) or next(others) for n in names}


def _draw_group(ax, fr: Frontier, curves: Curves, column: str, name: str, colour: str) -> None:
    points, idx = curves.points, curves.members[name]
    xs = np.array([p.costs[column] for p in points])
    means = np.array([p.y for p in points])
    own = [i for i in idx if points[i].group == name]
    shared = name == SHARED_GROUP
    ax.errorbar(
        xs[own],
        means[own],
        yerr=[points[i].std or 0.0 for i in own],
        linestyle="none",
        marker="*" if shared else "o",
        markersize=11 if shared else 5,
        capsize=2.5,
        elinewidth=1,
        color=colour,
        zorder=4,
        label=name,
    )
    if shared:
        return
    width = 2.4 if name == fr.reference else 1.4
    if len(curves.distinct(name)) >= MIN_FIT_COSTS:
        a, b = curves.fit_weights(name) @ means
        grid = np.geomspace(xs[idx].min(), xs[idx].max(), 100)
        ax.plot(grid, a + b * np.log10(grid), color=colour, linewidth=width, zorder=3)
    elif len(idx) > 1:  # two costs: joined, dotted (no fit)
        order = np.argsort(xs[idx])
        ax.plot(xs[idx][order], means[idx][order], color=colour, linewidth=1.2, linestyle=":")
    law = next(g.power_law for g in fr.groups if g.name == name)
    # Drawn only where the law is pinned down by its own points (the numbers are in the table).
    if law is not None and column == fr.x.column and len(curves.distinct(name)) >= MIN_POWER_COSTS:
        grid = np.geomspace(xs[idx].min(), xs[idx].max(), 100)
        ax.plot(
            grid,
            100 - (law.c + law.a * grid**-law.b),
            color=colour,
            linewidth=1,
            linestyle="--",
            zorder=3,
        )


def _draw_panel(ax, fr: Frontier, column: str, colours: dict[str, str]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    cost = metric(column)
    curves = Curves(fr.points, column)
    for name in curves.members:
        _draw_group(ax, fr, curves, column, name, colours[name])
    xs = np.array([p.costs[column] for p in fr.points])
    means = np.array([p.y for p in fr.points])
    front = pareto_front(xs, means, not cost.higher_is_better, fr.y.higher_is_better)
    order = np.argsort(xs[front])
    ax.step(
        xs[front][order], means[front][order], where="post", color="0.75", linewidth=0.9, zorder=1
    )
    for i, point in enumerate(fr.points):
        if len(fr.points) <= MAX_LABELLED or front[i]:
            ax.annotate(
                point.label,
                (xs[i], means[i]),
                xytext=(5, -10),
                textcoords="offset points",
                fontsize=7,
                color=colours[point.group],
                zorder=5,
            )
    ax.set_xscale("log")
    decades = math.log10(xs.max() / xs.min())
    # Labelled ticks: 1-2-5 over more than a decade; denser over less, but never crowded.
    subs = (
        (1.0, 2.0, 5.0) if decades > 1 else (1.0, 2.0, 3.0, 5.0) if decades > 0.5 else range(1, 10)
    )
    ax.xaxis.set_major_locator(LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.1, y=0.08)
    ax.set_xlabel(axis_label(cost, log=True))
    ax.grid(True, which="major", linewidth=0.5, alpha=0.35)
    ax.spines[["top", "right"]].set_visible(False)


def _legend(fig, ax, fr: Frontier) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    extra = {"Pareto front": Line2D([], [], color="0.75", linewidth=0.9)}
    if any(g.fit for g in fr.groups):
        extra["fit: a + b log10 x"] = Line2D([], [], color="0.3", linewidth=1.4)
    if any(g.power_law and g.distinct_costs >= MIN_POWER_COSTS for g in fr.groups):
        extra["power law of the error"] = Line2D([], [], color="0.3", linestyle="--")
    fig.legend(
        handles + list(extra.values()),
        labels + list(extra),
        loc="outside right center",
        fontsize=8,
        frameon=False,
    )


def plot(fr: Frontier, out: str | os.PathLike) -> list[Path]:
    """frontier.png and frontier.svg in ``out``: one panel per cost column the rows carry."""
    from matplotlib.figure import Figure

    out = Path(out)
    panels = fr.panels
    fig = Figure(figsize=(4.4 * len(panels) + 1.4, 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colours = _colours([g.name for g in fr.groups])
    for ax, column in zip(axes, panels, strict=True):
        _draw_panel(ax, fr, column, colours)
    axes[0].set_ylabel(axis_label(fr.y))
    if len(fr.groups) <= 12:
        _legend(fig, axes[0], fr)
    written = []
    for suffix in ("png", "svg"):
        target = out / f"frontier.{suffix}"
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            fig.savefig(tmp, format=suffix, dpi=200)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
