"""Seeds fused into one step (issue 21): each seed's weights, BatchNorm statistics and loss after
K updates equal that seed trained alone, on real digits images with the baseline recipe's
RMSpropTF, weight decay on the same parameters."""

from __future__ import annotations

import itertools
import warnings

import pytest
import timm
import torch

import timm_scaling  # noqa: F401  (registers effnet_b0)
from timm_scaling import data
from timm_scaling.batches import DeviceBatches
from timm_scaling.fused import FusedSeeds
from timm_scaling.recipes import load_recipe

SEEDS = (0, 1)
UPDATES = 3
BATCH = 16


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # dropout off: a fused seed draws its own, not the solo run's
    return timm.create_model("effnet_b0", num_classes=10, drop_rate=0.0, drop_path_rate=0.0)


def settings() -> dict:
    recipe = load_recipe("baseline")
    # A small lr: the first updates of an untrained B0 at lr 1e-2 amplify float rounding (the
    # order of a sum) into losses 2% apart, fused or not; at 1e-4 the runs agree to 1e-5.
    return {
        "lr": 1e-4,
        "weight_decay": recipe.weight_decay,
        "momentum": recipe.momentum,
        "eps": recipe.opt_eps,
        "alpha": recipe.decay,
    }


def batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The seed's own order and augmentation of 64 digits images at 32 px."""
    images = data.load_images("digits", None, 32, "train", 64)
    return list(itertools.islice(DeviceBatches(images, BATCH, seed=seed), UPDATES))


@pytest.mark.slow
def test_each_fused_seed_trains_as_it_would_alone():
    criterion = torch.nn.CrossEntropyLoss()
    fused = FusedSeeds([model(s) for s in SEEDS])
    optimizer = fused.optimizer("rmsproptf", **settings())
    per_seed = [batches(s) for s in SEEDS]
    fused_losses = []
    for step in range(UPDATES):
        images = torch.stack([per_seed[i][step][0] for i in range(len(SEEDS))])
        labels = torch.stack([per_seed[i][step][1] for i in range(len(SEEDS))])
        fused_losses.append(fused.backward(images, labels, criterion))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i, seed in enumerate(SEEDS):
        alone = model(seed)
        start = {k: v.clone() for k, v in alone.state_dict().items()}
        alone.train()
        solo_optimizer = timm.optim.create_optimizer_v2(alone, "rmsproptf", **settings())
        for step, (images, labels) in enumerate(per_seed[i]):
            loss = criterion(alone(images), labels)
            loss.backward()
            solo_optimizer.step()
            solo_optimizer.zero_grad(set_to_none=True)
            torch.testing.assert_close(fused_losses[step][i], loss.detach(), rtol=1e-4, atol=1e-5)
        theirs = alone.state_dict()
        ours = fused.state_dict(i)
        assert ours.keys() == theirs.keys()
        for name, tensor in theirs.items():
            torch.testing.assert_close(ours[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
        # Both moved: weights, BatchNorm statistics and the decayed biases' neighbours.
        moved = [n for n, t in theirs.items() if not torch.equal(t, start[n])]
        assert "bn1.running_mean" in moved and "conv_stem.weight" in moved
    # The seeds are trained apart: their weights differ.
    assert not torch.allclose(
        fused.state_dict(0)["conv_stem.weight"], fused.state_dict(1)["conv_stem.weight"]
    )


def test_weight_decay_goes_where_timm_puts_it_for_one_model():
    fused = FusedSeeds([model(s) for s in SEEDS])
    optimizer = fused.optimizer("rmsproptf", **settings())
    decayed = {
        name
        for group in optimizer.param_groups
        if group["weight_decay"] > 0
        for name, tensor in fused.params.items()
        if any(tensor is p for p in group["params"])
    }
    assert "conv_stem.weight" in decayed and "classifier.weight" in decayed
    assert "bn1.weight" not in decayed and "classifier.bias" not in decayed
    assert len(decayed) == sum(p.ndim > 1 for p in model(0).parameters())


def test_global_pool_over_maps_over_1x1_batches_over_the_seeds():
    """At 64 px B0's last map is 2x2: vmap has no batching rule for the adaptive average
    pool's strided copy there, so it looped over the seeds (warning each run); the fused
    skeleton pools by the mean, with each seed's own gradients still those of the model alone
    (in float64: in float32 an untrained B0's stem gradients on noise differ by rounding)."""
    criterion = torch.nn.CrossEntropyLoss()
    torch.manual_seed(0)
    images = torch.randn(len(SEEDS), 4, 3, 64, 64, dtype=torch.float64)
    labels = torch.randint(0, 10, (len(SEEDS), 4))
    fused = FusedSeeds([model(s).double() for s in SEEDS])
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in fused.skeleton.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's "performance drop" UserWarning
        fused.backward(images, labels, criterion)
    for i, seed in enumerate(SEEDS):
        alone = model(seed).double().train()
        assert isinstance(alone.global_pool.pool, torch.nn.AdaptiveAvgPool2d)  # its own, kept
        criterion(alone(images[i]), labels[i]).backward()
        for name, parameter in alone.named_parameters():
            torch.testing.assert_close(
                fused.params[name].grad[i], parameter.grad, rtol=1e-7, atol=1e-9, msg=name
            )
