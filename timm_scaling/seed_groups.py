"""The seeds of one configuration, for ``sweep --fuse-seeds`` (:mod:`timm_scaling.train.fusing`
trains them): the runs that differ only in their seed, and what keeps them from one fused
step. Imports no torch: a sweep checks them before anything trains."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from timm_scaling.recipes import Recipe

# Recipe keys whose update a fused step cannot take as it is: (key, why).
UNFUSABLE = {
    "compile": "torch.compile compiles one model",
    "cuda_graph": "the graph captures one model's update",
    "grad_accum": "a fused update is one piece",
    "grad_checkpointing": "a fused update does not recompute activations",
}


def configuration(recipe: Recipe) -> str:
    """What the seeds of one configuration share: the recipe but its seed."""
    return dataclasses.replace(recipe, seed=0).to_yaml()


def seed_groups(recipes: Sequence[Recipe]) -> list[list[Recipe]]:
    """The recipes grouped by configuration, in the order of each group's first run."""
    groups: dict[str, list[Recipe]] = {}
    for recipe in recipes:
        groups.setdefault(configuration(recipe), []).append(recipe)
    return list(groups.values())


def check_fusable(recipe: Recipe) -> None:
    """A one-line error for a recipe whose seeds cannot be fused."""
    recipe.refuse(UNFUSABLE, "--fuse-seeds", "train without --fuse-seeds")
