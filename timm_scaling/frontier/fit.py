"""Statistics: Pareto front, log-linear and power-law fits, bootstrap of model means."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from timm_scaling.frontier.results import (
    CONFIDENCE,
    MIN_FIT_COSTS,
    MIN_POWER_COSTS,
    POWER_LAW_DRAWS,
    SHARED_GROUP,
    LinearFit,
    Point,
    PowerFit,
    format_cost,
    group_order,
    is_scaling_method,
)
from timm_scaling.report import Metric

# The exponent b of err = c + a x^-b lies in B_BOUNDS. A fit at the lower bound, or one whose
# error falls by less than MIN_FALL points over the group's costs, is no power law at all.
B_BOUNDS = (1e-3, 5.0)
# c is shared by at most this many groups: one nonlinear fit over hundreds of unrelated
# families (timm's whole results file) takes minutes and means nothing.
MAX_SHARED_GROUPS = 10
B_FLAT = 2e-3
MIN_FALL = 0.01
NO_FALL = "no power law: error does not fall with cost here"


def pareto_front(
    xs: Sequence[float],
    ys: Sequence[float],
    lower_x_is_better: bool = True,
    higher_y_is_better: bool = True,
) -> np.ndarray:
    """A boolean mask of the points no other point dominates (as good on both, better on one).

    Sorted by cost, O(N log N) (100,000 points in well under a second): a point is on the front
    when it is the best of its cost and better than every cheaper point."""
    x = np.asarray(xs, dtype=float) * (1 if lower_x_is_better else -1)
    y = np.asarray(ys, dtype=float) * (1 if higher_y_is_better else -1)
    if not len(x):
        return np.zeros(0, dtype=bool)
    order = np.lexsort((-y, x))  # by cost, the best first within a cost
    sx, sy = x[order], y[order]
    begins = np.r_[True, sx[1:] != sx[:-1]]  # where each cost begins
    starts, group = np.flatnonzero(begins), np.cumsum(begins) - 1
    best_cheaper = np.r_[-np.inf, np.maximum.accumulate(sy)[starts[1:] - 1]]
    on = (sy == sy[starts][group]) & (sy > best_cheaper[group])
    mask = np.empty_like(on)
    mask[order] = on
    return mask


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

    # An error of 0 (top-5 at 100%) leaves c no room: bound it to a sliver above 0.
    c_hi = max(c_max * (1 - 1e-9), 1e-12)
    if start is None:
        c0 = 0.5 * c_max
        x0 = [c0]
        for _, e in curves:
            x0 += [math.log(max(float(np.mean(e)) - c0, 1e-6)), 0.5]
    else:
        x0 = [min(max(start.c, 0.0), 0.99 * c_hi)]
        for a, b in zip(start.a, start.b, strict=True):
            x0 += [math.log(a / scale**b), min(max(b, B_BOUNDS[0]), B_BOUNDS[1])]
    lower = [0.0] + [-np.inf, B_BOUNDS[0]] * len(curves)
    upper = [c_hi] + [np.inf, B_BOUNDS[1]] * len(curves)
    p = least_squares(residuals, np.asarray(x0), jac=jacobian, bounds=(lower, upper)).x
    b = tuple(float(v) for v in p[2::2])
    a = tuple(float(math.exp(la) * scale**bg) for la, bg in zip(p[1::2], b, strict=True))
    return PowerLaw(float(p[0]), a, b)


# Resampled run indices held at once per model (8 MB of them): many runs stay small in memory.
RESAMPLED_AT_ONCE = 2**20


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
        rows = max(1, RESAMPLED_AT_ONCE // n)  # 100,000 runs x 2000 draws: 1.6 GB at once
        resampled = np.concatenate(
            [
                values[rng.integers(0, n, size=(min(rows, draws - start), n))].mean(axis=1)
                for start in range(0, draws, rows)
            ]
        )
        columns.append(mean + math.sqrt(n / (n - 1)) * (resampled - mean))
    return np.column_stack(columns)


def interval(samples: np.ndarray, axis: int = 0) -> np.ndarray:
    """The central CONFIDENCE percentile interval: [low, high] along ``axis``."""
    tail = 100 * (1 - CONFIDENCE) / 2
    return np.percentile(samples, [tail, 100 - tail], axis=axis)


def binomial_interval(
    diff: float, weights: np.ndarray, accuracies: np.ndarray, runs: np.ndarray, eval_size: int
) -> np.ndarray:
    """The CONFIDENCE normal interval of ``diff`` = weights @ accuracies (in %) from the
    evaluation's binomial noise alone: each accuracy p, a mean of ``runs`` evaluations on
    ``eval_size`` samples, has variance p(1-p)/(eval_size * runs)."""
    p = np.clip(np.asarray(accuracies, float) / 100, 0.0, 1.0)
    variance = np.sum(weights**2 * p * (1 - p) / (eval_size * np.asarray(runs, float)))
    half = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2) * 100 * math.sqrt(variance)
    return np.array([diff - half, diff + half])


def noise_floor(p: float, n: int) -> float:
    """The binomial standard error sqrt(p(1-p)/N) of an accuracy p (a fraction) on N samples."""
    return math.sqrt(p * (1 - p) / n)


class Curves:
    """Which points make up each group's curve, and the weights that read a curve at a cost.

    Every estimate is linear in the model means, so one weight vector over the points gives both
    the estimate (weights @ means) and its bootstrap replicates (replicates @ weights).
    """

    def __init__(self, points: list[Point], cost: str):
        self.points = points
        self.xs = np.array([p.costs[cost] for p in points], dtype=float)
        self.log_x = np.log10(self.xs)
        own: dict[str, list[int]] = {}
        for i, p in enumerate(points):
            own.setdefault(p.group, []).append(i)
        shared = own.get(SHARED_GROUP, [])
        # B0 starts every scaling method's curve, never another family's (a control).
        self.members = {
            name: own[name] + shared
            if is_scaling_method(name) and name != SHARED_GROUP
            else own[name]
            for name in sorted(own, key=group_order)
        }

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


def fit_groups(
    curves: Curves, replicates: np.ndarray | None, means: np.ndarray
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


def power_laws(
    curves: Curves, means: np.ndarray, replicates: np.ndarray | None, y: Metric
) -> dict[str, tuple[PowerFit | None, str]]:
    names = [n for n in curves.members if n != SHARED_GROUP or len(curves.members) == 1]
    if y.unit != "%" or not y.higher_is_better:
        why = f"no power law: it models 100 - accuracy, and {y.column} is not an accuracy in %"
        return {n: (None, why) for n in curves.members}
    eligible = [n for n in names if len(curves.distinct(n)) >= MIN_FIT_COSTS]
    total = sum(len(curves.members[n]) for n in eligible)
    if 2 <= len(eligible) <= MAX_SHARED_GROUPS and total >= MIN_POWER_COSTS:
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
                f"{MIN_POWER_COSTS}, or {MIN_FIT_COSTS} with c shared by 2-{MAX_SHARED_GROUPS} "
                "groups (with 4-6 points its intervals are useless)",
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
            a, b, x = best.a[g], best.b[g], xs[g]
            if b <= B_FLAT or a * (x.min() ** -b - x.max() ** -b) < MIN_FALL:
                result[name] = (None, NO_FALL)
                continue
            result[name] = (PowerFit(best.c, best.a[g], best.b[g], shared, ci), note)
    return result
