"""Accuracy-vs-cost frontiers per scaling method: Pareto front, fits, a verdict, a plot.

The question is the EfficientNet paper's (Figure 8): at equal cost, does compound scaling beat
depth-, width- and resolution-only scaling? Everything here answers it with numbers and
bootstrap intervals, on our report.csv or on timm's published results CSVs. Imports pandas,
numpy, scipy and matplotlib only (never torch or timm), so ``timm-scaling frontier`` starts fast.

Reading. Rows are runs. Column names are ours (:data:`timm_scaling.report.COLUMNS`); timm's
names are accepted through :data:`timm_scaling.report.ALIASES` (``infer_gmacs`` is ``gmacs``).
Rows whose cost or accuracy is missing, not a number, or (for the log axis) a cost of 0 or less
are dropped with a count. Runs of one model (seeds) aggregate to mean, std and n.

Groups. ``--group`` names a column (default ``method``). Without a ``method`` column, or for an
empty cell in it, a row's method comes from its model name:

- a timm-scaling name (``effnet_b0_w2``): its method, as :attr:`Scaling.method` says
  (baseline, depth, width, resolution, compound or mixed);
- any other name: timm's pretrained tag (from the first ``.``) is dropped, then one trailing
  size token after ``_`` or ``-`` (``b0``..``b8``, ``l2``, ``s``/``m``/``l``/``xl``,
  ``tiny``..``giant``) is stripped and the rest is the group: ``tf_efficientnet_b3.ns_jft_in1k``
  -> ``tf_efficientnet``, ``efficientnet-b0`` -> ``efficientnet``;
- else a depth number glued to letters is stripped: ``resnet18``, ``resnet101`` -> ``resnet``,
  ``densenet121`` -> ``densenet``;
- a name with neither goes to ``other``.

The ``baseline`` group (B0 itself) is the scale-1 point of every scaling method, so its points
belong to every scaling method's curve (as in the paper's Figure 8); it is also shown on its own.
Any other group (a timm family such as ``resnet``) is a control: one more curve of its own,
never joined by B0, and left out of the verdict unless ``--at`` or a ``--reference`` outside
B0's methods asks for it; those lines say "(across families)".

Fits, per group, over model means: y = a + b log10(x), reported also as points per doubling of
x (b log10 2); a group with fewer than 3 distinct costs is plotted but not fitted. The
saturating power law of the error, err = c + a x^-b (err = 100 - accuracy, 0 <= c < the best
error), is fitted with c shared across groups when two or more groups have 3+ distinct costs
(and 8+ points together), else alone for a group with 8+ distinct costs, else not at all: with
4-6 points its intervals are useless, and the output says so.

Bootstrap. Runs are resampled within each model (fixed seed, so reruns print the same numbers);
each resampled mean is widened by sqrt(n/(n-1)) so that its variance is the unbiased s^2/n (the
plain bootstrap is too narrow with the 2-5 seeds a study has). Intervals are percentile
intervals of the refitted quantities. With one run of a model nothing is resampled: the output
says n=1 and claims nothing.

Verdict. At the cost of each point of the reference group (``compound``), or at each ``--at``
cost, every other group's accuracy from its fit (3+ costs) or by linear interpolation in log
cost (2 costs), never extrapolated; the difference to the reference, with a 95% interval. The
binomial noise floor of one accuracy, sqrt(p(1-p)/N), needs the evaluation set's size N.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from timm_scaling.errors import InputError, UserError
from timm_scaling.report import ALIASES, METRICS, Metric, atomic_write
from timm_scaling.scaling import is_model_name, parse_name

REFERENCE = "compound"
SHARED_GROUP = "baseline"
OTHER_GROUP = "other"
MIN_FIT_COSTS = 3
MIN_POWER_COSTS = 8
# Each power-law draw is a nonlinear refit (milliseconds): its intervals use the first 200 draws.
POWER_LAW_DRAWS = 200
CONFIDENCE = 0.95
FORMATS = ("table", "json", "markdown")
# Cost columns drawn as extra panels beside --x when the rows carry them (activations track GPU
# run time better than FLOPs do).
PANEL_COLUMNS = ("gmacs", "param_count", "macts")
METHOD_ORDER = ("baseline", "depth", "width", "resolution", "compound", "mixed")
METHOD_COLOURS = {
    "baseline": "#000000",
    "depth": "#0072B2",
    "width": "#009E73",
    "resolution": "#E69F00",
    "compound": "#D55E00",
    "mixed": "#CC79A7",
}
OTHER_COLOURS = ("#56B4E9", "#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#117733")
# Keep a group name and its points' labels readable: beyond this many points only the front is
# labelled, and the terminal lists only the front.
MAX_LABELLED = 40

_SIZE_SUFFIX = re.compile(
    r"^(?P<family>.+?)[_-](?P<size>b\d+|l\d+|xs|s|m|l|xl|xxl|tiny|small|base|medium|large|huge|giant)$"
)
# resnet18, densenet121, vgg16: the layer count glued to the family name.
_DEPTH_SUFFIX = re.compile(r"^(?P<family>[a-z][a-z_]*[a-z])(?P<size>\d+)$")


# ---------------------------------------------------------------------------------- reading


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


def method_of(model: str) -> str:
    """The scaling method of a model name: ours parse, others go by family (module docstring)."""
    if is_model_name(model):
        try:
            return parse_name(model).method
        except UserError:
            pass  # matches the grammar but is not canonical (e.g. a multiplier of 1)
    arch = model.split(".", 1)[0]
    match = _SIZE_SUFFIX.match(arch) or _DEPTH_SUFFIX.match(arch)
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


# ------------------------------------------------------------------------------- statistics


def pareto_front(
    xs: Sequence[float],
    ys: Sequence[float],
    lower_x_is_better: bool = True,
    higher_y_is_better: bool = True,
) -> np.ndarray:
    """A boolean mask of the points no other point dominates (as good on both, better on one)."""
    x = np.asarray(xs, dtype=float) * (1 if lower_x_is_better else -1)
    y = np.asarray(ys, dtype=float) * (1 if higher_y_is_better else -1)
    no_worse = (x[None, :] <= x[:, None]) & (y[None, :] >= y[:, None])
    better = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
    return ~(no_worse & better).any(axis=1)


def log_linear_design(xs: Sequence[float]) -> np.ndarray:
    """Rows [1, log10 x]: y = a + b log10(x) is this matrix times [a, b]."""
    lx = np.log10(np.asarray(xs, dtype=float))
    return np.column_stack([np.ones_like(lx), lx])


def fit_log_linear(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares a, b of y = a + b log10(x)."""
    coef, *_ = np.linalg.lstsq(log_linear_design(xs), np.asarray(ys, dtype=float), rcond=None)
    return float(coef[0]), float(coef[1])


