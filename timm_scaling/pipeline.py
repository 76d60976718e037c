"""Data read from disk or streamed, through timm's own data pipeline.

``folder`` (an ImageFolder tree: ``DATA_DIR/train/CLASS/IMAGE`` and ``DATA_DIR/val/...``, or
timm's other split names), ``tar`` (``DATA_DIR/train.tar`` and ``DATA_DIR/val.tar`` holding
``CLASS/IMAGE`` files) and timm's streamed readers (``hfds/NAME``, ``hfids/NAME``, ``wds/NAME``,
``tfds/NAME``) are read by timm's own readers and datasets, and transformed as timm trains on
ImageNet: ``resolve_data_config(model)`` and ``create_transform`` (training: RandomResizedCrop at
the model's size, flip, the recipe's auto_augment; evaluation: resize to size / crop_pct and a
centre crop; interpolation from the model's cfg). Images leave the loader's workers as uint8
tensors, in pinned memory on a GPU, and are normalised (and randomly erased) on the training
device, as timm's PrefetchLoader does. An image that cannot be decoded is skipped with a warning
naming its file, and counted.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from timm_scaling.errors import UserError
from timm_scaling.imagesets import Normalizer, data_root
from timm_scaling.recipe_keys import ON_DISK, STREAMED
from timm_scaling.recipes import Recipe

log = logging.getLogger(__name__)
# timm's tar reader logs four lines each time it scans a tar.
logging.getLogger("timm.data.readers").setLevel(logging.WARNING)

# timm's split names (its create_dataset's synonyms), ours first.
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "validation", "valid", "eval")}
# Consecutive undecodable images after which a loader gives up (timm's ImageDataset: 20).
MAX_SKIPS = 20


def _expected(dataset: str) -> str:
    if dataset == "tar":
        return "DATA_DIR/train.tar and DATA_DIR/val.tar, each holding CLASS/IMAGE files"
    return "DATA_DIR/train/CLASS/IMAGE and DATA_DIR/val/CLASS/IMAGE (one folder per class)"


def split_path(dataset: str, data_dir: str | Path | None, split: str) -> Path:
    """Where one split of ``folder`` or ``tar`` data is: ``DATA_DIR/train`` (or ``train.tar``),
    or the first of timm's other names for the split that exists."""
    root = data_root(data_dir)
    found = _split_in(dataset, root, split)
    if found is not None:
        return found
    suffix = ".tar" if dataset == "tar" else ""
    names = " or ".join(f"{name}{suffix or '/'}" for name in SPLIT_NAMES[split])
    raise UserError(
        f"{dataset} data: {root} has no {names}; expected {_expected(dataset)}; "
        + _nearby(dataset, root)
    )


def _nearby(dataset: str, root: Path) -> str:
    """What to pass instead where the data is there in another shape: the other of folder and
    tar, or the folder above a split named as the data folder."""
    other = "folder" if dataset == "tar" else "tar"
    if any(_split_in(other, root, split) for split in SPLIT_NAMES):
        return f"{root} holds {other} data: pass --dataset {other}"
    splits = [name for names in SPLIT_NAMES.values() for name in names]
    if root.name.removesuffix(".tar") in splits:
        return f"{root} is a split itself: pass the folder above it, --data-dir {root.parent}"
    return "pass --data-dir DATA_DIR"


def _split_in(dataset: str, root: Path, split: str) -> Path | None:
    """The first of timm's names for the split that ``root`` holds as ``dataset`` data."""
    suffix = ".tar" if dataset == "tar" else ""
    for name in SPLIT_NAMES[split]:
        path = root / f"{name}{suffix}"
        if path.is_file() if suffix else path.is_dir():
            return path
    return None


