"""Reading CSVs: our report.csv, timm's results and benchmark files, and their join.

A file with an accuracy column (``--y``, top1 by default) is an accuracy table; a file without
one but with cost columns (timm's benchmark CSVs: ``infer_img_size``, ``infer_gmacs``,
``infer_macts``, ``param_count``) is a cost table. Accuracy rows take the cost columns they lack
from the cost tables by (architecture, image size): the architecture is the model name before
its first ``.`` (timm's pretrained tag), the size ``img_size`` = ``infer_img_size``. A row with
no match is left out with one warning (count and first names), never given another size's
cost; ``measure_missing`` measures it instead with our profile (torch imported only then).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from timm_scaling.errors import InputError, UserError, first_line
from timm_scaling.report import ALIASES, METRICS, Metric, is_ours, parse_rows

ACCURACY_COLUMNS = ("top1", "top5")
COST_COLUMNS = ("gmacs", "gflops", "macts", "param_count")
# Costs that agree to this relative tolerance are the same measurement (benchmarks round).
COST_RTOL = 0.02
NAMES_SHOWN = 5


def canonical_column(name: str) -> str:
    """Our name for a column: ``infer_gmacs`` -> ``gmacs``; other names unchanged."""
    for column, aliases in ALIASES.items():
        if name in aliases:
            return column
    return name


def metric(column: str) -> Metric:
    """The column's entry in METRICS, or a plain one (named after the column) for others."""
    return METRICS.get(column) or Metric(column, column, "", column in ACCURACY_COLUMNS)


def _accepted_names(column: str) -> str:
    return " or ".join((column, *ALIASES.get(column, ())))


def _first(names: Sequence[str], count: int | None = None) -> str:
    """``a, b, c, ...``: the first few of ``names``."""
    count = len(names) if count is None else count
    more = ", ..." if count > NAMES_SHOWN else ""
    return ", ".join(map(str, names[:NAMES_SHOWN])) + more


def read_table(path: Path) -> pd.DataFrame:
    """One CSV with our column names (timm's accepted, :data:`ALIASES`); InputError if unusable."""
    if path.is_dir():
        raise InputError(f"{path} is a folder: pass the CSV file inside it (e.g. report.csv)")
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise InputError(
            f"{path} {what}: pass a report.csv from `timm-scaling train` or a timm results CSV"
        )
    try:
        text = path.read_text(encoding="utf-8")  # read once: for pandas, and for our own rows
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty: pass a CSV with a header and one row per run") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path} is not a readable CSV ({first_line(err)}): fix or remove it"
        ) from None
    header = [name.strip() for name in next(csv.reader(io.StringIO(text)), [])]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:  # pandas would rename the second top1.1 and read the first silently
        raise InputError(
            f"{path} has two columns named {repeated[0]!r}: rename or remove one, so that it "
            "is clear which one to read"
        )
    if is_ours(text.split("\n", 1)[0]):
        # a row cut short is named by its line, not read as blanks
        parse_rows(path, text, keep=False)
    if frame.empty:
        raise InputError(f"{path} has a header but no rows: pass a CSV with one row per run")
    renames = {}
    for column, aliases in ALIASES.items():
        found = [alias for alias in aliases if alias in frame.columns]
        if column not in frame.columns and found:
            renames[found[0]] = column
    frame = frame.rename(columns=renames)
    if "model" in frame.columns:
        frame["model"] = frame["model"].astype("string").str.strip()
    return frame.assign(source=str(path), line=frame.index + 2)


def architecture(models: pd.Series) -> pd.Series:
    """The model name before its first ``.``: timm's pretrained tag dropped."""
    return models.str.split(".", n=1).str[0]


def _sizes(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame["img_size"], errors="coerce").round().astype("Int64")


