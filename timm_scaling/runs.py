"""The run folder's layout, and ``collect``: rebuild a report.csv from finished run folders.

Imports no torch: ``timm-scaling collect`` starts fast.

``<output>/<recipe>-<model>-s<seed>/`` (``-k<hash>`` added for model_kwargs) holds::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one line per finished epoch: loss, lr, top1, top5, seconds, samples/s
    steps.jsonl          the finer history: lr and training loss about 20 times an epoch
    checkpoints/         Accelerate ``save_state`` of the last finished epoch; ``latest`` names it
    model/               the trained (evaluated) network as timm's ``save_for_hf`` writes it:
                         ``timm.create_model("local-dir:<run>/model", pretrained=True)``
    result.json          the report row and the run's details; written last: the run is finished

and each finished run appends one row to ``<output>/report.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from timm_scaling.errors import UserError
from timm_scaling.recipes import kwargs_tag, load_recipe
from timm_scaling.report import COLUMNS, write_rows

RECIPE_FILE, METRICS_FILE, RESULT_FILE = "recipe.yaml", "metrics.jsonl", "result.json"
STEPS_FILE = "steps.jsonl"
CHECKPOINTS, LATEST, STATE_FILE = "checkpoints", "latest", "trainer_state.json"
MODEL_DIR = "model"
REPORT_FILE = "report.csv"


def run_folder(output: str | os.PathLike, recipe) -> Path:
    """``<output>/<recipe>-<model>-s<seed>``: one folder per recipe, model and seed; a recipe
    with model_kwargs adds their short hash (``-s0-k1a2b3c4d``), so runs that differ only in
    them never share a folder."""
    tag = kwargs_tag(recipe.model_kwargs)
    return Path(output) / f"{recipe.name}-{recipe.model}-s{recipe.seed}{'-' * bool(tag)}{tag}"


# Recipe keys that do not change what a run computes: a run may resume or count as finished
# with other values of them.
INCIDENTAL_KEYS = ("name", "log_with")


# Suffixes of the files our commands write: an --output that does not exist yet and ends in one
# is a file name given where a folder is asked for, not a folder to create.
FILE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".csv", ".json", ".jsonl", ".md", ".txt")


def check_output(
    output: str | os.PathLike, holds: str = f"the run folders and {REPORT_FILE}"
) -> None:
    """``--output`` must be a folder, or not exist yet and not be named like a file; ``holds``
    says what goes into it."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {output} is a file: pass a folder (it holds {holds})")
    if not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
        raise UserError(
            f"--output {output} names a file, but --output is a folder (it holds {holds}); "
            f"pass --output {path.with_suffix('')}"
        )


def changed_keys(folder: Path, recipe, resume: bool = False) -> list[str]:
    """The recipe keys (but the incidental ones) whose values differ from the recipe saved in
    ``folder``.

    With ``resume``, more epochs than saved is no change: ``--resume`` continues the run (its
    step schedule does not depend on the epoch count, so it goes on as if planned that long)."""
    saved = folder / RECIPE_FILE
    if not saved.exists():
        return []
    before, now = load_recipe(str(saved)).trained_settings(), recipe.trained_settings()
    changed = sorted(k for k in now if k not in INCIDENTAL_KEYS and before.get(k) != now[k])
    if resume and "epochs" in changed and now["epochs"] > before["epochs"]:
        changed.remove("epochs")
    return changed


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint of a run folder's last finished epoch (``checkpoints/latest`` names it),
    or None before its first epoch ends."""
    latest = folder / CHECKPOINTS / LATEST
    return latest.parent / latest.read_text().strip() if latest.exists() else None


def checkpoint_epoch(checkpoint: Path) -> int:
    """The epoch a checkpoint was saved after."""
    return json.loads((checkpoint / STATE_FILE).read_text())["epoch"]


def check_folder(folder: Path, recipe, resume: bool) -> None:
    """A run may train into ``folder``: an unfinished run there only with ``resume``, and only
    with the same settings (but more epochs). Checked before any process starts, and again by
    each process's trainer (a worker started by ``accelerate launch`` itself)."""
    checkpoint = latest_checkpoint(folder)
    if checkpoint is not None and not resume:
        raise UserError(
            f"{folder} holds an unfinished run (checkpoint {checkpoint.name}); "
            "pass --resume to continue it, or delete the folder to start again"
        )
    changed = changed_keys(folder, recipe, resume=True) if resume else []
    if changed:
        raise UserError(
            f"--resume: the recipe differs from {folder / RECIPE_FILE} in "
            f"{', '.join(changed)}; resume with the same settings (only more --epochs), or "
            "use another --output"
        )


