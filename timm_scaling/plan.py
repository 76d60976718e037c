"""``--plan``: measure a run briefly on this machine and project its time before training it.

Each run is built as :class:`timm_scaling.train.Trainer` builds it (the recipe's model, batch
size, precision, channels_last and compile) into a temporary folder, and measured with the
trainer's own loop: a few warm-up updates (compilation, cuDNN's autotuning, the out-of-memory
fallback), then the updates begun within a time budget; then evaluation, the same way. Where a
recipe's data set is absent, a synthetic stand-in of the same shape and size is measured
instead (a CIFAR-10 batch costs what a random one does), and the row says so. Nothing is left
behind but ``plan.csv``.

Imports no torch until a run is measured: a sweep's plan is checked first.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import heapq
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timm_scaling.errors import UserError, first_line
from timm_scaling.files import atomic_write, writers_lock
from timm_scaling.recipes import Recipe
from timm_scaling.tables import csv_text

log = logging.getLogger(__name__)
PLAN_FILE = "plan.csv"
COLUMNS: tuple[str, ...] = (
    "model",
    "recipe",
    "seed",
    "dataset",
    "measured_on",
    "img_size",
    "batch_size",
    "grad_accum",
    "micro_batches",
    "checkpointed_micro_batches",
    "checkpointed_images_per_s",
    "updates_measured",
    "images_per_s",
    "peak_mem_mb",
    "device_mem_mb",
    "train_epoch_s",
    "eval_epoch_s",
    "epoch_s",
    "epochs",
    "run_s",
    "device",
    "jobs",
    "mps",
)


@dataclass(frozen=True)
class Budget:
    """How long one run is measured: ``warmup`` updates untimed, then the updates begun within
    ``seconds`` (at most ``updates``); evaluation: two batches untimed, then ``eval_batches``."""

    warmup: int
    seconds: float
    updates: int
    eval_batches: int


# A GPU measures ~20 s a run; a CPU, a few seconds (its updates are slow but steady), so that
# `sweep table7 --plan` takes a minute or two there.
GPU_BUDGET = Budget(warmup=5, seconds=20.0, updates=1000, eval_batches=20)
CPU_BUDGET = Budget(warmup=1, seconds=5.0, updates=100, eval_batches=2)


def budget(cuda: bool, seconds: float | None = None) -> Budget:
    """The default budget of a GPU or a CPU, with ``seconds`` of timed updates if given."""
    if seconds is not None and seconds <= 0:
        raise UserError(f"--plan-seconds {seconds}: measure for more than 0 seconds")
    chosen = GPU_BUDGET if cuda else CPU_BUDGET
    return chosen if seconds is None else dataclasses.replace(chosen, seconds=seconds)


def stand_in(recipe: Recipe) -> tuple[Recipe, str]:
    """The recipe to measure, and what it is measured on: the recipe itself where its data set
    is here, else the same recipe on synthetic data of its data set's shape and size."""
    from timm_scaling import data

    if data.available(recipe.dataset, recipe.data_dir):
        return recipe, recipe.dataset
    if recipe.dataset in data.ON_DISK:  # its size is unknown without it
        from timm_scaling import pipeline

        pipeline.require(recipe.dataset, recipe.data_dir)  # the error saying where to put it
    if recipe.dataset not in data.SHAPES:  # streamed: timm's reader says what is missing
        return recipe, recipe.dataset
    train, val, classes = data.SHAPES[recipe.dataset]
    synthetic = dataclasses.replace(
        recipe,
        dataset=data.SYNTHETIC,
        data_dir=None,
        synthetic_train_size=train,
        synthetic_val_size=val,
        synthetic_classes=classes,
    )
    return synthetic, f"synthetic ({recipe.dataset} not found)"


def measure(recipe: Recipe, seconds: float | None = None, cpu: bool = False) -> dict[str, Any]:
    """Measure one run of ``recipe`` with the trainer's loop (``seconds`` of timed updates, else
    the device's default :func:`budget`); returns its plan row. A run that runs out of memory
    at its batch is measured again with timm's grad checkpointing, which the row reports too."""
    measured, measured_on = stand_in(recipe)
    row = {
        "model": recipe.model,
        "recipe": recipe.name,
        "seed": recipe.seed,
        "dataset": recipe.dataset,
        "measured_on": measured_on,
        "img_size": recipe.image_size,
        "batch_size": recipe.batch_size,
        "grad_accum": recipe.grad_accum,
        "epochs": recipe.epochs,
        **_measure_run(measured, seconds, cpu),
    }
    if row.pop("fell_back") and not recipe.grad_checkpointing:
        checkpointed = dataclasses.replace(measured, grad_checkpointing=True)
        try:
            again = _measure_run(checkpointed, seconds, cpu)
        except UserError:  # this model has no grad checkpointing: nothing to report
            pass
        else:
            # 0: out of memory even at one image per micro-batch with checkpointing
            row["checkpointed_micro_batches"] = again["micro_batches"] or 0
            row["checkpointed_images_per_s"] = again.get("images_per_s")
    return {column: row.get(column) for column in COLUMNS}


