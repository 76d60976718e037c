"""Training curves from run folders: validation top-1, training loss and learning rate against
epoch, images seen or compute; one line per model, coloured by scaling method as in the
frontier's plot; the seeds of a model as one band (mean +- std over seeds).

Input: run folders (``metrics.jsonl``, the finer history ``steps.jsonl``, ``recipe.yaml``,
``result.json``: see :mod:`timm_scaling.runs`), folders of them (a sweep's ``--output``), or a
sweep's report folder (``<output>/<sweep>/``, whose report.csv names its runs). The loss and
learning-rate panels use the finer history where every seed of a model has it (a warm-up shows
even in a short run), the per-epoch lines otherwise.

Bad input is a one-line error (no run folders, nothing to draw) or a warning (a metrics file cut
mid-line: its readable lines are used; a metric some runs lack: the panels all runs share are
drawn). Imports no torch: matplotlib only, like the frontier.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from timm_scaling.errors import InputError, UserError
from timm_scaling.frontier import colours, group_order, label_of, method_of, save_figure
from timm_scaling.outputs import check_output
from timm_scaling.report import read_rows
from timm_scaling.runs import (
    METRICS_FILE,
    RECIPE_FILE,
    REPORT_FILE,
    RESULT_FILE,
    STEPS_FILE,
    run_folder,
)
from timm_scaling.yamlfiles import load_yaml

X_AXES = ("epoch", "images", "compute")
PANELS = ("top1", "loss", "lr")  # the default panels; --metric adds others
# Metrics drawn from the finer history where every run of a model has one.
FINER = ("loss", "lr")
LABELS = {
    "top1": "validation top-1 (%)",
    "top5": "validation top-5 (%)",
    "loss": "training loss",
    "lr": "learning rate",
    "samples_per_s": "training images / s",
    "epoch_s": "seconds per epoch",
    "train_s": "training seconds per epoch",
}
X_LABELS = {
    "epoch": "epoch",
    "images": "training images seen",
    "compute": "compute: forward GMACs x images seen",
}
LINESTYLES = ("-", "--", ":", "-.")
FILES = ("curves.png", "curves.svg")


@dataclass
class Run:
    """One run folder's history."""

    folder: Path
    recipe: str
    model: str
    seed: int | None
    epochs: list[dict] = field(default_factory=list)  # metrics.jsonl: one row an epoch
    steps: list[dict] = field(default_factory=list)  # steps.jsonl: the finer history
    gmacs: float | None = None

    @property
    def method(self) -> str:
        return method_of(self.model)


@dataclass
class Curves:
    """What :func:`read` found: runs, the panels they share, and what was left out and why."""

    runs: list[Run]
    panels: list[str]
    x: str
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ reading


