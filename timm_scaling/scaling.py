"""How an EfficientNet-B0 is scaled, and the model names that say so.

Pure Python on purpose: the CLI, the frontier analysis and the start-up hook use these names
without paying for a torch import.

Name grammar (``p`` stands for the decimal point)::

    effnet_b0                                  the baseline
    effnet_b0[_d<NUM>][_w<NUM>][_r<NUM>]       depth, width, resolution multipliers (any subset,
                                               in this order, none equal to 1)
    effnet_b0_phi<NUM>                         compound scaling with alpha=1.2, beta=1.1, gamma=1.15
    effnet_b0_phi<NUM>_a<NUM>b<NUM>g<NUM>      compound scaling with other coefficients

    NUM = digits, optionally followed by p and digits: 2, 1p4, 0p75
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from timm_scaling.errors import UserError

BASE_NAME = "effnet_b0"
BASE_IMAGE_SIZE = 224
# The paper's grid-searched coefficients for B0 (section 3.3): alpha * beta^2 * gamma^2 ~ 2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
# Multipliers are kept to this many decimals, so that every one has a short exact name.
DECIMALS = 6
MIN_MULT, MAX_MULT = 0.01, 64.0

_NUM = r"\d+(?:p\d+)?"
_NAME_RE = re.compile(
    rf"^{BASE_NAME}"
    rf"(?:_phi(?P<phi>{_NUM})(?:_a(?P<alpha>{_NUM})b(?P<beta>{_NUM})g(?P<gamma>{_NUM}))?"
    rf"|(?:_d(?P<d>{_NUM}))?(?:_w(?P<w>{_NUM}))?(?:_r(?P<r>{_NUM}))?)$"
)
GRAMMAR = (
    "effnet_b0[_d<NUM>][_w<NUM>][_r<NUM>] or effnet_b0_phi<NUM>[_a<NUM>b<NUM>g<NUM>], "
    "where NUM is digits with 'p' for a decimal point (e.g. effnet_b0_w1p4, effnet_b0_d2_r1p3, "
    "effnet_b0_phi2)"
)


class Coefficients(NamedTuple):
    """Compound scaling: depth = alpha**phi, width = beta**phi, resolution = gamma**phi."""

    phi: float
    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA


def format_number(value: float) -> str:
    """1.4 -> '1p4', 2.0 -> '2': the number as it appears in a model name."""
    text = repr(round(float(value), DECIMALS))
    if "e" in text:
        raise UserError(f"{value} cannot be written in a model name; use {MIN_MULT} or more")
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return text.replace(".", "p")


def parse_number(text: str) -> float:
    """'1p4' -> 1.4."""
    return float(text.replace("p", "."))


def _check_multiplier(label: str, value: float) -> float:
    value = round(float(value), DECIMALS)
    if not (math.isfinite(value) and MIN_MULT <= value <= MAX_MULT):
        raise UserError(f"{label} multiplier {value} is out of range: use {MIN_MULT}..{MAX_MULT}")
    return value


@dataclass(frozen=True)
class Scaling:
    """Multipliers applied to EfficientNet-B0: blocks per stage, channels, input resolution.

    ``coefficients`` is set by :func:`compound`, which names the model by its phi.
    """

    depth: float = 1.0
    width: float = 1.0
    resolution: float = 1.0
    coefficients: Coefficients | None = None

    def __post_init__(self) -> None:
        for label in ("depth", "width", "resolution"):
            object.__setattr__(self, label, _check_multiplier(label, getattr(self, label)))
        if self.coefficients is not None:
            phi, alpha, beta, gamma = self.coefficients
            expected = (alpha**phi, beta**phi, gamma**phi)
            actual = (self.depth, self.width, self.resolution)
            pairs = zip(actual, expected, strict=True)
            if not all(math.isclose(a, round(e, DECIMALS)) for a, e in pairs):
                raise UserError(
                    f"multipliers {actual} do not follow coefficients {self.coefficients}; "
                    "build compound scalings with compound(phi, alpha, beta, gamma)"
                )

    @property
    def flop_factor(self) -> float:
        """d * w^2 * r^2: B0's nominal cost multiple (timm rounds depth up: real cost is more)."""
        return self.depth * self.width**2 * self.resolution**2

    @property
    def method(self) -> str:
        """baseline, depth, width, resolution, compound, or mixed (several axes, not compound)."""
        if self.coefficients is not None:
            return "compound"
        changed = [
            label for label in ("depth", "width", "resolution") if getattr(self, label) != 1.0
        ]
        if not changed:
            return "baseline"
        return changed[0] if len(changed) == 1 else "mixed"

    @property
    def name(self) -> str:
        if self.coefficients is not None:
            phi, alpha, beta, gamma = self.coefficients
            name = f"{BASE_NAME}_phi{format_number(phi)}"
            if (alpha, beta, gamma) != (ALPHA, BETA, GAMMA):
                name += f"_a{format_number(alpha)}b{format_number(beta)}g{format_number(gamma)}"
            return name
        parts = [BASE_NAME]
        for prefix, value in (("d", self.depth), ("w", self.width), ("r", self.resolution)):
            if value != 1.0:
                parts.append(f"{prefix}{format_number(value)}")
        return "_".join(parts)

    def image_size(self, base: int = BASE_IMAGE_SIZE, divisor: int = 1) -> int:
        """round(base * resolution), to a multiple of ``divisor`` (8 for timm's default cfgs)."""
        return max(divisor, int(round(base * self.resolution / divisor)) * divisor)


