"""Scaled EfficientNet-B0 variants as models in timm's registry.

The only module that touches timm internals: every variant is built by timm's own private
EfficientNet generator, ``timm.models.efficientnet._gen_efficientnet``, with the variant's width
and depth multipliers, so a variant is exactly what timm would build for those coefficients
(including timm's rounding: stage depths are rounded up, channels to multiples of 8).

The default input size of a variant is 224 x its resolution multiplier, rounded to a multiple
of 8 (``effnet_b0_r2``: 448; ``effnet_b0_phi2``: 296).

Importing this module registers the built-in variants. :func:`register_variant` adds others.

Weights: a variant has none of its own. ``pretrained=True`` loads what the pretrained cfg names
(``pretrained_cfg_overlay=dict(file=...)``, a ``state_dict``, an ``hf_hub_id``), through timm's
own loader; a finished run's ``model/`` folder (:func:`export`, timm's ``save_for_hf`` layout)
loads with ``timm.create_model("local-dir:runs/<run>/model")``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import PretrainedCfg, register_model, resolve_pretrained_cfg, save_for_hf
from timm.models.efficientnet import _gen_efficientnet

from timm_scaling.errors import UserError
from timm_scaling.scaling import Scaling, compound, format_number, is_model_name, parse_name

# The timm releases this module was tested with; _gen_efficientnet is private API.
TIMM_SPEC = ">=1.0.15,<1.1"
_GEN_PARAMS = ("variant", "channel_multiplier", "depth_multiplier", "pretrained")

# timm's register_model reads pretrained cfgs from the registering module's `default_cfgs`,
# so each variant's cfg goes in here *before* its entrypoint is registered.
default_cfgs: dict[str, dict[str, Any]] = {}
_registered: dict[str, Scaling] = {}

# Registered on import. phi2 is the paper's Table 7 compound model (d=1.44, w=1.21, r=1.32).
BUILTIN_SCALINGS: tuple[Scaling, ...] = (
    Scaling(),
    *(Scaling(depth=d) for d in (2, 3, 4, 6, 8)),
    *(Scaling(width=w) for w in (1.4, 1.8, 2, 2.6, 3.8, 5)),
    *(Scaling(resolution=r) for r in (1.3, 1.5, 1.7, 2, 2.5)),
    *(compound(phi) for phi in range(1, 8)),
)

# EfficientNet's stem and four of its stages halve the feature map (stride-2 convs, "same"
# padding), so the last feature map is the input size ceil-divided by 2 five times.
_DOWNSAMPLING_LAYERS = 5
B0_BLOCKS = 16  # blocks of EfficientNet-B0 over its seven stages: 1 2 2 3 3 4 1
# Pretrained cfg keys that locate weights for timm's loader; save_for_hf's config file.
WEIGHT_SOURCES = ("state_dict", "file", "hf_hub_id", "url")
HF_CONFIG = "config.json"


def check_timm_builder() -> None:
    """Fail loudly if timm's private builder no longer takes the arguments we pass."""
    params = inspect.signature(_gen_efficientnet).parameters
    missing = [p for p in _GEN_PARAMS if p not in params]
    if missing:
        raise RuntimeError(
            f"timm {timm.__version__}: _gen_efficientnet has no parameter(s) {missing}; "
            f"timm-scaling is tested with timm{TIMM_SPEC}: pip install 'timm{TIMM_SPEC}'"
        )


def feature_map_size(image_size: int) -> int:
    size = image_size
    for _ in range(_DOWNSAMPLING_LAYERS):
        size = math.ceil(size / 2)
    return size


def _pretrained_cfg(scaling: Scaling) -> dict[str, Any]:
    size = scaling.image_size(divisor=8)
    pool = feature_map_size(size)
    return dict(
        url="",
        num_classes=1000,
        input_size=(3, size, size),
        pool_size=(pool, pool),
        crop_pct=0.875,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="conv_stem",
        classifier="classifier",
        license="apache-2.0",
        notes=(f"EfficientNet-B0 scaled by timm-scaling: {describe(scaling)}; no weights",),
    )


def describe(scaling: Scaling) -> str:
    text = (
        f"depth x{format_number(scaling.depth)}, width x{format_number(scaling.width)}, "
        f"resolution x{format_number(scaling.resolution)}"
    )
    if scaling.coefficients is not None:
        phi, alpha, beta, gamma = scaling.coefficients
        text += f" (compound phi={phi:g}, alpha={alpha:g}, beta={beta:g}, gamma={gamma:g})"
    return text


