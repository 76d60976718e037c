"""The compound-coefficient search: the EfficientNet paper's step 1, which no public
implementation ships.

The paper fixes phi = 1 and grid-searches alpha, beta, gamma >= 1 under
alpha * beta^2 * gamma^2 ~ 2, then scales B0 by alpha^phi, beta^phi, gamma^phi. Here:

1. **Candidates** (:func:`enumerate_candidates`): every (alpha, beta, gamma) on the grid
   1, 1 + step, 1 + 2 step, ... whose cost factor lies within ``tolerance`` (a fraction) of
   ``target``: the nominal alpha * beta^2 * gamma^2, or with ``exact_cost`` the measured MACs of
   the phi = 1 model (timm's rounding included: any alpha > 1 adds a block to every stage) over
   the base model's, both at the proxy recipe's image size. ``max_candidates`` keeps those
   closest to the target; ties go to the smaller alpha, then beta, then gamma. Grid points
   that build the same network at the same image size after timm's rounding (alpha 1.4 and
   1.5 both give stages of 2 3 3 5 5 6 2 blocks) are one candidate: the closest to the target
   is kept, the others are its ``aliases``.
2. **Proxy training**: each candidate is ``compound(1, alpha, beta, gamma)`` (registered as e.g.
   ``effnet_b0_phi1_a1p4b1g1p2``), trained with a short proxy recipe (default ``digits``) once
   per seed; its score is the mean top-1 over seeds.
3. **Rungs and epochs** (:func:`successive_halving`): rung r trains its candidates for
   ``proxy_epochs * 2**r`` epochs, each run from scratch into ``<output>/epochs<E>/``. Without
   halving there is one rung: every candidate at ``proxy_epochs``. With halving, rung 0 trains
   every candidate, and each next rung the better half (rounded up) of the last, until one
   remains. Each rung costs about n * proxy_epochs epochs, so n candidates cost about
   n * proxy_epochs * log2(n) epochs in all, where training all of them for the last rung's
   budget would cost n^2 * proxy_epochs / 2.
4. **Resumable and shardable**: a finished run folder is not trained again (a run interrupted
   mid-way resumes from its checkpoint). ``--shard K/N`` trains every N-th run of each rung; a
   rung whose runs on other shards are not finished stops the search there ("pending"): run each
   shard again once they are, until ``search.json`` appears.

5. **Divergence**: a candidate whose proxy run diverges (any seed's) ranks last, is not
   promoted and is not chosen; the search goes on with the others. Its run folder keeps a
   ``diverged.json``, so a rerun or another shard counts it as diverged without training it
   again. When every candidate of the last rung diverged, the search ends with an error.

6. **Noise**: the winner is a tie when its score is within the evaluation's binomial noise
   (:func:`tie`) of the runner-up's or of chance; the result says so rather than pretend.

:func:`timm_scaling.search_plan.plan` says beforehand what a search will train and about how
long it takes.

Output in ``<output>``: ``search.csv`` (every candidate, rewritten atomically after each
invocation) and, when the search is complete, ``search.json`` with the chosen coefficients and
their phi ladder's model names (``effnet_b0_phi2_a1p4b1g1p2``, ...). Those names follow the
grammar of :mod:`timm_scaling.scaling`, so recipes and sweeps can name them
(``--set model=effnet_b0_phi2_a1p4b1g1p2``) and :func:`timm_scaling.models.ensure_registered`
registers them in any process; :func:`register_ladder` (``--register``) registers the whole
ladder in this one.

Imports no torch: candidates and the schedule are checked before anything is trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timm_scaling.coefficients import (
    DIVERGED,
    Candidate,
    Rung,
    check_constraint,
    enumerate_candidates,
    nominal_factor,
    successive_halving,
    winner,
)
from timm_scaling.errors import LossNotFinite, UserError
from timm_scaling.files import atomic_write
from timm_scaling.recipes import Override, Recipe, load_recipe
from timm_scaling.runs import RESULT_FILE, diverged, finished, run_folder
from timm_scaling.scaling import BASE_NAME, DECIMALS, MAX_MULT
from timm_scaling.search_cost import MeasuredCost
from timm_scaling.sweep_file import parse_shard
from timm_scaling.tables import csv_text

CSV_FILE, JSON_FILE = "search.csv", "search.json"
LADDER = range(1, 8)  # the phis of the found coefficients' ladder, as B1..B7
Z = 1.96  # two-sided 95%: scores closer than Z standard errors are not told apart
NO_WINNER = "no candidate is distinguishable: raise --proxy-epochs or --seeds"

# ---------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class SearchSettings:
    """Every option of `timm-scaling search`; checked on construction."""

    target: float = 2.0
    tolerance: float = 0.1
    grid_step: float = 0.05
    max_candidates: int | None = None
    exact_cost: bool = False
    recipe: str = "digits"
    dataset: str | None = None
    overrides: tuple[str, ...] = ()
    proxy_epochs: int = 2
    halving: bool = False
    seeds: int = 1
    shard: str | None = None
    output: Path = Path("search")
    base_model: str = BASE_NAME

    def __post_init__(self) -> None:
        check_constraint(self.target, self.tolerance, self.grid_step)
        if self.proxy_epochs < 1:
            raise UserError(f"--proxy-epochs {self.proxy_epochs}: train 1 epoch or more")
        if self.seeds < 1:
            raise UserError(f"--seeds {self.seeds}: train each candidate at least once")
        if self.base_model != BASE_NAME:
            raise UserError(
                f"--base-model {self.base_model}: compound coefficients scale {BASE_NAME}, "
                "the only base the model-name grammar has"
            )
        parse_shard(self.shard)
        self.proxy()  # a bad recipe, data set or override fails here, before any work

    def proxy(self, **changes: object) -> Recipe:
        """The proxy recipe with the search's overrides, then ``changes`` (model, epochs...)."""
        typed = f"--dataset {self.dataset}"  # what an error about it quotes
        extra = [Override(f"dataset={self.dataset}", typed)] if self.dataset else []
        extra += [*self.overrides, *(f"{key}={value}" for key, value in changes.items())]
        return load_recipe(self.recipe, extra)

    def measured_cost(self) -> MeasuredCost:
        """The candidates' costs measured at the proxy recipe's image size and classes."""
        return MeasuredCost(self.proxy(model=self.base_model))


