"""What a compound-coefficient search will train, and about how long it takes, before it
trains anything: candidates, proxy runs per rung, the projected time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from timm_scaling.coefficients import (
    Candidate,
)
from timm_scaling.runs import finished
from timm_scaling.search import SearchSettings, candidates


@dataclass(frozen=True)
class Plan:
    """What a search will train, before it trains: candidates, rungs, a projected time."""

    candidates: list[Candidate]
    rungs: list[tuple[int, int]]  # (proxy runs, epochs each) per rung
    epoch_s: float  # one epoch of the base model, measured here
    cost_factor: float  # the candidates' mean cost factor over the base

    @property
    def runs(self) -> int:
        return sum(runs for runs, _ in self.rungs)

    @property
    def seconds(self) -> float:
        epochs = sum(runs * epochs for runs, epochs in self.rungs)
        return epochs * self.epoch_s * self.cost_factor


def rung_sizes(n: int, halving: bool) -> list[int]:
    """Candidates trained per rung: n, then with halving the better half (rounded up) until
    one is left (that one is the winner, not trained again)."""
    sizes = [n]
    while halving and sizes[-1] > 1 and math.ceil(sizes[-1] / 2) > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def base_epoch_seconds(settings: SearchSettings) -> float:
    """One proxy epoch of the base model (training and evaluation), from throughput measured
    on this machine at the proxy recipe's image size and batch size."""
    import torch

    from timm_scaling import data
    from timm_scaling.speed import measure_speed

    recipe = settings.proxy(model=settings.base_model)
    classes = data.num_classes(recipe.dataset, recipe.data_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    speed = measure_speed(
        recipe.model, recipe.image_size, classes, recipe.batch_size, device, warmup=2, steps=5
    )
    train, val = data.split_size(recipe, "train"), data.split_size(recipe, "val")
    return train / speed["train_samples_per_sec"] + val / speed["infer_samples_per_sec"]


def plan(settings: SearchSettings) -> Plan:
    """What the search will train; a rung-0 run folder trained with other settings is an
    error here, before anything is measured or trained."""
    found = candidates(settings)
    output, seed = Path(settings.output) / f"epochs{settings.proxy_epochs}", settings.proxy().seed
    for candidate in found:
        for i in range(settings.seeds):
            model = candidate.model()
            finished(
                output, settings.proxy(model=model, epochs=settings.proxy_epochs, seed=seed + i)
            )
    sizes = rung_sizes(len(found), settings.halving)
    rungs = [(n * settings.seeds, settings.proxy_epochs * 2**r) for r, n in enumerate(sizes)]
    factor = sum(c.factor for c in found) / len(found)
    return Plan(found, rungs, base_epoch_seconds(settings), factor)


def describe_plan(settings: SearchSettings, plan: Plan) -> list[str]:
    """The plan in a few lines, for the terminal."""
    aliases = sum(len(c.aliases) for c in plan.candidates)
    merged = f" ({aliases} more grid point(s) build the same networks)" if aliases else ""
    kind = "measured MACs" if settings.exact_cost else "nominal cost"
    lines = [f"plan: {len(plan.candidates)} candidates{merged}"]
    for index, (runs, epochs) in enumerate(plan.rungs):
        lines.append(f"  rung {index}: {runs} proxy run(s) of {epochs} epoch(s)")
    lines.append(
        f"  {plan.runs} proxy runs; about {plan.seconds / 60:.0f} min here "
        f"(B0 epoch {plan.epoch_s:.1f} s x {kind} {plan.cost_factor:.2f} on average; "
        f"finished or diverged runs under {settings.output} are not trained again)"
    )
    return lines


# The terminal table's columns (header, row key), narrow enough for 80 characters; per-seed
# top-1 columns follow. The CSV has every column.
