"""The paper's tables beside our counts: Tables 2 and 7, the paper's dropout by cost, and
timm's benchmark GMACs; ``paper_markdown`` writes them as analysis/paper_cost.md."""

from __future__ import annotations

import csv
import io
import math
from importlib import resources

import numpy as np
import timm
import torch
from torch import nn

from timm_scaling.catalog import (
    create_model,
    image_size,
    resolve_model,
)
from timm_scaling.cost import measure_cost
from timm_scaling.errors import UserError
from timm_scaling.models import register_variant
from timm_scaling.profile import (
    MATCH_METHODS,
    MATCH_TOLERANCE,
    match_gmacs,
    percent_diff,
    to_markdown,
)
from timm_scaling.scaling import ALPHA, Scaling, compound


def _read_reference(name: str) -> list[dict[str, str]]:
    """A published table shipped inside the package (timm_scaling/reference/README.md names
    its source), read as rows of strings."""
    text = (resources.files("timm_scaling") / "reference" / name).read_text()
    return list(csv.DictReader(io.StringIO(text)))


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
                "param_diff_pct": percent_diff(cost["param_count"], paper_params),
                "paper_gmacs": paper_gmacs,
                "gmacs": cost["gmacs"],
                "gmacs_diff_pct": percent_diff(cost["gmacs"], paper_gmacs),
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
                "gmacs_diff_pct": percent_diff(cost["gmacs"], paper_gmacs),
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
                "gmacs_diff_pct": percent_diff(gmacs, theirs),
                **{f"{k}_gops": v for k, v in terms.items()},
                "explained_gmacs": explained,
                "explained_diff_pct": percent_diff(explained, theirs),
            }
        )
    return rows


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