def build(name: str, scaling: Scaling, pretrained: bool = False, **kwargs: Any):
    """Build ``scaling`` of B0 through timm's EfficientNet generator, registered as ``name``.

    ``pretrained=True`` loads the weights the pretrained cfg names, as timm does for its own
    models; a weights file beside a ``save_for_hf`` config.json (a run's ``model/``) also takes
    that config's input size, classes, mean and std (the caller's overlay wins)."""
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _weights_overlay(
            name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")
        )
    return _gen_efficientnet(
        name,
        channel_multiplier=scaling.width,
        depth_multiplier=scaling.depth,
        pretrained=pretrained,
        **kwargs,
    )


def _weights_overlay(name: str, cfg: Any, overlay: dict[str, Any] | None) -> dict[str, Any]:
    resolved = resolve_pretrained_cfg(name, cfg, overlay).to_dict()
    if not any(resolved.get(key) for key in WEIGHT_SOURCES):
        raise RuntimeError(
            f"{name} has no pretrained weights (timm-scaling variants are trained from scratch): "
            "load your own with pretrained_cfg_overlay=dict(file=PATH), "
            "timm.create_model('local-dir:runs/<run>/model') or checkpoint_path=PATH, "
            "or call timm.create_model without pretrained=True"
        )
    return {**_exported_cfg(name, resolved.get("file")), **(overlay or {})}


def _exported_cfg(name: str, file: str | None) -> dict[str, Any]:
    """The pretrained cfg of the ``save_for_hf`` export of ``name`` that holds ``file``, or {}."""
    config = Path(file).parent / HF_CONFIG if file and Path(file).is_file() else None
    if config is None or not config.is_file():
        return {}
    saved = json.loads(config.read_text())
    if saved.get("architecture") != name:
        return {}
    known = {f.name for f in fields(PretrainedCfg)}
    cfg = {k: v for k, v in saved.get("pretrained_cfg", {}).items() if k in known}
    return {**cfg, "num_classes": saved.get("num_classes", cfg.get("num_classes"))}


