"""Output as text: the terminal table, markdown for reports, JSON."""

from __future__ import annotations

import json

from timm_scaling.frontier.results import (
    CONFIDENCE,
    MAX_LABELLED,
    Frontier,
    Group,
    Point,
    format_cost,
)
from timm_scaling.report import Metric


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


def _shown_points(fr: Frontier) -> list[Point]:
    return fr.points if len(fr.points) <= MAX_LABELLED else [p for p in fr.points if p.on_front]


def _table_rows(fr: Frontier) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    cost = axis_label(fr.x)
    point_header = ["group", "model", "label", cost, f"{axis_label(fr.y)} mean ± std", "Pareto"]
    point_rows = [
        [p.group, p.model, p.label, format_cost(p.x), _value_text(p), "yes" if p.on_front else ""]
        for p in _shown_points(fr)
    ]
    fit_header = [
        "group",
        "models",
        f"{cost} range",
        f"fit y = a + b log10 x; per doubling [{CONFIDENCE:.0%} CI]",
        "power law of the error",
    ]
    fit_rows = [
        [
            g.name,
            str(len(g.models)),
            f"{format_cost(g.cost_range[0])}-{format_cost(g.cost_range[1])}",
            _fit_text(g),
            _power_text(g),
        ]
        for g in fr.groups
    ]
    return point_header, point_rows, fit_header, fit_rows


def to_markdown(fr: Frontier) -> str:
    """Tables and verdict lines for analysis/REPORT.md."""
    point_header, point_rows, fit_header, fit_rows = _table_rows(fr)

    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        cells = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * len(header)]
        return lines + ["| " + " | ".join(row) + " |" for row in cells[1:]]

    lines = [*table(point_header, point_rows), "", *table(fit_header, fit_rows), ""]
    if len(point_rows) < len(fr.points):
        lines += [f"(the {len(point_rows)} models on the Pareto front of {len(fr.points)})", ""]
    for v in fr.verdicts:
        floor = f" (binomial noise floor ±{v.noise_floor:.2f} pts)" if v.noise_floor else ""
        lines.append(f"- {v.line}{floor}")
    lines += [f"- note: {note}" for note in fr.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_json(fr: Frontier) -> str:
    return json.dumps(fr.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def show(fr: Frontier, fmt: str = "table", console=None) -> None:
    """Print the frontier to the terminal in ``fmt`` (table, json or markdown)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if fmt == "json":
        console.out(to_json(fr), end="", highlight=False)
        return
    if fmt == "markdown":
        console.out(to_markdown(fr), end="", highlight=False)
        return
    point_header, point_rows, fit_header, fit_rows = _table_rows(fr)
    for title, header, rows in (
        (f"{fr.y.label} against {fr.x.label}, by {fr.group_by}", point_header, point_rows),
        ("Fits per group (model means)", fit_header, fit_rows),
    ):
        table = Table(title=title)
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for v in fr.verdicts:
        floor = f"  (binomial noise floor ±{v.noise_floor:.2f} pts)" if v.noise_floor else ""
        console.print(v.line + floor, highlight=False, markup=False)
    for note in fr.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
