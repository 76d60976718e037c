"""Training throughput: our loop against the model's own limit and a plain DataLoader loop.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--quick]

(a) limit: forward + backward + optimizer step on one batch already on the device;
(b) loop:  timm_scaling.train.Trainer.train_epoch on the in-memory digits path (device-resident
    uint8 images, crop and flip per batch on the device);
(c) plain: the same model and optimizer fed by a torch DataLoader with torchvision transforms.
All three use the digits recipe's model, batch, precision and memory format. The last line is
``loop/limit=R1 loop/plain=R2``. A benchmark, not a test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from accelerate.state import AcceleratorState
from torchvision.transforms import v2

from timm_scaling import data
from timm_scaling.recipes import load_recipe
from timm_scaling.train import Trainer


def images_per_second(step, batches: int, batch_size: int, device: torch.device) -> float:
    step()  # warm-up: allocator, kernels, caches
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(batches):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="few batches (a smoke run)")
    args = parser.parse_args()
    batches = 3 if args.quick else 20
    images = batches * 64
    recipe = load_recipe("digits", [f"limit_train={images}", "limit_val=64", "epochs=1"])
    trainer = Trainer(recipe, tempfile.mkdtemp(), cpu=args.device == "cpu", progress=False)
    device = trainer.accelerator.device
    batch = recipe.batch_size
    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, recipe.image_size, recipe.image_size, device=device).to(
        memory_format=fmt
    )
    y = torch.randint(0, 10, (batch,), device=device)
    trainer.model.train()

    def limit_step():
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = trainer.criterion(trainer.model(x), y)
        trainer.accelerator.backward(loss)
        trainer.optimizer.step()

    limit = images_per_second(limit_step, batches, batch, device)

    trainer.train_epoch(0)  # warm-up epoch
    loop = max(trainer.train_epoch(epoch)["samples_per_s"] for epoch in (1, 2))

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
        _Transformed(imageset, transform), batch_size=batch, shuffle=True, num_workers=2
    )
    iterator = iter(_forever(loader))

    def plain_step():
        images_, labels = next(iterator)
        images_ = images_.to(device, non_blocking=True).to(memory_format=fmt)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = trainer.criterion(trainer.model(images_), labels.to(device))
        trainer.accelerator.backward(loss)
        trainer.optimizer.step()

    plain = images_per_second(plain_step, batches, batch, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, {recipe.model} at {recipe.image_size} px")
    print(f"limit {limit:.1f} images/s; loop {loop:.1f} images/s; plain {plain:.1f} images/s")
    print(f"loop/limit={loop / limit:.2f} loop/plain={loop / plain:.2f}")
    AcceleratorState._reset_state(reset_partial_state=True)


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
