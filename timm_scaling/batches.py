"""Batches of an in-memory data set, made on the training device (the technique of airbench,
the fastest CIFAR-10 trainer): the uint8 images live on the device; shuffling, random crop,
flip and normalisation happen there per batch with tensor ops, with no loader workers and no
per-image Python."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from timm_scaling.data import MEAN, STD, ImageSet, mix_seed
from timm_scaling.imagesets import Normalizer, channel_stats


class DeviceBatches:
    """Batches of an :class:`ImageSet` held on the training device.

    Training (``train=True``): each epoch, a permutation drawn from ``(seed, epoch)`` (the same
    on every process) is padded by repeating its first samples to a multiple of
    ``world_size`` and dealt out strided, so every process gets the same number of samples
    and every sample goes to exactly one process (the few repeats are seen twice). Each batch
    is randomly cropped (zero-pad ``crop_padding`` pixels, shift per image) and flipped, on the
    device, in one gather. Iterating the same epoch again gives the same batches. With
    ``drop_last`` an epoch ends at its last full batch (a CUDA graph's static shape).

    Evaluation (``train=False``): no augmentation, no shuffling, no padding: process ``rank``
    gets the contiguous slice ``[rank * N // world_size, (rank + 1) * N // world_size)``; the
    slices are disjoint and cover every image once. Shards may differ by one image, so the
    number of batches may differ by one between processes: sum the correct counts locally and
    reduce once after the loop (never a collective per batch).

    Grey images (one channel) are served with ``channels`` channels: repeated to 3 after the
    augmentation (a view, so the set stays one channel on the device), or left at 1 for a model
    built with ``in_chans=1``, normalised then by the mean of ``mean`` and of ``std``.

    Yields ``(images, labels)``: float32 images normalised by ``mean``/``std``
    (channels_last if asked), int64 labels, both on ``device``.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        crop_padding: int = 4,
        hflip: bool = True,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
        channels_last: bool = False,
        drop_last: bool = False,
        channels: int = 3,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.crop_padding = crop_padding
        self.hflip = hflip
        held = data.images.shape[1]
        if held not in (1, channels):
            raise ValueError(f"{held}-channel images cannot feed a {channels}-channel model")
        mean, std = channel_stats(mean, std, channels)
        self.channels = channels
        self.normalize = Normalizer(mean, std, self.device, channels_last)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this process sees per epoch."""
        n = len(self.labels)
        if self.train:
            return math.ceil(n / self.world_size)
        return (self.rank + 1) * n // self.world_size - self.rank * n // self.world_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This process's sample indices for the current epoch, in batch order (on the CPU)."""
        n = len(self.labels)
        if not self.train:
            start = self.rank * n // self.world_size
            return torch.arange(start, start + self.num_samples)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=generator)
        total = self.num_samples * self.world_size
        order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.indices().to(self.device)
        generator = None
        if self.train:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(mix_seed(self.seed, self.epoch, self.rank))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = index[start : start + self.batch_size]
            images = self.images[batch]
            if generator is not None:
                images = self.augment(images, generator)
            images = images.expand(-1, self.channels, -1, -1)
            yield self.normalize(images), self.labels[batch]

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (zero padding, a shift per image) and horizontal flip: one gather."""
        n, channels, height, width = images.shape
        pad = self.crop_padding
        device = images.device
        shift_y = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
        shift_x = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
        rows = shift_y + torch.arange(height, device=device)
        cols = torch.arange(width, device=device).expand(n, -1)
        if self.hflip:
            flip = torch.rand((n, 1), generator=generator, device=device) < 0.5
            cols = torch.where(flip, width - 1 - cols, cols)
        cols = shift_x + cols
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        return padded[
            torch.arange(n, device=device)[:, None, None, None],
            torch.arange(channels, device=device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
