"""The training loop: one recipe -> one run folder (see timm_scaling.runs), on Accelerate.

Runs on a CPU, one GPU or many processes. Batches: ``recipe.batch_size`` images make one
optimizer update, summed over processes and micro-batches. Each process takes
``batch_size / world_size`` of them and splits them into micro-batches (``grad_accum`` at first,
twice as many after each out-of-memory fallback); each micro-batch's loss is weighted by its
share of the batch, so the update's gradient is the mean over the batch whatever the split
(BatchNorm, which normalises per micro-batch, excepted).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from accelerate import Accelerator
from accelerate.logging import MultiProcessAdapter
from accelerate.state import PartialState
from accelerate.utils import TorchDynamoPlugin, gather_object, set_seed, tqdm
from timm.optim import create_optimizer_v2, get_optimizer_class
from timm.scheduler import StepLRScheduler
from timm.utils import ModelEmaV3, distribute_bn

import timm_scaling
from timm_scaling import data, trackers
from timm_scaling.catalog import create_model
from timm_scaling.errors import UserError
from timm_scaling.models import export, scaling_of
from timm_scaling.recipes import Recipe, kwargs_text
from timm_scaling.report import atomic_write, put_row, umask_mode
from timm_scaling.runs import (
    CHECKPOINTS,
    LATEST,
    METRICS_FILE,
    MODEL_DIR,
    RECIPE_FILE,
    REPORT_FILE,
    RESULT_FILE,
    STATE_FILE,
    STEPS_FILE,
    check_folder,
    checkpoint_state,
    ensure_row,
    finished,
    latest_checkpoint,
    lock_run,
    read_result,
    run_folder,
)


class _ProcessLog(MultiProcessAdapter):
    """Accelerate's logger (the main process only, by default), with its ``[RANK k]`` prefix
    only where there are several processes."""

    def process(self, msg, kwargs):
        if PartialState().num_processes > 1:
            return super().process(msg, kwargs)
        return msg, {"stacklevel": 2, **kwargs}


logger = _ProcessLog(logging.getLogger(__name__), {})
log = logging.getLogger(__name__)  # before an Accelerator exists
# Accelerate logs four or five lines per save_state or load_state; the trainer logs one.
for _name in ("accelerate.accelerator", "accelerate.checkpointing"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# Set by `launch` for its workers: the process count they must find themselves in.
NUM_PROCESSES_ENV = "TIMM_SCALING_NUM_PROCESSES"
# The finer history (steps.jsonl): lr and training loss about this many times an epoch.
HISTORY_POINTS = 20
# Without progress bars (stderr not a terminal): a log line every this many updates in epochs
# longer than that (timm's train.py default), besides the line of each epoch.
LOG_INTERVAL = 50
# A point of the finer history whose loss is this many times the run's first has diverged (a
# too-high lr: losses of 1e9 while top-1 falls to chance), as a nan or inf has.
DIVERGED_FACTOR = 100
# torch.compile modes that replay CUDA graphs on a GPU.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class LossNotFinite(UserError):
    """The training loss became nan or inf, or grew DIVERGED_FACTOR times its first value: the
    run stops, its last good checkpoint is kept, no result is written."""

    exit_code = 3


# How an allocation failure reads when a library other than torch's allocator hits it.
OUT_OF_MEMORY = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError that says so (cuBLAS, cuDNN, CPU allocators)."""
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(marker in text for marker in OUT_OF_MEMORY)
    )


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer: equal on every replica of a healthy run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def peak_memory_mb(device: torch.device) -> float | None:
    """CUDA: the peak memory allocated by tensors since the last reset, in MiB. Elsewhere None:
    a CPU process's resident set counts the interpreter and its libraries, not the training."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def optimizer_speedups(name: str, device: torch.device) -> dict[str, bool]:
    """On a GPU, one fused kernel (torch's AdamW, SGD) or a few multi-tensor kernels (timm's
    rmsproptf, where this timm has them) per step for all parameters, not a kernel each."""
    if device.type != "cuda":
        return {}
    accepted = inspect.signature(get_optimizer_class(name, bind_defaults=False)).parameters
    for option in ("fused", "foreach"):
        if option in accepted:
            return {option: True}
    return {}


def set_grad_checkpointing(model: torch.nn.Module, name: str) -> None:
    """timm's activation checkpointing: blocks recompute their activations in backward."""
    try:
        model.set_grad_checkpointing(True)
    except (AttributeError, AssertionError, NotImplementedError):
        raise UserError(
            f"grad_checkpointing: timm's {name} does not support it; "
            "--set grad_checkpointing=false (or lower batch_size, or raise grad_accum)"
        ) from None


