"""Building a run: its model (measured first), optimizer, schedule, EMA, loss and data."""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate.utils import set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import StepLRScheduler
from timm.utils import ModelEmaV3

from timm_scaling import data
from timm_scaling.batches import DeviceBatches
from timm_scaling.catalog import create_model, in_chans
from timm_scaling.errors import UserError
from timm_scaling.imagesets import channel_stats
from timm_scaling.recipes import Recipe
from timm_scaling.train.graphed import StaticForward, StaticStep
from timm_scaling.train.logs import logger
from timm_scaling.train.machine import (
    CPU_BYTES_PER_ACTIVATION,
    CPU_MEMORY_SHARE,
    available_memory,
    optimizer_speedups,
    set_grad_checkpointing,
)

# torch.compile modes that replay CUDA graphs on a GPU.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# A running average still this much its start at the run's end is warned of (EMA, BatchNorm).
STALE_AVERAGE = 0.05


def cost_columns(recipe: Recipe, num_classes: int) -> dict[str, float]:
    """param_count, gmacs, gflops, macts of the model at the training image size and classes."""
    from timm_scaling.cost import measure_cost

    cost = measure_cost(recipe.model, recipe.image_size, num_classes, recipe.model_kwargs)
    return {key: cost[key] for key in ("param_count", "gmacs", "gflops", "macts")}


def check_model(recipe: Recipe) -> None:
    """The recipe's model exists and runs at its image size (a one-line error if not): counted
    on the meta device, cached, in a moment."""
    cost_columns(recipe, data.num_classes(recipe.dataset, recipe.data_dir))


class Building:
    """The set-up of :class:`~timm_scaling.train.Trainer`: ``_build`` makes everything an
    update needs."""

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
            from timm_scaling.paper import paper_dropout

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
        if not updates_per_epoch:  # full batches only (timm's pipeline, cuda_graph)
            raise UserError(
                f"the training data makes no full batch of {recipe.batch_size} images; "
                "lower --batch-size"
            )
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
        self._check_averages(recipe.epochs * updates_per_epoch)
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
        self.static_step = self._static_step()
        # Evaluation's forward as CUDA graphs of its own (each process its own: no collective).
        self.static_forward = StaticForward(device.type == "cuda") if recipe.cuda_graph else None

    def _static_step(self) -> StaticStep | None:
        """The whole update as one CUDA graph, where the recipe asks and one process trains
        the update in one piece."""
        recipe, device = self.recipe, self.accelerator.device
        if not recipe.cuda_graph:
            return None
        if self.accelerator.num_processes > 1 or self.micro_batches > 1:
            logger.warning(
                f"cuda_graph: captures the update of one process in one piece, not of "
                f"{self.accelerator.num_processes} processes in {self.micro_batches} "
                "micro-batches each; training without it"
            )
            return None
        if device.type != "cuda":
            logger.info("cuda_graph: no CUDA graph on a CPU; the same updates run eagerly")
        return StaticStep(self, capture=device.type == "cuda")

    def _check_averages(self, updates: int) -> None:
        """Warn where a running average the evaluation uses (the EMA of the weights, BatchNorm's
        running statistics) still holds much of its start when the run ends: a short run then
        evaluates mostly untrained weights or statistics."""
        recipe = self.recipe
        averages = []
        if recipe.ema:
            averages.append(("ema_decay", recipe.ema_decay, "the initial weights"))
        if recipe.bn_momentum is not None:
            averages.append(
                ("bn_momentum", 1 - recipe.bn_momentum, "BatchNorm's initial statistics")
            )
        for key, keep, what in averages:
            left = keep**updates
            if left > STALE_AVERAGE:
                value = getattr(recipe, key)
                logger.warning(
                    f"{key} {value:g} averages over ~{1 / max(1 - keep, 1e-12):,.0f} updates: "
                    f"after this run's {updates}, {left:.0%} of the evaluated average is still "
                    f"{what}; --set {key}= to average over fewer updates"
                    f"{' (or ema=false)' * (key == 'ema_decay')}"
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
        channels = in_chans(recipe.model_kwargs)
        mean, std = channel_stats(cfg["mean"], cfg["std"], channels)
        # what evaluation really does (resized once, antialiased bilinear, no crop): the export's
        self.data_config = dict(
            input_size=(channels, recipe.image_size, recipe.image_size),
            interpolation="bilinear",
            crop_pct=1.0,
            mean=mean,
            std=std,
        )
        batches = []
        for split, train, size, limit in (
            ("train", True, per_process, recipe.limit_train),
            ("val", False, recipe.eval_batch_size, recipe.limit_val),
        ):
            images = self._images(split, limit)
            self.class_names = images.classes  # the label order: the export's label_names
            batches.append(
                DeviceBatches(
                    images,
                    batch_size=size,
                    device=accelerator.device,
                    train=train,
                    seed=recipe.seed,
                    rank=accelerator.process_index,
                    world_size=world,
                    crop_padding=recipe.crop_padding,
                    hflip=recipe.hflip,
                    mean=mean,
                    std=std,
                    channels_last=recipe.channels_last,
                    drop_last=train and recipe.cuda_graph,
                    channels=channels,
                )
            )
        return batches

    def _images(self, split: str, limit: int | None) -> data.ImageSet:
        recipe = self.recipe
        unread = {data.SYNTHETIC: "makes random images", "digits": "ships with scikit-learn"}
        if recipe.dataset in unread and recipe.data_dir is not None and split == "train":
            logger.warning(
                f"dataset {recipe.dataset} {unread[recipe.dataset]}: data_dir {recipe.data_dir} "
                "is not used (a folder of images: --dataset folder)"
            )
        if recipe.dataset != data.SYNTHETIC:
            return data.load_images(
                recipe.dataset, recipe.data_dir, recipe.image_size, split, limit
            )
        return data.synthetic(
            data.split_size(recipe, split),
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
        self.data_config = config  # what evaluation really does: the export's
        # the label order (sorted class folders), the export's label_names; streamed: unknown
        self.class_names = (
            None if recipe.streamed else pipeline.classes(recipe.dataset, recipe.data_dir)
        )
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
