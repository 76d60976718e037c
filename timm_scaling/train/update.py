"""The updates of an epoch: micro-batches, the out-of-memory split, CUDA graphs' gradients,
the finer history and divergence; and evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from accelerate import Accelerator

from timm_scaling.errors import LossNotFinite
from timm_scaling.runs import latest_checkpoint, mark_diverged, what_is_kept
from timm_scaling.train.logs import logger, rate
from timm_scaling.train.machine import is_out_of_memory, peak_memory_mb

# The finer history (steps.jsonl): lr and training loss about this many times an epoch.
HISTORY_POINTS = 20
# Without progress bars (stderr not a terminal): a log line every this many updates in epochs
# longer than that (timm's train.py default), besides the line of each epoch.
LOG_INTERVAL = 50
# A point of the finer history whose loss is this many times the run's first has diverged (a
# too-high lr: losses of 1e9 while top-1 falls to chance), as a nan or inf has.
DIVERGED_FACTOR = 100


def evaluate(
    model: torch.nn.Module,
    batches,
    accelerator: Accelerator,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 (%) over every process's shard; ``images`` counts each image once;
    ``nonfinite_images`` those whose logits hold a nan or inf (a diverged model: topk ranks a
    nan first, so its top-1 would be class 0's share, a number that looks like a result).
    ``forward(model, images)``: the logits another way (a CUDA graph's) than ``model(images)``."""
    model.eval()
    counts = torch.zeros(4, dtype=torch.long, device=accelerator.device)
    with torch.no_grad(), accelerator.autocast():
        for images, labels in batches:
            logits = forward(model, images) if forward is not None else model(images)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            counts[0] += hits[:, 0].sum()
            counts[1] += hits.any(dim=1).sum()
            counts[2] += len(labels)
            counts[3] += (~logits.isfinite()).any(dim=1).sum()
    top1, top5, images, nonfinite = accelerator.reduce(counts, reduction="sum").tolist()
    return {
        "top1": 100 * top1 / images,
        "top5": 100 * top5 / images,
        "eval_images": images,
        "nonfinite_images": nonfinite,
    }