# Training memory of one image on a CPU, in bytes per activation of the model's forward pass
# (the cost's macts): measured 3.2 x 4 bytes for EfficientNet-B0 and 2.0 x 4 for ResNet-50 at
# 224 px, in float32; taken as 4 x 4, with half the available memory for the batch.
CPU_BYTES_PER_ACTIVATION = 16
CPU_MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def cost_columns(recipe: Recipe, num_classes: int) -> dict[str, float]:
    """param_count, gmacs, gflops, macts of the model at the training image size and classes."""
    from timm_scaling.profile import measure_cost

    cost = measure_cost(recipe.model, recipe.image_size, num_classes, recipe.model_kwargs)
    return {key: cost[key] for key in ("param_count", "gmacs", "gflops", "macts")}


def check_model(recipe: Recipe) -> None:
    """The recipe's model exists and runs at its image size (a one-line error if not): counted
    on the meta device, cached, in a moment."""
    cost_columns(recipe, data.num_classes(recipe.dataset, recipe.data_dir))


MULTIPLIERS = ("depth_mult", "width_mult", "res_mult")


def method_columns(model: str, ours: bool) -> dict[str, Any]:
    """A report row's method and multipliers: ours from the name; another timm model's method
    is its family (the frontier's rule), its multipliers empty."""
    if not ours:
        from timm_scaling.frontier import method_of

        return {"method": method_of(model), **dict.fromkeys(MULTIPLIERS)}
    scaling = scaling_of(model)
    multipliers = (scaling.depth, scaling.width, scaling.resolution)
    return {"method": scaling.method, **dict(zip(MULTIPLIERS, multipliers, strict=True))}


