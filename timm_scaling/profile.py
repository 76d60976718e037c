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
import csv
import functools
import io
import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from timm_scaling.cache import cache_dir
from timm_scaling.catalog import (
    check_size,
    create_model,
    image_size,
    is_ours,
    resolve_model,
    resolve_models,
    size_error,
)
from timm_scaling.errors import UserError
from timm_scaling.models import register_variant, scaling_of
from timm_scaling.recipes import kwargs_tag
from timm_scaling.report import atomic_write
from timm_scaling.scaling import ALPHA, MAX_MULT, MIN_MULT, Scaling, compound

COST_KEYS = ("param_count", "gmacs", "gflops", "macts")

# What calflops 0.3.2 patches besides torch.nn.functional (calflops/pytorch_ops.py).
_TORCH_OPS = ("matmul", "addmm", "mul", "add", "einsum", "baddbmm")
_TENSOR_OPS = ("matmul", "addmm", "mul", "add")
_MISSING = object()


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
        cost = count_cost(net, img_size)
    except (RuntimeError, ValueError, AssertionError, IndexError, ZeroDivisionError) as err:
        raise size_error(name, img_size, err, model_kwargs) from None
    atomic_write(path, json.dumps({"key": key, "cost": cost}, indent=1) + "\n")
    return cost


# ---------------------------------------------------------------------------- speed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _samples_per_sec(step, batch_size: int, device: torch.device, warmup: int, steps: int):
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - start)