class Window:
    """The updates of one epoch: their loss summed on the device (no host sync per update) and
    their images, in all and since the last point of the finer history."""

    def __init__(self, epoch: int, updates: int, device: torch.device) -> None:
        self.epoch, self.updates = epoch, updates
        self.stride = max(1, updates // HISTORY_POINTS)
        self.loss, self.images = torch.zeros((), device=device), 0
        self.total_loss, self.total_images = torch.zeros((), device=device), 0
        self.done = self.logged = self.epoch_images = 0  # updates, and images over processes
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> bool:
        """Count one update; True when a point of the history is due."""
        self.done += 1
        self.loss += loss
        self.images += images
        self.total_loss += loss
        self.total_images += images
        return self.done % self.stride == 0 or self.done == self.updates

    def restart(self, images_over_processes: int) -> None:
        self.loss, self.images = torch.zeros_like(self.loss), 0
        self.epoch_images += images_over_processes

    def log_due(self) -> bool:
        """A log line every LOG_INTERVAL updates of a longer epoch, but at its end (the
        epoch's own line)."""
        if self.done == self.updates or self.done - self.logged < LOG_INTERVAL:
            return False
        self.logged = self.done
        return True

    def rate(self) -> float:
        return self.epoch_images / (time.perf_counter() - self.started)


class Updating:
    """The updates of :class:`~timm_scaling.train.Trainer`: one optimizer step over a batch's
    micro-batches, and a point of the finer history.

    ``measuring``: a plan's trainer, which times the updates whatever their loss; a divergence
    is kept in ``diverged`` (its message) instead of stopping the run."""

    measuring = False
    diverged: str | None = None

    def tally(self, epoch: int) -> Window:
        """Start counting epoch ``epoch``'s updates: the model in training mode, its batches."""
        self.model.train()
        self.train_batches.set_epoch(epoch)
        return Window(epoch, len(self.train_batches), self.accelerator.device)

    def prepared(self, images: torch.Tensor, labels: torch.Tensor):
        """The batch as the update takes it: timm's Mixup / CutMix into soft targets, where the
        recipe has them. Mixup pairs images up: an odd batch (an epoch's last) drops its last
        image, and a batch of one image is no batch (None; the same on every process)."""
        if self.mixup is None:
            return images, labels
        even = len(labels) // 2 * 2
        return self.mixup(images[:even], labels[:even]) if even else None

    def count(self, tally: Window, loss: torch.Tensor, images: int, lr: float) -> None:
        """Count one update of ``images`` whose summed loss is ``loss`` at ``lr``."""
        if tally.add(loss, images):
            self._history_point(tally, lr)

    def epoch_stats(self, tally: Window) -> dict[str, float]:
        """The epoch's loss and speed over every process (one host sync)."""
        images = torch.tensor(float(tally.total_images), device=tally.total_loss.device)
        totals = torch.stack([tally.total_loss, images])
        loss, count = self.accelerator.reduce(totals, reduction="sum").tolist()
        seconds = time.perf_counter() - tally.started
        if not math.isfinite(loss):
            self._diverged(tally.epoch, loss)
        return {
            "epoch": tally.epoch + 1,
            "loss": loss / count,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_images": int(count),
            "train_s": seconds,
            "samples_per_s": count / seconds,
        }

    def _history_point(self, window: Window, lr: float) -> None:
        """One point of the finer history: the mean loss of the updates since the last point,
        over every process (the only host sync in an epoch's updates), and this update's lr."""
        images = torch.tensor(float(window.images), device=window.loss.device)
        loss, images = self.accelerator.reduce(torch.stack([window.loss, images]), "sum").tolist()
        before = self.steps[-1]["images"] if self.steps else 0
        point = {
            "update": self.num_updates,
            "epoch": window.epoch + window.done / window.updates,
            "images": before + int(images),
            "lr": lr,
            "loss": loss / images,
        }
        bound = DIVERGED_FACTOR * self.steps[0]["loss"] if self.steps else math.inf
        if not math.isfinite(point["loss"]) or point["loss"] > bound:
            self._diverged(window.epoch, point["loss"])
        self.steps.append(point)
        self.accelerator.log({"train/loss": point["loss"], "train/lr": lr}, step=self.num_updates)
        window.restart(int(images))
        if not self.progress and window.log_due():
            logger.info(
                f"epoch {window.epoch + 1}/{self.recipe.epochs} "
                f"[{window.done}/{window.updates} updates]: loss {point['loss']:.4f} "
                f"lr {lr:.3g} ({rate(window.rate())} images/s)"
            )

    def _peak_memory(self) -> float | None:
        """This epoch's peak memory (training and evaluation) of the busiest process."""
        device = self.accelerator.device
        peak = peak_memory_mb(device)
        if peak is None:
            return None
        return self.accelerator.gather(torch.tensor([peak], device=device)).max().item()

    def _diverged(self, epoch: int, loss: float) -> None:
        reason = (
            f"over {DIVERGED_FACTOR}x its first, {self.steps[0]['loss']:.3g}"
            if math.isfinite(loss)
            else "not a number"
        )
        self.stop_diverged(
            f"training loss is {loss:.4g} in epoch {epoch + 1} of {self.folder} ({reason})"
        )

    def stop_diverged(self, what: str) -> None:
        """Stop the run (a plan's: note it and go on): ``what`` says how it diverged."""
        if self.measuring:
            self.diverged = self.diverged or what
            return
        again = "train again"
        if latest_checkpoint(self.folder) is not None:  # resumed, it would go on at the old lr
            again += f" into another --output, or delete {self.folder} first"
        err = LossNotFinite(
            f"{what}: the run diverged; {what_is_kept(self.folder)}; no result was written; "
            f"lower --lr (or raise opt_eps) and {again}",
            what,
        )
        if self.accelerator.is_main_process:
            mark_diverged(self.folder, err)
        raise err

    def _update(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimizer update; returns the summed loss of its images."""
        if self.static_step is not None:
            loss_sum = self._static_update(images, labels)
        else:
            loss_sum = self._split_update(images, labels)
            self.step_optimizer()
        self.advance()
        return loss_sum

    def step_optimizer(self, zero_grad: bool = True) -> None:
        """The optimizer step on the gradients there are, then the EMA. ``zero_grad=False``:
        the gradients stay (a CUDA graph's, which its backward writes afresh each replay)."""
        self.optimizer.step()
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.unwrapped, step=self.num_updates + 1)

    def advance(self) -> None:
        """One update done: the schedule's lr for the next."""
        self.num_updates += 1
        self.scheduler.step_update(num_updates=self.num_updates)
        if self.static_step is not None:
            self.static_step.sync_lr()

    def _static_update(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The update as one CUDA graph (the optimizer step and EMA included); out of memory
        before the capture, the update in micro-batches without it from now on."""
        try:
            return self.static_step(images, labels)
        except RuntimeError as err:
            if not is_out_of_memory(err) or self.static_step.graph is not None:
                raise
        self.optimizer.zero_grad(set_to_none=True)
        self.static_step = None
        logger.warning("cuda_graph: out of memory before the capture; training without it")
        loss_sum = self._split_update(images, labels)
        self.step_optimizer()
        return loss_sum

    def _split_update(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Forward and backward in micro-batches, the gradients summed. On out-of-memory, split
        the batch into twice as many micro-batches and redo it."""
        while True:
            try:
                loss_sum = self._accumulate(images, labels)
                break
            except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
                if not is_out_of_memory(err) or self.micro_batches >= len(labels):
                    raise
            # Outside the except block, so the failed attempt's activations are freed.
            self._out_of_memory(len(labels))
        return loss_sum

    def _accumulate(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        parts = list(
            zip(
                images.tensor_split(self.micro_batches),
                labels.tensor_split(self.micro_batches),
                strict=True,
            )
        )
        loss_sum = torch.zeros((), device=images.device)
        for i, (x, y) in enumerate(parts):
            # Gradients are all-reduced once per update, on the last micro-batch.
            sync = i == len(parts) - 1
            if self.cuda_graphs:  # a new step: the graphs may reuse the last one's memory
                torch.compiler.cudagraph_mark_step_begin()
            with nullcontext() if sync else self.accelerator.no_sync(self.model):
                loss = self.criterion(self.model(x), y)
                self.accelerator.backward(loss * (len(y) / len(labels)))
            loss_sum += loss.detach().float() * len(y)
            if self.cuda_graphs and i == 0 and not sync:
                self._own_gradients()
        return loss_sum

    def _own_gradients(self) -> None:
        """Copy the gradients out of the CUDA graphs' memory. The first micro-batch's .grad
        tensors are the backward graph's outputs, which its next replay overwrites; later
        micro-batches then add into these copies."""
        for param in self.model.parameters():
            if param.grad is not None:
                param.grad = param.grad.clone()

    def _out_of_memory(self, batch: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.device.type == "cuda":
            torch.cuda.empty_cache()
        before, self.micro_batches = self.micro_batches, self.micro_batches * 2
        logger.warning(
            f"out of memory at micro-batches of ~{-(-batch // before)} images (process "
            f"{self.accelerator.process_index}): now {self.micro_batches} micro-batches of "
            f"~{-(-batch // self.micro_batches)} per update; the update is unchanged",
            main_process_only=False,
        )
