"""Data sets, and which of them are held in memory.

``cifar10``, ``cifar100``, ``digits`` and the MNIST family (``mnist``, ``fashion_mnist``,
``kmnist``: :mod:`timm_scaling.idxsets`) are loaded once as a uint8 tensor, already resized to
the model's image size, and served on the training device by
:class:`timm_scaling.batches.DeviceBatches` (shuffled, cropped, flipped and normalised there
per batch). ``folder`` and ``tar`` data, and timm's streamed readers, go through timm's own
data pipeline (:mod:`timm_scaling.pipeline`). ``synthetic`` is random images and labels in a
real data set's shape (:func:`synthetic`), made on the training device: speed and memory where
the data is absent.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

from timm_scaling import idxsets
from timm_scaling.errors import UserError
from timm_scaling.imagesets import DEFAULT_DATA_DIR, Normalizer, data_root, refuse_image_tree
from timm_scaling.recipe_keys import DATASETS, IN_MEMORY, ON_DISK, check_dataset

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "IN_MEMORY",
    "ON_DISK",
    "MEAN",
    "SHAPES",
    "STD",
    "SYNTHETIC",
    "ImageSet",
    "Normalizer",
    "available",
    "count_images",
    "split_size",
    "data_root",
    "load_images",
    "mix_seed",
    "num_classes",
    "recipe_classes",
    "resize",
    "synthetic",
    "write_images",
]

SPLITS = ("train", "val")
SYNTHETIC = "synthetic"
# (train images, val images, classes) of each in-memory data set: what a synthetic stand-in copies.
SHAPES = {
    "cifar10": (50_000, 10_000, 10),
    "cifar100": (50_000, 10_000, 100),
    "digits": (1437, 360, 10),
    **idxsets.SHAPES,
}
# timm's IMAGENET_DEFAULT_MEAN / _STD, the statistics every timm EfficientNet is normalised with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The digits split: 20% held out, stratified by class, always the same images.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
_RESIZE_CHUNK = 2048  # images resized at once: bounds the float copy's memory


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) (C: 3, or 1 for grey sets), int64 labels (N,), and the
    class names (on the CPU, but synthetic data, made on the training device)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def num_classes(dataset: str, data_dir: str | Path | None = None) -> int:
    """Classes of a data set, without loading it (``folder``/``tar``: the class folders of its
    training split; ``synthetic`` and streamed data: the recipe says, see
    :func:`recipe_classes`)."""
    check_dataset(dataset)
    if dataset in ON_DISK:
        from timm_scaling import pipeline

        return len(pipeline.classes(dataset, data_dir))
    if dataset not in SHAPES and dataset != SYNTHETIC:
        raise UserError(f"dataset {dataset}: streamed data does not count its classes")
    return SHAPES.get(dataset, SHAPES["cifar10"])[2]


def recipe_classes(recipe) -> int:
    """Classes of a recipe's data set (``synthetic``: its ``synthetic_classes``; streamed data:
    its ``num_classes``)."""
    if recipe.dataset == SYNTHETIC:
        return recipe.synthetic_classes
    if recipe.num_classes is not None:
        return recipe.num_classes
    return num_classes(recipe.dataset, recipe.data_dir)


def available(dataset: str, data_dir: str | Path | None = None) -> bool:
    """Whether a data set is here to train on, without downloading anything (streamed data:
    whether its reader's package is installed; the reader says the rest)."""
    check_dataset(dataset)
    if dataset in ("cifar10", "cifar100"):
        return not _cifar_missing(_cifar_class(dataset), data_root(data_dir))
    if dataset in idxsets.SETS:
        return idxsets.locate(dataset, data_dir) is not None
    if dataset not in IN_MEMORY:
        from timm_scaling import pipeline

        return pipeline.available(dataset, data_dir)
    return True  # digits ships with scikit-learn; synthetic is made


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), antialiased bilinear."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), _RESIZE_CHUNK):
        part = images[start : start + _RESIZE_CHUNK].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True)
        out[start : start + _RESIZE_CHUNK] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _digits(split: str) -> ImageSet:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 8x8 images with 17 grey levels (0..16), stretched to 0..255.
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    train, val = train_test_split(
        np.arange(len(digits.target)),
        test_size=DIGITS_VAL_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    index = train if split == "train" else val
    images = torch.from_numpy(pixels[index]).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target[index]).to(torch.int64)
    return ImageSet(images, labels, [str(name) for name in digits.target_names])


