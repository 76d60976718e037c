"""The plot: accuracy against each cost column; the reference and the largest groups coloured
(at most MAX_COLOURED), every other point grey; fits, the Pareto front, labels that do not
overprint, and a title with the data set, epochs and runs per point."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from timm_scaling.files import atomic_file
from timm_scaling.frontier.fit import Curves, pareto_front
from timm_scaling.frontier.read import metric
from timm_scaling.frontier.render import axis_label
from timm_scaling.frontier.results import (
    MAX_LABELLED,
    MAX_LISTED,
    METHOD_COLOURS,
    MIN_FIT_COSTS,
    MIN_POWER_COSTS,
    OTHER_COLOURS,
    SHARED_GROUP,
    Frontier,
    Point,
)

MAX_COLOURED = 10
GREY = "0.72"
FRONT_COLOUR = "0.2"
LABEL_SIZE = 7  # points
# Where a label may go, in points from its marker: right-below first, then around.
LABEL_OFFSETS = ((5, -10), (5, 3), (-5, 3), (-5, -10), (5, -19), (5, 12), (-5, 12), (-5, -19))


def coloured_groups(fr: Frontier) -> list[str]:
    """The groups drawn in colour: the reference, then the largest, MAX_COLOURED at most."""
    names = [g.name for g in fr.groups]
    if len(names) <= MAX_COLOURED:
        return names
    by_size = sorted(fr.groups, key=lambda g: -len(g.models))
    chosen = [fr.reference] if fr.reference in names else []
    chosen += [g.name for g in by_size if g.name not in chosen][: MAX_COLOURED - len(chosen)]
    return [n for n in names if n in chosen]


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per group: the method's own (one palette for every plot), others in turn."""
    others = iter(OTHER_COLOURS * (1 + len(names) // len(OTHER_COLOURS)))
    return {n: METHOD_COLOURS.get(n) or next(others) for n in names}


def _draw_group(
    ax, fr: Frontier, curves: Curves, column: str, means: np.ndarray, name: str, colour: str
) -> None:
    """One group's points, fit and power law; ``means`` of every point, in ``curves``' order."""
    from matplotlib.patheffects import withStroke

    points, idx = curves.points, curves.members[name]
    xs = curves.xs
    own = [i for i in idx if points[i].group == name]
    shared = name == SHARED_GROUP
    cloud = len(points) > MAX_LISTED
    # Over a cloud, lines are edged in white: a fit over its own group's dots is still seen.
    edged = {"path_effects": [withStroke(linewidth=4, foreground="white")]} if cloud else {}
    if cloud:  # one raster of dots under the fits and the front, no error bars to draw each
        ax.scatter(
            xs[own], means[own], s=2, color=colour, linewidths=0, zorder=1.5, label=name
        ).set_rasterized(True)
    else:
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
        ax.plot(grid, a + b * np.log10(grid), color=colour, linewidth=width, zorder=3, **edged)
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
            **edged,
        )


def _grey(ax, points: Sequence[Point], column: str, size: float) -> None:
    xs = [p.costs.get(column, math.nan) for p in points]
    ax.scatter(xs, [p.y for p in points], s=size, color=GREY, linewidths=0, zorder=1)


def _overlaps(box: tuple[float, float, float, float], boxes: list) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes)


def _nearest_is_own(box, anchor, markers: np.ndarray, toward_right: bool) -> bool:
    """Whether the label's near edge (mid-height) is no closer to another point's marker than
    to its own: a label beside another marker would name that point. ``markers`` sorted by x:
    only those within the own distance in x can be nearer (a million points stay fast)."""
    edge = np.array([box[0] if toward_right else box[2], (box[1] + box[3]) / 2])
    own = np.hypot(*(edge - anchor))
    low, high = np.searchsorted(markers[:, 0], [edge[0] - own, edge[0] + own], side="right")
    near = markers[low:high]
    others = near[np.hypot(*(near - anchor).T) > 0.5]
    return not len(others) or own <= np.hypot(*(others - edge).T).min()


def place_labels(
    anchors: np.ndarray, texts: Sequence[str], markers: np.ndarray | None = None
) -> list[tuple[float, float] | None]:
    """An offset (points) per label from LABEL_OFFSETS that overlaps no label placed before it
    and sits nearer its own point than any other of ``markers`` (every point drawn), or None
    (the label is left out rather than printed over another or beside the wrong point);
    ``anchors`` and ``markers`` in points."""
    width = 0.55 * LABEL_SIZE  # per character, in points
    height = 1.1 * LABEL_SIZE
    boxes: list[tuple[float, float, float, float]] = []
    offsets: list[tuple[float, float] | None] = []
    if markers is not None:
        markers = np.asarray(markers, dtype=float).reshape(-1, 2)
        markers = markers[np.argsort(markers[:, 0], kind="stable")]
    for (ax_, ay), text in zip(anchors, texts, strict=True):
        chosen = None
        for dx, dy in LABEL_OFFSETS:
            left = ax_ + dx if dx >= 0 else ax_ + dx - width * len(text)
            box = (left, ay + dy, left + width * len(text), ay + dy + height)
            own = markers is None or _nearest_is_own(box, np.array([ax_, ay]), markers, dx >= 0)
            if own and not _overlaps(box, boxes):
                chosen = (dx, dy)
                boxes.append(box)
                break
        offsets.append(chosen)
    return offsets


