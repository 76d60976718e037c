"""Every model the tool takes: our scaled EfficientNet-B0 variants and the rest of timm's registry.

Ours resolve through :mod:`timm_scaling.models` (a name of the grammar registers on first use).
Any other name that ``timm.create_model`` takes comes as timm ships it, never with weights:
``pretrained=True`` is never passed, so nothing is downloaded. A model whose pretrained cfg says
``fixed_input_size`` (ViTs and the like) is built for the size it runs at (``img_size=``); a
model that cannot run at a size fails before any work, with a one-line error naming the sizes
it takes.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from timm_scaling.errors import UserError
from timm_scaling.models import ensure_registered, registered, scaling_of
from timm_scaling.recipe_keys import check_model_kwargs
from timm_scaling.recipes import list_recipes
from timm_scaling.scaling import BASE_IMAGE_SIZE, is_model_name

# More matches than this is a typo or a too-wide glob, not a study: profiling 'res*' (100+
# models) at full size takes minutes.
MAX_GLOB_MATCHES = 50
# EfficientNet halves its feature map five times (total stride 32). A smaller input does not
# fill one cell of the final feature map: the last stages would compute on padding alone.
MIN_IMAGE_SIZE = 32
# The largest size tried when looking for the sizes a model takes.
_PROBE_LIMIT = 2048


def is_ours(name: str) -> bool:
    """A timm-scaling variant (registered, or a name of the grammar), not another timm model."""
    return name in registered() or is_model_name(name)


def all_names() -> list[str]:
    """Ours (in registration order), then the rest of timm's registry."""
    ours = list(registered())
    return ours + [name for name in timm.list_models() if name not in registered()]


def resolve_model(name: str) -> str:
    """The name of a model ``timm.create_model`` takes: ours (registered on the way) or timm's.

    An unknown name is a one-line error with the closest names from both registries."""
    if is_ours(name):
        return ensure_registered(name)
    if timm.is_model(name):
        return name
    ours = list(registered())
    theirs = [n for n in timm.list_models() if n not in registered()]
    close = [m for names in (ours, theirs) for m in difflib.get_close_matches(name, names, n=3)]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(
        f"unknown model {name!r}: {hint}see `timm-scaling list` for our variants and "
        f"timm.list_models() for timm's (or name a recipe: {', '.join(list_recipes())})"
    )


def resolve_models(patterns: list[str]) -> list[str]:
    """Names and globs (``effnet_b0_w*``, ``resnet*``, matched against ours and timm's
    registry), in order, once each."""
    names: list[str] = []
    for pattern in patterns:
        if any(char in pattern for char in "*?["):
            matches = fnmatch.filter(all_names(), pattern)
            if not matches:
                raise UserError(
                    f"{pattern!r} matches no model of ours or timm's; try `timm-scaling list` "
                    "or timm.list_models()"
                )
            if len(matches) > MAX_GLOB_MATCHES:
                raise UserError(
                    f"{pattern!r} matches {len(matches)} models (at most {MAX_GLOB_MATCHES}); "
                    f"narrow the glob{_narrower(pattern, matches)}"
                )
        else:
            matches = [resolve_model(pattern)]
        names += [name for name in matches if name not in names]
    return names


def _narrower(pattern: str, matches: list[str]) -> str:
    """An example of a narrower glob: the pattern's literal prefix and one more letter (the
    most common among the matches), e.g. ``resn*`` for ``res*``."""
    prefix = re.split(r"[*?[]", pattern, maxsplit=1)[0]
    longer = Counter(m[: len(prefix) + 1] for m in matches if len(m) > len(prefix))
    return f", e.g. '{longer.most_common(1)[0][0]}*'" if prefix and longer else ""


def image_size(model: str, base_size: int | None = None) -> int:
    """The input size a model is profiled at. Ours: 224 (or ``base_size``) times the resolution
    multiplier (224-based sizes rounded to a multiple of 8, as in the pretrained cfg). Timm's:
    its pretrained cfg's input size, or ``base_size``."""
    name = resolve_model(model)
    if is_ours(name):
        scaling = scaling_of(name)
        if base_size is None:
            return scaling.image_size(BASE_IMAGE_SIZE, divisor=8)  # = its pretrained cfg size
        return scaling.image_size(base_size)
    if base_size is not None:
        return base_size
    return get_pretrained_cfg(name).input_size[-1]


def _fixed_size(name: str) -> bool:
    cfg = get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def create_model(
    name: str,
    img_size: int,
    num_classes: int = 1000,
    model_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, ...)`` without weights, for ``img_size`` px inputs: models of a
    fixed input size get ``img_size=``; ``model_kwargs`` and ``kwargs`` go to timm."""
    model_kwargs = dict(model_kwargs or {})
    check_model_kwargs(model_kwargs)
    if _fixed_size(name):
        kwargs["img_size"] = img_size
    try:
        return timm.create_model(name, num_classes=num_classes, **model_kwargs, **kwargs)
    except TypeError as err:
        raise UserError(
            f"timm.create_model({name!r}, ...) fails: {err}; check model_kwargs"
        ) from None


def in_chans(model_kwargs: Mapping[str, Any] | None) -> int:
    """The input channels of a model built with ``model_kwargs`` (timm's default: 3)."""
    return int((model_kwargs or {}).get("in_chans", 3))


def _runs(name: str, img_size: int, model_kwargs: Mapping[str, Any] | None) -> bool:
    """Whether the model builds and runs a forward pass at ``img_size`` (on the meta device)."""
    try:
        with torch.device("meta"):
            model = create_model(name, img_size, model_kwargs=model_kwargs).eval()
            model(torch.empty(1, in_chans(model_kwargs), img_size, img_size))
    except Exception:  # a probe: whatever the failure, the model does not run at this size
        return False
    return True


def sizes_taken(name: str, failed: int, model_kwargs: Mapping[str, Any] | None = None) -> str:
    """What input sizes a model that fails at ``failed`` px takes, in words: ``N px or more``
    (the smallest size it runs at, found by bisection on the meta device), or that no size up
    to 2048 px works. (Every fixed-size model of timm 1.0 takes ``img_size=``, so none is
    limited to its cfg size.)"""
    high = 2 * failed
    while not _runs(name, high, model_kwargs):
        if high >= _PROBE_LIMIT:
            return f"no size up to {_PROBE_LIMIT} px (the error is not about the size)"
        high *= 2
    low = max(failed, high // 2)  # fails
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if _runs(name, mid, model_kwargs) else (mid, high)
    return f"{high} px or more"


def check_size(name: str, img_size: int) -> None:
    """Ours need 32 px or more: below, EfficientNet's last stages see padding alone."""
    if is_ours(name) and img_size < MIN_IMAGE_SIZE:
        raise UserError(
            f"{name} at {img_size} px: the input is too small for the network, which "
            f"downsamples by 32; use an image size of {MIN_IMAGE_SIZE} or more"
        )


def size_error(
    name: str, img_size: int, err: BaseException, model_kwargs: Mapping[str, Any] | None = None
) -> UserError:
    """The one-line error for a model that failed to run at ``img_size``."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    taken = sizes_taken(name, img_size, model_kwargs)
    return UserError(
        f"{name} cannot run at {img_size} px ({reason}); it takes {taken}: "
        "choose another base_size (or --base-size)"
    )