@dataclass
class SearchResult:
    candidates: list[Candidate]
    rungs: list[Rung[Candidate]]
    rows: list[dict[str, Any]]
    chosen: Candidate | None
    trained: int  # runs trained by this invocation
    pending: int  # runs of the last rung waiting for other shards
    written: list[Path] = field(default_factory=list)
    tie: str | None = None  # why the chosen candidate is not distinguishable, if it is not
    diverged: list[tuple[Path, str]] = field(default_factory=list)  # (run folder, how)


# (rung, run index in the rung, runs in the rung, recipe, "train" | "done" | "diverged" |
# "other shard")
OnRun = Callable[[int, int, int, Recipe, str], None]


def _previous_result(output: Path, recipe: Recipe) -> dict[str, Any] | None:
    """result.json of a finished run of ``recipe``; an error if it was trained otherwise."""
    folder = finished(output, recipe)
    return None if folder is None else json.loads((folder / RESULT_FILE).read_text())


class _ProxyScorer:
    """Mean top-1 over seeds of proxy runs; trains this shard's runs, reads the others'."""

    def __init__(self, settings: SearchSettings, on_run: OnRun | None) -> None:
        self.settings, self.on_run = settings, on_run
        self.shard = parse_shard(settings.shard) or (1, 1)
        self.base_seed = settings.proxy().seed
        self.rung = 0
        self.trained = self.pending = 0
        self.top1: dict[tuple[Candidate, int], list[float | None]] = {}
        self.images: dict[tuple[Candidate, int], int] = {}  # evaluated, summed over seeds
        self.diverged: list[tuple[Path, str]] = []  # (run folder, how it diverged)

    def folder(self, epochs: int) -> Path:
        return Path(self.settings.output) / f"epochs{epochs}"

    def __call__(self, candidates: Sequence[Candidate], epochs: int) -> list[float | None]:
        from timm_scaling.models import ensure_registered
        from timm_scaling.train import train

        k, n = self.shard
        runs = [(c, self.base_seed + i) for c in candidates for i in range(self.settings.seeds)]
        output = self.folder(epochs)
        self.pending = 0
        for index, (candidate, seed) in enumerate(runs):
            recipe = self.settings.proxy(model=candidate.model(), epochs=epochs, seed=seed)
            result = _previous_result(output, recipe)
            how = None if result else diverged(output, recipe)
            mine = index % n == k - 1
            status = "done" if result else "diverged" if how else "train" if mine else "other shard"
            if self.on_run is not None:
                self.on_run(self.rung, index, len(runs), recipe, status)
            if status == "train":
                ensure_registered(recipe.model)
                try:
                    result = train(recipe, output, resume=True)
                except LossNotFinite as err:
                    how = err.what
                self.trained += 1
            key = (candidate, epochs)
            if how:
                self.diverged.append((run_folder(output, recipe), how))
                self.top1.setdefault(key, []).append(DIVERGED)
                continue
            self.pending += result is None
            self.top1.setdefault(key, []).append(result and result["top1"])
            if result:
                self.images[key] = self.images.get(key, 0) + result["eval_images"]
        self.rung += 1
        scores = [self.top1[(c, epochs)] for c in candidates]
        return [None if None in s else sum(s) / len(s) for s in scores]