def per_doubling(b: float) -> float:
    """The change in y per doubling of x under y = a + b log10(x)."""
    return b * math.log10(2)


@dataclass(frozen=True)
class PowerLaw:
    """err = c + a[g] * x^-b[g] for each curve g, with c shared."""

    c: float
    a: tuple[float, ...]
    b: tuple[float, ...]


def fit_power_law(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]],
    c_max: float,
    start: PowerLaw | None = None,
) -> PowerLaw:
    """Least squares of err = c + a_g x^-b_g over ``curves`` [(x, err), ...], one c for all.

    c is bounded to [0, c_max) (c_max: the best error seen), a_g > 0, b_g in (0, 5].
    """
    from scipy.optimize import least_squares

    curves = [(np.asarray(x, float), np.asarray(e, float)) for x, e in curves]
    # Work with x over its geometric mean, so that a is of the order of the errors.
    scale = 10 ** np.mean(np.log10(np.concatenate([x for x, _ in curves])))

    def terms(p: np.ndarray) -> list[np.ndarray]:  # a_g (x/scale)^-b_g, per curve
        return [
            np.exp(p[1 + 2 * g]) * (x / scale) ** -p[2 + 2 * g] for g, (x, _) in enumerate(curves)
        ]

    def residuals(p: np.ndarray) -> np.ndarray:
        return np.concatenate([p[0] + t - e for t, (_, e) in zip(terms(p), curves, strict=True)])

    def jacobian(p: np.ndarray) -> np.ndarray:
        jac = np.zeros((sum(len(x) for x, _ in curves), len(p)))
        jac[:, 0] = 1.0
        row = 0
        for g, (t, (x, _)) in enumerate(zip(terms(p), curves, strict=True)):
            rows = slice(row, row + len(x))
            jac[rows, 1 + 2 * g] = t
            jac[rows, 2 + 2 * g] = -t * np.log(x / scale)
            row += len(x)
        return jac

    c_hi = c_max * (1 - 1e-9)
    if start is None:
        c0 = 0.5 * c_max
        x0 = [c0]
        for _, e in curves:
            x0 += [math.log(max(float(np.mean(e)) - c0, 1e-6)), 0.5]
    else:
        x0 = [min(max(start.c, 0.0), 0.99 * c_hi)]
        for a, b in zip(start.a, start.b, strict=True):
            x0 += [math.log(a / scale**b), min(max(b, 1e-3), 5.0)]
    lower = [0.0] + [-np.inf, 1e-3] * len(curves)
    upper = [c_hi] + [np.inf, 5.0] * len(curves)
    p = least_squares(residuals, np.asarray(x0), jac=jacobian, bounds=(lower, upper)).x
    b = tuple(float(v) for v in p[2::2])
    a = tuple(float(math.exp(la) * scale**bg) for la, bg in zip(p[1::2], b, strict=True))
    return PowerLaw(float(p[0]), a, b)


