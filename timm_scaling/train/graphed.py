"""The whole update as one CUDA graph, and evaluation's forward as another (recipe key
``cuda_graph``, issue 21).

At 32 px a GPU waits on the CPU launching a step's thousands of small kernels. Here the whole
update, forward, backward, the optimizer step (the lr read from a device tensor) and the EMA,
is captured once as a CUDA graph and then replayed each update, as PyTorch's "whole network
capture" does: one launch instead of thousands, and no host sync. Each batch is copied into
the graph's static input; the schedule's lr into its device tensor.

The first ``WARMUP_UPDATES`` updates run eagerly on a side stream (the optimizer's state, the
EMA's first copy and cuDNN's autotuning exist before the capture), and are real updates. On a
CPU there is no graph: the same static step runs eagerly, so a recipe trains the same updates
on either device (with the same full batches: the train data drops a last partial batch).

Evaluation replays graphs of its own (:class:`StaticForward`): one per evaluated model and
batch shape, each captured at its second batch of that shape (the first runs eagerly, as
the capture needs), so an epoch's last, smaller batch gets one too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from timm_scaling.errors import first_line
from timm_scaling.train.logs import logger

# Eager updates before the capture (PyTorch's CUDA graph examples warm up with three).
WARMUP_UPDATES = 3


class StaticStep:
    """One optimizer update of a full batch of :class:`~timm_scaling.train.Trainer`; captured
    as a CUDA graph where ``capture`` (a GPU), run eagerly elsewhere."""

    def __init__(self, trainer, capture: bool) -> None:
        self.trainer = trainer
        self.capture = capture
        device = trainer.accelerator.device
        groups = trainer.optimizer.param_groups
        self.lrs = [torch.tensor(float(group["lr"]), device=device) for group in groups]
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss_sum: torch.Tensor | None = None  # the graph's output
        self.warmup = WARMUP_UPDATES if capture else 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Update on this batch; returns the summed loss of its images (a new tensor)."""
        if self.inputs is None:  # static buffers in the batch's shape and memory format
            self.inputs = (images.clone(), labels.clone())
        else:
            self.inputs[0].copy_(images)
            self.inputs[1].copy_(labels)
        if self.graph is None and self.warmup == 0 and self.capture:
            try:
                self._capture()
            except RuntimeError as err:  # nothing ran: the update is done eagerly below
                logger.warning(f"cuda_graph: the capture failed ({first_line(err)}); eager now")
                self.capture = False
                self.trainer.optimizer.zero_grad(set_to_none=True)
        if self.graph is not None:
            self.graph.replay()
            return self.loss_sum.clone()
        self.warmup = max(0, self.warmup - 1)
        with self._side_stream():
            return self._step(capturing=False)

    def sync_lr(self) -> None:
        """The lr the schedule just set (floats in the param groups) into the device tensors
        the graph reads: a fill each, no host sync."""
        for group, lr in zip(self.trainer.optimizer.param_groups, self.lrs, strict=True):
            lr.fill_(group["lr"])

    def _step(self, capturing: bool) -> torch.Tensor:
        trainer = self.trainer
        images, labels = self.inputs
        loss = trainer.criterion(trainer.model(images), labels)
        trainer.accelerator.backward(loss)
        with self._tensor_lr():  # the EMA's decay is a constant after its first update
            trainer.step_optimizer(zero_grad=not capturing)
        return loss.detach().float() * len(labels)

    def _capture(self) -> None:
        self.trainer.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.loss_sum = self._step(capturing=True)
        self.graph = graph

    @contextmanager
    def _tensor_lr(self) -> Iterator[None]:
        """The param groups read the lr from the device tensors while the optimizer steps."""
        groups = self.trainer.optimizer.param_groups
        floats = [group["lr"] for group in groups]
        for group, lr in zip(groups, self.lrs, strict=True):
            group["lr"] = lr
        try:
            yield
        finally:
            for group, value in zip(groups, floats, strict=True):
                group["lr"] = value

    def _side_stream(self):
        """Warm-up updates on a side stream, as a capture needs (CPU: no streams)."""
        if self.trainer.accelerator.device.type != "cuda":
            return nullcontext()
        return _on_side_stream()


class StaticForward:
    """Evaluation's forward (no gradients) as CUDA graphs where ``capture`` (a GPU), separate
    from the update's; elsewhere, and after a capture fails, the model's own forward."""

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        # (model, shape, dtype) -> the graph, its static input and its logits
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.warm: set[tuple] = set()

    def __call__(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``model(images)``'s logits (a tensor of their own)."""
        if not self.capture:
            return model(images)
        key = (id(model), tuple(images.shape), images.dtype)
        if key not in self.warm:  # cuDNN's autotuning, before any capture of this shape
            self.warm.add(key)
            with _on_side_stream():
                return model(images)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(model, images)
            except RuntimeError as err:  # nothing ran: the forward is done eagerly
                logger.warning(f"cuda_graph: evaluation's capture failed ({first_line(err)})")
                self.capture = False
                return model(images)
        graph, static_input, logits = self.graphs[key]
        static_input.copy_(images)
        graph.replay()
        return logits.clone()

    @staticmethod
    def _capture(model: torch.nn.Module, images: torch.Tensor):
        static_input = images.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = model(static_input)
        return graph, static_input, logits


@contextmanager
def _on_side_stream() -> Iterator[None]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream().wait_stream(stream)
