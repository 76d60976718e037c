"""The Trainer: one recipe -> one run folder, read top to bottom (build, fit epoch by epoch,
finish); each step's details in its own module."""

from __future__ import annotations

import itertools
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs, TorchDynamoPlugin, tqdm
from timm.utils import distribute_bn

from timm_scaling import trackers
from timm_scaling.errors import UserError
from timm_scaling.recipes import Recipe
from timm_scaling.runs import (
    DIVERGED_FILE,
    RECIPE_FILE,
    RESULT_FILE,
    check_folder,
    finished_result,
    lock_run,
    resumes,
    run_folder,
)
from timm_scaling.train.building import Building
from timm_scaling.train.checkpoints import Checkpoints
from timm_scaling.train.finishing import Finishing
from timm_scaling.train.launch import NUM_PROCESSES_ENV, die_with_launcher, launched_world
from timm_scaling.train.logs import log, logger, rate
from timm_scaling.train.machine import mixed_precision
from timm_scaling.train.update import Updating, evaluate


def train(
    recipe: Recipe,
    output: str | os.PathLike = "runs",
    resume: bool = False,
    num_processes: int | None = None,
    cpu: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` into its run folder under ``output``; returns result.json's content.

    A finished run folder (result.json exists) is not trained again. ``progress``: a progress
    bar per epoch; None: when stderr is a terminal (elsewhere, log lines that a file can hold);
    False also for a sweep's parallel jobs, whose bars would draw over each other.
    """
    # One process trains a run folder at a time: the launching process (or rank 0 where
    # `accelerate launch` started the workers itself) holds its lock.
    owner = os.environ.get("RANK", "0") == "0" and NUM_PROCESSES_ENV not in os.environ
    die_with_launcher()  # a worker of `launch`: it ends with its launcher
    with lock_run(run_folder(output, recipe)) if owner else nullcontext():
        result = finished_result(output, recipe, resume, log.info, put_back=owner)
        if result is not None:
            return result
        resume = resumes(run_folder(output, recipe), resume)
        trainer = Trainer(
            recipe, output, resume=resume, num_processes=num_processes, cpu=cpu, progress=progress
        )
        return trainer.fit()


class Trainer(Building, Updating, Checkpoints, Finishing):
    """One run: the model, optimizer, schedule and data of a recipe, prepared by Accelerate.

    Build it, then call :meth:`fit`. ``model`` is the prepared model; ``unwrapped`` the timm
    model inside it (where forward hooks go).
    """

    def __init__(
        self,
        recipe: Recipe,
        output: str | os.PathLike = "runs",
        resume: bool = False,
        num_processes: int | None = None,
        cpu: bool = False,
        progress: bool | None = None,
    ) -> None:
        self.recipe, self.output, self.resume = recipe, Path(output), resume
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.folder = run_folder(output, recipe)
        self.trackers = trackers.require(recipe.log_with)  # before anything is built
        # Started as one of N processes by torchrun or `accelerate launch` on a machine with no
        # GPU: they train together over gloo, as `--num-processes N` does (Accelerate would set
        # up each alone, and each would train the whole run into the same folder).
        cpu = cpu or (launched_world() > 1 and not torch.cuda.is_available())
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=mixed_precision(recipe, cpu),
            dynamo_plugin=TorchDynamoPlugin(
                backend="inductor" if recipe.compile else "no", mode=recipe.compile_mode
            ),
            log_with=self.trackers or None,
            project_dir=self.folder,
            # A CUDA graph replays autocast's casts; its cache would outlive the capture.
            kwargs_handlers=[AutocastKwargs(cache_enabled=False)] if recipe.cuda_graph else None,
        )
        self._check_processes(num_processes)
        check_folder(self.folder, self.recipe, self.resume)
        self._build()

    def _check_processes(self, asked: int | None) -> None:
        world = self.accelerator.num_processes
        expected = asked or int(os.environ.get(NUM_PROCESSES_ENV) or launched_world())
        if world != expected:
            raise UserError(
                f"asked for {expected} processes but found {world}; launch with "
                "`timm-scaling train --num-processes N` or accelerate launch --multi_gpu"
            )
        self.recipe.check_processes(world)
        logger.info(
            f"world size {world} ({self.accelerator.distributed_type}), "
            f"device {self.accelerator.device}, mixed precision {self.accelerator.mixed_precision}"
        )

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """The model evaluated each epoch: the EMA of the weights where the recipe has one."""
        return self.ema.module if self.ema is not None else self.unwrapped

    def evaluate(self, batches=None) -> dict[str, float]:
        """Top-1 and top-5 of :attr:`evaluated_model` on ``batches`` (the validation set's by
        default), through evaluation's CUDA graphs where the recipe has ``cuda_graph``."""
        batches = self.val_batches if batches is None else batches
        return evaluate(self.evaluated_model, batches, self.accelerator, self.static_forward)

    def fit(self, history: list[dict[str, float]] | None = None) -> dict[str, Any]:
        """Train the remaining epochs, checkpointing each; write the results; return result.json.
        ``history``: what :meth:`begin` returned, where it was called already."""
        history = self.begin() if history is None else history
        for epoch in range(len(history), self.recipe.epochs):
            started = self.start_epoch()
            self.end_epoch(epoch, self.train_epoch(epoch), started, history)
        return self._finish(history)

    def begin(self) -> list[dict[str, float]]:
        """The epochs trained before (from the last checkpoint, resuming), the recipe written
        and the trackers started."""
        recipe, accelerator = self.recipe, self.accelerator
        history = self._load_checkpoint() if self.resume else []
        if accelerator.is_main_process and not (self.folder / RESULT_FILE).exists():
            # A finished run continued for more epochs keeps its recipe and result until the
            # longer run replaces them as it finishes.
            (self.folder / DIVERGED_FILE).unlink(missing_ok=True)  # of an earlier attempt
            recipe.write(self.folder / RECIPE_FILE)
        accelerator.init_trackers(
            trackers.PROJECT,
            config=trackers.hparams(recipe.to_dict() | {"lr": recipe.peak_lr}),
            init_kwargs=trackers.init_kwargs(self.trackers, self.folder.name),
        )
        return history

    def start_epoch(self) -> float:
        """The epoch's start time; its peak memory counted from here."""
        if self.accelerator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.accelerator.device)
        return time.perf_counter()

    def end_epoch(
        self, epoch: int, stats: dict[str, float], started: float, history: list[dict]
    ) -> None:
        """Evaluate the epoch's model, log the epoch, add it to ``history`` and checkpoint."""
        recipe, accelerator = self.recipe, self.accelerator
        if accelerator.num_processes > 1:  # each replica's BatchNorm saw its own batches
            distribute_bn(self.unwrapped, accelerator.num_processes, reduce=True)
        scores = self.evaluate()
        bad = scores.pop("nonfinite_images")
        if bad:  # the weights (or BatchNorm's statistics) went bad after the last loss counted
            self.stop_diverged(
                f"the evaluated model's outputs hold nan or inf for {bad} of "
                f"{scores['eval_images']} validation images after epoch {epoch + 1} of "
                f"{self.folder}"
            )
        stats.update(scores)
        stats["epoch_s"] = time.perf_counter() - started
        stats["peak_mem_mb"] = self._peak_memory()
        history.append(stats)
        logger.info(
            f"epoch {epoch + 1}/{recipe.epochs}: loss {stats['loss']:.4f} "
            f"top1 {stats['top1']:.2f} top5 {stats['top5']:.2f} "
            f"({rate(stats['samples_per_s'])} images/s)"
        )
        accelerator.log(
            {
                "epoch": epoch + 1,
                "val/top1": stats["top1"],
                "val/top5": stats["top5"],
                "epoch/loss": stats["loss"],
                "epoch/lr": stats["lr"],
                "epoch/images_per_s": stats["samples_per_s"],
            },
            step=self.num_updates,
        )
        self._save_checkpoint(history)

    def train_epoch(
        self, epoch: int, max_updates: int | None = None, seconds: float | None = None
    ) -> dict[str, float]:
        """One epoch of updates, or its first ``max_updates``, or those begun within ``seconds``
        (a plan's measurement: one process only, where no other process must keep step)."""
        tally = self.tally(epoch)
        bar = tqdm(
            itertools.islice(self.train_batches, max_updates),
            desc=f"epoch {epoch + 1}/{self.recipe.epochs}",
            total=min(len(self.train_batches), max_updates or len(self.train_batches)),
            leave=False,
            disable=not self.progress,
        )
        for images, labels in bar:
            batch = self.prepared(images, labels)
            if batch is None:
                continue
            lr = self.optimizer.param_groups[0]["lr"]  # this update's
            self.count(tally, self._update(*batch), len(batch[1]), lr)
            if seconds is not None and time.perf_counter() - tally.started >= seconds:
                break
        return self.epoch_stats(tally)
