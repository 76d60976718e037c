"""Recipes: a validated, typed view of a ``recipes/*.yaml`` file plus ``key=value`` overrides.

A recipe file holds every training setting of one run. ``base: NAME`` inherits another recipe
(found beside the file first, then among the built-ins) and overrides some of its keys, so
``depth4.yaml`` is ``base: baseline`` plus a model. Keys are strict: an unknown key, a value of
the wrong type or a missing file is a :class:`UserError` of one line naming the file, the key
and what is allowed. Override values are typed by YAML parsing (``lr=0.1`` is a float,
``ema=true`` a bool).

Imports no torch: the CLI validates recipes before paying for it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

import timm_scaling
from timm_scaling import trackers
from timm_scaling.errors import UserError
from timm_scaling.files import atomic_write
from timm_scaling.hints import conforms, type_name, union
from timm_scaling.recipe_keys import (
    IN_MEMORY,
    LR_RULE_KEYS,
    PIPELINE_KEYS,
    STREAMED,
    WEIGHT_KEYS,
    check_value,
    untagged,
)
from timm_scaling.scaling import BASE_NAME, model_hint, parse_name
from timm_scaling.yamlfiles import SUFFIXES, find_file, load_yaml, read_mapping


@dataclass(frozen=True)
class Recipe:
    """Every setting of one training run. ``recipes/baseline.yaml`` shows every default."""

    name: str = "baseline"
    # model: a timm-scaling model name (timm_scaling.scaling grammar), e.g. effnet_b0_d4, or
    # any other model timm.create_model takes (resnet50), built as timm ships it, without weights
    model: str = "effnet_b0"
    # more keyword arguments of timm.create_model, e.g. {output_stride: 8}; never weights
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # in memory: cifar10, cifar100, digits, mnist, fashion_mnist, kmnist, synthetic; read
    # through timm's pipeline: folder (an ImageFolder tree with train/ and val/), tar (train.tar
    # and val.tar), or streamed by timm's readers: hfds/NAME, hfids/NAME, wds/NAME, tfds/NAME
    dataset: str = "cifar10"
    # dataset synthetic: random images and labels in this shape (CIFAR-10's by default), made
    # on the training device, to measure speed and memory where the real data is absent
    synthetic_train_size: int = 50_000
    synthetic_val_size: int = 10_000
    synthetic_classes: int = 10
    # where the data set lives (cifar: the folder holding cifar-10-batches-py; folder: the
    # folder holding train/ and val/); None: ./data
    data_dir: str | None = None
    # images are resized once to round(base_size * the model's resolution multiplier); a model
    # that is not ours trains at base_size
    base_size: int = 32
    epochs: int = 35
    # images per optimizer step, summed over processes and accumulation steps
    batch_size: int = 128
    # images per forward pass per process at evaluation
    eval_batch_size: int = 256
    # peak learning rate as given (timm's --lr); None: lr_base scaled to batch_size
    lr: float | None = None
    # timm's --lr-base, --lr-base-size, --lr-base-scale: the peak lr at lr_base_size images
    # per step, scaled to batch_size linearly (as the paper scales 0.256 per 4096) or by sqrt
    lr_base: float = 0.016
    lr_base_size: int = 256
    lr_base_scale: Literal["linear", "sqrt"] = "linear"
    optimizer: Literal["rmsproptf", "sgd", "adamw"] = "rmsproptf"
    opt_eps: float = 0.001
    momentum: float = 0.9
    # RMSProp's decay of its squared-gradient average (torch's alpha); rmsproptf only
    decay: float = 0.9
    weight_decay: float = 1e-5
    warmup_epochs: float = 3.0
    warmup_lr: float = 1e-6
    # after warm-up, lr *= lr_decay_rate every lr_decay_epochs, stepped per update
    lr_decay_rate: float = 0.97
    lr_decay_epochs: float = 2.4
    label_smoothing: float = 0.1
    # dropout before the classifier; None: by the model's cost, as the paper's B0..B7 give it
    # (0.2 at B0's MACs rising to 0.5 at B7's, interpolated in log MACs)
    drop_rate: float | None = 0.2
    drop_path_rate: float = 0.2
    seed: int = 0
    ema: bool = False
    ema_decay: float = 0.999
    compile: bool = False
    # torch.compile's mode when compile is true: reduce-overhead replays CUDA graphs (for small
    # 32 px models, whose steps are bound by kernel launches); max-autotune also tunes kernels
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    # the whole update (forward, backward, optimizer step, EMA) captured once as one CUDA graph
    # and replayed, the lr a device tensor: for small models whose steps are bound by kernel
    # launches; one process (several train without). Full batches only: an epoch's last
    # partial batch is dropped, on a CPU too, so a recipe trains the same updates on either
    cuda_graph: bool = False
    grad_accum: int = 1
    # timm's set_grad_checkpointing: recompute activations in backward (less memory, slower)
    grad_checkpointing: bool = False
    # auto: bf16 on a GPU, fp32 on a CPU
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    channels_last: bool = True
    # random crop: pad this many pixels on each side, then crop back at a random offset
    crop_padding: int = 4
    hflip: bool = True
    # -- timm's pipeline (folder, tar and streamed data; in-memory data sets use none of it) --
    # loader workers
    num_workers: int = 4
    # timm's auto_augment string: v0 (the paper's AutoAugment policy), original, rand-m9-mstd0.5...
    auto_augment: str | None = None
    # random erasing probability (timm's --reprob), applied on the training device
    re_prob: float = 0.0
    # RandomResizedCrop's area range (timm's --scale); None: timm's (0.08, 1.0)
    scale: list[float] | None = None
    # None: the model's pretrained cfg says (bicubic for EfficientNets, bilinear for ResNets)
    interpolation: Literal["bilinear", "bicubic", "nearest", "random"] | None = None
    # evaluation: resize to img_size / crop_pct, then centre crop; None: the model's cfg says
    crop_pct: float | None = None
    # classes of a streamed data set (timm's readers do not count them); others are counted
    num_classes: int | None = None
    # timm's Mixup / CutMix (alpha; 0: off), applied to the device's batches of any data set,
    # trained with the soft-target loss (label smoothing folded into the targets)
    mixup: float = 0.0
    cutmix: float = 0.0
    # the probability a batch is mixed, and that it is cut rather than mixed when both are on
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    # BatchNorm's momentum, torch's convention (0.01 is TensorFlow's 0.99); None: the model's
    bn_momentum: float | None = None
    # use only the first N training / validation images (tests, quick runs); None: all
    limit_train: int | None = None
    limit_val: int | None = None
    # experiment trackers (Accelerate's names, comma separated): tensorboard, wandb, mlflow,
    # comet_ml, aim, clearml or all; None: none (metrics.jsonl is the record either way)
    log_with: str | None = None

    def __post_init__(self) -> None:
        for key in _FIELD_NAMES:
            check_value(key, getattr(self, key))
        trackers.parse(self.log_with)
        self._check_pipeline()
        if self.batch_size % self.grad_accum:
            raise UserError(
                f"batch_size must be a multiple of grad_accum ({self.grad_accum}), "
                f"got {self.batch_size}"
            )
        if self.cuda_graph:
            self._check_cuda_graph()

    def _check_cuda_graph(self) -> None:
        """cuda_graph captures one batch's update as it is: nothing that changes the update's
        shape or makes CUDA graphs another way."""
        clashes = {
            "compile": "torch.compile makes CUDA graphs of its own",
            "grad_accum": "it captures one batch per update",
            "grad_checkpointing": "recomputed activations are not captured",
        }
        self.refuse(clashes, "cuda_graph", "--set cuda_graph=false")

    def refuse(self, clashes: dict[str, str], switch: str, without: str) -> None:
        """A one-line error for the first key of ``clashes`` (key -> why) set otherwise than
        by default, which ``switch`` cannot take; ``without`` says how to turn it off."""
        for key, why in clashes.items():
            value = getattr(self, key)
            if value != _DEFAULTS[key]:
                raise UserError(
                    f"{switch} and {key}={str(value).lower()}: {why}; "
                    f"--set {key}={str(_DEFAULTS[key]).lower()} or {without}"
                )

    def _check_pipeline(self) -> None:
        """Keys of timm's pipeline only where the data goes through it; num_classes only (and
        always) for streamed data."""
        if self.in_memory:
            for key in PIPELINE_KEYS:
                if getattr(self, key) != _DEFAULTS[key]:
                    raise UserError(
                        f"{key}: applies to data read through timm's pipeline (folder, tar, "
                        f"hfds/NAME...); {self.dataset} is held in memory and augmented by "
                        "crop_padding and hflip; remove the key"
                    )
        elif self.streamed and self.num_classes is None:
            raise UserError(
                f"dataset {self.dataset}: timm's streamed readers do not count classes; "
                "--set num_classes=N"
            )
        elif not self.streamed and self.num_classes is not None:
            raise UserError(
                f"num_classes: {self.dataset} data is counted from its class folders; "
                "remove the key"
            )

    @property
    def in_memory(self) -> bool:
        """Held in memory and augmented on the device, not read through timm's pipeline."""
        return self.dataset in IN_MEMORY

    @property
    def streamed(self) -> bool:
        """Streamed by one of timm's readers (``hfds/NAME``...)."""
        return self.dataset.partition("/")[0] in STREAMED

    def check_processes(self, world: int) -> None:
        """Each of ``world`` processes takes an equal share of the batch."""
        if self.batch_size % world:
            raise UserError(
                f"batch_size {self.batch_size} does not split over {world} processes; "
                f"--batch-size a multiple of {world}"
            )

    def __hash__(self) -> int:  # model_kwargs is a dict: hash the resolved recipe's text
        return hash(self.to_yaml())

    @property
    def is_ours(self) -> bool:
        """A timm-scaling variant (its name starts with effnet_b0), not another timm model."""
        return self.model.startswith(BASE_NAME)

    @property
    def image_size(self) -> int:
        """round(base_size * the model's resolution multiplier): 64 for effnet_b0_r2 at 32;
        base_size for a model that is not ours."""
        if not self.is_ours:
            return self.base_size
        return parse_name(self.model).image_size(self.base_size)

    @property
    def peak_lr(self) -> float:
        """The peak lr this run trains at: ``lr`` where given, else ``lr_base`` scaled from
        ``lr_base_size`` to ``batch_size`` images per step (timm's train.py rule)."""
        if self.lr is not None:
            return self.lr
        ratio = self.batch_size / self.lr_base_size
        return self.lr_base * (ratio if self.lr_base_scale == "linear" else math.sqrt(ratio))

    def lr_text(self) -> str:
        """The peak lr and where it comes from: ``'0.001 (lr_base 0.0005 x 64/32)'``."""
        if self.lr is not None:
            return f"{self.lr:.3g}"
        ratio = f"{self.batch_size}/{self.lr_base_size}"
        scaled = ratio if self.lr_base_scale == "linear" else f"sqrt({ratio})"
        return f"{self.peak_lr:.3g} (lr_base {self.lr_base:g} x {scaled})"

    def trained_settings(self) -> dict[str, Any]:
        """The settings that decide what a run trains: the lr as trained, not as written
        (``lr: 0.008`` and ``lr_base: 0.016`` at 256 train the same run at batch 128)."""
        settings = {k: v for k, v in self.to_dict().items() if k not in LR_RULE_KEYS}
        return {**settings, "lr": self.peak_lr}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def write(self, path: str | Path) -> None:
        """Write the resolved recipe, which :func:`load_recipe` reads back as it was."""
        atomic_write(path, self.to_yaml())