def _rows(
    candidates: list[Candidate],
    rungs: list[Rung[Candidate]],
    scorer: _ProxyScorer,
    costs: MeasuredCost,
    chosen: Candidate | None,
) -> list[dict[str, Any]]:
    """One row per candidate at the last rung it reached, best first."""
    last_rung = {c: rung for rung in rungs for c in rung.scores}
    order = {c: i for i, c in enumerate(candidates)}

    def key(c: Candidate):  # the last rung reached first, then the score; diverged last
        score = last_rung[c].scores[c]
        return (score == DIVERGED, -last_rung[c].index, score is None, -(score or 0.0), order[c])

    rows = []
    for rank, c in enumerate(sorted(candidates, key=key), start=1):
        rung = last_rung[c]
        seeds = scorer.top1[(c, rung.epochs)]
        rows.append(
            {
                "rank": rank,
                "model": c.model(),
                "alpha": c.alpha,
                "beta": c.beta,
                "gamma": c.gamma,
                "nominal": c.nominal,
                "img_size": costs.image_size(c.alpha, c.beta, c.gamma),
                "gmacs": costs.gmacs(c.alpha, c.beta, c.gamma),
                "gmacs_ratio": costs.ratio(c.alpha, c.beta, c.gamma),
                "rung": rung.index,
                "epochs": rung.epochs,
                **{
                    f"top1_s{scorer.base_seed + i}": None if top1 == DIVERGED else top1
                    for i, top1 in enumerate(seeds)
                },
                "top1_mean": None if rung.scores[c] == DIVERGED else rung.scores[c],
                "diverged": rung.scores[c] == DIVERGED,
                "chosen": c == chosen,
                "aliases": " ".join(c.aliases),
            }
        )
    return rows


def ladder(candidate: Candidate) -> list[str]:
    """Model names of phi = 1..7 of the candidate's coefficients, up to the last phi whose
    multipliers a name can carry (alpha = 2 stops at phi = 6: 2^7 = 128 > 64)."""
    largest = max(candidate.alpha, candidate.beta, candidate.gamma)
    return [candidate.model(phi) for phi in LADDER if round(largest**phi, DECIMALS) <= MAX_MULT]


def register_ladder(candidate: Candidate) -> list[str]:
    """Register the candidate's phi ladder in timm's registry (this process); the names."""
    from timm_scaling.models import ensure_registered

    return [ensure_registered(name) for name in ladder(candidate)]