def bootstrap_means(
    runs: Sequence[Sequence[float]], draws: int, rng: np.random.Generator
) -> np.ndarray:
    """(draws, models) resampled means: runs resampled within each model, the spread widened
    by sqrt(n/(n-1)) so that its variance is s^2/n; a model with one run stays fixed."""
    columns = []
    for values in runs:
        values = np.asarray(values, dtype=float)
        n, mean = len(values), float(np.mean(values))
        if n < 2:
            columns.append(np.full(draws, mean))
            continue
        resampled = values[rng.integers(0, n, size=(draws, n))].mean(axis=1)
        columns.append(mean + math.sqrt(n / (n - 1)) * (resampled - mean))
    return np.column_stack(columns)


def interval(samples: np.ndarray, axis: int = 0) -> np.ndarray:
    """The central CONFIDENCE percentile interval: [low, high] along ``axis``."""
    tail = 100 * (1 - CONFIDENCE) / 2
    return np.percentile(samples, [tail, 100 - tail], axis=axis)


def noise_floor(p: float, n: int) -> float:
    """The binomial standard error sqrt(p(1-p)/N) of an accuracy p (a fraction) on N samples."""
    return math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------------------------- results


@dataclass
class Point:
    model: str
    group: str
    label: str
    x: float
    y: float
    std: float | None
    n: int
    runs: list[float]
    costs: dict[str, float]  # every panel column's mean, --x included
    on_front: bool = False


@dataclass
class LinearFit:
    a: float
    b: float
    per_doubling: float
    r2: float
    ci: dict[str, list[float]] | None  # a, b, per_doubling -> [low, high]


@dataclass
class PowerFit:
    c: float
    a: float
    b: float
    shared_c: bool
    ci: dict[str, list[float]] | None  # c, a, b -> [low, high]


@dataclass
class Group:
    name: str
    models: list[str]
    distinct_costs: int
    cost_range: list[float]
    fit: LinearFit | None = None
    fit_note: str | None = None
    power_law: PowerFit | None = None
    power_law_note: str | None = None


@dataclass
class Verdict:
    reference: str
    other: str
    at: float
    reference_value: float
    line: str
    # None where there is no comparison (the line says why):
    other_value: float | None = None
    via: str | None = None  # how other_value was read: "fit" or "interpolation"
    difference: float | None = None
    ci: list[float] | None = None
    significant: bool | None = None
    n_min: int | None = None
    noise_floor: float | None = None


