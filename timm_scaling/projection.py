"""``--plan-from RECORD``: a run's time on another machine, projected from the speeds that
machine measured, without measuring here.

A record is a plan.csv that ``--plan`` wrote there (copy it here), or one shipped with the
package: ``h100``, the NVIDIA H100 of ``benchmarks/gpu_check-2026-11-26-h100.md`` (the Table 7
models at batch 128 in bf16, measured 4 at a time). Each run takes the training speed the
record measured for its model at its image size and batch size. An EfficientNet variant the
record does not hold is estimated from its block count, the record's own finding at 32 px
(an update's time follows its kernels, not its FLOPs): time per image = a + b x blocks,
fitted by least squares through the record's EfficientNets at that batch size. Other models
are not projected, and the lines say so. The record holds no evaluation speed: evaluation is
counted at the training speed, an upper bound (an update costs about three forward passes).

Builds no model but on the meta device, and imports no torch before a record is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from timm_scaling.errors import UserError
from timm_scaling.plan import COLUMNS, duration, measured, read_plan
from timm_scaling.recipes import Recipe

# Records shipped in timm_scaling/reference: a name a user types, and its file.
RECORDS = {"h100": "speeds_h100_2026-11-26.csv"}
EXACT = "recorded"
ESTIMATED = "estimated by block count"
MISSING = "not projected"


def read_record(name_or_path: str) -> tuple[str, list[dict[str, str]]]:
    """A record's label (its name, or the file's path) and its rows with a training speed."""
    if name_or_path in RECORDS:
        file = resources.files("timm_scaling") / "reference" / RECORDS[name_or_path]
        with resources.as_file(file) as path:
            rows = read_plan(path)
    elif Path(name_or_path).is_file():
        rows = read_plan(name_or_path)
    else:
        shipped = ", ".join(sorted(RECORDS))
        raise UserError(
            f"--plan-from {name_or_path}: no such record; name a plan.csv that --plan wrote on "
            f"the other machine, or a shipped record ({shipped})"
        )
    # A projection's rows are not measurements: projecting from one repeats its guesses.
    rows = [
        row
        for row in rows
        if row.get("model")
        and measured(row, "images_per_s")
        and " record (" not in (row.get("measured_on") or "")
    ]
    if not rows:
        raise UserError(
            f"--plan-from {name_or_path}: the record holds no measured training speed "
            "(no row with images_per_s, other than projections); measure one with --plan on "
            "that machine"
        )
    return name_or_path, rows


def _blocks(models: Sequence[str]) -> dict[str, int]:
    """The real block count of each name that is an EfficientNet variant of ours."""
    from timm_scaling.models import cached_architectures, ensure_registered
    from timm_scaling.scaling import is_model_name

    ours = [ensure_registered(name) for name in dict.fromkeys(models) if is_model_name(name)]
    return {name: arch.blocks for name, arch in cached_architectures(ours).items()}


def _fit(points: Sequence[tuple[int, float]]) -> tuple[float, float] | None:
    """Least squares (a, b) of seconds per image = a + b x blocks; None under two block counts."""
    if len({blocks for blocks, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points
    )
    return mean_y - slope * mean_x, slope


def _speed(
    recipe: Recipe, record: Sequence[Mapping[str, str]], blocks: Mapping[str, int]
) -> tuple[float | None, str, Mapping[str, str] | None]:
    """(images/s, how it was found, the record's row where it was recorded)."""
    key = (recipe.model, str(recipe.image_size), str(recipe.batch_size))
    same = [row for row in record if (row["model"], row["img_size"], row["batch_size"]) == key]
    if same:
        speeds = [measured(row, "images_per_s") for row in same]
        return sum(speeds) / len(speeds), EXACT, same[0]
    if recipe.model not in blocks:
        return None, f"{MISSING}: neither in it nor an EfficientNet of ours", None
    points = [
        (blocks[row["model"]], 1 / measured(row, "images_per_s"))
        for row in record
        if row["model"] in blocks and row["batch_size"] == str(recipe.batch_size)
    ]
    fitted = _fit(points)
    if fitted is None:
        batches = sorted({row["batch_size"] for row in record if row["model"] in blocks})
        if str(recipe.batch_size) not in batches:
            why = f"its EfficientNets ran at batch {', '.join(batches) or 'none'}"
            return None, f"{MISSING}: {why}, not {recipe.batch_size}", None
        return None, f"{MISSING}: one depth at batch {recipe.batch_size}, a line needs two", None
    seconds = fitted[0] + fitted[1] * blocks[recipe.model]
    return (1 / seconds if seconds > 0 else None), ESTIMATED, None


def project(recipes: Sequence[Recipe], name_or_path: str) -> tuple[list[dict[str, Any]], str]:
    """Plan rows (plan.py's COLUMNS) of ``recipes`` on the record's machine, and its device."""
    from timm_scaling import data

    label, record = read_record(name_or_path)
    devices = sorted({row.get("device") or "?" for row in record})
    device = " / ".join(devices)
    blocks = _blocks([row["model"] for row in record] + [recipe.model for recipe in recipes])
    rows = []
    for recipe in recipes:
        speed, how, source = _speed(recipe, record, blocks)
        train_s = eval_s = None
        if speed:
            train_s = data.split_size(recipe, "train") / speed
            eval_s = data.split_size(recipe, "val") / speed
        row = {
            "model": recipe.model,
            "recipe": recipe.name,
            "seed": recipe.seed,
            "dataset": recipe.dataset,
            "measured_on": f"the {label} record ({how})",
            "img_size": recipe.image_size,
            "batch_size": recipe.batch_size,
            "grad_accum": recipe.grad_accum,
            "micro_batches": recipe.grad_accum,
            "images_per_s": speed,
            "peak_mem_mb": measured(source, "peak_mem_mb") if source else None,
            "train_epoch_s": train_s,
            "eval_epoch_s": eval_s,
            "epoch_s": train_s + eval_s if speed else None,
            "epochs": recipe.epochs,
            "run_s": (train_s + eval_s) * recipe.epochs if speed else None,
            "device": device,
        }
        rows.append({column: row.get(column) for column in COLUMNS})
    if all(row["run_s"] is None for row in rows):
        raise UserError(
            f"--plan-from {label}: no run can be projected from it ({rows[0]['model']}: "
            f"{rows[0]['measured_on'].split(f'{MISSING}: ')[-1].rstrip(')')}); measure them "
            "with --plan on that machine"
        )
    return rows, device


def summary(rows: Sequence[Mapping[str, Any]], device: str) -> list[str]:
    """What the projection rests on, beyond plan.summary's total and wall time."""
    lines = [
        f"speeds of {device}; evaluation counted at the training speed (an upper bound: the "
        "record has no evaluation speed)"
    ]
    missing = sorted({row["model"] for row in rows if row["run_s"] is None})
    if missing:
        times = [row["run_s"] for row in rows if row["run_s"] is not None]
        lines.append(
            f"not projected (not counted in the total, {duration(sum(times))}): "
            + ", ".join(missing)
            + "; measure them on that machine with --plan and project from its plan.csv"
        )
    return lines
