"""What an analysis holds: points, fits, groups, verdicts, the frontier; shared constants."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

from timm_scaling.frontier.names import OTHER_GROUP, label_of
from timm_scaling.report import Metric

REFERENCE = "compound"
SHARED_GROUP = "baseline"
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


def is_scaling_method(group: str) -> bool:
    """B0 or one of its scaling methods; any other group (resnet, ...) is another family."""
    return group in METHOD_ORDER


METHOD_COLOURS = {
    "baseline": "#000000",
    "depth": "#0072B2",
    "width": "#009E73",
    "resolution": "#E69F00",
    "compound": "#D55E00",
    "mixed": "#CC79A7",
}
OTHER_COLOURS = (
    "#56B4E9",
    "#882255",
    "#44AA99",
    "#999933",
    "#AA4499",
    "#332288",
    "#117733",
    "#E41A1C",
    "#FF7F00",
    "#6A3D9A",
)
# Keep a group name and its points' labels readable: beyond this many points only the front is
# labelled, and the terminal lists only the front.
MAX_LABELLED = 40


@dataclass
class Point:
    model: str
    group: str
    x: float
    y: float
    std: float | None
    n: int
    runs: list[float]
    costs: dict[str, float]  # every panel column's mean, --x included
    img_size: int | None = None
    name: str = ""  # the model, with @img_size where the input has it at several sizes
    on_front: bool = False
    # Its first run's depth_mult, width_mult, res_mult cells where the input has them: its label.
    multipliers: dict[str, object] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or self.model

    @cached_property
    def label(self) -> str:
        """A short label: the multipliers, else what the name adds to its family, then
        ``@size`` where the model is at several sizes. Named when asked: a million points need
        labels for the few shown."""
        label = label_of(self.model, self.multipliers or {})
        return f"{label}@{self.img_size}" if self.name != self.model else label

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["multipliers"]
        return {"model": data.pop("model"), "group": data.pop("group"), "label": self.label} | data


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
    interval_from: str | None = None  # "runs" (bootstrap) or "evaluation noise" (--eval-size)


# Points past which frontier.json and the plot keep the front, not every point.
MAX_LISTED = 5000


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
    settings: dict[str, str] = field(default_factory=dict)  # dataset, epochs, recipe shared
    unselected: list[Point] = field(default_factory=list)  # left out by --models: grey context

    def to_dict(self) -> dict:
        """frontier.json: every point, or past MAX_LISTED points those on the front (and each
        group's fit, with its point count), so that a million rows stay a readable file."""
        listed = self.points
        if len(listed) > MAX_LISTED:
            listed = [p for p in self.points if p.on_front]
        data = asdict(replace(self, points=[], groups=[], unselected=[]))
        data["points"] = [p.to_dict() for p in listed]
        shown = {p.name for p in listed}
        data["groups"] = [
            asdict(replace(g, models=[]))
            | {"models": [m for m in g.models if m in shown], "points": len(g.models)}
            for g in self.groups
        ]
        if listed is not self.points:
            data["points_omitted"] = len(self.points) - len(listed)
        data["unselected"] = [p.name for p in self.unselected]
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


def group_order(name: str) -> tuple[int, str]:
    if name in METHOD_ORDER:
        return (METHOD_ORDER.index(name), name)
    return (len(METHOD_ORDER) + (name == OTHER_GROUP), name)


def format_cost(value: float) -> str:
    """Three significant digits, no exponent from 0.001 up to 10 million: 1.80, 0.390, 37.0,
    1200; beyond them, an exponent (1e-320 is not written with 320 zeros)."""
    if value == 0 or not math.isfinite(value) or not 1e-3 <= abs(value) < 1e7:
        return f"{value:.3g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def difference_unit(y: Metric) -> str:
    return "pts" if y.unit == "%" else y.unit