def require(dataset: str, data_dir: str | Path | None) -> None:
    """The one-line error saying what of a pipeline data set is missing: a split of ``folder``
    or ``tar`` data, or a streamed reader's package (the reader says the rest). Checked before
    a run starts, so that no process is launched and no model is built for data not there."""
    if dataset not in ON_DISK:
        check_reader(dataset)
        return
    for split in SPLIT_NAMES:
        split_path(dataset, data_dir, split)


def available(dataset: str, data_dir: str | Path | None) -> bool:
    """Whether :func:`require` finds nothing missing."""
    try:
        require(dataset, data_dir)
    except UserError:
        return False
    return True


# Readers scanned for a class list or a count, kept until a dataset takes one: the scan of a
# split's files (minutes for ImageNet's train.tar) is made once per run, not once per use.
_SCANS: dict[tuple[Path, tuple[str, ...] | None], Any] = {}


def _scan(path: Path, names: tuple[str, ...] | None = None, take: bool = False):
    """timm's reader of one split of folder or tar data, labelling ``names`` 0, 1, ... (None:
    the reader's own classes). ``take``: for a dataset, which then owns it (a tar reader's
    open file must not be shared by two datasets' loader workers)."""
    reader = _SCANS.pop((path, names), None) if take else _SCANS.get((path, names))
    if reader is None:
        from timm.data.readers import create_reader

        class_map = {name: i for i, name in enumerate(names)} if names else ""
        reader = create_reader("", root=str(path), class_map=class_map)
        if not take:
            _SCANS[(path, names)] = reader
    return reader


def _labelled(dataset: str, path: Path, names: tuple[str, ...], take: bool = False):
    """The reader of a split labelling ``names`` in order: a tar's own scan where it labels them
    so already (the same classes, sorted), else a reader made with that class map."""
    wanted = {name: i for i, name in enumerate(names)}
    if dataset == "tar" and _scan(path).class_name_to_idx == wanted:
        return _scan(path, take=take)
    return _scan(path, names, take=take)


@functools.cache
def _classes(dataset: str, train: Path) -> tuple[str, ...]:
    if dataset == "folder":
        names = sorted(p.name for p in train.iterdir() if p.is_dir())
    else:  # the tar's class folders, as timm's reader finds them
        names = sorted(_scan(train).class_name_to_idx)
    if not names:
        raise UserError(
            f"{dataset} data: no class folders in {train}; expected {_expected(dataset)}"
        )
    return tuple(names)


def classes(dataset: str, data_dir: str | Path | None) -> list[str]:
    """The classes of ``folder`` or ``tar`` data: the class folders of its training split,
    sorted (the labels are their indices in both splits). A validation split with a class that
    training lacks is an error (its images would have no label), and so is a training split of
    fewer than two classes (every image of one class: 100% top-1, a result of nothing)."""
    train = split_path(dataset, data_dir, "train").resolve()
    names = _classes(dataset, train)
    if len(names) < 2:
        raise UserError(
            f"{dataset} data: {train} has {len(names)} class folder(s) "
            f"({', '.join(names) or 'none'}); a classifier needs 2 or more: put each class's "
            "images in a folder of its own (train/CLASS/image.png)"
        )
    try:
        val = split_path(dataset, data_dir, "val").resolve()
    except UserError:
        return list(names)  # the loader says where the split should be
    extra = sorted(set(_classes(dataset, val)) - set(names))
    if extra:
        raise UserError(
            f"{dataset} data: {val} has classes that the training split lacks "
            f"({', '.join(extra[:5])}{'...' * (len(extra) > 5)}); give both the same class folders"
        )
    return list(names)


def count(dataset: str, data_dir: str | Path | None, split: str) -> int:
    """Images of one split of ``folder`` or ``tar`` data (every image file timm's reader finds
    in the class folders of the training split)."""
    names = tuple(classes(dataset, data_dir))
    return len(_labelled(dataset, split_path(dataset, data_dir, split).resolve(), names))


