"""What a variant runs at: training and inference throughput and peak memory, measured on a
device (the model built for real, synthetic batches)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from timm_scaling.catalog import (
    check_size,
    create_model,
    in_chans,
    resolve_model,
)
from timm_scaling.errors import UserError


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
    images = torch.randn(batch_size, in_chans(model_kwargs), img_size, img_size, device=dev)
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
