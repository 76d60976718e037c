"""`timm-scaling profile`: the cost of models, names, globs or recipes, counted
(:mod:`timm_scaling.cost`) and measured (:mod:`timm_scaling.speed`); variants matched to a
cost; the rows as a table, CSV or Markdown. The paper's tables: :mod:`timm_scaling.paper`."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping

from timm_scaling.catalog import (
    image_size,
    resolve_model,
    resolve_models,
)
from timm_scaling.cost import measure_cost
from timm_scaling.errors import UserError
from timm_scaling.models import register_variant
from timm_scaling.scaling import MAX_MULT, MIN_MULT, Scaling
from timm_scaling.speed import measure_speed

Target = tuple[str, int, int, dict[str, object]]  # model, image size, classes, model_kwargs


def _targets(
    patterns: list[str],
    base_size: int | None,
    num_classes: int,
    model_kwargs: Mapping[str, object] | None = None,
) -> list[Target]:
    """(model, image size, classes, model_kwargs) per pattern: a recipe brings its own size,
    classes and model_kwargs (``model_kwargs`` go over them)."""
    from timm_scaling.data import num_classes as dataset_classes
    from timm_scaling.recipes import list_recipes, load_recipe
    from timm_scaling.yamlfiles import SUFFIXES

    extra = dict(model_kwargs or {})
    targets: list[Target] = []
    for pattern in patterns:
        if pattern in list_recipes() or pattern.endswith(SUFFIXES):
            recipe = load_recipe(pattern)
            classes = dataset_classes(recipe.dataset, recipe.data_dir)
            kwargs = {**recipe.model_kwargs, **extra}
            found = [(resolve_model(recipe.model), recipe.image_size, classes, kwargs)]
        else:
            found = [
                (m, image_size(m, base_size), num_classes, extra) for m in resolve_models([pattern])
            ]
        targets += [t for t in found if t not in targets]
    return targets


def profile_rows(
    models: list[str],
    base_size: int | None = None,
    num_classes: int = 1000,
    batch_size: int = 64,
    device: str = "cpu",
    speed: bool = True,
    model_kwargs: Mapping[str, object] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, object]]:
    """One row per model (names, globs over ours and timm's registry, or recipes): the columns
    of `timm-scaling profile`; a ``model_kwargs`` column when any model has some. ``progress``
    hears a line as each model starts (a large one takes minutes on a CPU)."""
    targets = _targets(models, base_size, num_classes, model_kwargs)
    rows = []
    for index, (name, size, classes, kwargs) in enumerate(targets, 1):
        if progress:
            timed = f", then timing it on {device}" if speed else ""
            progress(f"[{index}/{len(targets)}] {name} at {size} px: counting its cost{timed}")
        row: dict[str, object] = {"model": name, "img_size": size}
        if any(t[3] for t in targets):
            row["model_kwargs"] = json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""
        row.update(measure_cost(name, size, classes, kwargs))
        if speed:
            row.update(measure_speed(name, size, classes, batch_size, device, model_kwargs=kwargs))
        rows.append(row)
    return rows


def percent_diff(ours: float, theirs: float) -> float:
    """How far ``ours`` is from ``theirs``, in % of theirs."""
    return (ours / theirs - 1) * 100


MATCH_TOLERANCE = 0.03
MATCH_METHODS = ("depth", "width", "resolution")
# Multipliers are searched with 1 decimal first, then 2, then 3: the shortest name that fits.
_SEARCH_DECIMALS = (1, 2, 3)


def _find_multiplier(cost, target: float, method: str) -> float:
    """The multiplier with the fewest decimals whose cost is within MATCH_TOLERANCE of target
    (the closest at that precision), by bisection on the measured cost: monotone, but a
    staircase, since timm rounds blocks and channels."""

    lo = hi = 1.0
    while cost(hi) < target:
        lo, hi = hi, hi * 2
        if hi > MAX_MULT:
            raise UserError(f"{target} GMACs is out of reach by {method} alone; aim lower")
    while cost(lo) > target:
        lo, hi = lo / 2, lo
        if lo < MIN_MULT:
            raise UserError(f"{target} GMACs is out of reach by {method} alone; aim higher")
    for decimals in _SEARCH_DECIMALS:
        while lo < (mid := round((lo + hi) / 2, decimals)) < hi:
            lo, hi = (mid, hi) if cost(mid) < target else (lo, mid)
        best = min((lo, hi), key=lambda m: abs(cost(m) - target))
        if abs(cost(best) / target - 1) <= MATCH_TOLERANCE:
            return best
    raise UserError(
        f"no {method} multiplier gives {target} GMACs within {MATCH_TOLERANCE:.0%}: the nearest, "
        f"{best:g}, gives {cost(best):.3f}; choose another target"
    )


def match_gmacs(
    target: float, base_size: int | None = None, num_classes: int = 1000
) -> list[dict[str, object]]:
    """For depth, width and resolution alone, the multiplier whose measured MACs (after timm's
    rounding) lie within 3% of ``target``; each is registered, one row per method."""
    if not target > 0:
        raise UserError(f"--match-gmacs must be above 0, got {target}")
    rows = []
    for method in MATCH_METHODS:

        @functools.cache
        def cost(multiplier: float, method: str = method) -> float:
            name = register_variant(Scaling(**{method: multiplier}))
            return measure_cost(name, image_size(name, base_size), num_classes)["gmacs"]

        multiplier = _find_multiplier(cost, target, method)
        name = register_variant(Scaling(**{method: multiplier}))
        size = image_size(name, base_size)
        measured = measure_cost(name, size, num_classes)
        rows.append(
            {
                "method": method,
                "multiplier": multiplier,
                "model": name,
                "img_size": size,
                **measured,
                "gmacs_diff_pct": percent_diff(measured["gmacs"], target),
            }
        )
    return rows


# How each column is printed; the CSV and JSON keep full precision.
_FORMATS = {
    "param_count": "{:.2f}",
    "paper_param_count": "{:g}",
    "gmacs": "{:.3f}",
    "paper_gmacs": "{:g}",
    "timm_gmacs": "{:g}",
    "nominal_gmacs": "{:.3f}",
    "gflops": "{:.3f}",
    "macts": "{:.2f}",
    "param_diff_pct": "{:+.1f}%",
    "gmacs_diff_pct": "{:+.1f}%",
    "explained_diff_pct": "{:+.2f}%",
    "explained_gmacs": "{:.3f}",
    "attention_gops": "{:.3f}",
    "batch_norm_gops": "{:.4f}",
    "layer_norm_gops": "{:.4f}",
    "infer_samples_per_sec": "{:.1f}",
    "train_samples_per_sec": "{:.1f}",
    "peak_mem_mb": "{:.0f}",
    "multiplier": "{:g}",
}


TEXT_COLUMNS = ("model", "paper_model", "method", "model_kwargs")


def format_cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    fmt = _FORMATS.get(column)
    return fmt.format(value) if fmt and isinstance(value, (int, float)) else str(value)


def to_markdown(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(" --- " if c in TEXT_COLUMNS else " ---: " for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(format_cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
