"""Output as text: the terminal table, markdown for reports, JSON. Readable at any size: with
many points or groups, the Pareto front, the largest groups and a hint (``--all``: all)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from timm_scaling.frontier.results import (
    CONFIDENCE,
    MAX_LABELLED,
    Frontier,
    Group,
    Point,
    Verdict,
    format_cost,
)
from timm_scaling.report import Metric

MAX_GROUPS_SHOWN = 12  # more groups than this: only the largest LARGEST_GROUPS are listed
LARGEST_GROUPS = 8


def axis_label(m: Metric, log: bool = False) -> str:
    unit = f"{m.unit}, log scale" if log and m.unit else ("log scale" if log else m.unit)
    return f"{m.label} ({unit})" if unit else m.label


def _ci_text(value: float, ci: list[float] | None, digits: int = 2) -> str:
    text = f"{value:.{digits}f}"
    if ci is not None:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def _fit_text(group: Group) -> str:
    fit = group.fit
    if fit is None:
        return group.fit_note or ""
    return (
        f"{fit.a:.2f} + {fit.b:.2f} log10 x; "
        f"{_ci_text(fit.per_doubling, fit.ci and fit.ci['per_doubling'])} per doubling; "
        f"R² {fit.r2:.2f}"
    )


def _power_text(group: Group) -> str:
    law = group.power_law
    if law is None:
        return group.power_law_note or ""
    ci = law.ci or {}
    return (
        f"err = {_ci_text(law.c, ci.get('c'))} + {_ci_text(law.a, ci.get('a'))}"
        f" x^-{_ci_text(law.b, ci.get('b'))} ({group.power_law_note})"
    )


def _value_text(point: Point) -> str:
    if point.std is None:
        return f"{point.y:.2f} (n=1)"
    return f"{point.y:.2f} ± {point.std:.2f} (n={point.n})"


@dataclass
class View:
    """What the text outputs show: everything, or (for many points or groups, without
    ``--all``) the Pareto front, the largest groups and the verdicts that compare."""

    points: list[Point]
    groups: list[Group]
    verdicts: list[Verdict]
    hint: str | None


def view(fr: Frontier, everything: bool = False) -> View:
    if everything or (len(fr.points) <= MAX_LABELLED and len(fr.groups) <= MAX_GROUPS_SHOWN):
        return View(fr.points, fr.groups, fr.verdicts, None)
    front = sorted((p for p in fr.points if p.on_front), key=lambda p: p.x)
    largest = sorted(fr.groups, key=lambda g: (g.name != fr.reference, -len(g.models)))
    shown = {g.name for g in largest[:LARGEST_GROUPS]}
    groups = [g for g in fr.groups if g.name in shown]
    verdicts = [v for v in fr.verdicts if v.difference is not None]
    hint = (
        f"{len(fr.points)} points in {len(fr.groups)} groups: shown are the {len(front)} on the "
        f"Pareto front and the {len(groups)} largest groups"
        + (f" and the {len(verdicts)} verdicts that compare" if fr.verdicts else "")
        + "; pick groups with --models GLOB (repeatable, e.g. --models 'tf_efficientnet_b?.in1k' "
        "--models 'resnet*.tv_in1k'), or print everything with --all"
    )
    return View(front, groups, verdicts, hint)


Rows = list[list[str]]


def _table_rows(v: View, fr: Frontier) -> tuple[list[str], Rows, list[str], Rows]:
    """Point and group tables; for a compact view (a hint), only the columns that fit a
    terminal: the front's model, size, cost and accuracy, and each group's fit."""
    cost = axis_label(fr.x)
    sized = any(p.img_size is not None for p in v.points)
    point_columns = {
        "group": lambda p: p.group,
        "model": lambda p: p.model,
        "img size": lambda p: str(p.img_size or ""),
        "label": lambda p: p.label,
        cost: lambda p: format_cost(p.x),
        f"{axis_label(fr.y)} mean ± std": _value_text,
        "Pareto": lambda p: "yes" if p.on_front else "",
    }
    if not sized:
        del point_columns["img size"]
    if v.hint:
        for column in ("group", "label", "Pareto"):
            del point_columns[column]
    group_columns = {
        "group": lambda g: g.name,
        "points": lambda g: str(len(g.models)),
        f"{cost} range": lambda g: f"{format_cost(g.cost_range[0])}-{format_cost(g.cost_range[1])}",
        f"fit y = a + b log10 x; per doubling [{CONFIDENCE:.0%} CI]": _fit_text,
        "power law of the error": _power_text,
    }
    if v.hint:
        del group_columns["power law of the error"]
    return (
        list(point_columns),
        [[cell(p) for cell in point_columns.values()] for p in v.points],
        list(group_columns),
        [[cell(g) for cell in group_columns.values()] for g in v.groups],
    )


def _floor_text(v: Verdict) -> str:
    shown = v.noise_floor and v.interval_from != "evaluation noise"  # the interval holds it
    return f" (binomial noise floor ±{v.noise_floor:.2f} pts)" if shown else ""


def to_markdown(fr: Frontier, everything: bool = False) -> str:
    """Tables and verdict lines for analysis/REPORT.md."""
    v = view(fr, everything)
    point_header, point_rows, fit_header, fit_rows = _table_rows(v, fr)

    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        cells = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * len(header)]
        return lines + ["| " + " | ".join(row) + " |" for row in cells[1:]]

    lines = [*table(point_header, point_rows), "", *table(fit_header, fit_rows), ""]
    if v.hint:
        lines += [f"({v.hint})", ""]
    lines += [f"- {verdict.line}{_floor_text(verdict)}" for verdict in v.verdicts]
    lines += [f"- note: {note}" for note in fr.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_json(fr: Frontier) -> str:
    return json.dumps(fr.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def show(fr: Frontier, fmt: str = "table", console=None, everything: bool = False) -> None:
    """Print the frontier to the terminal in ``fmt`` (table, json or markdown); ``everything``
    (``--all``): every point, group and verdict however many."""
    from rich.console import Console
    from rich.table import Table

    from timm_scaling.tables import print_table

    console = console or Console()
    if fmt == "json":
        console.out(to_json(fr), end="", highlight=False)
        return
    if fmt == "markdown":
        console.out(to_markdown(fr, everything), end="", highlight=False)
        return
    v = view(fr, everything)
    point_header, point_rows, fit_header, fit_rows = _table_rows(v, fr)
    point_title = f"{fr.y.label} against {fr.x.label}, by {fr.group_by}"
    if v.hint:
        point_title += ": the Pareto front"
    for title, header, rows in (
        (point_title, point_header, point_rows),
        ("Fits per group (point means)", fit_header, fit_rows),
    ):
        table = Table(title=title)
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        print_table(table, console)
    for verdict in v.verdicts:
        console.print(verdict.line + _floor_text(verdict), highlight=False, markup=False)
    for note in fr.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    if v.hint:
        console.print(v.hint, highlight=False, markup=False)
