"""Model names: the scaling method of ours, the family of timm's, a short label per point."""

from __future__ import annotations

import math
import re

import pandas as pd

from timm_scaling.errors import InputError, UserError
from timm_scaling.frontier.results import OTHER_GROUP
from timm_scaling.scaling import is_model_name, parse_name

_SIZE_SUFFIX = re.compile(
    r"^(?P<family>.+?)[_-](?P<size>b\d+|l\d+|xs|s|m|l|xl|xxl|tiny|small|base|medium|large|huge|giant)$"
)


def method_of(model: str) -> str:
    """The scaling method of a model name: ours parse, others go by family (module docstring)."""
    if is_model_name(model):
        try:
            return parse_name(model).method
        except UserError:
            pass  # matches the grammar but is not canonical (e.g. a multiplier of 1)
    match = _SIZE_SUFFIX.match(model.split(".", 1)[0])
    return match["family"] if match else OTHER_GROUP


def _multiplier_text(depth: float, width: float, resolution: float) -> str:
    parts = [
        f"{axis}={value:g}"
        for axis, value in (("d", depth), ("w", width), ("r", resolution))
        if not math.isclose(value, 1.0)
    ]
    return " ".join(parts)


def label_of(model: str, row: pd.Series) -> str:
    """A short label for a point: its multipliers, else its size token, else its name."""
    if is_model_name(model):
        try:
            scaling = parse_name(model)
        except UserError:
            scaling = None
        if scaling is not None:
            if scaling.coefficients is not None:
                return f"φ={scaling.coefficients.phi:g}"
            return _multiplier_text(scaling.depth, scaling.width, scaling.resolution) or "B0"
    match = _SIZE_SUFFIX.match(model.split(".", 1)[0])
    if match:
        return match["size"]
    mults = pd.to_numeric(
        pd.Series([row.get(c) for c in ("depth_mult", "width_mult", "res_mult")]), errors="coerce"
    ).fillna(1.0)
    return _multiplier_text(*mults) or model


def assign_groups(rows: pd.DataFrame, group: str) -> pd.Series:
    """The group of each row: the ``group`` column, with ``method`` read from names if absent."""
    if group in rows.columns:
        values = rows[group].astype("string").str.strip()
        if group == "method":
            from_names = rows["model"].map(method_of).astype("string")
            values = values.where(values.notna() & (values != ""), from_names)
        return values.fillna(OTHER_GROUP).replace("", OTHER_GROUP).astype(str)
    if group == "method":
        return rows["model"].map(method_of).astype(str)
    raise InputError(
        f"no {group!r} column to group by in the input; pass --group with one of: "
        f"{', '.join(c for c in rows.columns if c not in ('source', 'line'))}"
    )