def check_reader(dataset: str) -> None:
    """A one-line error where a streamed reader's package is not installed."""
    prefix = dataset.partition("/")[0]
    if prefix in STREAMED:
        package, module = STREAMED[prefix]
        if importlib.util.find_spec(module) is None:
            raise UserError(
                f"dataset {dataset}: timm's {prefix} reader needs the {package} package; "
                f"pip install {package}"
            )


def data_config(recipe: Recipe, cfg: dict[str, Any]) -> dict[str, Any]:
    """timm's data config (``resolve_data_config``) of a model's pretrained ``cfg`` at the
    recipe's image size, with the recipe's interpolation and crop_pct where it sets them."""
    from timm.data import resolve_data_config

    args = {"input_size": (3, recipe.image_size, recipe.image_size)}
    args.update(
        {k: getattr(recipe, k) for k in ("interpolation", "crop_pct") if getattr(recipe, k)}
    )
    return resolve_data_config(args, pretrained_cfg=cfg)


def transform(recipe: Recipe, config: dict[str, Any], train: bool):
    """timm's transform of one split, ending in uint8 tensors (normalised on the device)."""
    from timm.data import create_transform

    options: dict[str, Any] = {}
    if train and recipe.auto_augment and recipe.auto_augment.split("-")[0] == "v0":
        _check_posterize()
    if train:
        options = {
            "scale": tuple(recipe.scale) if recipe.scale else None,
            "hflip": 0.5 if recipe.hflip else 0.0,
            "auto_augment": recipe.auto_augment,
        }
    try:
        return create_transform(
            input_size=config["input_size"],
            is_training=train,
            interpolation=config["interpolation"],
            mean=config["mean"],
            std=config["std"],
            crop_pct=config["crop_pct"],
            crop_mode=config.get("crop_mode"),
            use_prefetcher=True,
            **options,
        )
    except (AssertionError, ValueError, KeyError) as err:
        raise UserError(
            f"auto_augment {recipe.auto_augment!r}: timm cannot parse it "
            f"({err or type(err).__name__}); "
            "e.g. v0 (AutoAugment), rand-m9-mstd0.5 (RandAugment), augmix-m5-w3"
        ) from None


def _check_posterize() -> None:
    """timm's v0 policy (the TPU EfficientNet code's) may posterize to 0 bits, which newer Pillow
    refuses mid-epoch: say so before training."""
    from PIL import ImageOps

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
    except ValueError:
        import PIL

        raise UserError(
            f"auto_augment v0: timm's v0 policy posterizes to 0 bits at times, which Pillow "
            f"{PIL.__version__} refuses (mid-epoch); use original (AutoAugment's ImageNet policy)"
        ) from None


