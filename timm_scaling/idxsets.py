"""The MNIST family held in memory: ``mnist``, ``fashion_mnist`` and ``kmnist``, the 28x28 grey
sets timm's ``create_dataset`` names ``torch/mnist``, ``torch/fashion_mnist``, ``torch/kmnist``.

Each is four IDX files (``train-images-idx3-ubyte`` ...), plain or gzipped, found in the first
of: the data folder in torchvision's layout (``DATA/FashionMNIST/raw``), the data folder itself,
and (when no data folder is named) the folder a Debian package installs them in
(``apt-get install dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``). Absent
everywhere, torchvision downloads them into the data folder; offline, one line says which
package to install or where to put which files.

Images stay grey: uint8 (N, 1, 28, 28). A 3-channel model gets the one channel repeated on the
device (:class:`timm_scaling.batches.DeviceBatches`); ``model_kwargs: {in_chans: 1}`` builds a
1-channel stem instead.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from timm_scaling.errors import UserError
from timm_scaling.imagesets import data_root, refuse_image_tree

# dataset -> (torchvision's class name, Debian package, the folder it installs the files in)
SETS = {
    "mnist": ("MNIST", None, None),
    "fashion_mnist": ("FashionMNIST", "dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
    "kmnist": ("KMNIST", None, None),
}
# The classes in label order: Fashion-MNIST's and KMNIST's (romanised hiragana) as torchvision
# names them; MNIST's as plain digits (torchvision's say "0 - zero").
CLASSES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
# split -> (images file, labels file): train is the 60,000 training images, val the 10,000 test.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SHAPES = {name: (60_000, 10_000, 10) for name in SETS}
_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one these sets use


def folders(dataset: str, data_dir: str | Path | None) -> list[Path]:
    """The folders searched for a set's IDX files, in order."""
    root = data_root(data_dir)
    found = [root / SETS[dataset][0] / "raw", root]
    debian = SETS[dataset][2]
    if data_dir is None and debian is not None:
        found.append(Path(debian))
    return found


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(dataset: str, data_dir: str | Path | None) -> Path | None:
    """The first folder holding all four IDX files (each plain or gzipped), else None."""
    names = [name for pair in FILES.values() for name in pair]
    for folder in folders(dataset, data_dir):
        if all(_file(folder, name) for name in names):
            return folder
    return None


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``dims`` dimensions (gzipped if it ends in .gz)."""
    damaged = f"{path} is damaged"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{damaged} ({err}); {_refetch(path)}") from None
    if len(raw) < 4 + 4 * dims or raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != dims:
        raise UserError(f"{damaged}: not an IDX file of {dims}-dimensional bytes; {_refetch(path)}")
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    body = memoryview(raw)[4 + 4 * dims :]
    if len(body) != int(np.prod(shape)):
        raise UserError(
            f"{damaged}: its header says {'x'.join(map(str, shape))} bytes, it holds "
            f"{len(body)}; {_refetch(path)}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _refetch(path: Path) -> str:
    if path.is_relative_to("/usr/share"):
        return "reinstall its package (apt-get install --reinstall)"
    return "delete it to download it again, or put an intact copy there"


def _download(dataset: str, data_dir: str | Path | None) -> Path:
    """torchvision's download into the data folder, where the network allows; offline, the
    one line that says what to install or where to put the files."""
    from torchvision import datasets

    root = data_root(data_dir)
    refuse_image_tree(dataset, root)
    root.mkdir(parents=True, exist_ok=True)
    cls_name, package, _ = SETS[dataset]
    # The processes of one run may get here at once: one downloads, the others wait.
    with FileLock(str(root / f".{dataset}.download.lock")):
        if (found := locate(dataset, data_dir)) is not None:
            return found
        try:
            getattr(datasets, cls_name)(str(root), train=True, download=True)
        except (OSError, RuntimeError) as err:  # every mirror failed: "Error downloading ..."
            # torchvision's message lists each mirror's error; the last line is the last error
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            files = ", ".join(f"{name}.gz" for pair in FILES.values() for name in pair)
            install = f"`apt-get install {package}`, or " if package else ""
            raise UserError(
                f"{dataset}: its IDX files are in none of "
                f"{', '.join(map(str, folders(dataset, data_dir)))} and the download failed "
                f"({reason}); {install}put {files} in {root / cls_name / 'raw'} "
                "(or pass --data-dir to the folder holding them)"
            ) from None
    found = locate(dataset, data_dir)
    if found is None:  # torchvision says it downloaded, yet the files are not there
        raise UserError(f"{dataset}: downloaded into {root}, but its IDX files are not there")
    return found


def load(
    dataset: str, data_dir: str | Path | None, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels (N,) of one split, downloading the files
    if they are nowhere here."""
    folder = locate(dataset, data_dir) or _download(dataset, data_dir)
    images_name, labels_name = FILES[split]
    images = read_idx(_file(folder, images_name), 3)
    labels = read_idx(_file(folder, labels_name), 1)
    if len(images) != len(labels):
        raise UserError(
            f"{dataset}: {folder} holds {len(images)} {split} images but {len(labels)} labels; "
            f"{_refetch(folder)}"
        )
    if labels.size and labels.max() >= len(CLASSES[dataset]):
        raise UserError(
            f"{dataset}: {_file(folder, labels_name)} has label {labels.max()}, beyond its "
            f"{len(CLASSES[dataset])} classes; {_refetch(folder)}"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