def compound(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> Scaling:
    """The paper's compound scaling; phi=0 is B0 itself."""
    if phi < 0:
        raise UserError(f"phi must be 0 or more, got {phi}")
    if min(alpha, beta, gamma) < 1:
        raise UserError(f"alpha, beta, gamma must each be >= 1, got {alpha}, {beta}, {gamma}")
    if phi == 0:
        return Scaling()
    phi, alpha, beta, gamma = (round(float(v), DECIMALS) for v in (phi, alpha, beta, gamma))
    return Scaling(
        depth=alpha**phi,
        width=beta**phi,
        resolution=gamma**phi,
        coefficients=Coefficients(phi, alpha, beta, gamma),
    )


def parse_name(name: str) -> Scaling:
    """The inverse of ``Scaling.name``; raises ValueError stating the grammar."""
    match = _NAME_RE.match(name)
    if match is None:
        raise UserError(f"{name!r} is not a timm-scaling model name: expected {GRAMMAR}")
    groups = {key: parse_number(val) for key, val in match.groupdict().items() if val is not None}
    try:
        if "phi" in groups:
            defaults = {"alpha": ALPHA, "beta": BETA, "gamma": GAMMA}
            coefficients = [groups.get(key, value) for key, value in defaults.items()]
            if groups["phi"] == 0:
                raise UserError("phi must be above 0 in a name (phi=0 is effnet_b0)")
            return compound(groups["phi"], *coefficients)
        scaling = Scaling(groups.get("d", 1.0), groups.get("w", 1.0), groups.get("r", 1.0))
        if any(groups.get(k) == 1.0 for k in "dwr"):
            raise UserError(f"leave multipliers of 1 out of the name: {scaling.name}")
        return scaling
    except UserError as err:
        raise UserError(f"{name!r}: {err}") from None


def is_model_name(name: str) -> bool:
    return _NAME_RE.match(name) is not None


def model_hint(name: str) -> str:
    """What to add to "unknown recipe NAME" where NAME (not a path) may be a model: timm's
    train.py users type one there."""
    if _NAME_RE.match(name) is None:  # any other name may be a timm model
        return f"; a model? name it with --model (timm-scaling train baseline --model {name})"
    return (
        f"; {name} is a model: train it with a recipe, e.g. "
        f"timm-scaling train baseline --model {name} (or --set model={name})"
    )
