"""Seeds fused in one process (``sweep --fuse-seeds``, issue 21).

The runs of one configuration that differ only in their seed train as one vmapped step
(:class:`timm_scaling.fused.FusedSeeds`): one forward and backward computes every seed's
gradients, where N separate runs would launch N times the kernels. Each seed is still a whole
:class:`~timm_scaling.train.Trainer` of its own, with its folder and lock, data order, optimizer,
schedule, EMA, checkpoints, result and report row; its parameters and buffers are views into
the stacked tensors, so its own optimizer steps its own slice. A run folder so trained is an
ordinary run: resumed alone or fused, reported and exported as any other.

Each update applies every seed's step; a seed that diverges stops (its folder keeps its last
checkpoint) while the others train on, and its error is raised when they have finished.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from accelerate.utils import tqdm

from timm_scaling.errors import UserError
from timm_scaling.fused import FusedSeeds
from timm_scaling.recipes import Recipe
from timm_scaling.runs import finished_result, lock_run, run_folder
from timm_scaling.seed_groups import check_fusable
from timm_scaling.train.logs import log, logger
from timm_scaling.train.machine import is_out_of_memory
from timm_scaling.train.trainer import Trainer, train
from timm_scaling.train.update import LossNotFinite


def share(fused: FusedSeeds, models: Sequence[torch.nn.Module]) -> None:
    """Each model's parameters and buffers become its slice of ``fused``'s stacked tensors: its
    own optimizer then steps its slice, and its own forward (evaluation) sees the fused step's
    updates."""
    for i, model in enumerate(models):
        for name, param in model.named_parameters():
            param.data = fused.params[name].data[i]
        for name, buffer in model.named_buffers():
            buffer.data = fused.buffers[name][i]


def take_gradients(fused: FusedSeeds, i: int, model: torch.nn.Module) -> None:
    """Seed ``i``'s slice of the fused gradients as ``model``'s own (after :func:`share`)."""
    for name, param in model.named_parameters():
        param.grad = fused.params[name].grad[i]


def train_fused(
    recipes: Sequence[Recipe], output: str | os.PathLike, progress: bool | None = False
) -> list[dict[str, Any]]:
    """Train ``recipes`` (the seeds of one configuration) into their run folders under
    ``output``, resuming each, fused into one step; returns their result.json contents in
    order. A run finished before is not trained again (its lost report row is put back)."""
    with ExitStack() as stack:
        for recipe in recipes:
            stack.enter_context(lock_run(run_folder(output, recipe)))
        results: dict[int, dict[str, Any]] = {}
        todo: list[int] = []
        for i, recipe in enumerate(recipes):
            done = finished_result(output, recipe, True, log.info, put_back=True)
            if done is None:
                todo.append(i)
            else:
                results[i] = done
        if len(todo) == 1:
            results[todo[0]] = train(recipes[todo[0]], output, resume=True, progress=progress)
        elif todo:
            fused = FusedRun([recipes[i] for i in todo], output, progress)
            results.update(zip(todo, fused.fit(), strict=True))
        return [results[i] for i in range(len(recipes))]


class FusedRun:
    """The trainers of several seeds of one configuration, stepped together."""

    def __init__(
        self, recipes: Sequence[Recipe], output: str | os.PathLike, progress: bool | None
    ) -> None:
        for recipe in recipes:
            check_fusable(recipe)
        self.trainers = [Trainer(r, output, resume=True, progress=False) for r in recipes]
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.diverged: dict[int, LossNotFinite] = {}

    def fit(self) -> list[dict[str, Any]]:
        histories = [trainer.begin() for trainer in self.trainers]
        if len({len(history) for history in histories}) > 1:  # killed between their checkpoints
            logger.warning(
                "the seeds' checkpoints are at different epochs: training them one by one"
            )
            return [t.fit(h) for t, h in zip(self.trainers, histories, strict=True)]
        models = [trainer.unwrapped for trainer in self.trainers]
        fused = FusedSeeds(models)
        share(fused, models)
        logger.info(f"{len(self.trainers)} seeds fused into one step")
        recipe = self.trainers[0].recipe
        for epoch in range(len(histories[0]), recipe.epochs):
            live = [i for i in range(len(self.trainers)) if i not in self.diverged]
            if not live:
                break
            starts = {i: self.trainers[i].start_epoch() for i in live}
            stats = self._epoch(fused, epoch, live)
            for i, epoch_stats in stats.items():
                try:
                    self.trainers[i].end_epoch(epoch, epoch_stats, starts[i], histories[i])
                except LossNotFinite as err:  # its evaluation: nan or inf outputs
                    self._stop(i, err)
        results = [
            t._finish(h)
            for i, (t, h) in enumerate(zip(self.trainers, histories, strict=True))
            if i not in self.diverged
        ]
        if self.diverged:
            raise next(iter(self.diverged.values()))
        return results

    def _epoch(self, fused: FusedSeeds, epoch: int, live: list[int]) -> dict[int, dict]:
        trainers = self.trainers
        tallies = {i: trainers[i].tally(epoch) for i in live}
        first = trainers[live[0]]
        bar = tqdm(
            zip(*(trainer.train_batches for trainer in trainers), strict=True),
            desc=f"epoch {epoch + 1}/{first.recipe.epochs} ({len(live)} seeds fused)",
            total=len(first.train_batches),
            leave=False,
            disable=not self.progress,
        )
        for batches in bar:
            prepared = [t.prepared(*batch) for t, batch in zip(trainers, batches, strict=True)]
            if prepared[0] is None:  # a batch of one image under Mixup: the same for every seed
                continue
            lrs = [trainer.optimizer.param_groups[0]["lr"] for trainer in trainers]
            losses = self._backward(fused, prepared, first)
            for i in list(tallies):
                self._step(fused, i, tallies, losses[i], len(prepared[i][1]), lrs[i])
            for stacked in fused.params.values():
                stacked.grad = None
            if not tallies:
                break
        stats = {}
        for i, tally in tallies.items():
            try:
                stats[i] = trainers[i].epoch_stats(tally)
            except LossNotFinite as err:
                self._stop(i, err)
        return stats

    @staticmethod
    def _backward(fused: FusedSeeds, prepared: list, first: Trainer) -> torch.Tensor:
        images = torch.stack([batch[0] for batch in prepared])
        labels = torch.stack([batch[1] for batch in prepared])
        try:
            with first.accelerator.autocast():
                return fused.backward(images, labels, first.criterion)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
        raise UserError(
            f"{len(prepared)} fused seeds of {first.recipe.model} ran out of memory at "
            f"{len(prepared[0][1])} images each; train without --fuse-seeds (each run then "
            "splits its batch as it needs), or with a smaller --batch-size"
        )

    def _step(self, fused, i: int, tallies: dict, loss, images: int, lr: float) -> None:
        """Seed ``i``'s optimizer step on its slice of the gradients, then its count."""
        trainer = self.trainers[i]
        take_gradients(fused, i, trainer.unwrapped)
        trainer.step_optimizer()
        trainer.advance()
        try:
            trainer.count(tallies[i], loss.float() * images, images, lr)
        except LossNotFinite as err:
            self._stop(i, err)
            del tallies[i]

    def _stop(self, i: int, err: LossNotFinite) -> None:
        """Seed ``i`` diverged: it trains no more, the others go on."""
        logger.warning(f"seed {self.trainers[i].recipe.seed} stops: {err}")
        self.diverged[i] = err