def _autocast(device: torch.device):
    # bf16 autocast on CUDA, fp32 elsewhere: the precision the trainer runs at.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def measure_speed(
    model: str,
    img_size: int,
    num_classes: int = 1000,
    batch_size: int = 64,
    device: str = "cpu",
    warmup: int = 3,
    steps: int = 10,
    model_kwargs: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Inference and training throughput (samples/s) and peak memory of a real model.

    channels_last, ``warmup`` untimed steps, then ``steps`` timed ones between device
    synchronisations. A training step is the trainer's: forward, cross-entropy, backward and an
    optimizer step. Peak memory is CUDA's allocator peak over the training steps; on a CPU it is
    not measured (None).
    """
    name = resolve_model(model)
    check_size(name, img_size)
    if batch_size < 2:
        raise UserError("--batch-size must be 2 or more: batch norm cannot train on one sample")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    net = create_model(name, img_size, num_classes, model_kwargs)
    net = net.to(dev, memory_format=torch.channels_last)
    images = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,), device=dev)

    def infer() -> None:
        with torch.inference_mode(), _autocast(dev):
            net(images)

    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-4)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(dev):
            loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()

    net.eval()
    infer_rate = _samples_per_sec(infer, batch_size, dev, warmup, steps)
    net.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    train_rate = _samples_per_sec(train, batch_size, dev, warmup, steps)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return {
        "infer_samples_per_sec": infer_rate,
        "train_samples_per_sec": train_rate,
        "peak_mem_mb": peak,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }


Target = tuple[str, int, int, dict[str, object]]  # model, image size, classes, model_kwargs


def _targets(
    patterns: list[str],
    base_size: int | None,
    num_classes: int,
    model_kwargs: Mapping[str, object] | None = None,
) -> list[Target]:
    """(model, image size, classes, model_kwargs) per pattern: a recipe brings its own size,
    classes and model_kwargs (``model_kwargs`` go over them)."""
    from timm_scaling.data import num_classes as dataset_classes
    from timm_scaling.recipes import SUFFIXES, list_recipes, load_recipe

    extra = dict(model_kwargs or {})
    targets: list[Target] = []
    for pattern in patterns:
        if pattern in list_recipes() or pattern.endswith(SUFFIXES):
            recipe = load_recipe(pattern)
            classes = dataset_classes(recipe.dataset, recipe.data_dir)
            kwargs = {**recipe.model_kwargs, **extra}
            found = [(resolve_model(recipe.model), recipe.image_size, classes, kwargs)]
        else:
            found = [
                (m, image_size(m, base_size), num_classes, extra) for m in resolve_models([pattern])
            ]
        targets += [t for t in found if t not in targets]
    return targets


def profile_rows(
    models: list[str],
    base_size: int | None = None,
    num_classes: int = 1000,
    batch_size: int = 64,
    device: str = "cpu",
    speed: bool = True,
    model_kwargs: Mapping[str, object] | None = None,
) -> list[dict[str, object]]:
    """One row per model (names, globs over ours and timm's registry, or recipes): the columns
    of `timm-scaling profile`; a ``model_kwargs`` column when any model has some."""
    targets = _targets(models, base_size, num_classes, model_kwargs)
    rows = []
    for name, size, classes, kwargs in targets:
        row: dict[str, object] = {"model": name, "img_size": size}
        if any(t[3] for t in targets):
            row["model_kwargs"] = json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""
        row.update(measure_cost(name, size, classes, kwargs))
        if speed:
            row.update(measure_speed(name, size, classes, batch_size, device, model_kwargs=kwargs))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- the paper


def _read_reference(name: str) -> list[dict[str, str]]:
    """A published table shipped inside the package (timm_scaling/reference/README.md names
    its source), read as rows of strings."""
    text = (resources.files("timm_scaling") / "reference" / name).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def _pct(ours: float, theirs: float) -> float:
    return (ours / theirs - 1) * 100


def _table7_scaling(row: dict[str, str]) -> Scaling:
    depth, width, res = (float(row[k]) for k in ("depth_mult", "width_mult", "res_mult"))
    if row["method"] != "compound":
        return Scaling(depth, width, res)
    # The paper prints phi=2's multipliers to one decimal (1.2^2 = 1.44 -> 1.4).
    scaling = compound(round(math.log(depth) / math.log(ALPHA)))
    printed = tuple(round(v, 1) for v in (scaling.depth, scaling.width, scaling.resolution))
    if printed != (depth, width, res):
        raise UserError(f"Table 7's compound row {depth, width, res} is not a phi of ours")
    return scaling


def paper_dropout(gmacs: float) -> float:
    """The dropout before the classifier that the paper's B0..B7 give a model of ``gmacs``
    (Table 2's MACs; the official code's rates, 0.2 at B0 to 0.5 at B7): linear in log MACs
    between the two B models around it, B0's below B0, B7's above B7."""
    rows = sorted(
        (float(row["gmacs"]), float(row["dropout"]))
        for row in _read_reference("paper_table2_b0_b7.csv")
    )
    costs = [math.log(cost) for cost, _ in rows]
    rates = [rate for _, rate in rows]
    return float(np.interp(math.log(gmacs), costs, rates))


def paper_table2(num_classes: int = 1000) -> list[dict[str, object]]:
    """B0..B7: the paper's width/depth coefficients built through our registry, at the paper's
    resolutions, beside Table 2's params and MACs."""
    rows = []
    for ref in _read_reference("paper_table2_b0_b7.csv"):
        scaling = Scaling(depth=float(ref["depth_mult"]), width=float(ref["width_mult"]))
        name = register_variant(scaling)
        size = int(ref["img_size"])
        cost = measure_cost(name, size, num_classes)
        paper_params, paper_gmacs = float(ref["param_count"]), float(ref["gmacs"])
        rows.append(
            {
                "paper_model": ref["model"],
                "model": name,
                "img_size": size,
                "paper_param_count": paper_params,
                "param_count": cost["param_count"],
                "param_diff_pct": _pct(cost["param_count"], paper_params),
                "paper_gmacs": paper_gmacs,
                "gmacs": cost["gmacs"],
                "gmacs_diff_pct": _pct(cost["gmacs"], paper_gmacs),
                "gflops": cost["gflops"],
                "macts": cost["macts"],
            }
        )
    return rows


def paper_table7(num_classes: int = 1000) -> list[dict[str, object]]:
    """Table 7's scaled B0s (d=4, w=2, r=2, compound) as our variants, at their default input
    sizes, beside the paper's MACs."""
    rows = []
    for ref in _read_reference("paper_table7_scaling_b0.csv"):
        scaling = _table7_scaling(ref)
        name = register_variant(scaling)
        size = image_size(name)
        cost = measure_cost(name, size, num_classes)
        paper_gmacs = float(ref["gmacs"])
        rows.append(
            {
                "method": ref["method"],
                "paper_dwr": f"{ref['depth_mult']}/{ref['width_mult']}/{ref['res_mult']}",
                "model": name,
                "dwr": f"{scaling.depth:g}/{scaling.width:g}/{scaling.resolution:g}",
                "img_size": size,
                "paper_gmacs": paper_gmacs,
                "gmacs": cost["gmacs"],
                "gmacs_diff_pct": _pct(cost["gmacs"], paper_gmacs),
                "nominal_gmacs": measure_cost("effnet_b0", 224)["gmacs"] * scaling.flop_factor,
                "gflops": cost["gflops"],
                "param_count": cost["param_count"],
                "macts": cost["macts"],
            }
        )
    return rows


# ---------------------------------------------------------------------------- timm's benchmark

# Rows of timm's results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv (shared/reference/timm:
# fvcore counts at batch 1, 2 decimals), a few of each family: ResNets, EfficientNets, a
# MobileNet, a ViT.
BENCHMARK_FILE = "timm_benchmark_gmacs.csv"


def benchmark_reference() -> list[dict[str, str]]:
    """The rows of timm's benchmark shipped in the package (timm_scaling/reference/)."""
    text = (resources.files("timm_scaling") / "reference" / BENCHMARK_FILE).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def benchmark_terms(model: str, img_size: int) -> dict[str, float]:
    """What timm's benchmark (fvcore's FlopCountAnalysis, at inference) counts beyond calflops'
    MACs, in billions: ``attention`` (the matmuls of attention, which calflops misses: timm calls
    F.scaled_dot_product_attention, which calflops 0.3.2 does not patch), ``batch_norm`` (2 per
    input element: scale and shift) and ``layer_norm`` (5 per input element; GroupNorm too)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = create_model(resolve_model(model), img_size).eval()
    norms = {"batch_norm": 0, "layer_norm": 0}

    def hook(kind: str, per_element: int):
        def add(_module, inputs, _output) -> None:
            norms[kind] += per_element * inputs[0].numel()

        return add

    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_hook(hook("batch_norm", 2))
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.register_forward_hook(hook("layer_norm", 5))
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(1, 3, img_size, img_size, device="meta"))
    counts = counter.get_flop_counts()["Global"]
    attention = sum(v for op, v in counts.items() if "bmm" in str(op) or "attention" in str(op))
    return {"attention": attention / 2e9, **{k: v / 1e9 for k, v in norms.items()}}


def benchmark_rows() -> list[dict[str, object]]:
    """timm's published GMACs beside calflops' and the terms that explain the difference."""
    rows = []
    for ref in benchmark_reference():
        model, size, theirs = ref["model"], int(ref["infer_img_size"]), float(ref["infer_gmacs"])
        gmacs = measure_cost(model, size)["gmacs"]
        terms = benchmark_terms(model, size)
        explained = gmacs + sum(terms.values())
        rows.append(
            {
                "model": model,
                "img_size": size,
                "timm_gmacs": theirs,
                "gmacs": gmacs,
                "gmacs_diff_pct": _pct(gmacs, theirs),
                **{f"{k}_gops": v for k, v in terms.items()},
                "explained_gmacs": explained,
                "explained_diff_pct": _pct(explained, theirs),
            }
        )
    return rows


# ---------------------------------------------------------------------------- matched MACs

MATCH_TOLERANCE = 0.03
MATCH_METHODS = ("depth", "width", "resolution")
# Multipliers are searched with 1 decimal first, then 2, then 3: the shortest name that fits.
_SEARCH_DECIMALS = (1, 2, 3)


def _find_multiplier(cost, target: float, method: str) -> float:
    """The multiplier with the fewest decimals whose cost is within MATCH_TOLERANCE of target
    (the closest at that precision), by bisection on the measured cost: monotone, but a
    staircase, since timm rounds blocks and channels."""

    lo = hi = 1.0
    while cost(hi) < target:
        lo, hi = hi, hi * 2
        if hi > MAX_MULT:
            raise UserError(f"{target} GMACs is out of reach by {method} alone; aim lower")
    while cost(lo) > target:
        lo, hi = lo / 2, lo
        if lo < MIN_MULT:
            raise UserError(f"{target} GMACs is out of reach by {method} alone; aim higher")
    for decimals in _SEARCH_DECIMALS:
        while lo < (mid := round((lo + hi) / 2, decimals)) < hi:
            lo, hi = (mid, hi) if cost(mid) < target else (lo, mid)
        best = min((lo, hi), key=lambda m: abs(cost(m) - target))
        if abs(cost(best) / target - 1) <= MATCH_TOLERANCE:
            return best
    raise UserError(
        f"no {method} multiplier gives {target} GMACs within {MATCH_TOLERANCE:.0%}: the nearest, "
        f"{best:g}, gives {cost(best):.3f}; choose another target"
    )


def match_gmacs(
    target: float, base_size: int | None = None, num_classes: int = 1000
) -> list[dict[str, object]]:
    """For depth, width and resolution alone, the multiplier whose measured MACs (after timm's
    rounding) lie within 3% of ``target``; each is registered, one row per method."""
    if not target > 0:
        raise UserError(f"--match-gmacs must be above 0, got {target}")
    rows = []
    for method in MATCH_METHODS:

        @functools.cache
        def cost(multiplier: float, method: str = method) -> float:
            name = register_variant(Scaling(**{method: multiplier}))
            return measure_cost(name, image_size(name, base_size), num_classes)["gmacs"]

        multiplier = _find_multiplier(cost, target, method)
        name = register_variant(Scaling(**{method: multiplier}))
        size = image_size(name, base_size)
        measured = measure_cost(name, size, num_classes)
        rows.append(
            {
                "method": method,
                "multiplier": multiplier,
                "model": name,
                "img_size": size,
                **measured,
                "gmacs_diff_pct": _pct(measured["gmacs"], target),
            }
        )
    return rows


# ---------------------------------------------------------------------------- output

# How each column is printed; the CSV and JSON keep full precision.
_FORMATS = {
    "param_count": "{:.2f}",
    "paper_param_count": "{:g}",
    "gmacs": "{:.3f}",
    "paper_gmacs": "{:g}",
    "timm_gmacs": "{:g}",
    "nominal_gmacs": "{:.3f}",
    "gflops": "{:.3f}",
    "macts": "{:.2f}",
    "param_diff_pct": "{:+.1f}%",
    "gmacs_diff_pct": "{:+.1f}%",
    "explained_diff_pct": "{:+.2f}%",
    "explained_gmacs": "{:.3f}",
    "attention_gops": "{:.3f}",
    "batch_norm_gops": "{:.4f}",
    "layer_norm_gops": "{:.4f}",
    "infer_samples_per_sec": "{:.1f}",
    "train_samples_per_sec": "{:.1f}",
    "peak_mem_mb": "{:.0f}",
    "multiplier": "{:g}",
}


TEXT_COLUMNS = ("model", "paper_model", "method", "model_kwargs")


def format_cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    fmt = _FORMATS.get(column)
    return fmt.format(value) if fmt and isinstance(value, (int, float)) else str(value)


def to_csv(rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(" --- " if c in TEXT_COLUMNS else " ---: " for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(format_cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


PAPER_COMMAND = "timm-scaling profile --paper --markdown analysis/paper_cost.md"
PAPER_MATCH_GMACS = 1.8  # what the paper's Table 7 models cost


def paper_markdown(num_classes: int = 1000) -> str:
    """The side-by-side tables as one Markdown document (analysis/paper_cost.md)."""
    table2, table7 = paper_table2(num_classes), paper_table7(num_classes)
    matched = match_gmacs(PAPER_MATCH_GMACS, num_classes=num_classes)
    single = [row["gmacs"] for row in table7 if row["method"] in MATCH_METHODS]
    paper_single = [row["paper_gmacs"] for row in table7 if row["method"] in MATCH_METHODS]
    compound_row = next(row for row in table7 if row["method"] == "compound")
    bench = benchmark_rows()

    def gap(family: str) -> str:
        diffs = [r["gmacs_diff_pct"] for r in bench if r["model"].startswith(family)]
        return f"{max(diffs):+.1f}% to {min(diffs):+.1f}%"

    worst = max(abs(r["explained_gmacs"] - r["timm_gmacs"]) for r in bench)
    return f"""# Our measured cost beside the EfficientNet paper's

Regenerated by `{PAPER_COMMAND}` (timm {timm.__version__}, torch {torch.__version__}).

Paper: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"
(arXiv:1905.11946v5). Its "FLOPS" column counts multiply-adds, so it is compared with our
`gmacs`. Ours: calflops at batch 1, {num_classes} classes, every model built through the
timm-scaling registry (timm's EfficientNet generator with its rounding: stage depths rounded up,
channels to multiples of 8). `gflops` is calflops' own FLOP count (about 2.05 x MACs, not 2 x);
`macts` are the output elements of every conv and linear layer, in millions (Dollar et al.,
"Fast and Accurate Model Scaling"); `param_count` is in millions. A `diff` is ours relative to
the paper's printed number.

## Table 2: B0..B7, the paper's width/depth coefficients at the paper's resolutions

{to_markdown(table2)}
The paper prints one or two significant digits, so differences of a few percent are within its
rounding.

## Table 7: B0 scaled along one axis, and compound scaling (phi = 2)

{to_markdown(table7)}
`nominal_gmacs` is B0's measured MACs x d * w^2 * r^2 (timm rounds depth up, so real cost can
be more). Depth, width and resolution alone, at the printed multipliers, cost \
{min(single):.2f}-{max(single):.2f} GMACs here where the paper printed \
{min(paper_single):g}-{max(paper_single):g}; the compound model ({compound_row["model"]} at \
{compound_row["img_size"]} px) costs {compound_row["gmacs"]:.2f}. At those multipliers the
single-axis models are cheaper than the compound model they are compared with.