class CostTable:
    """The cost columns of every cost table by (architecture, image size); the first file wins."""

    def __init__(self, frames: list[pd.DataFrame]):
        self.frames = frames
        self.columns: list[str] = []
        self.by_size: pd.DataFrame | None = None  # index (arch, img_size)
        self.by_arch: pd.DataFrame | None = None  # index arch: tables without a size column
        self.warnings: list[str] = []
        sized, unsized = [], []
        for frame in frames:
            if "model" not in frame.columns:
                raise InputError(
                    f"{frame['source'].iat[0]} has cost columns but no 'model' column; "
                    f"it has: {', '.join(_shown_columns(frame))}"
                )
            costs = [c for c in frame.columns if c not in ("model", "img_size", "source", "line")]
            numeric = {c: pd.to_numeric(frame[c], errors="coerce") for c in costs}
            table = pd.DataFrame(numeric).assign(
                arch=architecture(frame["model"]), source=frame["source"]
            )
            self.columns += [c for c in costs if c not in self.columns and numeric[c].notna().any()]
            if "img_size" in frame.columns:
                sized.append(table.assign(img_size=_sizes(frame)))
            else:
                self._check_one_size(table)
                unsized.append(table)
        if sized:
            self.by_size = self._first_wins(
                pd.concat(sized, ignore_index=True), ["arch", "img_size"]
            )
        if unsized:
            self.by_arch = self._first_wins(pd.concat(unsized, ignore_index=True), ["arch"])

    @staticmethod
    def _check_one_size(table: pd.DataFrame) -> None:
        repeated = table["arch"][table["arch"].duplicated()].unique().tolist()
        if repeated:
            raise InputError(
                f"{table['source'].iat[0]} has no infer_img_size (or img_size) column and "
                f"several rows for {_first(repeated)}: without the size they cannot be joined; "
                "add the column, or keep one row per architecture"
            )

    def _first_wins(self, table: pd.DataFrame, key: list[str]) -> pd.DataFrame:
        repeats = table[table.duplicated(key, keep=False)]
        if not repeats.empty:
            costs = [c for c in self.columns if c in repeats.columns]
            spread = repeats.groupby(key)[costs].agg(lambda v: _disagree(v.to_numpy(float)))
            clashes = spread.index[spread.any(axis=1)].tolist()
            if clashes:
                names = ["@".join(map(str, k)) if isinstance(k, tuple) else k for k in clashes]
                sources = ", ".join(dict.fromkeys(repeats["source"]))
                self.warnings.append(
                    f"cost tables disagree on {len(clashes)} (architecture, image size) pair(s) "
                    f"({_first(names)}); the first file's costs are used ({sources})"
                )
        return table.drop_duplicates(key, keep="first").set_index(key)

    def lookup(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The cost columns for ``rows`` (NaN where no cost table has the row)."""
        arch = architecture(rows["model"]).to_numpy()
        found = pd.DataFrame(np.nan, index=rows.index, columns=self.columns)
        if self.by_size is not None:
            if "img_size" not in rows.columns:
                raise InputError(
                    f"{rows['source'].iat[0]} has no img_size column, so its rows cannot be "
                    "joined with a cost table by image size; add the column"
                )
            keys = pd.MultiIndex.from_arrays([arch, _sizes(rows)])
            found = self._costs(self.by_size, keys, rows.index)
        if self.by_arch is not None:
            found = found.fillna(self._costs(self.by_arch, arch, rows.index))
        return found

    def _costs(self, table: pd.DataFrame, keys, index: pd.Index) -> pd.DataFrame:
        return table.reindex(keys).reindex(columns=self.columns).set_axis(index)


def _disagree(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    return len(values) > 1 and not np.allclose(values, values[0], rtol=COST_RTOL, atol=0)


def _shown_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c not in ("source", "line")]


def _measure(rows: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Our profile's cost of each row's architecture at its size (torch imported only here)."""
    from timm_scaling.cost import measure_cost

    found = pd.DataFrame(index=rows.index, columns=columns, dtype=float)
    failed: list[str] = []
    for (arch, size), where in rows.groupby(
        [architecture(rows["model"]), _sizes(rows)], sort=False
    ).groups.items():
        try:
            cost = measure_cost(str(arch), int(size))
        except UserError as err:
            failed.append(f"{arch}@{size} ({err})")
            continue
        for column in columns:
            if column in cost:
                found.loc[where, column] = cost[column]
    return found, failed


def _join(
    frame: pd.DataFrame, costs: CostTable, x: str, measure_missing: bool
) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with its missing costs from ``costs``; rows with no cost for ``x`` dropped."""
    found = costs.lookup(frame)
    for column in costs.columns:
        own = pd.to_numeric(frame[column], errors="coerce") if column in frame.columns else None
        frame[column] = found[column] if own is None else own.fillna(found[column])
    if x not in frame.columns:
        frame[x] = np.nan
    missing = pd.to_numeric(frame[x], errors="coerce").isna()
    warnings = []
    if missing.any() and measure_missing:
        if "img_size" not in frame.columns:
            raise InputError(
                f"{frame['source'].iat[0]} has no img_size column: --measure-missing needs "
                "the image size of each row"
            )
        measured, failed = _measure(frame[missing], list(COST_COLUMNS))
        for column in COST_COLUMNS:
            if column not in frame.columns:
                frame[column] = np.nan
            frame.loc[missing, column] = frame.loc[missing, column].fillna(measured[column])
        if failed:
            warnings.append(f"could not measure {len(failed)}: {_first(failed)}")
        missing = pd.to_numeric(frame[x], errors="coerce").isna()
    if missing.any():
        names = (frame["model"] + "@" + frame.get("img_size", "?").astype(str))[missing]
        names = names.str.replace(r"\.0$", "", regex=True).tolist()
        hint = "" if measure_missing else " (pass --measure-missing to measure them)"
        warnings.append(
            f"{frame['source'].iat[0]}: {len(names)} of {len(frame)} rows have no {x} in the "
            f"cost tables for their (architecture, image size) and are left out{hint}: "
            f"{_first(names)}"
        )
    return frame[~missing].copy(), warnings


def _is_accuracy(frame: pd.DataFrame, y: str) -> bool:
    return y in frame.columns


def _is_cost(frame: pd.DataFrame, y: str) -> bool:
    return (
        not _is_accuracy(frame, y)
        and not any(c in frame.columns for c in ACCURACY_COLUMNS)
        and any(c in frame.columns for c in COST_COLUMNS)
    )


def _check_columns(frames: list[pd.DataFrame], needed: Sequence[str], has_costs: bool) -> None:
    for frame in frames:
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            accepted = "; ".join(f"{c!r} (accepted: {_accepted_names(c)})" for c in missing)
            hint = "choose others with --x/--y"
            if not has_costs:
                hint += ", or pass a cost table (timm's benchmark CSV) beside it"
            raise InputError(
                f"{frame['source'].iat[0]} lacks column(s) {accepted}; it has: "
                f"{', '.join(_shown_columns(frame))}; {hint}"
            )


def _check_option_columns(frames: list[pd.DataFrame], x: str, y: str) -> None:
    """--x/--y naming no column of any file and no known metric, or one column for both: a
    bad option (exit 2)."""
    if x == y:
        raise UserError(
            f"--x and --y are both {x!r}: --x is the cost (gmacs, param_count, ...), --y the "
            "accuracy (top1, top5)"
        )
    every = sorted({str(c) for f in frames for c in _shown_columns(f)})
    for option, column in (("--x", x), ("--y", y)):
        if column not in METRICS and not any(column in f.columns for f in frames):
            raise UserError(
                f"{option} {column!r} is not a column of the input nor a known metric "
                f"({', '.join(METRICS)}); the input has: {', '.join(every)}"
            )


def read_results(
    paths: Sequence[str | os.PathLike], x: str, y: str, measure_missing: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the accuracy tables in ``paths`` with a model, a numeric ``x`` > 0 and a numeric
    ``y``, their costs joined from the cost tables among ``paths`` (module docstring).

    Returns the rows (``source`` and ``line`` columns added) and warnings. Raises
    :class:`InputError` for a missing, empty or unreadable file, missing columns, cost tables
    alone, or no row left; :class:`UserError` for an ``x`` or ``y`` that is no column at all.
    """
    frames = [read_table(Path(raw)) for raw in paths]
    _check_option_columns(frames, x, y)
    accuracy = [f for f in frames if _is_accuracy(f, y)]
    cost_frames = [f for f in frames if _is_cost(f, y)]
    if cost_frames and not accuracy:
        names = ", ".join(f["source"].iat[0] for f in cost_frames)
        raise InputError(
            f"{names}: cost table(s) only, no {y!r} column anywhere; pass an accuracy table "
            "beside them (timm's results-imagenet.csv, or a report.csv)"
        )
    if cost_frames:
        frames = accuracy + [f for f in frames if not _is_accuracy(f, y) and not _is_cost(f, y)]
    joins = bool(cost_frames) or measure_missing  # costs looked up, or measured where missing
    _check_columns(frames, ["model", y] if joins else ["model", x, y], joins)
    costs = CostTable(cost_frames) if joins else None
    warnings = list(costs.warnings) if costs else []
    kept = []
    for frame in frames:
        if costs is not None:
            frame, joined = _join(frame, costs, x, measure_missing)
            warnings += joined
            if frame.empty:
                continue
        frame, dropped = _usable(frame, x, y)
        warnings += dropped
        kept.append(frame)
    rows = pd.concat(kept, ignore_index=True, sort=False) if kept else pd.DataFrame()
    if rows.empty:
        raise InputError(
            f"no rows left: every row lacks a model, a numeric {y} or a {x} above 0"
            + (" or a cost in the cost tables" if costs else "")
            + "; check the values, or pass other columns with --x/--y"
        )
    return rows, warnings


# Above it no cost is real (in any unit), and a plot's margins overflow to infinity.
MAX_COST = 1e30


def _usable(frame: pd.DataFrame, x: str, y: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows with a model, a finite ``y`` (within 0..100 for a percentage) and an ``x`` above 0
    and below MAX_COST; a warning naming the lines of the rest."""
    frame = frame.copy()
    for column in (x, y):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    model = frame["model"]
    keep = model.notna() & (model != "") & np.isfinite(frame[y]) & np.isfinite(frame[x])
    keep &= (frame[x] > 0) & (frame[x] < MAX_COST)
    percent = y in METRICS and METRICS[y].unit == "%"
    if percent:
        keep &= frame[y].between(0, 100)
    if keep.all():
        return frame, []
    lines = _first(frame.loc[~keep, "line"].tolist(), int((~keep).sum()))
    return frame.loc[keep], [
        f"{frame['source'].iat[0]}: dropped {(~keep).sum()} of {len(frame)} rows with no model, "
        f"or a missing or non-numeric {y}{' or one outside 0..100' * percent}, or a {x} that is "
        f"not a number above 0 and below {MAX_COST:g} (lines {lines})"
    ]
