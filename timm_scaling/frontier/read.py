"""Reading CSVs: our report.csv, timm's results and benchmark files; column names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from timm_scaling.errors import InputError
from timm_scaling.report import ALIASES, METRICS, Metric


def canonical_column(name: str) -> str:
    """Our name for a column: ``infer_gmacs`` -> ``gmacs``; other names unchanged."""
    for column, aliases in ALIASES.items():
        if name in aliases:
            return column
    return name


def metric(column: str) -> Metric:
    """The column's entry in METRICS, or a plain one (named after the column) for others."""
    return METRICS.get(column) or Metric(column, column, "", column in ("top1", "top5"))


def _accepted_names(column: str) -> str:
    return " or ".join((column, *ALIASES.get(column, ())))


def _read_one(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(
            f"{path} does not exist: pass a report.csv from `timm-scaling train` "
            "or a timm results CSV"
        )
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty: pass a CSV with a header and one row per run") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise InputError(f"{path} is not a readable CSV ({reason}): fix or remove it") from None
    if frame.empty:
        raise InputError(f"{path} has a header but no rows: pass a CSV with one row per run")
    renames = {}
    for column, aliases in ALIASES.items():
        found = [alias for alias in aliases if alias in frame.columns]
        if column not in frame.columns and found:
            renames[found[0]] = column
    return frame.rename(columns=renames)


def read_results(
    paths: Sequence[str | os.PathLike], x: str, y: str
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of every CSV in ``paths`` with a model, a numeric ``x`` > 0 and a numeric ``y``.

    Returns the merged rows (a ``source`` and a ``line`` column added) and warnings: one line
    per file that lost rows. Raises :class:`InputError` for a missing or empty file, missing
    columns, or no row left.
    """
    frames, warnings = [], []
    for raw in paths:
        path = Path(raw)
        frame = _read_one(path)
        missing = [column for column in ("model", x, y) if column not in frame.columns]
        if missing:
            needed = "; ".join(
                f"{column!r} (accepted: {_accepted_names(column)})" for column in missing
            )
            raise InputError(
                f"{path} lacks column(s) {needed}; it has: {', '.join(map(str, frame.columns))}; "
                "choose others with --x/--y"
            )
        frame = frame.assign(source=str(path), line=frame.index + 2)
        for column in (x, y):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        model = frame["model"].astype("string").str.strip()
        keep = model.notna() & (model != "") & frame[y].notna() & (frame[x] > 0)
        if not keep.all():
            lines = ", ".join(map(str, frame.loc[~keep, "line"].head(5)))
            more = " ..." if (~keep).sum() > 5 else ""
            warnings.append(
                f"{path}: dropped {(~keep).sum()} of {len(frame)} rows with no model, or a "
                f"missing or non-numeric {y}, or a {x} that is not a number above 0 "
                f"(lines {lines}{more})"
            )
        frames.append(frame.loc[keep].assign(model=model[keep]))
    rows = pd.concat(frames, ignore_index=True, sort=False)
    if rows.empty:
        raise InputError(
            f"no rows left: every row lacks a model, a numeric {y} or a {x} above 0; "
            "check the values, or pass other columns with --x/--y"
        )
    return rows, warnings