def _cifar_class(dataset: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR100 if dataset == "cifar100" else CIFAR10


def _cifar_missing(cls, root: Path) -> list[str]:
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [name for name in names if not (root / cls.base_folder / name).is_file()]


def _download_cifar(dataset: str, root: Path) -> None:
    """Download when files are missing; offline, one line saying where to put which files."""
    cls = _cifar_class(dataset)
    refuse_image_tree(dataset, root)
    root.mkdir(parents=True, exist_ok=True)
    # Several processes of one run may get here at once: one downloads, the others wait.
    with FileLock(str(root / f".{dataset}.download.lock")):
        missing = _cifar_missing(cls, root)
        if not missing:
            return
        try:
            cls(str(root), train=True, download=True)
        except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
            reason = getattr(err, "reason", None) or err
            raise UserError(
                f"{dataset}: {root / cls.base_folder} lacks {', '.join(missing)} and the "
                f"download failed ({reason}); extract {cls.url} into {root} "
                "(or pass --data-dir to where its python-version files are)"
            ) from None


def _cifar(dataset: str, data_dir: str | Path | None, split: str) -> ImageSet:
    cls = _cifar_class(dataset)
    root = data_root(data_dir)
    if _cifar_missing(cls, root):
        _download_cifar(dataset, root)
    try:
        data = cls(str(root), train=split == "train", download=False)
    except RuntimeError as err:  # torchvision's checksum check: "not found or corrupted"
        raise UserError(
            f"{dataset}: the files in {root / cls.base_folder} fail torchvision's check ({err}); "
            "delete that folder to download them again"
        ) from None
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(data.targets, dtype=torch.int64)
    return ImageSet(images, labels, list(data.classes))


def load_images(
    dataset: str,
    data_dir: str | Path | None,
    image_size: int,
    split: str,
    limit: int | None = None,
) -> ImageSet:
    """One split of an in-memory data set, resized once to ``image_size``.

    ``split`` is ``train`` or ``val`` (the test set of CIFAR and of the MNIST family; the
    held-out 20% of digits, the same stratified split every time). ``limit`` keeps the first
    ``limit`` images.
    """
    check_dataset(dataset)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if dataset not in IN_MEMORY:
        raise UserError(f"{dataset} data is read through timm's pipeline, not held in memory")
    if dataset == SYNTHETIC:
        raise UserError("synthetic data is made by data.synthetic(), not loaded")
    if dataset == "digits":
        data = _digits(split)
    elif dataset in idxsets.SETS:
        data = ImageSet(*idxsets.load(dataset, data_dir, split), idxsets.CLASSES[dataset])
    else:
        data = _cifar(dataset, data_dir, split)
    if limit is not None:
        data = ImageSet(data.images[:limit], data.labels[:limit], data.classes)
    return ImageSet(resize(data.images, image_size), data.labels, data.classes)


def count_images(
    dataset: str, data_dir: str | Path | None, split: str, limit: int | None = None
) -> int:
    """How many images one split has (at most ``limit``), without resizing any."""
    check_dataset(dataset)
    if dataset in ON_DISK:
        from timm_scaling import pipeline

        count = pipeline.count(dataset, data_dir, split)
    elif dataset not in IN_MEMORY:
        raise UserError(
            f"dataset {dataset}: a streamed data set does not say how many images it has; "
            "plan with a folder or tar copy of it, or time a short run (--epochs 1)"
        )
    else:  # synthetic data takes CIFAR-10's shape unless its recipe says otherwise
        count = SHAPES.get(dataset, SHAPES["cifar10"])[SPLITS.index(split)]
    return count if limit is None else min(count, limit)


def split_size(recipe, split: str) -> int:
    """Images of one split a run of ``recipe`` sees each epoch, its limit applied; synthetic
    data: the recipe's own sizes (:func:`count_images` gives it CIFAR-10's shape)."""
    limit = recipe.limit_train if split == "train" else recipe.limit_val
    if recipe.dataset == SYNTHETIC:
        size = recipe.synthetic_train_size if split == "train" else recipe.synthetic_val_size
        return size if limit is None else min(size, limit)
    return count_images(recipe.dataset, recipe.data_dir, split, limit)


def mix_seed(*parts: int) -> int:
    """One 64-bit seed from several integers, well mixed (no collisions of seed+epoch)."""
    return int(np.random.SeedSequence(parts).generate_state(1, np.uint64)[0])


_SYNTHETIC_SALT = 0x5EED  # keeps the images' seeds apart from the batches' (seed, epoch)


def synthetic(
    size: int,
    image_size: int,
    classes: int,
    seed: int,
    split: str,
    device: torch.device | str = "cpu",
) -> ImageSet:
    """``size`` random uint8 images (3 x image_size x image_size) and labels in [0, classes),
    made on ``device``: the same for the same seed, split and kind of device."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    device = torch.device(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(mix_seed(seed, _SYNTHETIC_SALT, SPLITS.index(split)))
    shape = (size, 3, image_size, image_size)
    # Eight random bytes per int64, viewed as uint8: several times faster on a CPU than
    # randint(0, 256, dtype=uint8), which draws one number per byte.
    words = torch.randint(
        -(2**63), 2**63 - 1, (-(-math.prod(shape) // 8),), generator=generator, device=device
    )
    images = words.view(torch.uint8)[: math.prod(shape)].view(shape)
    labels = torch.randint(0, classes, (size,), generator=generator, device=device)
    return ImageSet(images, labels, [str(label) for label in range(classes)])


def write_images(
    source: str, out: str | Path, size: int, tar: bool = False, data_dir: str | Path | None = None
) -> Path:
    """Write an in-memory data set (``digits``, ``cifar10``...) as ``folder`` data (an ImageFolder
    tree of PNG files, ``out/train/CLASS/N.png`` and ``out/val/...``) at ``size`` px, or with
    ``tar`` as ``out/train.tar`` and ``out/val.tar`` holding the same files: real images to try
    timm's pipeline on where no ImageNet-like data is at hand. Returns ``out``."""
    import tarfile
    import tempfile

    from PIL import Image

    from timm_scaling.pipeline import SPLIT_NAMES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLIT_NAMES:
        images = load_images(source, data_dir, size, split)
        # Built aside, then moved into place: an interrupted write leaves no half split.
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            tree = Path(scratch) / split
            for index, (image, label) in enumerate(zip(images.images, images.labels, strict=True)):
                folder = tree / images.classes[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")
            if tar:
                with tarfile.open(tree.with_suffix(".tar"), "w") as archive:
                    for path in sorted(tree.rglob("*.png")):
                        archive.add(path, arcname=str(path.relative_to(tree)))
                tree = tree.with_suffix(".tar")
            target = out / tree.name
            if target.exists():
                raise UserError(f"{target} exists; write into another folder")
            os.replace(tree, target)
    return out
