"""The run folder's layout: what a run writes, when it counts as finished, resumable or damaged.

Imports no torch: ``timm-scaling collect`` and a sweep's plan start fast.

``<output>/<recipe>-<model>-s<seed>/`` (``-k<hash>`` added for model_kwargs) holds::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one line per finished epoch: loss, lr, top1, top5, seconds, samples/s
    steps.jsonl          the finer history: lr and training loss about 20 times an epoch
    checkpoints/         Accelerate ``save_state`` of the last finished epoch; ``latest`` names it
    model/               the trained (evaluated) network as timm's ``save_for_hf`` writes it:
                         ``timm.create_model("local-dir:<run>/model", pretrained=True)``
    result.json          the report row and the run's details; written last: the run is finished
    diverged.json        instead of a result: how the run (of recipe.yaml's settings) diverged;
                         removed when a run trains there again

and each finished run appends one row to ``<output>/report.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from timm_scaling.errors import LossNotFinite, UserError
from timm_scaling.files import Busy, atomic_write, locked
from timm_scaling.recipe_keys import kwargs_tag
from timm_scaling.recipes import load_recipe
from timm_scaling.report import COLUMNS, REPORT_FILE, missing_rows, put_rows

RECIPE_FILE, METRICS_FILE, RESULT_FILE = "recipe.yaml", "metrics.jsonl", "result.json"
DIVERGED_FILE = "diverged.json"
STEPS_FILE = "steps.jsonl"
CHECKPOINTS, LATEST, STATE_FILE = "checkpoints", "latest", "trainer_state.json"
MODEL_DIR = "model"
# result.json's record of the exported files' sizes, and the files of a result without it.
EXPORT_KEY = "export"
EXPORTED = ("config.json", "model.safetensors")
LOCK_FILE = ".lock"


def run_folder(output: str | os.PathLike, recipe) -> Path:
    """``<output>/<recipe>-<model>-s<seed>``: one folder per recipe, model and seed; a recipe
    with model_kwargs adds their short hash (``-s0-k1a2b3c4d``), so runs that differ only in
    them never share a folder."""
    tag = kwargs_tag(recipe.model_kwargs)
    return Path(output) / f"{recipe.name}-{recipe.model}-s{recipe.seed}{'-' * bool(tag)}{tag}"


# Recipe keys that do not change what a run computes: a run may resume or count as finished
# with other values of them.
INCIDENTAL_KEYS = ("name", "log_with")


def changed_keys(folder: Path, recipe, resume: bool = False) -> list[str]:
    """The recipe keys (but the incidental ones) whose values differ from the recipe saved in
    ``folder``.

    With ``resume``, more epochs than saved is no change: ``--resume`` continues the run (its
    step schedule does not depend on the epoch count, so it goes on as if planned that long)."""
    if not (folder / RESULT_FILE).exists() and latest_checkpoint(folder) is None:
        return []  # nothing trained there (a run stopped in its first epoch): it starts afresh
    return _differing(folder, recipe, resume)


def _differing(folder: Path, recipe, resume: bool = False) -> list[str]:
    """The keys that differ from the folder's recipe.yaml, whether or not an epoch finished
    there; a folder whose recipe.yaml is missing or unreadable is damaged."""
    saved = folder / RECIPE_FILE
    if not saved.exists():  # written before any epoch or result
        raise FolderDamaged(saved, "is missing")
    if not saved.read_bytes().strip():  # written whole or not at all: emptied since
        raise FolderDamaged(saved, "is empty")
    try:
        before = load_recipe(str(saved)).trained_settings()
    except UserError as err:
        raise FolderDamaged(saved, f"cannot be read as a recipe ({err})") from None
    now = recipe.trained_settings()
    result = readable_result(folder)
    if result is not None:
        # A longer continuation writes recipe.yaml and result.json as it finishes: killed
        # between the two, the result's own epochs say what the folder holds.
        before["epochs"] = result["epochs"]
    changed = sorted(k for k in now if k not in INCIDENTAL_KEYS and before.get(k) != now[k])
    if resume and "epochs" in changed and now["epochs"] > before["epochs"]:
        changed.remove("epochs")
    return changed


class FolderDamaged(UserError):
    """The one-line error for a run folder's file that cannot be read; ``why`` says which and
    how (``its result.json is not valid JSON``)."""

    def __init__(self, what: Path, why: str) -> None:
        folder = next((p.parent for p in what.parents if p.name == CHECKPOINTS), what.parent)
        self.why = f"its {what.relative_to(folder)} {why}"
        fix = "delete that folder and train again"
        if what.name == RESULT_FILE:  # finished again from its last checkpoint, where kept
            fix = "run its train or sweep command again (it finishes the run again from its "
            fix += "last checkpoint), or delete that folder"
        super().__init__(f"{what} {why}: the run folder {folder} is damaged; {fix}")


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint of a run folder's last finished epoch (``checkpoints/latest`` names it),
    or None before its first epoch ends. A ``latest`` naming no checkpoint is an error."""
    latest = folder / CHECKPOINTS / LATEST
    if not latest.exists():
        return None
    name = latest.read_text(errors="replace").strip()
    checkpoint = latest.parent / name
    if not name or "/" in name or not (checkpoint / STATE_FILE).is_file():
        raise FolderDamaged(latest, f"names {name!r}, which is no whole checkpoint")
    return checkpoint


