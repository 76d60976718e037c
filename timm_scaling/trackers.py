"""Experiment trackers, through Accelerate: ``--log-with`` and the recipe key ``log_with``.

The names are Accelerate's (``Accelerator(log_with=...)``): tensorboard, wandb, mlflow,
comet_ml, aim, clearml, or ``all`` (every one of them that is installed); several go comma
separated. Each run logs into its run folder (Accelerate's ``project_dir``; TensorBoard's
events go to ``<run folder>/timm-scaling/``), under the project ``timm-scaling`` and the run
folder's name. The run folder's metrics files stay the record, whatever the tracker.

Imports no torch or accelerate: a tracker that is not installed is a one-line error before
anything is built or trained.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from typing import Any

from timm_scaling.errors import UserError

PROJECT = "timm-scaling"
ALL = "all"
# Accelerate's name -> (the modules it can use, the pip package that installs the first)
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "aim": (("aim",), "aim"),
    "clearml": (("clearml",), "clearml"),
}
# Each tracker's keyword for a run's name (the others name runs themselves).
RUN_NAME_KEYS = {"wandb": "name", "mlflow": "run_name", "clearml": "task_name"}


def parse(log_with: str | None) -> tuple[str, ...]:
    """``'tensorboard,wandb'`` -> ``('tensorboard', 'wandb')``; None or ``''`` -> ``()``."""
    names = tuple(dict.fromkeys(n.strip() for n in (log_with or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in TRACKERS and n != ALL]
    if unknown:
        raise UserError(
            f"log_with: unknown tracker {unknown[0]!r}; use one or more (comma separated) of "
            f"{', '.join([*TRACKERS, ALL])}"
        )
    return names


def installed(name: str) -> bool:
    modules, _ = TRACKERS[name]
    return any(importlib.util.find_spec(module) is not None for module in modules)


def require(log_with: str | None) -> list[str]:
    """The trackers to start (``all``: every installed one), each checked to be installed: a
    one-line error naming the pip package of the first that is not."""
    names = parse(log_with)
    if ALL in names:
        found = [name for name in TRACKERS if installed(name)]
        if not found:
            raise UserError(
                "--log-with all: no tracker is installed; pip install tensorboard (or one of "
                f"{', '.join(package for _, package in TRACKERS.values())})"
            )
        return found
    for name in names:
        if not installed(name):
            package = TRACKERS[name][1]
            raise UserError(
                f"--log-with {name}: its package is not installed; pip install {package} "
                "(or train without --log-with)"
            )
    return list(names)


def init_kwargs(names: list[str], run_name: str) -> dict[str, dict[str, str]]:
    """Accelerate's ``init_kwargs``: the run's name for each tracker that takes one."""
    return {name: {RUN_NAME_KEYS[name]: run_name} for name in names if name in RUN_NAME_KEYS}


def hparams(values: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Hyper-parameters every tracker accepts (TensorBoard's hparams reject nested dicts and
    None): nested mappings flattened to ``outer/inner`` keys; None, lists and other objects as
    text; non-finite numbers as text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(hparams(value, f"{name}/"))
        elif isinstance(value, bool | int | str) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of ``values`` (a report row, say), keys prefixed: what a tracker can plot."""
    return {
        f"{prefix}{key}": float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