def _measure_run(measured: Recipe, seconds: float | None, cpu: bool) -> dict[str, Any]:
    """Time ``measured`` in a temporary folder: the timings, micro-batches, peak memory, and
    whether it fell back to more micro-batches on out-of-memory errors."""
    import torch

    from timm_scaling.train import Trainer, device_name, is_out_of_memory, peak_memory_mb

    if measured.compile:  # each model compiles afresh, not against the previous runs' guards
        torch._dynamo.reset()
    with tempfile.TemporaryDirectory(prefix="timm-scaling-plan-") as folder:
        trainer = Trainer(measured, folder, progress=False, cpu=cpu)
        trainer.measuring = True  # a loss gone bad takes as long: time it, and say so
        started_with = trainer.micro_batches  # a CPU's estimate, else grad_accum
        accelerator = trainer.accelerator
        device = accelerator.device
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        row: dict[str, Any] = {
            "device": device_name(device),
            "device_mem_mb": (
                torch.cuda.get_device_properties(device).total_memory / 2**20 if cuda else None
            ),
        }
        try:
            row.update(_time(trainer, budget(cuda, seconds)))
            row["micro_batches"] = trainer.micro_batches
        except RuntimeError as err:  # out of memory even at one image per micro-batch
            if not is_out_of_memory(err):
                raise
            row["micro_batches"] = None
        row["fell_back"] = row["micro_batches"] != started_with
        if trainer.diverged:
            log.warning(
                f"{measured.model} diverged in its plan "
                f"({trainer.diverged.replace(f' of {trainer.folder}', '')}): its run would stop "
                "there; lower --lr (or raise opt_eps) before training it"
            )
        row["peak_mem_mb"] = peak_memory_mb(device)
        accelerator.end_training()
        accelerator.free_memory()
        del trainer
        gc.collect()  # the next run's peak must not hold this one's tensors
        if cuda:
            torch.cuda.empty_cache()
    return row


def _time(trainer, limits: Budget) -> dict[str, float]:
    """Warm up, then time training updates and evaluation batches; project a whole epoch."""
    import itertools

    updates_per_epoch = len(trainer.train_batches)
    trainer.train_epoch(0, max_updates=limits.warmup)
    before = trainer.num_updates
    stats = trainer.train_epoch(0, max_updates=limits.updates, seconds=limits.seconds)
    updates = trainer.num_updates - before
    train_epoch_s = updates_per_epoch * stats["train_s"] / updates

    val = trainer.val_batches
    trainer.evaluate(itertools.islice(val, 2))  # a batch to warm up, one to capture a graph
    started = time.perf_counter()
    trainer.evaluate(itertools.islice(val, limits.eval_batches))
    eval_epoch_s = len(val) * (time.perf_counter() - started) / min(limits.eval_batches, len(val))

    epoch_s = train_epoch_s + eval_epoch_s
    return {
        "updates_measured": updates,
        "images_per_s": stats["samples_per_s"],
        "train_epoch_s": train_epoch_s,
        "eval_epoch_s": eval_epoch_s,
        "epoch_s": epoch_s,
        "run_s": epoch_s * trainer.recipe.epochs,
    }