def export(
    model,
    directory: str | Path,
    data_config: dict[str, Any],
    notes: str = "",
    label_names: list[str] | None = None,
) -> Path:
    """Save ``model`` with timm's ``save_for_hf`` into ``directory`` (replaced as a whole):
    model.safetensors and a config.json whose pretrained cfg says how it was trained and is
    evaluated: ``data_config``, the run's own evaluation (input size, interpolation, crop_pct,
    mean, std), so that timm's validate.py evaluates it as the run did; its classes in label
    order (``label_names``, which timm's inference.py ``--label-type name`` shows), and
    ``notes``. ``timm.create_model("local-dir:DIRECTORY", pretrained=True)`` builds it
    back; ``timm.models.push_to_hf_hub`` publishes it.
    """
    import copy

    import torch

    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # safetensors stores contiguous tensors only; a channels_last model is copied back first.
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    name = model.pretrained_cfg["architecture"]
    if name in _registered or is_model_name(name):
        about = f"EfficientNet-B0 scaled by timm-scaling: {describe(scaling_of(name))}"
    else:  # any other timm model, trained from scratch by timm-scaling
        about = f"timm's {name}, trained by timm-scaling"
    keys = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
    data_config = {key: data_config[key] for key in keys if key in data_config}
    save_for_hf(
        model,
        str(partial),
        model_config={
            "pretrained_cfg": {"notes": tuple(n for n in (about, notes) if n)},
            **({"label_names": list(label_names)} if label_names else {}),
        },
        safe_serialization=True,
        data_config=data_config,
    )
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def _entrypoint(name: str, scaling: Scaling):
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        return build(name, scaling, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"EfficientNet-B0 scaled by {describe(scaling)}."
    return entrypoint


def register_variant(scaling: Scaling, name: str | None = None) -> str:
    """Register ``scaling`` in timm's registry and return its model name.

    The name defaults to ``scaling.name``. Registering the same spec under the same name again
    does nothing; the same name with another spec is an error.
    """
    name = name or scaling.name
    existing = _registered.get(name)
    if existing is not None:
        if existing != scaling:
            raise UserError(
                f"{name} is already registered as {describe(existing)}; "
                f"choose another name for {describe(scaling)}"
            )
        return name
    if timm.is_model(name):
        raise UserError(f"{name} is already a timm model; choose another name")
    default_cfgs[name] = _pretrained_cfg(scaling)
    fn = _entrypoint(name, scaling)
    setattr(sys.modules[__name__], name, fn)
    register_model(fn)
    _registered[name] = scaling
    return name


def registered() -> dict[str, Scaling]:
    """Every variant registered so far, name -> scaling, in registration order."""
    return dict(_registered)


def scaling_of(name: str) -> Scaling:
    """The scaling of a registered variant, or of any name the grammar accepts."""
    return _registered.get(name) or parse_name(name)


@dataclass(frozen=True)
class Architecture:
    """What timm really builds for a variant, after its rounding."""

    blocks_per_stage: tuple[int, ...]
    channels_per_stage: tuple[int, ...]
    stem_channels: int
    num_features: int
    param_count: int  # at timm's default 1000 classes

    @property
    def blocks(self) -> int:
        return sum(self.blocks_per_stage)


def _out_channels(block) -> int:
    # InvertedResidual projects with conv_pwl; DepthwiseSeparableConv ends with conv_pw.
    last = getattr(block, "conv_pwl", None) or block.conv_pw
    return last.out_channels


def architecture(name: str) -> Architecture:
    """Real blocks, channels and params of a registered variant, read off a model built on the
    meta device (no memory, no initialisation cost)."""
    import torch

    with torch.device("meta"):
        model = timm.create_model(name)
    return Architecture(
        blocks_per_stage=tuple(len(stage) for stage in model.blocks),
        channels_per_stage=tuple(_out_channels(stage[-1]) for stage in model.blocks),
        stem_channels=model.conv_stem.out_channels,
        num_features=model.num_features,
        param_count=sum(p.numel() for p in model.parameters()),
    )


def nominal_blocks(scaling: Scaling) -> float:
    """B0's blocks times the depth multiplier, before timm rounds each stage up."""
    return B0_BLOCKS * scaling.depth


check_timm_builder()
for _scaling in BUILTIN_SCALINGS:
    register_variant(_scaling)


def cached_architectures(names: list[str]) -> dict[str, Architecture]:
    """:func:`architecture` of each registered name, kept on disk per timm version beside the
    cost counts (``$TIMM_SCALING_CACHE``): a model is built once, not at every `list`."""
    from timm_scaling.cache import cache_dir, store

    path = cache_dir() / "architecture" / f"timm-{timm.__version__}.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}  # absent or unreadable: build again
    keys = {name: f"{name} {describe(_registered[name])}" for name in names}
    missing = [name for name in names if keys[name] not in cached]
    for name in missing:
        cached[keys[name]] = dataclasses.asdict(architecture(name))
    if missing:
        store(path, json.dumps(cached, indent=0))
    return {
        name: Architecture(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})
        for name, arch in ((name, cached[keys[name]]) for name in names)
    }


def variant_table() -> list[dict[str, object]]:
    """One row per registered variant, as `timm-scaling list` prints it: multipliers, default
    input size, params (M, 1000 classes), real blocks (after timm's rounding) and per stage,
    nominal blocks (16 x depth) and the nominal FLOP factor d*w^2*r^2."""
    names = list(registered())
    arches = cached_architectures(names)
    rows = []
    for name in names:
        scaling, arch = _registered[name], arches[name]
        rows.append(
            {
                "model": name,
                "method": scaling.method,
                "depth": round(scaling.depth, 4),
                "width": round(scaling.width, 4),
                "resolution": round(scaling.resolution, 4),
                "input": scaling.image_size(divisor=8),
                "params_m": round(arch.param_count / 1e6, 2),
                "blocks": arch.blocks,
                "per_stage": " ".join(map(str, arch.blocks_per_stage)),
                "nominal_blocks": round(nominal_blocks(scaling), 1),
                "flop_factor": round(scaling.flop_factor, 2),
            }
        )
    return rows


def ensure_registered(name: str) -> str:
    """Register a grammar-valid name (e.g. ``effnet_b0_d1p9``) on first use; return it."""
    if name not in _registered:
        register_variant(parse_name(name), name=name)
    return name
