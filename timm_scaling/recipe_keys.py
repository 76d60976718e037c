"""The keys of a recipe that name other things: the data sets, the lr rule, timm's pipeline, the
model keyword arguments; and the checks of a value that its type alone does not make.

Imports no torch (as :mod:`timm_scaling.recipes`, which reads recipe files with these).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from timm_scaling.errors import UserError
from timm_scaling.scaling import BASE_NAME, parse_name

# Data sets held in memory and augmented on the training device (crop_padding, hflip).
IN_MEMORY = ("cifar10", "cifar100", "digits", "mnist", "fashion_mnist", "kmnist", "synthetic")
# Data sets read from disk through timm's pipeline: an ImageFolder tree, or image tar files.
ON_DISK = ("folder", "tar")
DATASETS: tuple[str, ...] = IN_MEMORY + ON_DISK
# timm's streamed readers, named as timm's create_dataset spells them (``hfds/NAME``), and the
# pip package each needs with the module it installs.
STREAMED = {
    "hfds": ("datasets", "datasets"),
    "hfids": ("datasets", "datasets"),
    "wds": ("webdataset", "webdataset"),
    "tfds": ("tfds-nightly", "tensorflow_datasets"),
}
# How a recipe writes its lr: Recipe.peak_lr is what it trains at.
LR_RULE_KEYS = ("lr", "lr_base", "lr_base_size", "lr_base_scale")
# Keys of timm's pipeline (data read from disk or streamed), which in-memory data sets ignore.
PIPELINE_KEYS = ("auto_augment", "re_prob", "interpolation", "crop_pct", "scale", "num_classes")
# Keys that would load weights: timm-scaling trains from scratch and never downloads anything.
WEIGHT_KEYS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")
# timm.create_model arguments that recipe keys set: model_kwargs must not set them again.
RECIPE_KWARGS = {
    "num_classes": "the data set",
    "drop_rate": "the recipe key drop_rate",
    "drop_path_rate": "the recipe key drop_path_rate",
    "img_size": "the recipe key base_size",
}


# (keys, check, what is allowed) for values whose type alone does not make them valid.
BOUNDS: tuple[tuple[tuple[str, ...], Any, str], ...] = (
    (
        (
            "base_size",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "grad_accum",
            "synthetic_train_size",
            "synthetic_val_size",
            "synthetic_classes",
            "num_classes",
            "lr_base_size",
        ),
        lambda v: v >= 1,
        "1 or more",
    ),
    (("limit_train", "limit_val"), lambda v: v >= 1, "1 or more (or null for all)"),
    (("lr", "lr_base", "opt_eps", "lr_decay_epochs"), lambda v: 0 < v < float("inf"), "above 0"),
    (
        ("seed", "warmup_epochs", "warmup_lr", "weight_decay", "crop_padding", "num_workers"),
        lambda v: 0 <= v < float("inf"),
        "0 or more",
    ),
    (
        (
            "momentum",
            "decay",
            "ema_decay",
            "re_prob",
            "mixup_prob",
            "mixup_switch_prob",
            "bn_momentum",
        ),
        lambda v: 0 <= v <= 1,
        "in [0, 1]",
    ),
    (("mixup", "cutmix"), lambda v: 0 <= v < float("inf"), "0 (off) or more"),
    (("crop_pct",), lambda v: 0 < v <= 1, "in (0, 1]"),
    # 0 would train at lr 0 from the first decay on, and report it as a result
    (("lr_decay_rate",), lambda v: 0 < v <= 1, "in (0, 1] (1: no decay)"),
    (("label_smoothing", "drop_rate", "drop_path_rate"), lambda v: 0 <= v < 1, "in [0, 1)"),
)


def check_dataset(name: str) -> None:
    """A data set name the tool reads: in memory, on disk, or ``PREFIX/NAME`` of a streamed
    reader (timm's spelling)."""
    prefix, slash, rest = name.partition("/")
    if name in DATASETS or (slash and prefix in STREAMED and rest):
        return
    streams = ", ".join(f"{p}/NAME" for p in STREAMED)
    # timm's torch/fashion_mnist, torchvision's FashionMNIST, the data set's own fashion-mnist
    spelled = name.lower().removeprefix("torch/").replace("-", "").replace("_", "")
    known = [known for known in DATASETS if known.replace("_", "") == spelled]
    hint = f"did you mean {known[0]}? " if known else ""
    raise UserError(
        f"unknown dataset {name!r}; {hint}choose one of {', '.join(DATASETS)}, {streams}"
    )


def check_value(key: str, value: Any) -> None:
    """The checks of one key's value that its type alone does not make."""
    if key == "model":
        if value.startswith(BASE_NAME):
            try:
                parse_name(value)
            except UserError as err:
                raise UserError(f"model: {err}") from None
        elif not value or any(c.isspace() for c in value):
            raise UserError(f"model: {value!r} is not a model name; e.g. effnet_b0, resnet50")
    if key == "model_kwargs":
        check_model_kwargs(value)
    if key == "dataset":
        check_dataset(value)
    if (
        key == "scale"
        and value is not None
        and not (len(value) == 2 and 0 < value[0] <= value[1] <= 1)
    ):
        raise UserError(
            f"scale must be two numbers [low, high] with 0 < low <= high <= 1, got {value!r}"
        )
    for keys, ok, allowed in BOUNDS:
        if key in keys and value is not None and not ok(value):
            raise UserError(f"{key} must be {allowed}, got {value!r}")


def untagged(model: str) -> str:
    """A timm name without its pretrained tag (``efficientnet_b0.ra_in1k`` -> ``efficientnet_b0``),
    saying so: the tag names weights, which timm-scaling never loads, so the run trains the
    architecture from scratch and its folder and row name what was built."""
    name, dot, tag = model.partition(".")
    if not dot or ":" in model or not name:  # no tag; or a hub or local-dir name, timm's to read
        return model
    logging.getLogger(__name__).warning(
        f"model {model}: the tag {tag!r} names pretrained weights, which timm-scaling does not "
        f"load (it trains from scratch, with no network): training {name} from scratch"
    )
    return name


def check_model_kwargs(kwargs: Mapping[str, Any]) -> None:
    """One-line errors for model_kwargs that ask for weights or repeat a recipe key."""
    for key in kwargs:
        if key in WEIGHT_KEYS:
            raise UserError(
                f"model_kwargs.{key}: timm-scaling never loads weights (it trains from scratch, "
                "with no network); remove the key"
            )
        if key in RECIPE_KWARGS:
            raise UserError(f"model_kwargs.{key}: set by {RECIPE_KWARGS[key]}; remove the key")


def kwargs_tag(kwargs: Mapping[str, Any]) -> str:
    """``''`` for no kwargs, else ``k`` and 8 hex digits of their hash: what tells apart the run
    folders and cached costs of one model built with different model_kwargs."""
    if not kwargs:
        return ""
    return "k" + hashlib.sha256(kwargs_text(kwargs).encode()).hexdigest()[:8]


def kwargs_text(kwargs: Mapping[str, Any]) -> str | None:
    """model_kwargs as JSON with sorted keys (a report row's column), None for none."""
    return json.dumps(dict(kwargs), sort_keys=True, default=str) if kwargs else None
