"""What a variant costs: params, MACs, FLOPs and activations (counted), and speed and memory
(measured).

Counting: calflops at batch 1 on a model built on the meta device (no memory, no
initialisation; B7 at 600 px counts in under a second). ``gmacs`` are multiply-accumulates, the
paper's "FLOPS"; ``gflops`` is calflops' own FLOP count (about 2.05 x MACs: it adds batch norm,
activations, pooling and biases), not 2 x MACs. ``macts`` are activations in the sense of Dollar
et al. ("Fast and Accurate Model Scaling", 2021): output elements of every conv and linear layer,
in millions. Training costs about 3 x the forward FLOPs (forward + backward for inputs and for
weights); never derive it from ``FlopCounterMode``, whose backward ignores ``groups``.

calflops 0.3.2 has two traps that this module steps around: it counts only parameters with
``requires_grad`` (we count parameters ourselves), and it patches ``torch.nn.functional`` and a
few ``torch`` ops globally, leaving the patch in place when the forward raises, after which every
count in the process comes back doubled. :func:`functional_guard` restores them, or fails loudly.

Counts are cached on disk under ``$TIMM_SCALING_CACHE`` (default ``~/.cache/timm-scaling``),
keyed by model, input size, class count and timm version.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from timm_scaling.errors import UserError
from timm_scaling.models import register_variant, registered, scaling_of
from timm_scaling.report import atomic_write
from timm_scaling.scaling import BASE_IMAGE_SIZE, is_model_name, parse_name

CACHE_ENV = "TIMM_SCALING_CACHE"
COST_KEYS = ("param_count", "gmacs", "gflops", "macts")
# EfficientNet halves its feature map five times (total stride 32). A smaller input does not
# fill one cell of the final feature map: the last stages would compute on padding alone.
MIN_IMAGE_SIZE = 32

# What calflops 0.3.2 patches besides torch.nn.functional (calflops/pytorch_ops.py).
_TORCH_OPS = ("matmul", "addmm", "mul", "add", "einsum", "baddbmm")
_TENSOR_OPS = ("matmul", "addmm", "mul", "add")
_MISSING = object()


# ---------------------------------------------------------------------------- model names


def resolve_model(name: str) -> str:
    """A registered variant's name; a name the grammar accepts is registered on the way."""
    if name in registered():
        return name
    if is_model_name(name):
        return register_variant(parse_name(name))
    close = difflib.get_close_matches(name, registered(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown model {name!r}: {hint}see `timm-scaling list` for every variant")


def resolve_models(patterns: list[str]) -> list[str]:
    """Names and globs (``effnet_b0_w*``, matched against the registry), in order, once each."""
    names: list[str] = []
    for pattern in patterns:
        if any(char in pattern for char in "*?["):
            matches = fnmatch.filter(registered(), pattern)
            if not matches:
                raise UserError(f"{pattern!r} matches no registered model; try `timm-scaling list`")
        else:
            matches = [resolve_model(pattern)]
        names += [name for name in matches if name not in names]
    return names


def image_size(model: str, base_size: int | None = None) -> int:
    """The input size a model is profiled at: its pretrained cfg's size, or ``base_size`` times
    its resolution multiplier."""
    scaling = scaling_of(resolve_model(model))
    if base_size is None:
        return scaling.image_size(BASE_IMAGE_SIZE, divisor=8)  # = its pretrained cfg input size
    return scaling.image_size(base_size)


def _check_size(model: str, img_size: int) -> None:
    if img_size < MIN_IMAGE_SIZE:
        raise UserError(
            f"{model} at {img_size} px: the input is too small for the network, which "
            f"downsamples by 32; use an image size of {MIN_IMAGE_SIZE} or more"
        )


# ---------------------------------------------------------------------------- counting


def _patchable() -> list[tuple[object, str]]:
    functional = [(F, name) for name, value in vars(F).items() if callable(value)]
    return (
        functional
        + [(torch, name) for name in _TORCH_OPS]
        + [(torch.Tensor, name) for name in _TENSOR_OPS]
    )


@contextmanager
def functional_guard() -> Iterator[None]:
    """Put back every ``torch.nn.functional`` / ``torch`` op calflops patches when the block
    ends. If the block raised, its exception goes on; if it returned with ops still patched,
    raise RuntimeError naming them (a count taken in that state is wrong)."""
    # Compared through getattr: calflops "restores" torch.Tensor.add by setting the inherited
    # descriptor on torch.Tensor itself, which is the same object, so not a change.
    saved = [(owner, name, getattr(owner, name, _MISSING)) for owner, name in _patchable()]

    def restore() -> list[str]:
        changed = []
        for owner, name, original in saved:
            if getattr(owner, name, _MISSING) is not original:
                changed.append(f"{getattr(owner, '__name__', owner)}.{name}")
                setattr(owner, name, original)
        return changed

    try:
        yield
    except BaseException:
        restore()
        raise
    changed = restore()
    if changed:
        raise RuntimeError(
            f"calflops left {', '.join(changed)} patched after counting; they are restored "
            "now, but that count cannot be trusted"
        )


def count_cost(model: nn.Module, img_size: int) -> dict[str, float]:
    """Params (M), GMACs, GFLOPs and activations (M) of ``model`` at batch 1 and a square
    ``img_size`` input, counted on a copy (calflops leaves a model in eval mode and hooked).

    Works on a model on the meta device; that is the fast way to count.
    """
    from calflops import calculate_flops

    model = copy.deepcopy(model)
    activations = 0

    def add_activations(_module, _inputs, output) -> None:
        nonlocal activations
        activations += output.numel()

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [layer.register_forward_hook(add_activations) for layer in layers]
    try:
        with functional_guard():
            flops, macs, _ = calculate_flops(
                model,
                input_shape=(1, 3, img_size, img_size),
                print_results=False,
                print_detailed=False,
                output_as_string=False,
            )
    finally:
        for handle in handles:
            handle.remove()
    return {
        # calflops counts only parameters with requires_grad: count them all ourselves.
        "param_count": sum(p.numel() for p in model.parameters()) / 1e6,
        "gmacs": macs / 1e9,
        "gflops": flops / 1e9,
        "macts": activations / 1e6,
    }


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "timm-scaling")


def _cache_path(model: str, img_size: int, num_classes: int) -> Path:
    return (
        cache_dir() / "cost" / f"timm-{timm.__version__}" / f"{model}-{img_size}-{num_classes}.json"
    )


def _read_cache(path: Path, key: dict[str, object]) -> dict[str, float] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or unreadable: count again
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    cost = record.get("cost")
    if not isinstance(cost, dict) or set(cost) != set(COST_KEYS):
        return None
    return {k: float(cost[k]) for k in COST_KEYS}


def measure_cost(model: str, img_size: int, num_classes: int = 1000) -> dict[str, float]:
    """``param_count`` (M), ``gmacs``, ``gflops`` and ``macts`` (M) of a registered variant at
    batch 1 and ``img_size`` px, counted by calflops on the meta device and cached on disk."""
    name = resolve_model(model)
    _check_size(name, img_size)
    if num_classes < 1:
        raise UserError(f"num_classes must be 1 or more, got {num_classes}")
    key = {
        "model": name,
        "scaling": repr(scaling_of(name)),  # a name registered with another spec is not a hit
        "img_size": img_size,
        "num_classes": num_classes,
        "timm": timm.__version__,
    }
    path = _cache_path(name, img_size, num_classes)
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    with torch.device("meta"):
        net = timm.create_model(name, num_classes=num_classes)
    cost = count_cost(net, img_size)
    atomic_write(path, json.dumps({"key": key, "cost": cost}, indent=1) + "\n")
    return cost
