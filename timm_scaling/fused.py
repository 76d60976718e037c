"""Seeds fused (issue 21): N copies of one timm model, one per seed, trained as one wider step.

Small models on a GPU are launch-bound (B0 at 32 px keeps an H100 ~99% idle): N seeds trained in
one process as one step launch the kernels of one. The copies' weights and buffers are stacked
(``torch.func.stack_module_state``) and one forward and backward runs over all of them with
``torch.func.vmap``: each seed keeps its own weights, its own BatchNorm statistics (updated in
place in the stacked buffers, as each copy's own would be), its own batch and its own dropout
draws (``randomness="different"``). The optimizer steps the stacked tensors: RMSpropTF's update
and weight decay are elementwise, so each seed's slice moves as that seed alone would; weight
decay goes where timm puts it for the single model (not on biases and norms), by name.

Runs trained so: ``sweep --seeds N --fuse-seeds`` (:mod:`timm_scaling.train.fusing`). Its speed:
``benchmarks/fused_seeds.py --seeds N`` (images/s of N fused seeds against N separate steps,
side by side; gpu_check step b3).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap


class FusedSeeds:
    """``models`` (one per seed, the same architecture) as stacked tensors, stepped together.

    ``params`` and ``buffers`` map each name of the single model to a tensor with a leading
    seed dimension; ``params`` are leaves that get ``.grad`` from :meth:`backward`."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if len({type(m) for m in models}) != 1:
            raise ValueError("fused seeds need copies of one architecture")
        self.template = models[0]
        params, buffers = stack_module_state(list(models))
        # Each seed's slice contiguous as a tensor of its own is (a channels_last stack's is not).
        self.params = {k: v.detach().contiguous().requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.contiguous() for k, v in buffers.items()}
        self.skeleton = _pool_by_mean(copy.deepcopy(models[0]).to("meta"))

    def _loss(self, criterion: Callable) -> Callable:
        def loss(params, buffers, images, labels):
            return criterion(functional_call(self.skeleton, (params, buffers), (images,)), labels)

        return loss

    def backward(self, images: torch.Tensor, labels: torch.Tensor, criterion: Callable):
        """One forward and backward of every seed on its own batch (``images[i]``,
        ``labels[i]``): sets each stacked parameter's ``.grad``; returns the N losses."""
        self.skeleton.train()
        grads, losses = vmap(grad_and_value(self._loss(criterion)), randomness="different")(
            self.params, self.buffers, images, labels
        )
        for name, grad in grads.items():
            self.params[name].grad = grad
        return losses.detach()

    def optimizer(self, name: str, **settings) -> torch.optim.Optimizer:
        """timm's optimizer ``name`` over the stacked parameters, with weight decay where timm
        puts it for one copy (``settings['weight_decay']``: not on biases and norms)."""
        decay = settings.get("weight_decay", 0.0)
        skip = getattr(self.template, "no_weight_decay", set)()
        names = {id(p): n for n, p in self.template.named_parameters()}
        groups = [
            {
                "params": [self.params[names[id(p)]] for p in group["params"]],
                "weight_decay": group["weight_decay"],
            }
            for group in param_groups_weight_decay(self.template, decay, no_weight_decay_list=skip)
        ]
        return create_optimizer_v2(groups, name, **settings)

    def state_dict(self, seed: int) -> dict[str, torch.Tensor]:
        """Seed ``seed``'s weights and buffers, as its own model's ``state_dict`` holds them."""
        stacked = {**self.params, **self.buffers}
        return {name: stacked[name][seed].detach() for name in self.template.state_dict()}


def _pool_by_mean(model: nn.Module) -> nn.Module:
    """``model`` with each global average pool (``AdaptiveAvgPool2d(1)``, timm's default head)
    as the mean over height and width (timm's ``FastAdaptiveAvgPool``), the same numbers:
    vmap has no batching rule for the adaptive pool's strided copy on maps over 1x1, so it
    looped over the seeds there, one launch each, with a UserWarning in every run's log."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            model.set_submodule(name, FastAdaptiveAvgPool())
    return model
