"""What every data path shares, in-memory (:mod:`timm_scaling.data`) and timm's pipeline
(:mod:`timm_scaling.pipeline`): where data lives, and normalisation on the device.

Imports nothing of ours but the error type and the recipe's keys, so both import it downwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from timm_scaling.errors import UserError
from timm_scaling.recipe_keys import ON_DISK

DEFAULT_DATA_DIR = "data"


def data_root(data_dir: str | Path | None) -> Path:
    """The recipe's data_dir, else ./data."""
    return Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser()


def data_label(dataset: str, data_dir: str | Path | None) -> str:
    """The report's ``dataset`` cell: the data set's name, and for a folder or tar of images the
    data's absolute path (``folder:/data/imagenette2``): two folders are two data sets, which
    `frontier` does not mix."""
    if dataset not in ON_DISK:
        return dataset
    return f"{dataset}:{data_root(data_dir).resolve()}"


def channel_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` for ``channels`` input channels: as given where they match, else
    the mean of each repeated (a grey model gets the mean of a model cfg's RGB statistics)."""
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    return (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels


def refuse_image_tree(dataset: str, root: Path) -> None:
    """Before downloading ``dataset`` into ``root``: a folder of images in train/ and val/ is
    data of another kind, named with --dataset folder, not a place to download into."""
    splits = [name for name in ("train", "val") if (root / name).is_dir()]
    if splits:
        raise UserError(
            f"{dataset}: {root} holds {' and '.join(f'{s}/' for s in splits)}, a folder of "
            f"images, not {dataset}'s files; to train on it pass --dataset folder"
        )


class Normalizer:
    """uint8 images -> float32 ``(x / 255 - mean) / std`` on ``device``, as one multiply-add,
    channels_last if asked: what every batch of every data set goes through on the device."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        std_255 = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.scale = 1 / std_255
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255 / std_255
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, images.float(), self.scale)