def evaluate(model: torch.nn.Module, batches, accelerator: Accelerator) -> dict[str, float]:
    """Top-1 and top-5 (%) over every process's shard; ``images`` counts each image once."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.long, device=accelerator.device)
    with torch.no_grad(), accelerator.autocast():
        for images, labels in batches:
            logits = model(images)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            counts[0] += hits[:, 0].sum()
            counts[1] += hits.any(dim=1).sum()
            counts[2] += len(labels)
    top1, top5, images = accelerator.reduce(counts, reduction="sum").tolist()
    return {"top1": 100 * top1 / images, "top5": 100 * top5 / images, "eval_images": images}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: Sequence[str], num_processes: int) -> int:
    """Run ``timm-scaling ARGS`` in ``num_processes`` processes with ``accelerate launch``.

    On a CPU, ``accelerate launch --cpu --num_processes N`` starts a single process; with
    ``ACCELERATE_USE_CPU=1`` and ``--multi_gpu`` it starts N, talking over gloo. The workers
    inherit this environment (PYTHONPATH included) and check their count. Returns their exit code.
    """
    gpus = torch.cuda.device_count()
    env = dict(os.environ, **{NUM_PROCESSES_ENV: str(num_processes)})
    if gpus == 0:
        env["ACCELERATE_USE_CPU"] = "1"
    elif gpus < num_processes:
        raise UserError(
            f"--num-processes {num_processes}: this machine has {gpus} GPU(s); "
            f"use --num-processes {gpus} or fewer"
        )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--quiet",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",  # the recipe's precision is passed to Accelerator, which takes precedence
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "timm_scaling",
        *args,
    ]
    log.info(f"launching {num_processes} processes: {' '.join(command)}")
    with subprocess.Popen(command, env=env) as launcher:
        try:
            return launcher.wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGINT to this process alone: stop the workers
            launcher.send_signal(signal.SIGINT)
            launcher.wait()
            raise


class _Window:
    """The updates of one epoch since the last point of the finer history: their loss summed
    on the device (no host sync per update) and their images."""

    def __init__(self, epoch: int, updates: int, like: torch.Tensor) -> None:
        self.epoch, self.updates = epoch, updates
        self.stride = max(1, updates // HISTORY_POINTS)
        self.loss, self.images = torch.zeros_like(like), 0
        self.done = self.logged = self.epoch_images = 0  # updates, and images over processes
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> bool:
        """Count one update; True when a point of the history is due."""
        self.done += 1
        self.loss += loss
        self.images += images
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
    with lock_run(run_folder(output, recipe)) if owner else nullcontext():
        done = finished(output, recipe, resume)
        if done is not None:
            log.info(f"{done} is finished (its {RESULT_FILE} exists): not retraining it")
            if owner and ensure_row(done, output):
                log.info(f"its row was missing from {Path(output) / REPORT_FILE}: put back")
            return read_result(done / RESULT_FILE)
        trainer = Trainer(
            recipe, output, resume=resume, num_processes=num_processes, cpu=cpu, progress=progress
        )
        return trainer.fit()


def _mixed_precision(recipe: Recipe, cpu: bool) -> str:
    if recipe.mixed_precision != "auto":
        return recipe.mixed_precision
    # bf16 autocast is slower than fp32 on CPUs without AMX.
    return "bf16" if torch.cuda.is_available() and not cpu else "no"


class Trainer:
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
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=_mixed_precision(recipe, cpu),
            dynamo_plugin=TorchDynamoPlugin(
                backend="inductor" if recipe.compile else "no", mode=recipe.compile_mode
            ),
            log_with=self.trackers or None,
            project_dir=self.folder,
        )
        self._check_processes(num_processes)
        check_folder(self.folder, self.recipe, self.resume)
        self._build()

    # -- set-up -------------------------------------------------------------------------------

    def _check_processes(self, asked: int | None) -> None:
        world = self.accelerator.num_processes
        expected = asked or int(os.environ.get(NUM_PROCESSES_ENV, world))
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

    def _build(self) -> None:
        recipe, accelerator = self.recipe, self.accelerator
        set_seed(recipe.seed)  # before the data split and the model's initialisation
        device = accelerator.device
        if device.type == "cuda":
            # Shapes repeat every update: cuDNN times its convolution algorithms once per shape
            # and keeps the fastest; fp32 matmuls (mixed_precision: no) use TF32, as timm's do.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
        self.num_classes = data.recipe_classes(recipe)
        # Measured first: an image size the network cannot take fails before any training.
        self.cost = cost_columns(recipe, self.num_classes)
        self.drop_rate = recipe.drop_rate
        if self.drop_rate is None:  # by the model's cost, as the paper's B0..B7
            from timm_scaling.profile import paper_dropout

            self.drop_rate = paper_dropout(self.cost["gmacs"])
            logger.info(
                f"drop_rate {self.drop_rate:.3f} (the paper's, at {self.cost['gmacs']:.3g} GMACs)"
            )
        model = create_model(
            recipe.model,
            recipe.image_size,
            self.num_classes,
            recipe.model_kwargs,
            drop_rate=self.drop_rate,
            drop_path_rate=recipe.drop_path_rate,
        )
        if recipe.bn_momentum is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.momentum = recipe.bn_momentum
        if recipe.grad_checkpointing:
            set_grad_checkpointing(model, recipe.model)
        # On the device before the optimizer exists: fused optimizers check where params live.
        model = model.to(device)
        if recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)
        extra = {"alpha": recipe.decay} if recipe.optimizer == "rmsproptf" else {}
        extra.update(optimizer_speedups(recipe.optimizer, device))
        optimizer = create_optimizer_v2(
            model,
            recipe.optimizer,
            lr=recipe.peak_lr,
            weight_decay=recipe.weight_decay,
            momentum=recipe.momentum,
            eps=recipe.opt_eps,
            **extra,
        )
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.unwrapped = accelerator.unwrap_model(self.model)
        # The timm model itself under torch.compile too (EMA, checksums and hooks want it).
        self.unwrapped = getattr(self.unwrapped, "_orig_mod", self.unwrapped)
        self.train_batches, self.val_batches = self._data(model.pretrained_cfg)
        updates_per_epoch = len(self.train_batches)
        self.scheduler = StepLRScheduler(
            self.optimizer,
            decay_t=recipe.lr_decay_epochs * updates_per_epoch,
            decay_rate=recipe.lr_decay_rate,
            warmup_t=round(recipe.warmup_epochs * updates_per_epoch),
            warmup_lr_init=recipe.warmup_lr,
            t_in_epochs=False,
        )
        logger.info(
            f"{recipe.model} at {recipe.image_size} px: {recipe.epochs} "
            f"epoch{'s' * (recipe.epochs != 1)} of {updates_per_epoch} "
            f"update{'s' * (updates_per_epoch != 1)} of {recipe.batch_size} images, "
            f"peak lr {recipe.lr_text()}"
        )
        if recipe.warmup_epochs > recipe.epochs:
            end = recipe.warmup_lr + (recipe.peak_lr - recipe.warmup_lr) * (
                recipe.epochs / recipe.warmup_epochs
            )
            logger.warning(
                f"warm-up ({recipe.warmup_epochs:g} epochs) is longer than the run "
                f"({recipe.epochs} epoch{'s' * (recipe.epochs > 1)}): the lr ends at "
                f"{end:.2g}, short of its peak {recipe.peak_lr:g}; --set warmup_epochs= less than "
                "the epochs"
            )
        self.ema = ModelEmaV3(self.unwrapped, decay=recipe.ema_decay) if recipe.ema else None
        if self.ema is not None:
            accelerator.register_for_checkpointing(self.ema)
        self.mixup = None
        if recipe.mixup or recipe.cutmix:  # label smoothing goes into Mixup's soft targets
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            self.mixup = Mixup(
                mixup_alpha=recipe.mixup,
                cutmix_alpha=recipe.cutmix,
                prob=recipe.mixup_prob,
                switch_prob=recipe.mixup_switch_prob,
                label_smoothing=recipe.label_smoothing,
                num_classes=self.num_classes,
            )
            self.criterion = SoftTargetCrossEntropy()
        else:
            self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.micro_batches = self._cpu_micro_batches(recipe.grad_accum)
        self.num_updates = 0
        self.steps: list[dict[str, float]] = []  # the finer history
        self.cuda_graphs = (
            recipe.compile and recipe.compile_mode in CUDA_GRAPH_MODES and device.type == "cuda"
        )

    def _cpu_micro_batches(self, asked: int) -> int:
        """On a CPU, where running out of memory is the kernel killing the process rather than an
        error to recover from, start with enough micro-batches for the memory there is: twice
        ``asked`` as often as the estimate (from the model's activations) says. A GPU starts
        at ``asked`` and falls back on its out-of-memory errors."""
        free = available_memory()
        if self.accelerator.device.type != "cpu" or free is None:
            return asked
        per_process = self.recipe.batch_size // self.accelerator.num_processes
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # processes sharing this memory
        allowed = free * CPU_MEMORY_SHARE / local
        per_image = self.cost["macts"] * 1e6 * CPU_BYTES_PER_ACTIVATION
        micro = asked
        while per_image * -(-per_process // micro) > allowed and micro < per_process:
            micro = min(micro * 2, per_process)
        if micro > asked:
            logger.warning(
                f"{per_process} images of {self.recipe.model} at {self.recipe.image_size} px "
                f"need ~{per_image * per_process / 2**30:.1f} GiB to train on this CPU, which "
                f"has {free / 2**30:.1f} GiB available: {micro} micro-batches of "
                f"~{-(-per_process // micro)} per update (the update is unchanged)"
            )
        return micro

    def _data(self, cfg: dict[str, Any]):
        """Train and val batches: on the device for in-memory data sets, else DataLoaders."""
        recipe, accelerator = self.recipe, self.accelerator
        world = accelerator.num_processes
        per_process = recipe.batch_size // world
        if not recipe.in_memory:
            return self._pipeline_data(cfg, per_process)
        batches = []
        for split, train, size, limit in (
            ("train", True, per_process, recipe.limit_train),
            ("val", False, recipe.eval_batch_size, recipe.limit_val),
        ):
            images = self._images(split, limit)
            batches.append(
                data.DeviceBatches(
                    images,
                    batch_size=size,
                    device=accelerator.device,
                    train=train,
                    seed=recipe.seed,
                    rank=accelerator.process_index,
                    world_size=world,
                    crop_padding=recipe.crop_padding,
                    hflip=recipe.hflip,
                    mean=cfg["mean"],
                    std=cfg["std"],
                    channels_last=recipe.channels_last,
                )
            )
        return batches

    def _images(self, split: str, limit: int | None) -> data.ImageSet:
        recipe = self.recipe
        if recipe.dataset != data.SYNTHETIC:
            return data.load_images(
                recipe.dataset, recipe.data_dir, recipe.image_size, split, limit
            )
        if recipe.data_dir is not None and split == "train":
            logger.warning(
                f"dataset synthetic makes random images: data_dir {recipe.data_dir} is not used"
            )
        size = recipe.synthetic_train_size if split == "train" else recipe.synthetic_val_size
        return data.synthetic(
            min(size, limit or size),
            recipe.image_size,
            recipe.synthetic_classes,
            recipe.seed,
            split,
            self.accelerator.device,
        )

    def _pipeline_data(self, cfg: dict[str, Any], per_process: int):
        """Train and val batches of data read through timm's pipeline (folder, tar, streamed):
        DataLoaders of uint8 images, sharded by Accelerate (timm's streamed readers shard
        themselves), normalised on the device."""
        from timm_scaling import pipeline

        recipe, accelerator = self.recipe, self.accelerator
        config = pipeline.data_config(recipe, cfg)
        normalizer = data.Normalizer(
            config["mean"], config["std"], accelerator.device, recipe.channels_last
        )
        batches = []
        for split, size in (("train", per_process), ("val", recipe.eval_batch_size)):
            loader = pipeline.loader(recipe, split, config, size)
            if not recipe.streamed:
                # Evaluation shards must not be padded with repeats: every image counts once.
                accelerator.even_batches = split == "train"
                loader = accelerator.prepare(loader)
                accelerator.even_batches = True
            erase = pipeline.eraser(recipe, accelerator.device) if split == "train" else None
            batches.append(pipeline.DeviceLoader(loader, accelerator.device, normalizer, erase))
        return batches

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """The model evaluated each epoch: the EMA of the weights where the recipe has one."""
        return self.ema.module if self.ema is not None else self.unwrapped

    # -- training -----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, checkpointing each; write the results; return result.json."""
        recipe, accelerator = self.recipe, self.accelerator
        history = self._load_checkpoint() if self.resume else []
        if accelerator.is_main_process and not (self.folder / RESULT_FILE).exists():
            # A finished run continued for more epochs keeps its recipe and result until the
            # longer run replaces them as it finishes.
            recipe.write(self.folder / RECIPE_FILE)
        accelerator.init_trackers(
            trackers.PROJECT,
            config=trackers.hparams(recipe.to_dict() | {"lr": recipe.peak_lr}),
            init_kwargs=trackers.init_kwargs(self.trackers, self.folder.name),
        )
        for epoch in range(len(history), recipe.epochs):
            started = time.perf_counter()
            if accelerator.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(accelerator.device)
            stats = self.train_epoch(epoch)
            if accelerator.num_processes > 1:  # each replica's BatchNorm saw its own batches
                distribute_bn(self.unwrapped, accelerator.num_processes, reduce=True)
            stats.update(evaluate(self.evaluated_model, self.val_batches, accelerator))
            stats["epoch_s"] = time.perf_counter() - started
            stats["peak_mem_mb"] = self._peak_memory()
            history.append(stats)
            logger.info(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {stats['loss']:.4f} "
                f"top1 {stats['top1']:.2f} top5 {stats['top5']:.2f} "
                f"({stats['samples_per_s']:.0f} images/s)"
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
        return self._finish(history)

    def train_epoch(
        self, epoch: int, max_updates: int | None = None, seconds: float | None = None
    ) -> dict[str, float]:
        """One epoch of updates, or its first ``max_updates``, or those begun within ``seconds``
        (a plan's measurement: one process only, where no other process must keep step)."""
        self.model.train()
        self.train_batches.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.accelerator.device)
        images_seen = 0
        started = time.perf_counter()
        bar = tqdm(
            itertools.islice(self.train_batches, max_updates),
            desc=f"epoch {epoch + 1}/{self.recipe.epochs}",
            total=min(len(self.train_batches), max_updates or len(self.train_batches)),
            leave=False,
            disable=not self.progress,
        )
        window = _Window(epoch, len(self.train_batches), loss_sum)
        for images, labels in bar:
            if self.mixup is not None:
                images, labels = self._mix(images, labels)
                if not len(labels):  # a last batch of one image (the same on every process)
                    continue
            lr = self.optimizer.param_groups[0]["lr"]  # this update's
            loss = self._update(images, labels)
            loss_sum += loss
            images_seen += len(labels)
            if window.add(loss, len(labels)):
                self._history_point(window, lr)
            if seconds is not None and time.perf_counter() - started >= seconds:
                break
        totals = torch.stack([loss_sum, torch.tensor(float(images_seen), device=loss_sum.device)])
        loss, count = self.accelerator.reduce(totals, reduction="sum").tolist()
        seconds = time.perf_counter() - started
        if not torch.isfinite(torch.tensor(loss)):
            self._diverged(epoch, loss)
        return {
            "epoch": epoch + 1,
            "loss": loss / count,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_images": int(count),
            "train_s": seconds,
            "samples_per_s": count / seconds,
        }

    def _mix(self, images: torch.Tensor, labels: torch.Tensor):
        """timm's Mixup / CutMix of a batch, into soft targets. Mixup pairs images up: an odd
        batch (an epoch's last) drops its last image."""
        even = len(labels) // 2 * 2
        return self.mixup(images[:even], labels[:even])

    def _history_point(self, window: _Window, lr: float) -> None:
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
                f"lr {lr:.3g} ({window.rate():.0f} images/s)"
            )

    def _peak_memory(self) -> float | None:
        """This epoch's peak memory (training and evaluation) of the busiest process."""
        device = self.accelerator.device
        peak = peak_memory_mb(device)
        if peak is None:
            return None
        return self.accelerator.gather(torch.tensor([peak], device=device)).max().item()

    def _diverged(self, epoch: int, loss: float) -> None:
        checkpoint = latest_checkpoint(self.folder)
        kept = (
            f"the last good checkpoint ({checkpoint.name}) is kept"
            if checkpoint is not None
            else "no epoch finished, so there is no checkpoint"
        )
        reason = (
            f"over {DIVERGED_FACTOR}x its first, {self.steps[0]['loss']:.3g}"
            if math.isfinite(loss)
            else "not a number"
        )
        raise LossNotFinite(
            f"training loss is {loss:.4g} in epoch {epoch + 1} of {self.folder} ({reason}): "
            "the run diverged; "
            f"{kept}; no result was written; lower --lr (or raise opt_eps) and train again"
        )

    def _update(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimizer update; returns the summed loss of its images. On out-of-memory, split
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
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_updates += 1
        self.scheduler.step_update(num_updates=self.num_updates)
        if self.ema is not None:
            self.ema.update(self.unwrapped, step=self.num_updates)
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

    # -- checkpoints and results --------------------------------------------------------------

    def _save_checkpoint(self, history: list[dict[str, float]]) -> None:
        """save_state into checkpoints/epoch-K, then point ``latest`` at it, then drop older."""
        accelerator = self.accelerator
        root = self.folder / CHECKPOINTS
        name = f"epoch-{len(history):04d}"
        with self._writing(root / name, f"epoch {len(history)}'s checkpoint"):
            accelerator.save_state(str(root / name))
        logger.info(f"checkpoint {root / name}")
        if accelerator.is_main_process:
            umask_mode(root / name)
            state = {
                "epoch": len(history),
                "num_updates": self.num_updates,
                "micro_batches": self.micro_batches,
                "history": history,
                "steps": self.steps,
            }
            atomic_write(root / name / STATE_FILE, json.dumps(state, indent=1))
            atomic_write(root / LATEST, name + "\n")
            for path, rows in ((METRICS_FILE, history), (STEPS_FILE, self.steps)):
                atomic_write(self.folder / path, "".join(json.dumps(r) + "\n" for r in rows))
            for old in root.glob("epoch-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    @contextmanager
    def _writing(self, partial: Path, what: str) -> Iterator[None]:
        """Writing ``what`` into ``partial``: a failure (a full disk; safetensors and torch.save
        raise their own kinds) removes the half-written folder and is one line saying what the
        run folder keeps."""
        try:
            yield
        except Exception as err:
            shutil.rmtree(partial, ignore_errors=True)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            checkpoint = latest_checkpoint(self.folder)
            kept = (
                f"its last checkpoint, {checkpoint.name}, is kept"
                if checkpoint
                else "no epoch is kept"
            )
            raise UserError(
                f"could not write {what} into {self.folder} ({reason[:200]}); {kept}: free space, "
                "then run the same command with --resume"
            ) from None

    def _load_checkpoint(self) -> list[dict[str, float]]:
        path = latest_checkpoint(self.folder)
        if path is None:
            logger.info(f"--resume: {self.folder} has no checkpoint; starting from epoch 1")
            return []
        state = checkpoint_state(path)
        try:
            self.accelerator.load_state(str(path))
        except Exception as err:  # safetensors, torch.load and pickle raise their own kinds
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"{path} cannot be loaded ({reason[:200]}): the checkpoint is damaged; delete "
                f"{self.folder} and train again"
            ) from None
        self.num_updates = state["num_updates"]
        self.micro_batches = state["micro_batches"]
        self.steps = state.get("steps", [])  # absent in checkpoints of earlier versions
        self.scheduler.step_update(num_updates=self.num_updates)
        logger.info(f"resumed {self.folder} after epoch {state['epoch']}")
        return state["history"]

    def _finish(self, history: list[dict[str, float]]) -> dict[str, Any]:
        accelerator, recipe = self.accelerator, self.recipe
        checksums = gather_object([weights_checksum(self.unwrapped)])
        skipped = sorted(set(gather_object(self._skipped_files())))
        peaks = [row["peak_mem_mb"] for row in history if row.get("peak_mem_mb") is not None]
        result: dict[str, Any] = {}
        if accelerator.is_main_process:
            train_s = sum(row["train_s"] for row in history)
            row = {
                "model": recipe.model,
                **method_columns(recipe.model, recipe.is_ours),
                "img_size": recipe.image_size,
                **self.cost,
                "top1": history[-1]["top1"],
                "top5": history[-1]["top5"],
                "dataset": recipe.dataset,
                "epochs": recipe.epochs,
                "seed": recipe.seed,
                "recipe": recipe.name,
                "train_time_s": sum(row["epoch_s"] for row in history),
                "train_samples_per_sec": sum(row["train_images"] for row in history) / train_s,
                "peak_mem_mb": max(peaks, default=None),
                "device": self._device_label(),
                "version": timm_scaling.__version__,
                "model_kwargs": kwargs_text(recipe.model_kwargs),
            }
            result = {
                **row,
                "world_size": accelerator.num_processes,
                "eval_images": history[-1]["eval_images"],
                "micro_batches": self.micro_batches,
                "drop_rate": self.drop_rate,
                "skipped_images": len(skipped),
                "skipped_files": skipped,
                "replica_checksums": checksums,
                "torch": torch.__version__,
                "timm": timm.__version__,
                # The same seed trains to other weights with another thread count.
                "threads": torch.get_num_threads(),
            }
            self._export(row["top1"])
            # The run's recipe, then its result (a longer continuation replaces both; killed
            # between them, runs.changed_keys takes the epochs from the result).
            recipe.write(self.folder / RECIPE_FILE)
            atomic_write(self.folder / RESULT_FILE, json.dumps(result, indent=1) + "\n")
            put_row(self.output / REPORT_FILE, row)
            accelerator.log(trackers.scalars(row, "final/"), step=self.num_updates)
            logger.info(f"finished {self.folder}: top1 {row['top1']:.2f}; row in {REPORT_FILE}")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return result

    def _skipped_files(self) -> list[str]:
        """The files this process skipped as undecodable (data read through timm's pipeline)."""
        return [
            name
            for batches in (self.train_batches, self.val_batches)
            for name in getattr(batches, "skipped_files", list)()
        ]

    def _export(self, top1: float) -> None:
        """<run>/model/: the evaluated weights as a timm checkpoint (timm's save_for_hf)."""
        recipe, cfg = self.recipe, self.unwrapped.pretrained_cfg
        notes = (
            f"trained {recipe.epochs} epoch{'s' * (recipe.epochs != 1)} on {recipe.dataset} "
            f"at {recipe.image_size} px "
            f"(recipe {recipe.name}, seed {recipe.seed}{', EMA weights' * recipe.ema}): "
            f"top-1 {top1:.2f}"
        )
        model_dir = self.folder / MODEL_DIR
        with self._writing(model_dir.with_name(model_dir.name + ".partial"), "the trained model"):
            export(
                self.evaluated_model, model_dir, recipe.image_size, cfg["mean"], cfg["std"], notes
            )
        umask_mode(model_dir)  # safetensors writes model.safetensors 0600

    def _device_label(self) -> str:
        name = device_name(self.accelerator.device)
        world = self.accelerator.num_processes
        return name if world == 1 else f"{world}x {name}"
