"""Seeds fused into one step against the same seeds stepped one after another, side by side.

    python benchmarks/fused_seeds.py [--device cpu|cuda] [--seeds 3] [--batch-size 128]
        [--image-size 32] [--model effnet_b0] [--steps 20] [--json PATH]

(a) separate: N copies of the model (one per seed), each taking its own forward, backward and
RMSpropTF step in turn, as N runs in one process would; (b) fused: the same N copies as one
vmapped step (timm_scaling.fused.FusedSeeds) with one optimizer over the stacked weights; (c)
fused as ``sweep --fuse-seeds`` steps it: one vmapped forward and backward, then each seed's
own optimizer on its slice (timm_scaling.train.fusing). All on synthetic batches of CIFAR's
shape already on the device, fp32, dropout as the baseline recipe has it. Prints images/s of
each (over all seeds) and their ratios to (a). Goal (issue 21): fused x3 >= 2x three separate
runs on an H100, where B0 at 32 px is launch-bound; on a CPU the model's compute dominates and
little is to be won.
A benchmark, not a test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import timm
import torch

import timm_scaling  # noqa: F401  (registers effnet_b0)
from timm_scaling.fused import FusedSeeds
from timm_scaling.recipes import load_recipe
from timm_scaling.train.fusing import share, take_gradients


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step, steps: int, images: int, device: torch.device) -> float:
    """Images/s of ``step`` (``images`` each call) after three warm-up calls."""
    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default="effnet_b0")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = load_recipe("baseline")
    settings = {
        "lr": 1e-3,
        "weight_decay": recipe.weight_decay,
        "momentum": recipe.momentum,
        "eps": recipe.opt_eps,
        "alpha": recipe.decay,
    }
    models = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        models.append(
            timm.create_model(args.model, num_classes=10, drop_rate=recipe.drop_rate or 0.0)
            .to(device)
            .train()
        )
    n, b, size = args.seeds, args.batch_size, args.image_size
    images = torch.randn(n, b, 3, size, size, device=device)
    labels = torch.randint(0, 10, (n, b), device=device)
    criterion = torch.nn.CrossEntropyLoss()

    optimizers = [timm.optim.create_optimizer_v2(m, "rmsproptf", **settings) for m in models]

    def separate() -> None:
        for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            criterion(model(images[i]), labels[i]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    fused = FusedSeeds(models)
    share(fused, models)  # the models' weights are views into the stacked ones, as in a sweep
    fused_optimizer = fused.optimizer("rmsproptf", **settings)

    def together() -> None:
        fused.backward(images, labels, criterion)
        fused_optimizer.step()
        fused_optimizer.zero_grad(set_to_none=True)

    def per_seed() -> None:  # as `sweep --fuse-seeds` steps: each seed's optimizer on its slice
        fused.backward(images, labels, criterion)
        for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            take_gradients(fused, i, model)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    numbers = {
        "device": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "seeds": n,
        "batch_size": b,
        "image_size": size,
        "separate": rate(separate, args.steps, n * b, device),
        "fused": rate(together, args.steps, n * b, device),
        "fused_per_seed": rate(per_seed, args.steps, n * b, device),
    }
    numbers["fused/separate"] = numbers["fused"] / numbers["separate"]
    numbers["fused_per_seed/separate"] = numbers["fused_per_seed"] / numbers["separate"]
    print(
        f"{args.model} at {size} px, {n} seeds x batch {b}, {name} ({numbers['threads']} "
        f"threads), torch {torch.__version__}"
    )
    print(f"(a) separate: {numbers['separate']:.0f} images/s")
    print(f"(b) fused:    {numbers['fused']:.0f} images/s")
    print(f"(c) fused, each seed's optimizer (sweep --fuse-seeds): {numbers['fused_per_seed']:.0f}")
    print(f"fused/separate={numbers['fused/separate']:.2f}")
    print(f"fused_per_seed/separate={numbers['fused_per_seed/separate']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=1) + "\n")


if __name__ == "__main__":
    main()