def _summary(
    settings: SearchSettings, row: dict[str, Any], chosen: Candidate, tied: str | None
) -> dict[str, Any]:
    options = {k: v for k, v in vars(settings).items() if k != "output"}
    options["overrides"] = list(settings.overrides)
    return {
        "alpha": chosen.alpha,
        "beta": chosen.beta,
        "gamma": chosen.gamma,
        "model": chosen.model(),
        "aliases": list(chosen.aliases),
        "tie": tied is not None,
        "note": tied and f"{NO_WINNER} ({tied})",
        "ladder": ladder(chosen),
        "result": row,
        "settings": options,
    }


def candidates(settings: SearchSettings, costs: MeasuredCost | None = None) -> list[Candidate]:
    """The search's candidates, one per network, closest to the target first."""
    costs = costs or settings.measured_cost()
    factor = costs.ratio if settings.exact_cost else nominal_factor
    found = enumerate_candidates(
        settings.target,
        settings.tolerance,
        settings.grid_step,
        factor,
        settings.max_candidates,
        costs.network,
    )
    if not found:
        kind = "measured MACs ratio" if settings.exact_cost else "alpha*beta^2*gamma^2"
        raise UserError(
            f"no grid point (step {settings.grid_step:g}) has {kind} within "
            f"{settings.tolerance:.0%} of {settings.target:g}: widen --tolerance or use a finer "
            "--grid-step"
        )
    return found


def binomial_se(top1: float, images: int) -> float:
    """The standard error, in points, of a top-1 (%) measured on ``images`` images."""
    p = top1 / 100
    return 100 * math.sqrt(p * (1 - p) / images)


def tie(scores: Sequence[float], images: int, chance: float) -> str | None:
    """Why the best of ``scores`` (top-1 %, each over ``images`` evaluated images) cannot be
    told from the rest: within Z binomial standard errors of chance, or of the runner-up.
    None when it can."""
    best, *rest = sorted(scores, reverse=True)
    if best - chance <= Z * binomial_se(chance, images):
        return (
            f"the best top-1, {best:.2f}%, is within the noise of chance ({chance:.3g}%) "
            f"on {images} images"
        )
    if rest and best - rest[0] <= Z * math.hypot(
        binomial_se(best, images), binomial_se(rest[0], images)
    ):
        return (
            f"the best two top-1, {best:.2f}% and {rest[0]:.2f}%, differ by less than the "
            f"noise on {images} images"
        )
    return None


def run_search(
    settings: SearchSettings, on_run: OnRun | None = None, found: list[Candidate] | None = None
) -> SearchResult:
    """Enumerate (or take ``found``), train, halve; write search.csv, and search.json once the
    search is complete, marking the choice a tie when the scores cannot tell it apart."""
    costs = settings.measured_cost()
    found = found or candidates(settings, costs)
    scorer = _ProxyScorer(settings, on_run)
    rungs = successive_halving(found, scorer, settings.proxy_epochs, settings.halving)
    chosen = winner(rungs)
    rows = _rows(found, rungs, scorer, costs, chosen)
    output = Path(settings.output)
    written = [output / CSV_FILE]
    atomic_write(written[0], csv_text(rows))
    last, tied = rungs[-1], None
    if last.complete and chosen is None:
        first = next(
            how for run, how in scorer.diverged if run.parent == scorer.folder(last.epochs)
        )
        raise LossNotFinite(
            f"every candidate of rung {last.index} diverged in its proxy runs ({written[0]} "
            f"lists them; the first: {first}): lower the proxy's lr (--set "
            "lr=...) and search again, into another --output if a diverged run kept an epoch"
        )
    if chosen is not None:
        trained = last.trained()
        images = min(scorer.images[(c, last.epochs)] for c in trained)
        tied = tie([last.scores[c] for c in trained], images, 100 / costs.num_classes)
        written.append(output / JSON_FILE)
        summary = _summary(settings, rows[0], chosen, tied)
        atomic_write(written[1], json.dumps(summary, indent=1, default=str) + "\n")
    return SearchResult(
        found, rungs, rows, chosen, scorer.trained, scorer.pending, written, tied, scorer.diverged
    )