def read_plan(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a plan.csv, as strings (:func:`measured` reads a number of one). A file that
    is no CSV (damaged, or another file's bytes) is a one-line error saying to plan again."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(
            f"{path} is not a plan.csv ({first_line(err)[:120]}): measure again with --plan "
            "(which replaces it), or delete it"
        ) from None


def how(row: Mapping[str, Any]) -> tuple[str, str]:
    """How a plan row was measured: (the jobs at once, ``"true"`` under MPS else ``"false"``)."""
    return str(row.get("jobs") or ""), str(row.get("mps") or "false").lower()


def measured(row: Mapping[str, Any], key: str) -> float | None:
    """A plan row's number ``key``: None where it was not measured or is not a positive
    number (an out-of-memory run's empty cell, or an edited file's text)."""
    try:
        value = float(row.get(key) or "nan")
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


# What a process holds on a GPU beyond its tensors' peak: the CUDA context, cuDNN and cuBLAS
# workspaces and the caching allocator's slack.
PROCESS_OVERHEAD_MB = 1024


def fitting_per_gpu(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """How many of these runs fit on one GPU at once, by their measured peak memory (the largest
    peak, plus each process's overhead); None where they were not measured on a GPU."""
    sizes = [(measured(row, "device_mem_mb"), measured(row, "peak_mem_mb")) for row in rows]
    sizes = [(memory, peak) for memory, peak in sizes if memory and peak]
    if not sizes:
        return None
    memory = min(memory for memory, _ in sizes)
    peak = max(peak for _, peak in sizes)
    return int(memory // (peak + PROCESS_OVERHEAD_MB))


def wall_time(run_s: Iterable[float], jobs: int) -> float:
    """The sweep's wall time: runs started in order, each as soon as one of ``jobs`` is free."""
    ends = [0.0] * jobs
    for seconds in run_s:
        heapq.heappush(ends, heapq.heappop(ends) + seconds)
    return max(ends)


def write(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], jobs: int = 1, mps: bool = False
) -> Path:
    """plan.csv: one row per run, in COLUMNS order (atomically), each measured ``jobs`` at a
    time (under MPS with ``mps``). The rows it held measured otherwise stay (``--jobs auto``
    compares them); those measured so, and any that do not say how (an earlier version's),
    are replaced. The read and the write hold the file's writers' lock."""
    path = Path(path)
    measured_so = (str(jobs), str(mps).lower())
    new = [{**row, "jobs": jobs, "mps": str(mps).lower()} for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with writers_lock(path):  # two plans at once: each keeps the other's rows
        kept = []
        if path.is_file():
            try:
                kept = [r for r in read_plan(path) if r.get("jobs") and how(r) != measured_so]
            except UserError:  # not a plan: replaced
                kept = []
        atomic_write(path, csv_text(kept + new, COLUMNS))
    return path


def duration(seconds: float | None) -> str:
    """``3725`` -> ``'1 h 2 min'``; ``42.5`` -> ``'42.5 s'``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the terminal table."""
    headers = ["model", "recipe", "seed", "img", "batch", "micro", "images/s", "peak MB"]
    headers += ["train/epoch", "eval/epoch", "epochs", "run"]
    cells = []
    for row in rows:
        number = "{:.0f}".format
        cells.append(
            [
                row["model"],
                row["recipe"],
                str(row["seed"]),
                str(row["img_size"]),
                str(row["batch_size"]),
                str(row["micro_batches"] or "OOM"),
                number(row["images_per_s"]) if row["images_per_s"] else "-",
                number(row["peak_mem_mb"]) if row["peak_mem_mb"] else "-",
                duration(row["train_epoch_s"]),
                duration(row["eval_epoch_s"]),
                str(row["epochs"]),
                duration(row["run_s"]),
            ]
        )
    return headers, cells


def render(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as aligned plain text: whole in a log or a narrow terminal (numbers right)."""
    headers, cells = table(rows)
    widths = [max(len(text) for text in column) for column in zip(headers, *cells, strict=True)]
    lines = []
    for line in (headers, *cells):
        parts = [
            text.ljust(width) if i < 2 else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _with_checkpointing(row: Mapping[str, Any]) -> str:
    """What grad checkpointing does for a run that did not fit, where it was measured."""
    micro = row.get("checkpointed_micro_batches")
    if micro is None:
        return ""
    if not micro:
        return "; with grad_checkpointing it does not fit either"
    fits = "it fits whole" if micro == row["grad_accum"] else f"{micro} micro-batches"
    speed = row["checkpointed_images_per_s"]
    return (
        f"; with grad_checkpointing, {fits} at {speed:.0f} images/s (--set grad_checkpointing=true)"
    )


def summary(rows: Sequence[Mapping[str, Any]], jobs: int | None = None) -> list[str]:
    """Lines under the table: what was measured on, the total, the wall time with ``jobs``."""
    lines = sorted({f"measured on {row['measured_on']}" for row in rows})
    for row in (row for row in rows if row["micro_batches"] != row["grad_accum"]):
        what = (
            f"splits each batch into {row['micro_batches']} micro-batches (out-of-memory fallback)"
            if row["micro_batches"]
            else "does not fit even at one image per micro-batch"
        )
        lines.append(
            f"{row['recipe']} {row['model']} s{row['seed']}: {what} on {row['device']}"
            + _with_checkpointing(row)
        )
    times = [row["run_s"] for row in rows if row["run_s"] is not None]
    lines.append(f"total: {len(rows)} run(s), {duration(sum(times))} of training")
    if jobs is not None:
        lines.append(f"wall time with --jobs {jobs}: {duration(wall_time(times, jobs))}")
    per_gpu = fitting_per_gpu(rows)
    if per_gpu is not None:
        lines.append(
            f"by peak memory, {per_gpu} of these runs fit at once on one {rows[0]['device']}"
        )
    return lines
