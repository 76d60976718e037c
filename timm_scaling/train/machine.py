"""What the machine can do: its device's name and memory, out-of-memory errors, the
optimizer's multi-tensor kernels, activation checkpointing, mixed precision."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import torch
from timm.optim import get_optimizer_class

from timm_scaling.errors import UserError
from timm_scaling.recipes import Recipe

# How an allocation failure reads when a library other than torch's allocator hits it.
OUT_OF_MEMORY = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError that says so (cuBLAS, cuDNN, CPU allocators)."""
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(marker in text for marker in OUT_OF_MEMORY)
    )


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer: equal on every replica of a healthy run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def peak_memory_mb(device: torch.device) -> float | None:
    """CUDA: the peak memory allocated by tensors since the last reset, in MiB. Elsewhere None:
    a CPU process's resident set counts the interpreter and its libraries, not the training."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def optimizer_speedups(name: str, device: torch.device) -> dict[str, bool]:
    """On a GPU, one fused kernel (torch's AdamW, SGD) or a few multi-tensor kernels (timm's
    rmsproptf, where this timm has them) per step for all parameters, not a kernel each."""
    if device.type != "cuda":
        return {}
    accepted = inspect.signature(get_optimizer_class(name, bind_defaults=False)).parameters
    for option in ("fused", "foreach"):
        if option in accepted:
            return {option: True}
    return {}


def set_grad_checkpointing(model: torch.nn.Module, name: str) -> None:
    """timm's activation checkpointing: blocks recompute their activations in backward."""
    try:
        model.set_grad_checkpointing(True)
    except (AttributeError, AssertionError, NotImplementedError):
        raise UserError(
            f"grad_checkpointing: timm's {name} does not support it; "
            "--set grad_checkpointing=false (or lower batch_size, or raise grad_accum)"
        ) from None


# Training memory of one image on a CPU, in bytes per activation of the model's forward pass
# (the cost's macts): measured 3.2 x 4 bytes for EfficientNet-B0 and 2.0 x 4 for ResNet-50 at
# 224 px, in float32; taken as 4 x 4, with half the available memory for the batch.
CPU_BYTES_PER_ACTIVATION = 16
CPU_MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def mixed_precision(recipe: Recipe, cpu: bool) -> str:
    if recipe.mixed_precision != "auto":
        return recipe.mixed_precision
    # bf16 autocast is slower than fp32 on CPUs without AMX.
    return "bf16" if torch.cuda.is_available() and not cpu else "no"