_FIELDS: dict[str, Any] = typing.get_type_hints(Recipe)
_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Recipe))
_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING
}


class Override(str):
    """A ``key=value`` override that remembers how the user typed it (``--epochs 0``), so that
    an error quotes that, not ``--set epochs=0``."""

    typed: str

    def __new__(cls, text: str, typed: str | None = None) -> Override:
        self = super().__new__(cls, text)
        self.typed = typed or f"--set {text}"
        return self


def typed(override: str) -> str:
    """What the user typed for an override: its option (``--epochs 0``) or ``--set k=v``."""
    return getattr(override, "typed", f"--set {override}")


def _coerce(source: str, key: str, value: Any) -> Any:
    """Check one key and value; return the value as the field's type."""
    if key in WEIGHT_KEYS:
        raise UserError(
            f"{source}: {key}: timm-scaling never loads weights (it trains from scratch, with no "
            "network); remove the key"
        )
    if key not in _FIELDS:
        allowed = ", ".join(sorted(_FIELDS))
        near = difflib.get_close_matches(key, list(_FIELDS), n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise UserError(f"{source}: unknown key {key!r}; {hint}allowed keys: {allowed}")
    hint = _FIELDS[key]
    if not conforms(value, hint):
        raise UserError(
            f"{source}: {key} must be {type_name(hint)}, got {value!r} ({type(value).__name__})"
        )
    if typing.get_origin(hint) is dict:
        return dict(value)
    if typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in union(hint)):
        value = None if value is None else [float(v) for v in value]
    elif hint is float or float in union(hint):
        value = None if value is None else float(value)
    try:
        check_value(key, value)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    return value