def _labels(ax, fr: Frontier, xy: np.ndarray, front: np.ndarray, colours: dict[str, str]) -> None:
    """Labels of the front's and the reference's points; ``xy``: every point's cost and mean."""
    points = fr.points
    # Past MAX_LISTED points, the front alone: thousands of labels would say nothing.
    shown = [
        i
        for i, p in enumerate(points)
        if front[i]
        or (
            p.group in colours
            and len(points) <= MAX_LISTED
            and (len(points) <= MAX_LABELLED or p.group == fr.reference)
        )
    ]
    # The front first, then the reference group: they keep their places when labels crowd.
    shown.sort(key=lambda i: (not front[i], points[i].group != fr.reference, xy[i, 0]))
    scale = 72 / ax.figure.dpi
    anchors = ax.transData.transform(xy[shown].reshape(-1, 2))
    # A grey point's label names its model: its size token alone would not say which.
    texts = [
        points[i].label if points[i].group in colours else points[i].name.split(".")[0]
        for i in shown
    ]
    every = ax.transData.transform(xy)
    offsets = place_labels(anchors * scale, texts, every * scale)
    for i, text, offset in zip(shown, texts, offsets, strict=True):
        if offset is None:
            continue
        ax.annotate(
            text,
            tuple(xy[i]),
            xytext=offset,
            textcoords="offset points",
            ha="left" if offset[0] >= 0 else "right",
            fontsize=LABEL_SIZE,
            color=colours.get(points[i].group, FRONT_COLOUR),
            zorder=5,
        )


def _draw_panel(
    ax, fr: Frontier, column: str, colours: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """One panel; returns its Pareto mask and every point's (cost, mean), for the labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    cost = metric(column)
    ax.set_xscale("log")
    _grey(ax, [p for p in fr.points if p.group not in colours], column, 9)
    curves = Curves(fr.points, column)
    xs, means = curves.xs, np.array([p.y for p in fr.points])
    for name in curves.members:
        if name in colours:
            _draw_group(ax, fr, curves, column, means, name, colours[name])
    front = pareto_front(xs, means, not cost.higher_is_better, fr.y.higher_is_better)
    order = np.argsort(xs[front])
    ax.step(
        xs[front][order],
        means[front][order],
        where="post",
        color=FRONT_COLOUR,
        linewidth=1.3,
        linestyle=(0, (4, 2)),
        zorder=2,
    )
    decades = math.log10(xs.max() / xs.min())
    # Labelled ticks: decades over more than three, 1-2-5 over more than one; denser over less.
    subs = (
        (1.0,)
        if decades > 3
        else (1.0, 2.0, 5.0)
        if decades > 1
        else (1.0, 2.0, 3.0, 5.0)
        if decades > 0.5
        else range(1, 10)
    )
    ax.xaxis.set_major_locator(LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.1, y=0.08)
    ax.autoscale_view()
    # Models left out by --models: grey context within the selected points' limits.
    limits = ax.get_xlim(), ax.get_ylim()
    _grey(ax, fr.unselected, column, 4)
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_xlabel(axis_label(cost, log=True))
    ax.grid(True, which="major", linewidth=0.5, alpha=0.35)
    ax.spines[["top", "right"]].set_visible(False)
    return front, np.column_stack([xs, means])


def _legend(fig, ax, fr: Frontier) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    extra = {"Pareto front": Line2D([], [], color=FRONT_COLOUR, linewidth=1.3, linestyle="--")}
    if any(g.fit for g in fr.groups):
        extra["fit: a + b log10 x"] = Line2D([], [], color="0.3", linewidth=1.4)
    if any(g.power_law and g.distinct_costs >= MIN_POWER_COSTS for g in fr.groups):
        extra["power law of the error"] = Line2D([], [], color="0.3", linestyle="--")
    if fr.unselected or len(coloured_groups(fr)) < len(fr.groups):
        extra["other models"] = Line2D([], [], color=GREY, marker="o", linestyle="none")
    fig.legend(
        handles + list(extra.values()),
        labels + list(extra),
        loc="outside right center",
        fontsize=8,
        frameon=False,
    )


def title(fr: Frontier) -> str:
    """Data set, epochs and runs per point: ``digits, 3 epochs, n=3 per point``."""
    parts = [fr.settings.get("dataset") or ", ".join(Path(s).name for s in fr.sources[:2])]
    if "epochs" in fr.settings:
        epochs = fr.settings["epochs"]
        parts.append(f"{epochs} epoch{'s' * (str(epochs) != '1')}")
    if "recipe" in fr.settings:
        parts.append(f"recipe {fr.settings['recipe']}")
    ns = sorted({p.n for p in fr.points})
    parts.append(f"n={ns[0]} per point" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]} per point")
    return ", ".join(p for p in parts if p)


def plot(fr: Frontier, out: str | os.PathLike) -> list[Path]:
    """frontier.png and frontier.svg in ``out``: one panel per cost column the rows carry."""
    from matplotlib.figure import Figure

    out = Path(out)
    panels = fr.panels
    fig = Figure(figsize=(4.4 * len(panels) + 1.4, 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    palette = colours(coloured_groups(fr))
    drawn = [_draw_panel(ax, fr, column, palette) for ax, column in zip(axes, panels, strict=True)]
    axes[0].set_ylabel(axis_label(fr.y))
    fig.suptitle(title(fr), fontsize=10)
    _legend(fig, axes[0], fr)
    fig.draw_without_rendering()  # limits and layout final, so data -> points is right
    for ax, (front, xy) in zip(axes, drawn, strict=True):
        _labels(ax, fr, xy, front, palette)
    return save_figure(fig, out, "frontier")


def save_figure(fig, out: str | os.PathLike, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg`` of ``fig`` in ``out``, each written atomically."""
    out = Path(out)
    written = []
    for suffix in ("png", "svg"):
        target = out / f"{stem}.{suffix}"
        with atomic_file(target) as tmp:
            fig.savefig(tmp, format=suffix, dpi=200)
        written.append(target)
    return written
