"""Training throughput: our loop against the model's own limit and a plain DataLoader loop.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--quick] [--batch-size N]
        [--compile-mode reduce-overhead | --cuda-graph] [--only loop] [--seconds S]
        [--copies N --ready-dir DIR]
        [--json PATH]
    python benchmarks/train_throughput.py --data folder [--data-dir DIR] [--workers N] ...

With ``--data folder``: timm's pipeline (timm_scaling.pipeline) on an ImageFolder tree (``DIR``,
else scikit-learn's digits written at 224 px into a temporary folder), with the ``imagenet``
recipe at 224 px: (loader) images/s of the loader alone (decode, RandomResizedCrop,
AutoAugment, flip in the workers; to the device and normalised there), against (limit) the
model's step on one batch already on the device, and (loop) the trainer's epoch. The last line
is ``loader/limit=R``: above 1, the loader keeps the model fed.

(a) limit: forward + backward + optimizer step on one batch already on the device;
(b) loop:  timm_scaling.train.Trainer.train_epoch on the in-memory digits path (device-resident
    uint8 images, crop and flip per batch on the device), epochs over ``--seconds``;
(c) plain: the same model and optimizer fed by a torch DataLoader with torchvision transforms.
All three use the digits recipe's model, precision and memory format, at ``--batch-size``
(default: the recipe's 32), and only whole batches (no shape changes, so a compiled model is
compiled once). ``--cuda-graph``: the loop with the recipe key cuda_graph (the whole update,
optimizer and EMA included, replayed as one CUDA graph) while limit and plain stay eager, so
that loop/limit is the graph's gain over an eager step (on a CPU: the same step, eagerly).
``--copies N --ready-dir DIR``: each of N copies started together says it is ready (a file
in DIR) after its warm-up, then waits for all N, so that they measure while they share the GPU
(benchmarks/gpu_check.py's packing check); ``--json`` records when each measured
(``loop_from``, ``loop_to``, Unix times), so that the overlap can be checked. The last line is
``loop/limit=R1 loop/plain=R2``. A benchmark, not a test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import timm
import torch
from accelerate.state import AcceleratorState
from torchvision.transforms import v2

from timm_scaling import data
from timm_scaling.files import atomic_write
from timm_scaling.recipes import load_recipe
from timm_scaling.train import Trainer, device_name

DIGITS_TRAIN = 1437
KINDS = ("limit", "loop", "plain")


def images_per_second(step, batches: int, batch_size: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up: allocator, kernels, caches; CUDA graphs record on the 2nd call
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(batches):
        step()
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - started)


def scratch_folder() -> str:
    """A temporary folder for the trainer's files, removed when the benchmark exits (each run
    leaves ~150 MB of checkpoints otherwise)."""
    folder = tempfile.mkdtemp(prefix="train-throughput-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_step(optimizer: torch.optim.Optimizer) -> str:
    """fused, foreach (multi-tensor) or single-tensor: how the optimizer steps its parameters."""
    defaults = getattr(optimizer, "optimizer", optimizer).defaults  # Accelerate wraps it
    for option in ("fused", "foreach"):
        if defaults.get(option):
            return option
    return "single-tensor"


def loop_images_per_second(trainer: Trainer, seconds: float) -> tuple[float, list[float]]:
    """Epochs of the trainer's loop for at least ``seconds`` (two at least): images per second
    over all of them, and per epoch."""
    per_epoch, images, spent, epoch = [], 0, 0.0, 1
    while spent < seconds or epoch <= 2:
        stats = trainer.train_epoch(epoch)
        per_epoch.append(stats["samples_per_s"])
        images += stats["train_images"]
        spent += stats["train_s"]
        epoch += 1
    return images / spent, per_epoch


def wait_for_copies(folder: Path | None, copies: int, timeout: float = 300.0) -> float:
    """Say this copy is ready (a file in ``folder``), then wait until all ``copies`` are, so
    that they measure at the same time; returns the seconds waited."""
    if folder is None:
        raise SystemExit("error: --copies needs --ready-dir (a folder the copies share)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    started = time.monotonic()
    while (ready := sum(1 for _ in folder.iterdir())) < copies:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"error: {ready} of {copies} copies ready after {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="few batches (a smoke run)")
    parser.add_argument("--batch-size", type=int, help="images per update [default: 32]")
    parser.add_argument(
        "--compile-mode",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile the model in this mode (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="the loop's whole update as one CUDA graph"
    )
    parser.add_argument("--only", default=",".join(KINDS), help="limit,loop,plain (a subset)")
    parser.add_argument("--seconds", type=float, help="time the loop this long [default: 10]")
    parser.add_argument("--copies", type=int, default=1, help="copies that measure together")
    parser.add_argument("--ready-dir", type=Path, help="with --copies: where copies say ready")
    parser.add_argument("--json", type=Path, help="also write every number here")
    parser.add_argument("--data", choices=("digits", "folder"), default="digits")
    parser.add_argument("--data-dir", type=Path, help="--data folder: an ImageFolder tree")
    parser.add_argument("--workers", type=int, help="--data folder: loader workers")
    args = parser.parse_args()
    if args.data == "folder":
        folder_main(args)
        return
    kinds = [kind for kind in args.only.split(",") if kind]
    if not set(kinds) <= set(KINDS) or not kinds:
        parser.error(f"--only {args.only}: choose from {','.join(KINDS)}")

    overrides = ["epochs=1", "limit_val=64"]
    if args.batch_size:
        overrides.append(f"batch_size={args.batch_size}")
    if args.compile_mode:
        overrides += ["compile=true", f"compile_mode={args.compile_mode}"]
    if args.cuda_graph:
        if args.compile_mode:
            parser.error("--cuda-graph and --compile-mode: two ways to CUDA graphs; choose one")
        overrides.append("cuda_graph=true")
    batch = load_recipe("digits", overrides).batch_size
    batches = min(3 if args.quick else 40, DIGITS_TRAIN // batch)
    images = batches * batch  # whole batches only
    recipe = load_recipe("digits", [*overrides, f"limit_train={images}"])
    started = time.perf_counter()
    trainer = Trainer(recipe, scratch_folder(), cpu=args.device == "cpu", progress=False)
    device = trainer.accelerator.device
    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    trainer.model.train()
    trainer.train_epoch(0)  # warm-up epoch (compiles, if compiling)
    synchronize(device)
    warm_up_s = time.perf_counter() - started
    waited_s = wait_for_copies(args.ready_dir, args.copies) if args.copies > 1 else 0.0

    def update(images_: torch.Tensor, labels: torch.Tensor) -> None:
        if trainer.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = trainer.criterion(trainer.model(images_), labels)
        trainer.accelerator.backward(loss)
        trainer.optimizer.step()

    result: dict = {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": timm.__version__,
        "model": recipe.model,
        "img_size": recipe.image_size,
        "batch_size": batch,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "compile_mode": args.compile_mode,
        "cuda_graph": args.cuda_graph,
        "optimizer_step": optimizer_step(trainer.optimizer),
        "warm_up_s": warm_up_s,
        "waited_s": waited_s,
    }
    if "limit" in kinds:
        x = torch.randn(batch, 3, recipe.image_size, recipe.image_size, device=device)
        x = x.to(memory_format=fmt)
        y = torch.randint(0, 10, (batch,), device=device)
        result["limit"] = images_per_second(lambda: update(x, y), batches, batch, device)
    if "loop" in kinds:
        seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 10.0)
        result["loop_from"] = time.time()
        result["loop"], result["loop_epochs"] = loop_images_per_second(trainer, seconds)
        result["loop_to"] = time.time()
    if "plain" in kinds:
        result["plain"] = plain_images_per_second(trainer, recipe, images, fmt, update, device)

    name = f"{recipe.model} at {recipe.image_size} px, batch {batch}"
    print(f"device {result['device']}, torch {torch.__version__}, timm {timm.__version__}, {name}")
    print(
        f"mixed precision {result['mixed_precision']}, compile {args.compile_mode or 'no'}, "
        f"cuda_graph {'on' if args.cuda_graph else 'off'}, "
        f"optimizer step {result['optimizer_step']}, warm-up {warm_up_s:.1f} s"
    )
    print("; ".join(f"{kind} {result[kind]:.1f} images/s" for kind in kinds))
    others = [kind for kind in ("limit", "plain") if kind in kinds and "loop" in kinds]
    for other in others:
        result[f"loop_over_{other}"] = result["loop"] / result[other]
    if others:
        print(" ".join(f"loop/{other}={result[f'loop_over_{other}']:.2f}" for other in others))
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1) + "\n")
    AcceleratorState._reset_state(reset_partial_state=True)


def folder_main(args) -> None:
    """--data folder: the loader of timm's pipeline alone, against the model's step."""

    scratch = scratch_folder()
    if args.data_dir is None:
        args.data_dir = data.write_images("digits", Path(scratch) / "digits224", 224)
    batch = args.batch_size or 32
    batches = 3 if args.quick else 20
    overrides = [
        f"data_dir={args.data_dir}",
        f"batch_size={batch}",
        f"limit_train={batches * batch}",
        "limit_val=64",
        "epochs=1",
    ]
    if args.workers is not None:
        overrides.append(f"num_workers={args.workers}")
    recipe = load_recipe("imagenet", overrides)
    trainer = Trainer(recipe, scratch, cpu=args.device == "cpu", progress=False)
    device = trainer.accelerator.device
    loader = trainer.train_batches
    workers = loader.loader.num_workers
    started = time.perf_counter()
    seen = 0
    for epoch in range(2):  # the first epoch starts the workers
        if epoch == 1:
            synchronize(device)
            started, seen = time.perf_counter(), 0
        loader.set_epoch(epoch)
        for images, _ in loader:
            seen += len(images)
    synchronize(device)
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "model": recipe.model,
        "img_size": recipe.image_size,
        "batch_size": batch,
        "workers": workers,
        "auto_augment": recipe.auto_augment,
        "loader": seen / (time.perf_counter() - started),
    }
    x, y = next(iter(loader))
    trainer.model.train()

    def update() -> None:
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.accelerator.backward(trainer.criterion(trainer.model(x), y))
        trainer.optimizer.step()

    result["limit"] = images_per_second(update, min(batches, 5), batch, device)
    result["loop"] = trainer.train_epoch(1)["samples_per_s"]
    result["loader_over_limit"] = result["loader"] / result["limit"]
    print(
        f"device {result['device']}, torch {torch.__version__}, timm {timm.__version__}, "
        f"{recipe.model} at {recipe.image_size} px, batch {batch}, {workers} workers, "
        f"auto_augment {recipe.auto_augment}"
    )
    print("; ".join(f"{kind} {result[kind]:.1f} images/s" for kind in ("loader", "limit", "loop")))
    print(f"loader/limit={result['loader_over_limit']:.2f}")
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1) + "\n")
    AcceleratorState._reset_state(reset_partial_state=True)


def plain_images_per_second(trainer, recipe, images: int, fmt, update, device) -> float:
    imageset = data.load_images("digits", None, recipe.image_size, "train", images)
    transform = v2.Compose(
        [
            v2.RandomCrop(recipe.image_size, padding=recipe.crop_padding),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(data.MEAN, data.STD),
        ]
    )
    loader = torch.utils.data.DataLoader(
        _Transformed(imageset, transform),
        batch_size=recipe.batch_size,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=True,
    )
    iterator = iter(_forever(loader))

    def plain_step():
        images_, labels = next(iterator)
        images_ = images_.to(device, non_blocking=True).to(memory_format=fmt)
        update(images_, labels.to(device))

    return images_per_second(plain_step, len(loader), recipe.batch_size, device)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, imageset, transform):
        self.imageset, self.transform = imageset, transform

    def __len__(self):
        return len(self.imageset)

    def __getitem__(self, index):
        return self.transform(self.imageset.images[index]), self.imageset.labels[index]


def _forever(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
