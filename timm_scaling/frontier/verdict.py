"""Verdicts: the reference group against every other at equal cost, with an interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from timm_scaling.frontier.fit import Curves, binomial_interval, interval, noise_floor
from timm_scaling.frontier.results import (
    CONFIDENCE,
    SHARED_GROUP,
    Verdict,
    difference_unit,
    format_cost,
    is_scaling_method,
)
from timm_scaling.report import Metric

# Verdicts at each point of a reference with at most this many, else at this many costs.
MAX_TARGETS = 20
EVALUATION_ONLY = "evaluation noise only; the spread between training runs is unknown"


def _verdict_line(
    head: str, diff: float, ci: np.ndarray | None, n1: int, models: int, unit: str, source: str
) -> str:
    if ci is None:
        who = "per point" if n1 == models else f"for {n1} of {models} points"
        return f"{head}: {diff:+.1f} {unit}, n=1 {who}: no interval, no claim"
    text = f"{diff:+.1f} {unit}, {CONFIDENCE:.0%} CI [{ci[0]:.1f}, {ci[1]:.1f}]"
    if source == "evaluation noise":
        text += f" ({EVALUATION_ONLY})"
    if ci[0] > 0 or ci[1] < 0:
        return f"{head}: {text}"
    return f"{head}: no significant difference ({text})"


def compare_groups(
    curves: Curves,
    means: np.ndarray,
    replicates: np.ndarray | None,  # None: every point is one run
    reference: str,
    at: Sequence[float],
    x: Metric,
    y: Metric,
    eval_size: int | None,
) -> list[Verdict]:
    points = curves.points
    own = sum(p.group == reference for p in points)
    if not at and own > MAX_TARGETS:
        # A verdict at each of thousands of reference points says nothing more than at
        # MAX_TARGETS costs spread evenly (in log cost) over the reference's range.
        levels = curves.distinct(reference)
        at = tuple(10 ** np.linspace(levels[0], levels[-1], MAX_TARGETS))
    if at:
        targets = [(cost, *curves.read_at(reference, cost)) for cost in at]
    else:
        targets = []
        for i, point in enumerate(points):
            if point.group == reference:
                weights = np.zeros(len(points))
                weights[i] = 1.0
                targets.append((point.x, weights, point.label))
    # Other families (controls) are compared only when asked: --at, or a --reference that is
    # not a scaling method of B0; such lines say they compare across families.
    asked = bool(at) or not is_scaling_method(reference)
    others = [
        g
        for g in curves.members
        if g not in (reference, SHARED_GROUP) and (asked or is_scaling_method(g))
    ]
    unit = difference_unit(y)
    verdicts = []
    ns = np.array([p.n for p in points])
    for cost, ref_weights, ref_how in targets:
        for other in others:
            what = f"{reference} {ref_how}" if not at else reference
            head = f"{what} vs {other} at {format_cost(cost)} {x.unit}".rstrip()
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
            used = ns[np.abs(diff_weights) > 1e-12]  # the runs per point of every point read
            other_value = float(weights @ means)
            diff = ref_value - other_value
            ci, source = None, None
            if used.min() >= 2:
                ci, source = interval(replicates @ diff_weights), "runs"
            elif eval_size and y.unit == "%":
                ci = binomial_interval(diff, diff_weights, means, ns, eval_size)
                source = "evaluation noise"
            floor = None
            if eval_size and y.unit == "%":
                floor = 100 * noise_floor(min(max(ref_value / 100, 0.0), 1.0), eval_size)
            single = int((used < 2).sum())
            line = _verdict_line(head, diff, ci, single, len(used), unit, source)
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
                    n_min=int(used.min()),
                    noise_floor=floor,
                    interval_from=source,
                    line=line,
                )
            )
    return verdicts