@dataclass
class Frontier:
    x: Metric
    y: Metric
    group_by: str
    reference: str
    sources: list[str]
    points: list[Point]
    groups: list[Group]
    front: list[str]
    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bootstrap_draws: int = 0
    seed: int = 0
    eval_size: int | None = None
    panels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["x"] = self.x._asdict()
        data["y"] = self.y._asdict()
        return _finite(data)


def _finite(value):
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def is_scaling_method(group: str) -> bool:
    """B0 or one of its scaling methods; any other group (resnet, ...) is another family."""
    return group in METHOD_ORDER


def group_order(name: str) -> tuple[int, str]:
    if name in METHOD_ORDER:
        return (METHOD_ORDER.index(name), name)
    return (len(METHOD_ORDER) + (name == OTHER_GROUP), name)


def format_cost(value: float) -> str:
    """Three significant digits, no exponent: 1.80, 0.390, 37.0, 1200."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _difference_unit(y: Metric) -> str:
    return "pts" if y.unit == "%" else y.unit


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


class _Curves:
    """Which points make up each group's curve, and the weights that read a curve at a cost.

    Every estimate is linear in the model means, so one weight vector over the points gives both
    the estimate (weights @ means) and its bootstrap replicates (replicates @ weights).
    """

    def __init__(self, points: list[Point], cost: str):
        self.points = points
        self.log_x = np.log10([p.costs[cost] for p in points])
        names = sorted({p.group for p in points}, key=group_order)
        self.members = {}
        for name in names:
            own = [i for i, p in enumerate(points) if p.group == name]
            shared = [i for i, p in enumerate(points) if p.group == SHARED_GROUP]
            # B0 starts every scaling method's curve, never another family's (a control).
            method = is_scaling_method(name) and name != SHARED_GROUP
            self.members[name] = own + shared if method else own

    def distinct(self, name: str) -> np.ndarray:
        return np.unique(self.log_x[self.members[name]])

    def fit_weights(self, name: str) -> np.ndarray:
        """(2, points): [a, b] = weights @ means."""
        idx = self.members[name]
        weights = np.zeros((2, len(self.points)))
        weights[:, idx] = np.linalg.pinv(log_linear_design(10 ** self.log_x[idx]))
        return weights

    def read_at(self, name: str, at: float) -> tuple[np.ndarray | None, str]:
        """Weights reading the group's curve at cost ``at`` and how ("fit", "interpolation"),
        or None and why not."""
        levels = self.distinct(name)
        lx = math.log10(at)
        tol = 1e-9
        if lx < levels[0] - tol or lx > levels[-1] + tol:
            lo, hi = 10 ** levels[0], 10 ** levels[-1]
            return None, f"outside {name}'s measured costs {format_cost(lo)}-{format_cost(hi)}"
        if len(levels) >= MIN_FIT_COSTS:
            return np.array([1.0, lx]) @ self.fit_weights(name), "fit"
        idx = np.asarray(self.members[name])
        weights = np.zeros(len(self.points))
        # The mean of the models at each distinct cost, then linear in log cost between two.
        upper = (
            int(np.clip(np.searchsorted(levels, lx), 1, len(levels) - 1)) if len(levels) > 1 else 0
        )
        lower = max(upper - 1, 0)
        span = levels[upper] - levels[lower]
        share = 0.0 if span == 0 else (lx - levels[lower]) / span
        for level, part in ((levels[lower], 1 - share), (levels[upper], share)):
            at_level = idx[np.isclose(self.log_x[idx], level, rtol=0, atol=tol)]
            weights[at_level] += part / len(at_level)
        return weights, "interpolation"


def _fit_groups(
    curves: _Curves, replicates: np.ndarray | None, means: np.ndarray
) -> dict[str, tuple[LinearFit | None, str | None]]:
    fits = {}
    for name in curves.members:
        levels = curves.distinct(name)
        if name == SHARED_GROUP and len(curves.members) > 1:
            fits[name] = (None, "the scale-1 point, shared by every other group's curve")
            continue
        if len(levels) < MIN_FIT_COSTS:
            fits[name] = (
                None,
                f"no fit: {len(levels)} distinct cost(s); a fit needs {MIN_FIT_COSTS} or more",
            )
            continue
        weights = curves.fit_weights(name)
        a, b = weights @ means
        idx = curves.members[name]
        predicted = a + b * curves.log_x[idx]
        residual = float(np.sum((means[idx] - predicted) ** 2))
        total = float(np.sum((means[idx] - means[idx].mean()) ** 2))
        r2 = 1 - residual / total if total > 0 else float("nan")
        ci, note = None, None
        if replicates is not None and min(curves.points[i].n for i in idx) >= 2:
            coef = replicates @ weights.T
            lows, highs = interval(np.column_stack([coef, coef[:, 1] * math.log10(2)]))
            ci = {
                k: [float(lo), float(hi)]
                for k, lo, hi in zip(("a", "b", "per_doubling"), lows, highs, strict=True)
            }
        else:
            note = "n=1 for some of its models: no intervals"
        fits[name] = (LinearFit(float(a), float(b), per_doubling(float(b)), r2, ci), note)
    return fits


def _power_laws(
    curves: _Curves, means: np.ndarray, replicates: np.ndarray | None, y: Metric
) -> dict[str, tuple[PowerFit | None, str]]:
    names = [n for n in curves.members if n != SHARED_GROUP or len(curves.members) == 1]
    if y.unit != "%" or not y.higher_is_better:
        why = f"no power law: it models 100 - accuracy, and {y.column} is not an accuracy in %"
        return {n: (None, why) for n in curves.members}
    eligible = [n for n in names if len(curves.distinct(n)) >= MIN_FIT_COSTS]
    total = sum(len(curves.members[n]) for n in eligible)
    if len(eligible) >= 2 and total >= MIN_POWER_COSTS:
        fitted, shared = eligible, True
    else:
        fitted = [n for n in eligible if len(curves.distinct(n)) >= MIN_POWER_COSTS]
        shared = False
    result = {}
    for name in curves.members:
        if name not in fitted:
            result[name] = (
                None,
                f"no power law: {len(curves.distinct(name))} distinct cost(s); it needs "
                f"{MIN_POWER_COSTS}, or {MIN_FIT_COSTS} with c shared by 2+ groups (with 4-6 "
                "points its intervals are useless)",
            )
    sets = [fitted] if shared else [[n] for n in fitted]
    for names_in_fit in sets:
        idx = [np.asarray(curves.members[n]) for n in names_in_fit]
        xs = [10 ** curves.log_x[i] for i in idx]

        def fit(values: np.ndarray, start: PowerLaw | None = None, idx=idx, xs=xs) -> PowerLaw:
            errors = 100 - values
            c_max = min(float(errors[i].min()) for i in idx)
            return fit_power_law(list(zip(xs, [errors[i] for i in idx], strict=True)), c_max, start)

        best = fit(means)
        every = np.concatenate(idx)
        samples = None
        if replicates is not None and min(curves.points[i].n for i in every) >= 2:
            laws = [fit(rep, best) for rep in replicates[:POWER_LAW_DRAWS]]
            samples = np.array([[law.c, *law.a, *law.b] for law in laws])
        for g, name in enumerate(names_in_fit):
            ci = None
            if samples is not None:
                k = len(names_in_fit)
                cols = samples[:, [0, 1 + g, 1 + k + g]]
                lows, highs = interval(cols)
                ci = {
                    key: [float(lo), float(hi)]
                    for key, lo, hi in zip("cab", lows, highs, strict=True)
                }
            note = "c shared across " + ", ".join(names_in_fit) if shared else "fitted alone"
            if ci is None:
                note += "; n=1 for some of its models: no intervals"
            result[name] = (PowerFit(best.c, best.a[g], best.b[g], shared, ci), note)
    return result


def _verdict_line(
    head: str, diff: float, ci: np.ndarray | None, n1: int, models: int, unit: str
) -> str:
    if ci is None:
        who = "per model" if n1 == models else f"for {n1} of {models} models"
        return f"{head}: {diff:+.1f} {unit}, n=1 {who}: no interval, no claim"
    text = f"{diff:+.1f} {unit}, {CONFIDENCE:.0%} CI [{ci[0]:.1f}, {ci[1]:.1f}]"
    if ci[0] > 0 or ci[1] < 0:
        return f"{head}: {text}"
    return f"{head}: no significant difference ({text})"


def _verdicts(
    curves: _Curves,
    means: np.ndarray,
    replicates: np.ndarray,
    reference: str,
    at: Sequence[float],
    x: Metric,
    y: Metric,
    eval_size: int | None,
) -> list[Verdict]:
    points = curves.points
    if at:
        targets = [(cost, *curves.read_at(reference, cost)) for cost in at]
    else:
        targets = []
        for i, point in enumerate(points):
            if point.group == reference:
                weights = np.zeros(len(points))
                weights[i] = 1.0
                targets.append((point.x, weights, "observed"))
    # Other families (controls) are compared only when asked: --at, or a --reference that is
    # not a scaling method of B0; such lines say they compare across families.
    asked = bool(at) or not is_scaling_method(reference)
    others = [
        g
        for g in curves.members
        if g not in (reference, SHARED_GROUP) and (asked or is_scaling_method(g))
    ]
    unit = _difference_unit(y)
    verdicts = []
    for cost, ref_weights, ref_how in targets:
        for other in others:
            head = f"{reference} vs {other} at {format_cost(cost)} {x.unit}".rstrip()
            if not (is_scaling_method(reference) and is_scaling_method(other)):
                head += " (across families)"
            if ref_weights is None:
                line = f"{head}: no comparison ({ref_how})"
                verdicts.append(Verdict(reference, other, cost, float("nan"), line))
                continue
            ref_value = float(ref_weights @ means)
            weights, how = curves.read_at(other, cost)
            if weights is None:
                line = f"{head}: no comparison ({how})"
                verdicts.append(Verdict(reference, other, cost, ref_value, line))
                continue
            diff_weights = ref_weights - weights
            used = [p.n for p, w in zip(points, diff_weights, strict=True) if abs(w) > 1e-12]
            other_value = float(weights @ means)
            diff = ref_value - other_value
            ci = None
            if min(used) >= 2:
                ci = interval(replicates @ diff_weights)
            floor = None
            if eval_size and y.unit == "%":
                floor = 100 * noise_floor(min(max(ref_value / 100, 0.0), 1.0), eval_size)
            line = _verdict_line(head, diff, ci, sum(n < 2 for n in used), len(used), unit)
            verdicts.append(
                Verdict(
                    reference=reference,
                    other=other,
                    at=cost,
                    reference_value=ref_value,
                    other_value=other_value,
                    via=how,
                    difference=diff,
                    ci=None if ci is None else [float(ci[0]), float(ci[1])],
                    significant=None if ci is None else bool(ci[0] > 0 or ci[1] < 0),
                    n_min=min(used),
                    noise_floor=floor,
                    line=line,
                )
            )
    return verdicts


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
    curves = _Curves(points, x)
    fits = _fit_groups(curves, replicates, means)
    laws = _power_laws(curves, means, replicates, ym)
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
        _verdicts(curves, means, replicates, reference, at, xm, ym, eval_size)
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


# ---------------------------------------------------------------------------------- output


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


# ------------------------------------------------------------------------------------ plot


def _colours(names: Sequence[str]) -> dict[str, str]:
    others = iter(OTHER_COLOURS * (1 + len(names) // len(OTHER_COLOURS)))
    return {n: METHOD_COLOURS.get(n) or next(others) for n in names}


def _draw_group(ax, fr: Frontier, curves: _Curves, column: str, name: str, colour: str) -> None:
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
    curves = _Curves(fr.points, column)
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
