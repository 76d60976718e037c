"""What a variant costs: params, MACs, FLOPs and activations, counted.

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
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from timm_scaling.cache import cache_dir, store
from timm_scaling.catalog import (
    check_size,
    create_model,
    in_chans,
    is_ours,
    resolve_model,
    size_error,
)
from timm_scaling.errors import UserError
from timm_scaling.models import scaling_of
from timm_scaling.recipe_keys import kwargs_tag

COST_KEYS = ("param_count", "gmacs", "gflops", "macts")

# What calflops 0.3.2 patches besides torch.nn.functional (calflops/pytorch_ops.py).
_TORCH_OPS = ("matmul", "addmm", "mul", "add", "einsum", "baddbmm")
_TENSOR_OPS = ("matmul", "addmm", "mul", "add")
_MISSING = object()


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


def count_cost(model: nn.Module, img_size: int, channels: int = 3) -> dict[str, float]:
    """Params (M), GMACs, GFLOPs and activations (M) of ``model`` at batch 1 and a square
    ``img_size`` input of ``channels`` channels, counted on a copy (calflops leaves a model in
    eval mode and hooked).

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
                input_shape=(1, channels, img_size, img_size),
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


def _cache_path(model: str, img_size: int, num_classes: int, tag: str) -> Path:
    name = f"{model}-{img_size}-{num_classes}{'-' * bool(tag)}{tag}.json"
    return cache_dir() / "cost" / f"timm-{timm.__version__}" / name


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


def measure_cost(
    model: str,
    img_size: int,
    num_classes: int = 1000,
    model_kwargs: Mapping[str, object] | None = None,
) -> dict[str, float]:
    """``param_count`` (M), ``gmacs``, ``gflops`` and ``macts`` (M) of a model (ours or timm's,
    built with ``model_kwargs``) at batch 1 and ``img_size`` px, counted by calflops on the meta
    device and cached on disk. A size the model cannot take is a one-line error naming the sizes
    it takes."""
    name = resolve_model(model)
    check_size(name, img_size)
    if num_classes < 1:
        raise UserError(f"num_classes must be 1 or more, got {num_classes}")
    model_kwargs = dict(model_kwargs or {})
    key = {
        "model": name,
        # a name of ours registered with another spec is not a hit
        "scaling": repr(scaling_of(name)) if is_ours(name) else None,
        "img_size": img_size,
        "num_classes": num_classes,
        "model_kwargs": json.loads(json.dumps(model_kwargs, sort_keys=True, default=str)),
        "timm": timm.__version__,
    }
    path = _cache_path(name, img_size, num_classes, kwargs_tag(model_kwargs))
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    with torch.device("meta"):
        net = create_model(name, img_size, num_classes, model_kwargs)
    try:
        cost = count_cost(net, img_size, in_chans(model_kwargs))
    except (RuntimeError, ValueError, AssertionError, IndexError, ZeroDivisionError) as err:
        raise size_error(name, img_size, err, model_kwargs) from None
    store(path, json.dumps({"key": key, "cost": cost}, indent=1) + "\n")
    return cost
