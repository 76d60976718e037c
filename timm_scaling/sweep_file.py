"""Sweep files: a sweep's runs read from its file, resolved to recipes, with seeds and shards.

A sweep file (``recipes/sweeps/*.yaml``, shipped in the wheel) names its runs::

    description: what the sweep answers
    recipe: baseline          # the recipe of every run that names none (default: baseline)
    set: [epochs=10]          # overrides for every run (optional)
    runs:                     # each a recipe name, or a mapping with recipe / model / set
      - depth4
      - {model: effnet_b0_d2}
      - {model: resnet18, set: [model_kwargs.output_stride=8]}
    models: [effnet_b0_w1p4, resnet34]  # shorthand: one run of `recipe` per model, ours or timm's
    seeds: 3                  # runs per model by default (seeds 0..2); --seeds overrides it

Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from timm_scaling import trackers
from timm_scaling.errors import UserError
from timm_scaling.recipes import Recipe, load_recipe, recipe_dirs
from timm_scaling.runs import run_folder
from timm_scaling.seed_groups import seed_groups
from timm_scaling.yamlfiles import find_file, read_mapping

SWEEP_KEYS = ("description", "recipe", "set", "runs", "models", "seeds")
RUN_KEYS = ("recipe", "model", "set")


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    runs: tuple[tuple[str, tuple[str, ...]], ...]  # (recipe, overrides) per run, before seeds
    seeds: int = 1  # runs per model where --seeds does not say


def sweep_dirs() -> list[Path]:
    return [d / "sweeps" for d in recipe_dirs() if (d / "sweeps").is_dir()]


def list_sweeps() -> list[str]:
    return sorted({p.stem for d in sweep_dirs() for p in d.glob("*.yaml")})


def _strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{path}: {key} must be a list of key=value strings, got {value!r}")
    return tuple(value)


def _run(path: Path, entry: Any, recipe: str, common: tuple[str, ...]):
    if isinstance(entry, str):
        return entry, common
    if not isinstance(entry, Mapping) or set(entry) - set(RUN_KEYS):
        raise UserError(
            f"{path}: a run is a recipe name or a mapping with keys {', '.join(RUN_KEYS)}; "
            f"got {entry!r}"
        )
    model = entry.get("model")
    extra = (f"model={model}",) if model else ()
    return entry.get("recipe", recipe), common + extra + _strings(path, "set", entry.get("set"))


def load_sweep(name_or_path: str) -> Sweep:
    """A built-in sweep by name (``table7``), or a sweep file by path."""
    path = find_file(name_or_path, sweep_dirs(), "sweep", list_sweeps())
    data = read_mapping(path)
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(SWEEP_KEYS)}")
    recipe = data.get("recipe", "baseline")
    common = _strings(path, "set", data.get("set"))
    entries = list(data.get("runs") or []) + [{"model": m} for m in data.get("models") or []]
    if not entries:
        raise UserError(f"{path}: no runs; list recipes under `runs:` or models under `models:`")
    runs = tuple(_run(path, entry, recipe, common) for entry in entries)
    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"{path}: seeds must be a whole number, 1 or more; got {seeds!r}")
    return Sweep(path.stem, str(data.get("description", "")), runs, seeds)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``'2/4'`` -> (2, 4): the second of four shards (K counts from 1)."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    try:
        k_, n_ = int(k), int(n)
    except ValueError:
        k_ = n_ = 0
    if not sep or not 1 <= k_ <= n_:
        raise UserError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. --shard 1/4")
    return k_, n_


def plan(
    sweep: Sweep,
    seeds: int | None = None,
    overrides: Sequence[str] = (),
    shard: tuple[int, int] | None = None,
    fuse_seeds: bool = False,
) -> list[Recipe]:
    """The resolved recipes of the sweep's runs (seeds 0..seeds-1 above each recipe's seed;
    None: the sweep file's seeds),
    in a fixed order, and of shard K/N: every N-th run starting at the K-th; with
    ``fuse_seeds``, every N-th configuration with all its seeds (a shard of runs would split
    the seeds that train as one step)."""
    seeds = sweep.seeds if seeds is None else seeds
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: run each model at least once (--seeds 1 or more)")
    recipes = []
    for recipe, run_overrides in sweep.runs:
        base = load_recipe(recipe, [*run_overrides, *overrides])
        recipes += [replace(base, seed=base.seed + i) for i in range(seeds)]
    folders = [run_folder("", r).name for r in recipes]
    duplicates = sorted({f for f in folders if folders.count(f) > 1})
    if duplicates:
        raise UserError(f"sweep {sweep.name} lists the same run twice: {duplicates[0]}")
    for log_with in dict.fromkeys(r.log_with for r in recipes):
        trackers.require(log_with)  # a tracker not installed: one line, nothing trained
    if shard is not None:
        k, n = shard
        units = seed_groups(recipes) if fuse_seeds else [[recipe] for recipe in recipes]
        recipes = [recipe for unit in units[k - 1 :: n] for recipe in unit]
    return recipes
