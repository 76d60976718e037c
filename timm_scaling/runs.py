"""The run folder's layout, and ``collect``: rebuild a report.csv from finished run folders.

Imports no torch: ``timm-scaling collect`` starts fast.

``<output>/<recipe>-<model>-s<seed>/`` holds::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one line per finished epoch: loss, lr, top1, top5, seconds, samples/s
    checkpoints/         Accelerate ``save_state`` of the last finished epoch; ``latest`` names it
    result.json          the report row and the run's details; written last: the run is finished

and each finished run appends one row to ``<output>/report.csv``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from timm_scaling.errors import UserError
from timm_scaling.report import COLUMNS, write_rows

RECIPE_FILE, METRICS_FILE, RESULT_FILE = "recipe.yaml", "metrics.jsonl", "result.json"
CHECKPOINTS, LATEST, STATE_FILE = "checkpoints", "latest", "trainer_state.json"
REPORT_FILE = "report.csv"


def run_folder(output: str | os.PathLike, recipe) -> Path:
    """``<output>/<recipe>-<model>-s<seed>``: one folder per recipe, model and seed."""
    return Path(output) / f"{recipe.name}-{recipe.model}-s{recipe.seed}"


def finished(output: str | os.PathLike, recipe) -> Path | None:
    """The run folder of ``recipe`` under ``output`` if it is finished (result.json exists)."""
    folder = run_folder(output, recipe)
    return folder if (folder / RESULT_FILE).exists() else None


def collect(runs: str | os.PathLike, output: str | os.PathLike) -> int:
    """Rebuild ``output`` (a report.csv) from every result.json under ``runs``; returns rows."""
    runs = Path(runs)
    if not runs.is_dir():
        raise UserError(f"{runs} is not a folder: pass the --output folder of `timm-scaling train`")
    rows = []
    for path in sorted(runs.rglob(RESULT_FILE)):
        try:
            result = json.loads(path.read_text())
        except ValueError:
            raise UserError(
                f"{path} is not valid JSON; delete that run folder and train again"
            ) from None
        rows.append({key: result.get(key) for key in COLUMNS})
    return write_rows(output, rows)