## Single-axis models matched to {PAPER_MATCH_GMACS:g} GMACs

The multiplier with the fewest decimals whose measured MACs lie within
{MATCH_TOLERANCE:.0%} of {PAPER_MATCH_GMACS:g} GMACs (224 px base):
`timm-scaling profile --match-gmacs {PAPER_MATCH_GMACS:g} --no-speed`.

{to_markdown(matched)}
## timm's benchmark GMACs beside ours: which operations each counts

timm publishes `infer_gmacs` for every architecture (`results/benchmark-infer-amp-nchw-pt291-\
cu128-4090.csv` in timm's repository; the rows below are shipped in
`timm_scaling/reference/{BENCHMARK_FILE}`). timm's `benchmark.py` counts them with DeepSpeed's
profiler when DeepSpeed is installed, else with fvcore's `FlopCountAnalysis`; the file also has
`infer_macts`, which only the fvcore path fills, so these are fvcore counts: model in eval mode,
batch 1, at the benchmark's image size, printed with 2 decimals.

Both counters take one multiply-add per weight use in every convolution and linear layer (our
`gmacs` is exactly that: calflops' MACs). fvcore adds, and calflops' MACs leave out:

- **batch norm**: 2 per input element at inference (scale and shift; calflops puts them in its
  FLOPs, not its MACs);
- **layer norm** and group norm: 5 per input element;
- **attention**: the matmuls q k^T and attn v. calflops misses them altogether: timm calls
  `F.scaled_dot_product_attention`, which calflops 0.3.2 does not patch. Counted here with
  torch's `FlopCounterMode` (bmm and attention ops);
- adaptive average pooling, 1 per input element (under 0.0005 GMACs here; left out).

Neither counts activations (SiLU, hard-swish, GELU), squeeze-and-excitation's mean, sigmoid and
gating product, or residual additions. `*_gops` are those terms in billions, as fvcore counts
them; `explained_gmacs` is our `gmacs` plus them.

{to_markdown(bench)}
Our `gmacs` plus batch norm, layer norm and attention lands on timm's number within
{worst:.4f} GMACs on every row, inside the benchmark's rounding (0.005). So calflops counts
ResNets {gap("resnet")} and EfficientNets {gap("efficientnet")} below timm's benchmark (the
small models' percentages include the 2-decimal rounding) because of batch norm alone: an
EfficientNet's depthwise convolutions are cheap next to the expanded feature maps that its batch
norms scale, so batch norm is 2.5-3.5% of its multiply-adds, against 0.3-0.6% in a ResNet. For
ViTs the gap is attention, 8% of vit_small_patch16_224 at 224 px: our `gmacs` of attention models
miss their attention matmuls, so compare them with CNNs through timm's benchmark numbers, not
ours. The paper's "FLOPS" and our `gmacs` are the convolution and linear multiply-adds, without
batch norm.
"""