def checkpoint_state(checkpoint: Path) -> dict:
    """What the trainer saved beside a checkpoint: epoch, updates, history."""
    state = read_json(checkpoint / STATE_FILE)
    if not isinstance(state.get("epoch"), int) or not isinstance(state.get("history"), list):
        raise FolderDamaged(checkpoint / STATE_FILE, "lacks its epoch or history")
    return state


def checkpoint_epoch(checkpoint: Path) -> int:
    """The epoch a checkpoint was saved after."""
    return checkpoint_state(checkpoint)["epoch"]


def read_json(path: Path) -> dict:
    """A JSON object from a run folder; a file that is no JSON object is a one-line error."""
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise FolderDamaged(path, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise FolderDamaged(path, f"holds a JSON {type(value).__name__}, not an object")
    return value


def read_result(path: Path) -> dict:
    """A finished run's result.json."""
    result = read_json(path)
    missing = [key for key in ("model", "top1", "epochs") if key not in result]
    if missing:
        raise FolderDamaged(path, f"lacks {', '.join(missing)}")
    return result


def readable_result(folder: Path) -> dict | None:
    """A run folder's result.json; None where it is missing or damaged (:func:`finish_damage`
    says how)."""
    try:
        return read_result(folder / RESULT_FILE) if (folder / RESULT_FILE).exists() else None
    except FolderDamaged:
        return None


def report_row(result: dict) -> dict:
    """A result.json's report.csv row."""
    return {key: result.get(key) for key in COLUMNS}


def ensure_rows(folders: Sequence[Path], output: str | os.PathLike) -> list[Path]:
    """Put finished runs' rows into ``output``/report.csv where it does not hold them as their
    result.json has them (a run killed between the two, or a report that could not be
    written), in one write; returns the folders whose rows were put back."""
    rows = {folder: report_row(read_result(folder / RESULT_FILE)) for folder in folders}
    report = Path(output) / REPORT_FILE
    missing = missing_rows(report, list(rows.values()))
    if missing:
        put_rows(report, missing)
    put_back = {id(row) for row in missing}
    return [folder for folder, row in rows.items() if id(row) in put_back]


def finished_result(
    output: str | os.PathLike, recipe, resume: bool, say: Callable[[str], None], put_back: bool
) -> dict | None:
    """The result.json of ``recipe``'s run if it is finished (see :func:`finished`), else None;
    ``say`` tells that it is not trained again and, with ``put_back`` (the process that owns
    the run), whether its lost report row was put back."""
    done = finished(output, recipe, resume)
    if done is None:
        folder = run_folder(output, recipe)
        why = (folder / RESULT_FILE).exists() and finish_damage(folder)
        if why and put_back and (folder, why) not in _refinishing:
            _refinishing.add((folder, why))  # said once: the CLI, then its trainer, ask
            say(f"{folder}: {why}: finishing it again from its last checkpoint")
        return None
    say(f"{done} is finished (its {RESULT_FILE} exists): not retraining it")
    if put_back and ensure_rows([done], output):
        say(f"its row was missing from {Path(output) / REPORT_FILE}: put back")
    return read_result(done / RESULT_FILE)


# Finished run folders whose damaged export or result this process has said it makes again.
_refinishing: set[tuple[Path, str]] = set()


def finish_damage(folder: Path) -> str | None:
    """What is wrong with a finished run's result.json or exported model (``model/``), or None
    where both are whole: a result that is no JSON object or lacks its keys; an export's file
    missing, a config that is no JSON, weights of another size than its result.json records.
    (A continuation killed between its export and its result leaves the longer run's export:
    weights of the same size, a config of another; that is not damage.)"""
    try:
        recorded = read_result(folder / RESULT_FILE).get(EXPORT_KEY) or {}
    except FolderDamaged as err:
        return err.why
    for name in dict.fromkeys([*EXPORTED, *recorded]):
        path = folder / MODEL_DIR / name
        if not path.is_file():
            return f"its exported {MODEL_DIR}/{name} is missing"
        if name.endswith(".json"):
            try:
                json.loads(path.read_bytes())
            except ValueError:
                return f"its exported {MODEL_DIR}/{name} is no JSON"
        elif name in recorded and path.stat().st_size != recorded[name]:
            size = path.stat().st_size
            return f"its exported {MODEL_DIR}/{name} has {size} of its {recorded[name]} bytes"
    return None


# Run folders whose lock this process holds: the CLI takes it, and the trainer it calls again.
_held: set[Path] = set()


@contextmanager
def lock_run(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while a run trains into it: a second command training the same run
    is refused at once (a one-line error). The lock is the kernel's (flock): a killed holder
    frees it; the file goes when the holder ends."""
    folder = folder.resolve()
    if folder in _held:
        yield
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with locked(folder / LOCK_FILE, wait=False):
            _held.add(folder)
            yield
    except Busy as busy:
        raise UserError(
            f"{folder} is being trained by another process ({busy}); wait for it to end, or "
            "train into another --output"
        ) from None
    finally:
        _held.discard(folder)
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a run refused before it wrote anything leaves no folder


def resumes(folder: Path, resume: bool) -> bool:
    """Whether a run continues from ``folder``'s last checkpoint: asked to, or finished there
    and being finished again (its export or result damaged: :func:`finished`)."""
    return resume or (folder / RESULT_FILE).exists()


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
    continued to ``recipe.epochs``; nor is one whose damaged export or result its last
    checkpoint makes again."""
    folder = run_folder(output, recipe)
    if not (folder / RESULT_FILE).exists():
        return None
    changed = changed_keys(folder, recipe, resume)
    why = None if changed else finish_damage(folder)
    if why:
        checkpoint = latest_checkpoint(folder)
        if checkpoint is None:
            raise UserError(
                f"{folder}: {why}, and it keeps no checkpoint to finish it again from; delete "
                "that folder and train again"
            )
        result = readable_result(folder)
        if result is None or checkpoint_epoch(checkpoint) == result["epochs"]:
            return None  # finished again from its last checkpoint: export and result remade
        # else a longer continuation was stopped as it exported: it finishes the folder
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
    """What a sweep would do with ``recipe``'s run folder: ``finished`` (its export or result
    damaged: finished again), ``resumable from epoch K`` (K finished epochs), ``to train``, or
    ``conflicting (keys)`` where the folder was trained with other settings; a run that
    diverged with the same settings says so."""
    folder = run_folder(output, recipe)
    changed = changed_keys(folder, recipe)
    if changed:
        return f"conflicting ({', '.join(changed)} differ; delete it or use another --output)"
    if (folder / RESULT_FILE).exists():
        why = finish_damage(folder)
        return "finished" + f", but {why}: finished again from its last checkpoint" * bool(why)
    checkpoint = latest_checkpoint(folder)
    state = "to train"
    if checkpoint is not None:
        state = f"resumable from epoch {checkpoint_epoch(checkpoint)}"
    if diverged(output, recipe):
        state += f" (it diverged with these settings: lower its lr; {DIVERGED_FILE} says how)"
    return state


def mark_diverged(folder: Path, err: LossNotFinite) -> None:
    """Note in ``folder`` that its run (of the settings in its recipe.yaml) diverged."""
    text = json.dumps({"what": err.what, "message": str(err)}, indent=1)
    atomic_write(folder / DIVERGED_FILE, text + "\n")


def diverged(output: str | os.PathLike, recipe) -> str | None:
    """How ``recipe``'s run diverged, if its folder holds a run of these very settings that
    did (no result, a diverged.json); else None. Trained again, it would diverge again."""
    folder = run_folder(output, recipe)
    marker = folder / DIVERGED_FILE
    if not marker.exists() or (folder / RESULT_FILE).exists() or _differing(folder, recipe):
        return None
    return str(read_json(marker).get("what", "it diverged"))


def what_is_kept(folder: Path) -> str:
    """What a run stopped by an error keeps, as every message says it."""
    checkpoint = latest_checkpoint(folder)
    if checkpoint is None:
        return "no checkpoint of a finished epoch is kept"
    return f"its last finished epoch ({checkpoint_epoch(checkpoint)}, {checkpoint.name}) is kept"


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
