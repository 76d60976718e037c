"""Rows -> points: one point per configuration, its runs averaged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from timm_scaling.frontier.names import label_of
from timm_scaling.frontier.results import PANEL_COLUMNS, Point, group_order


def aggregate(rows: pd.DataFrame, x: str, y: str, groups: pd.Series) -> list[Point]:
    """One point per (group, model): the mean of its runs' costs and accuracy."""
    panels = [x] + [c for c in PANEL_COLUMNS if c != x and c in rows.columns]
    points = []
    ys = rows[y].to_numpy(dtype=float)
    numeric = {c: pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float) for c in panels}
    keys = [groups.to_numpy(), rows["model"].to_numpy()]
    for (group, model), where in pd.DataFrame(keys).T.groupby([0, 1], sort=False).indices.items():
        values = ys[where]
        costs = {c: float(np.mean(numeric[c][where])) for c in panels}
        points.append(
            Point(
                model=str(model),
                group=str(group),
                label=label_of(str(model), rows.iloc[where[0]]),
                x=costs[x],
                y=float(values.mean()),
                std=float(values.std(ddof=1)) if len(values) > 1 else None,
                n=len(values),
                runs=[float(v) for v in values],
                costs=costs,
            )
        )
    points.sort(key=lambda p: (group_order(p.group), p.x, p.model))
    return points
