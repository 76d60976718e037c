"""The compound coefficients' grid and successive halving: pure math, no training.

Candidates (alpha, beta, gamma) on a grid whose cost factor is near a target, grid points that
timm's rounding makes one network merged, and the rungs of successive halving; the search
(:mod:`timm_scaling.search`) trains them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from timm_scaling.errors import UserError
from timm_scaling.scaling import DECIMALS, MAX_MULT, compound

MAX_TARGET = 16.0
MIN_STEP = 0.01

T = TypeVar("T")
# (alpha, beta, gamma) -> the cost of compound(1, alpha, beta, gamma) as a multiple of B0's
Factor = Callable[[float, float, float], float]
# (candidates, epochs) -> one score per candidate, higher is better; None: not known yet;
# DIVERGED: its training diverged (ranked last, never promoted, never the winner)
Scorer = Callable[[Sequence[T], int], Sequence[float | None]]
DIVERGED = -math.inf


def nominal_factor(alpha: float, beta: float, gamma: float) -> float:
    return alpha * beta**2 * gamma**2


@dataclass(frozen=True)
class Candidate:
    """Coefficients on the grid, and the cost factor the constraint measured them by."""

    alpha: float
    beta: float
    gamma: float
    factor: float
    aliases: tuple[str, ...] = ()  # model names of grid points that build the same network

    @property
    def nominal(self) -> float:
        return nominal_factor(self.alpha, self.beta, self.gamma)

    def model(self, phi: float = 1) -> str:
        """The timm-scaling name of this candidate's compound model at ``phi``."""
        return compound(phi, self.alpha, self.beta, self.gamma).name

    def __str__(self) -> str:
        return f"alpha={self.alpha:g} beta={self.beta:g} gamma={self.gamma:g}"


def grid(step: float) -> Iterator[float]:
    """1, 1 + step, 1 + 2 step, ... up to the largest multiplier a name can carry."""
    i = 0
    while (value := round(1 + i * step, DECIMALS)) <= MAX_MULT:
        yield value
        i += 1


def check_constraint(target: float, tolerance: float, step: float) -> None:
    if not 1 < target <= MAX_TARGET:
        raise UserError(f"--target {target}: use a cost factor above 1 and at most {MAX_TARGET:g}")
    if not 0 < tolerance < 1:
        raise UserError(
            f"--tolerance {tolerance}: use a fraction of the target in (0, 1), e.g. 0.1"
        )
    if not MIN_STEP <= step <= 1:
        raise UserError(f"--grid-step {step}: use {MIN_STEP} to 1, e.g. 0.05")


def enumerate_candidates(
    target: float = 2.0,
    tolerance: float = 0.1,
    step: float = 0.05,
    factor: Factor = nominal_factor,
    limit: int | None = None,
    network: Callable[[Candidate], Hashable] | None = None,
) -> list[Candidate]:
    """Grid points with ``target * (1 - tolerance) <= factor <= target * (1 + tolerance)``,
    closest to the target first, at most ``limit`` of them.

    ``network`` (e.g. :meth:`MeasuredCost.network`) says what a point trains: points with equal
    values are one candidate, the closest kept with the others' model names as its aliases.

    ``factor`` must not decrease when any coefficient grows (true of the nominal product and of
    measured MACs): each axis is walked up from 1 and left once the cost passes the band.
    """
    check_constraint(target, tolerance, step)
    if limit is not None and limit < 1:
        raise UserError(f"--max-candidates {limit}: keep 1 or more")
    low, high = target * (1 - tolerance), target * (1 + tolerance)
    found = []
    for gamma in grid(step):
        if factor(1.0, 1.0, gamma) > high:
            break
        for beta in grid(step):
            if factor(1.0, beta, gamma) > high:
                break
            for alpha in grid(step):
                cost = factor(alpha, beta, gamma)
                if cost > high:
                    break
                if cost >= low:
                    found.append(Candidate(alpha, beta, gamma, cost))
    # Rounded so that float noise does not break ties between equally close points.
    found.sort(key=lambda c: (round(abs(c.factor - target), 9), c.alpha, c.beta, c.gamma))
    if network is not None:
        found = merge_aliases(found, network)
    return found[:limit]


def merge_aliases(
    candidates: Sequence[Candidate], network: Callable[[Candidate], Hashable]
) -> list[Candidate]:
    """One candidate per ``network`` value: the first (closest) of each, the rest its aliases."""
    groups: dict[Hashable, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(network(candidate), []).append(candidate)
    return [
        dataclasses.replace(first, aliases=tuple(c.model() for c in rest))
        for first, *rest in groups.values()
    ]


@dataclass(frozen=True)
class Rung(Generic[T]):
    """One rung of the schedule: its candidates' scores after ``epochs`` epochs."""

    index: int
    epochs: int
    scores: dict[T, float | None]

    @property
    def complete(self) -> bool:
        return all(score is not None for score in self.scores.values())

    def ranked(self) -> list[T]:
        """Best first; equal scores keep the candidates' order. Unknown scores last."""
        order = list(self.scores)
        return sorted(order, key=lambda c: (self.scores[c] is None, -(self.scores[c] or 0.0)))

    def trained(self) -> list[T]:
        """The candidates that trained to a score (none pending or diverged), best first."""
        return [c for c in self.ranked() if self.scores[c] not in (None, DIVERGED)]


def successive_halving(
    candidates: Sequence[T], scorer: Scorer, epochs: int = 1, halving: bool = True
) -> list[Rung[T]]:
    """Score every candidate for ``epochs``; with ``halving``, score the better half (rounded
    up) for twice the epochs, and so on until one candidate remains. Stops early at a rung with
    unknown scores (runs pending elsewhere). A candidate that diverged is never promoted: the
    next rung takes the better half of the rung, or fewer if fewer trained. The winner is the
    best of the last complete rung (:func:`winner`)."""
    if not candidates:
        raise UserError("no candidates to search: widen --tolerance or refine --grid-step")
    alive, rungs = list(candidates), []
    while True:
        scores = dict(zip(alive, scorer(alive, epochs), strict=True))
        rungs.append(Rung(len(rungs), epochs, scores))
        if not rungs[-1].complete or not halving:
            return rungs
        alive = rungs[-1].trained()[: math.ceil(len(alive) / 2)]
        if len(alive) <= 1:
            return rungs
        epochs *= 2


def winner(rungs: Sequence[Rung[T]]) -> T | None:
    """The best candidate of the last rung, or None while that rung has pending scores or
    every candidate of it diverged."""
    last = rungs[-1]
    return next(iter(last.trained()), None) if last.complete else None