def finished(output: str | os.PathLike, recipe, resume: bool = False) -> Path | None:
    """The run folder of ``recipe`` under ``output`` if it is finished (result.json exists).

    A folder finished with other settings (say, other epochs) is an error, never a result of
    this recipe; but with ``resume``, a run finished with fewer epochs is not finished: it is
    continued to ``recipe.epochs``."""
    folder = run_folder(output, recipe)
    if not (folder / RESULT_FILE).exists():
        return None
    changed = changed_keys(folder, recipe, resume)
    if changed:
        more = " (or `timm-scaling train --resume` to continue it for more epochs)" * (
            not resume and not changed_keys(folder, recipe, resume=True)
        )
        raise UserError(
            f"{folder} was trained with other settings ({', '.join(changed)}); "
            f"train into another --output, or delete that folder{more}"
        )
    return None if changed_keys(folder, recipe) else folder


def run_state(output: str | os.PathLike, recipe) -> str:
    """What a sweep would do with ``recipe``'s run folder: ``finished``, ``resumable from epoch
    K`` (K finished epochs), ``to train``, or ``conflicting (keys)`` where the folder was
    trained with other settings."""
    folder = run_folder(output, recipe)
    changed = changed_keys(folder, recipe)
    if changed:
        return f"conflicting ({', '.join(changed)} differ; delete it or use another --output)"
    if (folder / RESULT_FILE).exists():
        return "finished"
    checkpoint = latest_checkpoint(folder)
    if checkpoint is not None:
        return f"resumable from epoch {checkpoint_epoch(checkpoint)}"
    return "to train"


def interrupted(output: str | os.PathLike, recipe) -> str:
    """What an interrupted run's folder holds, and how to go on from it."""
    folder = run_folder(output, recipe)
    if (folder / RESULT_FILE).exists():  # Ctrl-C after its result.json was written
        return f"{folder} finished before the interrupt: its result.json is written"
    checkpoint = latest_checkpoint(folder)
    if checkpoint is not None:
        return (
            f"{folder} keeps its last finished epoch ({checkpoint_epoch(checkpoint)}); run the "
            "same command with --resume to continue it"
        )
    return f"{folder} has no finished epoch yet: run the same command again to start it afresh"


def collect(
    runs: str | os.PathLike, output: str | os.PathLike, recipes: Iterable | None = None
) -> int:
    """Rebuild ``output`` (a report.csv) from every result.json under ``runs``, or from the run
    folders of ``recipes`` only (those finished); returns the number of rows."""
    runs = Path(runs)
    if not runs.is_dir():
        raise UserError(f"{runs} is not a folder: pass the --output folder of `timm-scaling train`")
    if recipes is None:
        paths = sorted(runs.rglob(RESULT_FILE))
    else:
        paths = [run_folder(runs, r) / RESULT_FILE for r in recipes]
    return write_rows(
        output, [{key: result.get(key) for key in COLUMNS} for result in results(paths)]
    )


def results(paths: Iterable[Path]) -> list[dict]:
    """The result.json of each path that exists."""
    found = []
    for path in paths:
        if not path.exists():
            continue
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            raise UserError(
                f"{path} is not valid JSON; delete that run folder and train again"
            ) from None
    return found