def recipe_dirs() -> list[Path]:
    """Where built-in recipes live: inside the installed package, else the repository's folder."""
    package = Path(timm_scaling.__file__).parent
    return [d for d in (package / "recipes", package.parent / "recipes") if d.is_dir()]


def list_recipes() -> list[str]:
    """The built-in recipe names, sorted."""
    names = {p.stem for d in recipe_dirs() for p in d.iterdir() if p.suffix in SUFFIXES}
    return sorted(names)


def _find(name_or_path: str, near: Path | None = None) -> Path:
    """A recipe argument to its file; the ``base:`` of the file ``near`` is found beside it."""
    if near is not None and (near.parent / name_or_path).is_file():
        return near.parent / name_or_path
    folders = ([near.parent] if near else []) + recipe_dirs()
    where = f"{near}: base: " if near else ""
    return find_file(name_or_path, folders, "recipe", list_recipes(), where)


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's keys over its base's, checked and typed; ``name`` defaults to the stem."""
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise UserError(f"{path}: recipes inherit in a cycle: {cycle}")
    data = read_mapping(path)
    base = data.pop("base", None)
    values: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str):
            raise UserError(f"{path}: base must be a recipe name or path, got {base!r}")
        values = _read(_find(base, near=path), (*chain, path.resolve()))
    values["name"] = path.stem
    values.update({str(key): _coerce(str(path), str(key), val) for key, val in data.items()})
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``'lr=0.1'`` -> ``('lr', 0.1)``: the value typed by YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        option = typed(text).split(" ", 1)[0]
        raise UserError(f"{option} {str(text)!r}: expected key=value, e.g. {option} key=1")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_recipe(name_or_path: str, overrides: Sequence[str] = ()) -> Recipe:
    """A built-in recipe by name, or a recipe file by path, with ``key=value`` overrides."""
    try:
        path = _find(name_or_path)
    except UserError as err:
        path = Path(name_or_path)
        a_path = path.suffix in SUFFIXES or len(path.parts) > 1
        hint = "" if a_path or "did you mean" in str(err) else model_hint(name_or_path)
        raise UserError(f"{err}{hint}") from None
    values = _read(path)
    for text in overrides:
        key, value = parse_override(text)
        head, dot, sub = key.partition(".")
        if dot and head == "model_kwargs" and sub:  # --set model_kwargs.output_stride=8
            key, value = head, {**values.get(head, {}), sub: value}
        values[key] = _coerce(typed(text), key, value)
    if isinstance(values.get("model"), str):
        values["model"] = untagged(values["model"])
    try:
        return Recipe(**values)
    except UserError as err:  # a rule across keys (batch_size and grad_accum)
        where = " ".join([name_or_path, *map(typed, overrides)])
        raise UserError(f"{where}: {err}") from None