def is_run_folder(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() or (path / RECIPE_FILE).is_file()


def _report_folders(folder: Path) -> list[Path]:
    """The run folders a sweep's report folder (``<output>/<sweep>/report.csv``) names."""
    report = folder / REPORT_FILE
    if not report.is_file():
        return []
    rows = read_rows(report)
    # A row does not carry model_kwargs: the folders of runs without them.
    return [
        run_folder(
            folder.parent,
            SimpleNamespace(name=r["recipe"], model=r["model"], seed=r["seed"], model_kwargs={}),
        )
        for r in rows
        if r.get("recipe") and r.get("model") and r.get("seed") not in (None, "")
    ]


def find_run_folders(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each path as a run folder, or the run folders inside it (or that its report names)."""
    if not paths:
        raise UserError("pass one or more run folders: timm-scaling curves runs/")
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            raise InputError(
                f"{path} is a file: pass the folder holding it ({path.parent}), run folders or "
                "a --output folder"
            )
        if not path.is_dir():
            raise InputError(f"{path}: no such folder; pass run folders or a --output folder")
        if is_run_folder(path):
            inside = [path]
        else:
            inside = [p for p in sorted(path.iterdir()) if p.is_dir() and is_run_folder(p)]
            inside = inside or [p for p in _report_folders(path) if is_run_folder(p)]
        if not inside:
            raise InputError(
                f"{path}: no run folders in it (none holds {METRICS_FILE}); pass the --output "
                "folder of `timm-scaling train` or `sweep`, or run folders"
            )
        found += [p for p in inside if p not in found]
    return found


def read_jsonl(path: Path, warnings: list[str], needs: Sequence[str] = ("epoch",)) -> list[dict]:
    """The lines of ``path`` that are JSON objects with a number for each key of ``needs``; a
    cut or broken line is skipped with a warning."""
    if not path.is_file():
        return []
    rows, bad = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and all(isinstance(row.get(k), int | float) for k in needs):
            rows.append(row)
        else:
            bad.append(number)
    if bad:
        warnings.append(
            f"{path}: line {bad[0]} is cut or not a history line (a run killed while writing?); "
            f"used its {len(rows)} readable line(s)"
        )
    return rows


def _mapping(path: Path) -> dict:
    """A YAML or JSON file's mapping; {} if it is missing or not a mapping."""
    try:
        data = load_yaml(path.read_text()) if path.is_file() else None
    except (yaml.YAMLError, OSError):
        data = None
    return data if isinstance(data, dict) else {}


def read_run(folder: Path, warnings: list[str]) -> Run | None:
    """The run in ``folder``, or None (with a warning) if it has no finished epoch."""
    recipe, result = _mapping(folder / RECIPE_FILE), _mapping(folder / RESULT_FILE)
    model = recipe.get("model") or result.get("model")
    if not model:
        warnings.append(f"{folder}: no {RECIPE_FILE} naming its model; left out")
        return None
    epochs = read_jsonl(folder / METRICS_FILE, warnings)
    if not epochs:
        warnings.append(f"{folder}: no finished epoch in {METRICS_FILE}; left out")
        return None
    gmacs = result.get("gmacs")
    return Run(
        folder=folder,
        recipe=str(recipe.get("name") or result.get("recipe") or ""),
        model=str(model),
        seed=recipe.get("seed", result.get("seed")),
        epochs=epochs,
        steps=read_jsonl(folder / STEPS_FILE, warnings, ("epoch", "images")),
        gmacs=float(gmacs) if isinstance(gmacs, int | float) else None,
    )


def _numeric_keys(rows: list[dict]) -> set[str]:
    return {
        k for row in rows for k, v in row.items() if isinstance(v, int | float) and k != "epoch"
    }


def read(
    paths: Sequence[str | os.PathLike], x: str = "epoch", metrics: Sequence[str] = ()
) -> Curves:
    """The runs under ``paths`` and the panels to draw: the default ones and ``metrics``, those
    that every run has."""
    if x not in X_AXES:
        raise UserError(f"--x {x}: use one of {', '.join(X_AXES)}")
    warnings: list[str] = []
    runs = [r for f in find_run_folders(paths) if (r := read_run(f, warnings)) is not None]
    if x == "compute":
        for run in runs:
            if run.gmacs is None:
                warnings.append(
                    f"{run.folder}: no GMACs (it has no {RESULT_FILE}: not finished); "
                    "left out of --x compute"
                )
        runs = [r for r in runs if r.gmacs is not None]
    if not runs:
        raise InputError(f"no run with a finished epoch to draw under {', '.join(map(str, paths))}")
    shared = set.intersection(*(_numeric_keys(r.epochs) for r in runs))
    available = set.union(*(_numeric_keys(r.epochs) for r in runs))
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise UserError(
            f"--metric {unknown[0]}: no run has it; metrics.jsonl has "
            f"{', '.join(sorted(available))}"
        )
    panels = []
    for name in dict.fromkeys([*PANELS, *metrics]):
        if name in shared:
            panels.append(name)
        else:
            lacking = sum(name not in _numeric_keys(r.epochs) for r in runs)
            warnings.append(f"{lacking} of {len(runs)} runs have no {name!r}: its panel left out")
    if not panels:
        raise InputError("the runs share no metric to draw; pass runs of the same kind")
    return Curves(runs, panels, x, warnings)


# ------------------------------------------------------------------------------------- series


def _series(run: Run, metric: str, x: str, finer: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one run's metric: from the finer history or the per-epoch lines."""
    rows = [
        r for r in (run.steps if finer else run.epochs) if isinstance(r.get(metric), int | float)
    ]
    if finer:
        images = np.array([r["images"] for r in rows], dtype=float)
        epochs = np.array([r["epoch"] for r in rows], dtype=float)
    else:
        counts = [r.get("train_images", math.nan) for r in run.epochs]
        seen = dict(zip((r.get("epoch") for r in run.epochs), np.cumsum(counts), strict=True))
        epochs = np.array([r["epoch"] for r in rows], dtype=float)
        images = np.array([seen[r["epoch"]] for r in rows], dtype=float)
    xs = {"epoch": epochs, "images": images, "compute": images * (run.gmacs or math.nan)}[x]
    return xs, np.array([r[metric] for r in rows], dtype=float)


def band(runs: list[Run], metric: str, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeds of one model: x, mean and std (0 for one run) over the points all seeds have."""
    finer = metric in FINER and all(any(metric in p for p in r.steps) for r in runs)
    series = [_series(r, metric, x, finer) for r in runs]
    n = min(len(ys) for _, ys in series)
    xs = np.mean([s[0][:n] for s in series], axis=0)
    ys = np.array([s[1][:n] for s in series])
    std = ys.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(n)
    return xs, ys.mean(axis=0), std


def models(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (recipe, model), in the frontier's method order, then by cost."""
    grouped: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run.recipe, run.model), []).append(run)

    def order(key: tuple[str, str]):
        first = grouped[key][0]
        cost = first.gmacs if first.gmacs is not None else math.inf
        return (group_order(first.method), cost, key)

    return {
        key: sorted(grouped[key], key=lambda r: str(r.seed)) for key in sorted(grouped, key=order)
    }


def _label(recipe: str, model: str, runs: list[Run], several_recipes: bool) -> str:
    import pandas as pd

    text = f"{runs[0].method} {label_of(model, pd.Series(dtype=object))}"
    if several_recipes:
        text = f"{recipe}: {text}"
    return f"{text} ({len(runs)} seeds)" if len(runs) > 1 else text


# -------------------------------------------------------------------------------------- plot


def figure(curves: Curves):
    """The figure: one panel per metric, one line per model, a band over its seeds."""
    from matplotlib.figure import Figure

    grouped = models(curves.runs)
    palette = colours(sorted({r.method for r in curves.runs}, key=group_order))
    several_recipes = len({recipe for recipe, _ in grouped}) > 1
    panels = curves.panels
    fig = Figure(figsize=(4.0 * len(panels) + 2.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    rank: dict[str, int] = {}
    for (recipe, model), runs in grouped.items():
        method = runs[0].method
        style = LINESTYLES[rank.get(method, 0) % len(LINESTYLES)]
        rank[method] = rank.get(method, 0) + 1
        label = _label(recipe, model, runs, several_recipes)
        for ax, metric in zip(axes, panels, strict=True):
            xs, mean, std = band(runs, metric, curves.x)
            colour = palette[method]
            # A curve of one point (a one-epoch run's top-1) is a marker, not an invisible line.
            marker = "o" if len(xs) == 1 else None
            ax.plot(
                xs, mean, color=colour, linestyle=style, linewidth=1.5, label=label, marker=marker
            )
            if len(runs) > 1:
                ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    for ax, metric in zip(axes, panels, strict=True):
        ax.set_title(LABELS.get(metric, metric), fontsize=10)
        ax.set_xlabel(X_LABELS[curves.x])
        if curves.x == "compute":
            ax.set_xscale("log")
        ax.grid(True, linewidth=0.5, alpha=0.35)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return fig


def default_out(paths: Sequence[str | os.PathLike]) -> Path:
    """Beside the input: the one path given, else the folder that holds them all."""
    if len(paths) == 1:
        return Path(paths[0])
    return Path(os.path.commonpath([Path(p).resolve() for p in paths]))


def run(
    paths: Sequence[str | os.PathLike],
    x: str = "epoch",
    metrics: Sequence[str] = (),
    out: str | os.PathLike | None = None,
) -> tuple[Curves, list[Path]]:
    """Read the runs under ``paths``, draw them, write curves.png and curves.svg into ``out``
    (default: :func:`default_out`); return what was drawn and the files written."""
    curves = read(paths, x, metrics)
    target = default_out(paths) if out is None else Path(out)
    check_output(target, "curves.png and curves.svg")
    target.mkdir(parents=True, exist_ok=True)
    return curves, save_figure(figure(curves), target, "curves")
