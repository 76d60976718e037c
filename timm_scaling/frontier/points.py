"""Rows -> points. A point is a configuration: a model at one image size and, in our report.csv,
one dataset, recipe and epochs; only rows that differ in their seed alone are repeats to
average. Rows equal in all of that and in the seed too are one run written twice (a run
retrained after its folder was deleted): the last is kept, with a warning."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence

import numpy as np
import pandas as pd

from timm_scaling.errors import InputError, UserError
from timm_scaling.frontier.names import MULTIPLIER_COLUMNS
from timm_scaling.frontier.results import PANEL_COLUMNS, Point, group_order

SETTING_COLUMNS = ("dataset", "recipe", "epochs", "model_kwargs")
# Settings every point of one analysis shares (a sweep's models each have their own recipe).
ACROSS_MODELS = ("dataset", "epochs")
HIDDEN = ("source", "line")


def _text(values: pd.Series) -> pd.Series:
    """Cells as text, numbers without a trailing ``.0`` (epochs 8.0 reads 8)."""
    numeric = pd.to_numeric(values, errors="coerce")
    whole = numeric.notna() & (numeric == numeric.round())
    text = values.astype("string").str.strip()
    return text.where(~whole, numeric.round().astype("Int64").astype("string")).fillna("")


def where(rows: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """Rows matching every ``COLUMN=VALUE`` of ``conditions`` (``--where epochs=8``)."""
    for condition in conditions:
        column, sep, value = condition.partition("=")
        column, value = column.strip(), value.strip()
        if not sep or not column:
            raise UserError(f"--where takes COLUMN=VALUE (e.g. epochs=8); got {condition!r}")
        if column not in rows.columns or column in HIDDEN:
            shown = ", ".join(c for c in rows.columns if c not in HIDDEN)
            raise UserError(f"--where {condition}: no column {column!r}; the input has: {shown}")
        cells = _text(rows[column])
        match = cells == _text(pd.Series([value]))[0]
        if not match.any():
            values = ", ".join(sorted(set(cells))[:10])
            raise UserError(f"--where {condition} matches no row; {column} has: {values}")
        rows = rows[match]
    return rows


def select_models(models: pd.Series, patterns: Sequence[str]) -> pd.Series:
    """A mask of the rows whose model matches one of ``patterns`` (fnmatch on the full name)."""
    names = sorted(set(models))
    mask = pd.Series(False, index=models.index)
    for pattern in patterns:
        matched = set(fnmatch.filter(names, pattern))
        if not matched:
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else "no name is close"
            raise UserError(
                f"--models {pattern!r} matches no model ({len(names)} in the input; fnmatch on "
                f"the full name with its tag, e.g. 'tf_efficientnet_b?.in1k'); {hint}"
            )
        mask |= models.isin(matched)
    return mask


def settings(rows: pd.DataFrame, group: str) -> list[str]:
    """The setting columns present; refuse rows of one model in several settings, and points of
    several data sets or epochs (unless ``group`` is that column)."""
    present = [c for c in SETTING_COLUMNS if c in rows.columns]
    config = ["model", *(["img_size"] if "img_size" in rows.columns else [])]
    for column in present:
        if column == group:
            continue
        text = _text(rows[column])
        counts = text.groupby([rows[c] for c in config], dropna=False).nunique()
        mixed = counts[counts > 1]
        if not mixed.empty:
            key = mixed.index[0]
            model = key[0] if isinstance(key, tuple) else key
            values = sorted(set(text[rows["model"] == model]))
            raise InputError(
                f"rows of {model} differ in {column} ({', '.join(values)}): one analysis "
                f"compares one {column}; pick one with --where {column}={values[-1]}, or "
                f"compare them with --group {column}"
            )
    for column in (c for c in ACROSS_MODELS if c in present and c != group):
        _one_value(rows, column)
    return present


def _one_value(rows: pd.DataFrame, column: str) -> None:
    """Refuse points trained in several ``column`` values: a model trained longer, or on other
    data, is not a point on the same frontier."""
    text = _text(rows[column])
    models = rows["model"].astype(str).groupby(text).unique()
    if len(models) < 2:
        return
    models = models.sort_values(key=lambda names: names.map(len), ascending=False)
    parts = [
        f"{value} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for value, names in models.items()
    ]
    raise InputError(
        f"rows differ in {column}: {'; '.join(parts)}; points trained differently are not "
        f"compared: pick one with --where {column}={models.index[0]}, or compare them with "
        f"--group {column}"
    )


def drop_repeats(rows: pd.DataFrame, present: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The last of rows equal in configuration and seed (or, without a seed column, in every
    column); a warning with their count."""
    if "seed" in rows.columns:
        key = ["model", *(["img_size"] if "img_size" in rows.columns else []), *present, "seed"]
        what = "model, image size, setting and seed"
    else:
        key = [c for c in rows.columns if c not in HIDDEN]
        what = "every column"
    repeated = rows.duplicated([c for c in key if c in rows.columns], keep="last")
    if not repeated.any():
        return rows, []
    names = ", ".join(dict.fromkeys(rows.loc[repeated, "model"].astype(str)))
    return rows[~repeated], [
        f"{int(repeated.sum())} row(s) repeat another in {what} (a run written twice, say "
        f"retrained after its folder was deleted): the last of each is kept ({names})"
    ]


