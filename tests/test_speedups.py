"""The multi-tensor steps a GPU run takes (issue 21): timm's RMSpropTF with ``foreach`` and
ModelEmaV3's foreach update give the same weights as their one-tensor-at-a-time loops, on the
recipe's own settings and a real EfficientNet-B0, so turning them on changes speed, not the run."""

from __future__ import annotations

import copy

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3

from timm_scaling.recipes import load_recipe

STEPS = 3


def trained(foreach: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """B0's weights and EMA after STEPS RMSpropTF updates with the baseline recipe's settings."""
    recipe = load_recipe("baseline")
    torch.manual_seed(0)
    model = timm.create_model("effnet_b0", num_classes=10)
    optimizer = create_optimizer_v2(
        model,
        recipe.optimizer,
        lr=0.01,
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        eps=recipe.opt_eps,
        alpha=recipe.decay,
        foreach=foreach,
    )
    ema = ModelEmaV3(copy.deepcopy(model), decay=0.9, foreach=foreach)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, STEPS + 1):
        images = torch.randn(8, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, step=step)
    return model.state_dict(), ema.module.state_dict()


def test_foreach_rmsproptf_and_ema_equal_their_per_tensor_loops():
    weights, ema = trained(foreach=True)
    loop_weights, loop_ema = trained(foreach=False)
    assert load_recipe("baseline").optimizer == "rmsproptf"  # the paper's, and the recipes'
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, loop_weights[name], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ema[name], loop_ema[name], rtol=1e-5, atol=1e-6, msg=name)
    # The updates moved the weights: equal because both stepped, not because neither did.
    torch.manual_seed(0)
    start = timm.create_model("effnet_b0", num_classes=10).state_dict()
    moved = [
        n for n, t in weights.items() if t.is_floating_point() and not torch.equal(t, start[n])
    ]
    assert len(moved) > 100