class CheckedImages(torch.utils.data.Dataset):
    """A timm ``ImageDataset`` whose undecodable images are skipped with a warning naming the
    file, and reported: each item is ``(image, label, skipped)``, ``skipped`` the indices of the
    images skipped to reach it (timm's own dataset skips them without saying which).

    ``limit``: only that many images, evenly spaced over the data set (whose files are sorted by
    class, so that every class keeps its share)."""

    def __init__(self, dataset, limit: int | None = None) -> None:
        self.dataset = dataset
        total = len(dataset.reader)
        count = total if limit is None else min(limit, total)
        self.indices = [i * total // count for i in range(count)]

    def __len__(self) -> int:
        return len(self.indices)

    def filename(self, index: int) -> str:
        return str(self.dataset.reader.filename(index, absolute=True))

    def __getitem__(self, position: int):
        reader, skipped = self.dataset.reader, []
        index = self.indices[position]
        while True:
            try:
                sample, label = reader[index][:2]
                image = Image.open(sample).convert(self.dataset.input_img_mode)
                break
            except OSError as err:  # PIL's UnidentifiedImageError and truncated files
                log.warning(f"skipped {self.filename(index)}: cannot decode it ({err})")
                skipped.append(index)
                if len(skipped) >= min(MAX_SKIPS, len(reader)):
                    raise UserError(
                        f"{len(skipped)} images in a row cannot be decoded (last: "
                        f"{self.filename(index)}); check the data set's files"
                    ) from None
                index = (index + 1) % len(reader)
        return self.dataset.transform(image), label, skipped


def _collate(batch):
    """uint8 images stacked, int64 labels, and the skipped indices (of :class:`CheckedImages`'
    items; timm's streamed datasets skip nothing they say) as a plain list, kept on the host:
    Accelerate moves tensors only."""
    images = torch.stack([item[0] for item in batch])
    labels = torch.tensor([item[1] for item in batch], dtype=torch.int64)
    skipped = [index for item in batch if len(item) > 2 for index in item[2]]
    return images, labels, skipped


def create(recipe: Recipe, split: str, config: dict[str, Any]):
    """The split's timm dataset with its transform: :class:`CheckedImages` over timm's
    ImageDataset for folder and tar data (labels: the indices of :func:`classes` in both
    splits), timm's own dataset for streamed readers."""
    from timm.data import ImageDataset, create_dataset

    check_reader(recipe.dataset)
    train = split == "train"
    limit = recipe.limit_train if train else recipe.limit_val
    if recipe.streamed:
        try:
            return create_dataset(
                recipe.dataset,
                root=recipe.data_dir,
                split="train" if train else "validation",
                is_training=train,
                batch_size=recipe.batch_size,
                num_samples=limit,
                seed=recipe.seed,
                transform=transform(recipe, config, train),
            )
        except (OSError, ValueError, ConnectionError) as err:
            raise UserError(f"dataset {recipe.dataset}: timm's reader fails ({err})") from None
    names = tuple(classes(recipe.dataset, recipe.data_dir))
    path = split_path(recipe.dataset, recipe.data_dir, split).resolve()
    reader = _labelled(recipe.dataset, path, names, take=True)
    dataset = ImageDataset(str(path), reader=reader, transform=transform(recipe, config, train))
    return CheckedImages(dataset, limit)


class DeviceLoader:
    """Batches of a DataLoader of uint8 images, moved to the training device and normalised
    there (channels_last if asked), randomly erased in training where ``re_prob`` > 0: what
    timm's PrefetchLoader does, on any device. ``skipped`` collects the indices of undecodable
    images."""

    def __init__(self, loader, device: torch.device, normalizer: Normalizer, erase=None) -> None:
        self.loader, self.device = loader, device
        self.normalizer, self.erase = normalizer, erase
        self.skipped: set[int] = set()

    def skipped_files(self) -> list[str]:
        return [self.loader.dataset.filename(index) for index in sorted(self.skipped)]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, skipped in self.loader:
            self.skipped.update(skipped)
            images = self.normalizer(images.to(self.device, non_blocking=True))
            if self.erase is not None:
                images = self.erase(images)
            yield images, labels.to(self.device, non_blocking=True)


def loader(
    recipe: Recipe,
    split: str,
    config: dict[str, Any],
    batch_size: int,
) -> torch.utils.data.DataLoader:
    """A DataLoader over one split: workers, pinned memory on a GPU, persistent workers and
    prefetching; shuffled in training. Pass folder/tar loaders to ``accelerator.prepare``
    (which shards them); timm's streamed readers shard by process themselves."""
    dataset = create(recipe, split, config)
    # No more workers than the CPUs this process may use (torch warns, and they would contend).
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(recipe.num_workers, cpus or 1)
    train = split == "train"
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and not recipe.streamed,
        num_workers=workers,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(recipe.seed),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=train,  # as timm's loader: no ragged last batch (BatchNorm, Mixup's pairs)
    )


def eraser(recipe: Recipe, device: torch.device):
    """timm's RandomErasing on the device's normalised batches (timm's per-pixel mode), or None."""
    if not recipe.re_prob:
        return None
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(recipe.re_prob, mode="pixel", device=device)