def aggregate(rows: pd.DataFrame, x: str, y: str, groups: pd.Series) -> list[Point]:
    """One point per configuration (group, model, image size, setting): the mean of its runs.
    Sums by group code, not a loop over groups: a million one-run rows stay seconds."""
    panels = [x] + [c for c in PANEL_COLUMNS if c != x and c in rows.columns]
    sizes = (
        pd.to_numeric(rows["img_size"], errors="coerce").round().astype("Int64")
        if "img_size" in rows.columns
        else pd.Series(pd.NA, index=rows.index, dtype="Int64")
    )
    several = set((sizes.groupby(rows["model"]).nunique() > 1).loc[lambda s: s].index)
    keys = pd.DataFrame(
        {
            "group": groups.to_numpy(),
            "model": rows["model"].to_numpy(),
            "size": sizes.to_numpy(),
            **{c: _text(rows[c]).to_numpy() for c in SETTING_COLUMNS if c in rows.columns},
        }
    )
    codes = keys.groupby(list(keys.columns), sort=False, dropna=False).ngroup().to_numpy()
    if not len(codes):
        return []
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    first = order[starts]  # each point's first row
    counts = np.diff(np.r_[starts, len(order)])

    def means(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=len(first)) / counts

    ys = rows[y].to_numpy(dtype=float)
    mean_y = means(ys)
    spread = np.bincount(codes, weights=(ys - mean_y[codes]) ** 2, minlength=len(first))
    stds = np.sqrt(spread / np.maximum(counts - 1, 1))
    costs = {
        c: means(pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float)) for c in panels
    }
    runs = ys[order].tolist()
    ends = (starts + counts).tolist()
    columns = [c for c in MULTIPLIER_COLUMNS if c in rows.columns]
    cells = np.ones((len(first), len(columns)))
    for j, column in enumerate(columns):
        cells[:, j] = pd.to_numeric(rows[column], errors="coerce").to_numpy(float)[first]
    # Kept for the label where one is not 1 (an empty cell reads 1): a million points stay small.
    scaled = ((cells != 1) & ~np.isnan(cells)).any(axis=1)
    group_of, model_of, size_of = (keys[c].to_numpy()[first] for c in ("group", "model", "size"))
    points = []
    for i, (start, end) in enumerate(zip(starts.tolist(), ends, strict=True)):
        model, size = str(model_of[i]), size_of[i]
        size = None if pd.isna(size) else int(size)
        points.append(
            Point(
                model=model,
                group=str(group_of[i]),
                x=float(costs[x][i]),
                y=float(mean_y[i]),
                std=float(stds[i]) if end - start > 1 else None,
                n=end - start,
                runs=runs[start:end],
                costs={c: float(costs[c][i]) for c in panels},
                img_size=size,
                name=f"{model}@{size}" if size is not None and model in several else model,
                multipliers=dict(zip(columns, cells[i].tolist(), strict=True))
                if scaled[i]
                else None,
            )
        )
    points.sort(key=lambda p: (group_order(p.group), p.x, p.model))
    return points
