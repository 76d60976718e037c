"""What a candidate of the coefficient search costs and builds: the measured MACs of
``compound(1, alpha, beta, gamma)`` over the base model's, and the network timm's rounding makes
of it (blocks per stage, channels, image size). Counted only when asked; imports no torch."""

from __future__ import annotations

import functools
from collections.abc import Hashable

from timm_scaling.coefficients import Candidate
from timm_scaling.recipes import Recipe
from timm_scaling.scaling import Scaling, compound


class MeasuredCost:
    """Measured MACs of phi = 1 models and of the base model, at the proxy recipe's image size
    and class count. Nothing is counted until asked; measure_cost caches counts on disk."""

    def __init__(self, base: Recipe) -> None:
        self.base = base  # the proxy recipe of the base model

    @functools.cached_property
    def num_classes(self) -> int:
        from timm_scaling import data

        return data.num_classes(self.base.dataset, self.base.data_dir)

    @functools.cached_property
    def base_gmacs(self) -> float:
        return self._measure(self.base.model, self.base.image_size)

    def _measure(self, name: str, size: int) -> float:
        from timm_scaling.cost import measure_cost

        return measure_cost(name, size, self.num_classes)["gmacs"]

    def image_size(self, alpha: float, beta: float, gamma: float) -> int:
        return compound(1, alpha, beta, gamma).image_size(self.base.base_size)

    def gmacs(self, alpha: float, beta: float, gamma: float) -> float:
        name = compound(1, alpha, beta, gamma).name
        return self._measure(name, self.image_size(alpha, beta, gamma))

    def ratio(self, alpha: float, beta: float, gamma: float) -> float:
        """The cost factor of ``compound(1, alpha, beta, gamma)``: its MACs over the base's."""
        return self.gmacs(alpha, beta, gamma) / self.base_gmacs

    def network(self, candidate: Candidate) -> Hashable:
        """What the candidate trains: blocks per stage, channels, image size. Depth alone sets
        the blocks and width alone the channels (timm rounds each on its own), so a search
        builds one model per alpha and one per beta, not one per candidate."""
        scaling = compound(1, candidate.alpha, candidate.beta, candidate.gamma)
        size = self.image_size(candidate.alpha, candidate.beta, candidate.gamma)
        return _blocks(scaling.depth), _channels(scaling.width), size


@functools.cache
def _blocks(depth: float) -> tuple[int, ...]:
    from timm_scaling.models import architecture, register_variant

    return architecture(register_variant(Scaling(depth=depth))).blocks_per_stage


@functools.cache
def _channels(width: float) -> tuple[int, ...]:
    from timm_scaling.models import architecture, register_variant

    arch = architecture(register_variant(Scaling(width=width)))
    return arch.stem_channels, *arch.channels_per_stage, arch.num_features
