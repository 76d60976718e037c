import math
import pickle
from collections import Counter
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from sklearn.datasets import load_digits
from torchvision.transforms import functional as TF

from timm_scaling.batches import DeviceBatches
from timm_scaling.data import (
    MEAN,
    SHAPES,
    STD,
    ImageSet,
    available,
    load_images,
    num_classes,
    resize,
    synthetic,
)
from timm_scaling.errors import UserError

# DeviceBatches tests run on the CPU, and on the GPU too where there is one (`pytest -m cuda`).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module")
def digits():
    return {split: load_images("digits", None, 8, split) for split in ("train", "val")}


# ---- digits -------------------------------------------------------------------------------


def test_digits_shapes_and_classes(digits):
    train, val = digits["train"], digits["val"]
    assert len(train) + len(val) == 1797
    assert len(val) == math.ceil(1797 * 0.2)  # sklearn rounds the test share up
    for part in (train, val):
        assert part.images.dtype == torch.uint8 and part.labels.dtype == torch.int64
        assert part.images.shape == (len(part), 3, 8, 8)
        assert torch.equal(part.images[:, 0], part.images[:, 2])  # grey in three channels
        assert part.classes == [str(d) for d in range(10)]
    assert train.images.max() == 255 and train.images.min() == 0


def test_digits_split_is_a_partition_of_the_real_images(digits):
    raw = load_digits()
    scaled = np.rint(raw.images * 255 / 16).astype(np.uint8)
    everything = Counter((img.tobytes(), int(y)) for img, y in zip(scaled, raw.target, strict=True))
    parts = Counter()
    for part in digits.values():
        for img, y in zip(part.images[:, 0].numpy(), part.labels.tolist(), strict=True):
            parts[(img.tobytes(), y)] += 1
    assert parts == everything


def test_digits_split_is_stratified_and_fixed(digits):
    per_class = np.bincount(load_digits().target)
    val_counts = np.bincount(digits["val"].labels.numpy(), minlength=10)
    assert np.all(np.abs(val_counts - per_class * 0.2) <= 1)
    again = load_images("digits", None, 8, "val")
    assert torch.equal(again.images, digits["val"].images)
    assert torch.equal(again.labels, digits["val"].labels)


@pytest.mark.parametrize("size", [32, 42, 13])
def test_load_resizes_to_the_image_size(size):
    data = load_images("digits", None, size, "val", limit=20)
    assert data.images.shape == (20, 3, size, size) and data.images.dtype == torch.uint8


def test_limit_keeps_the_first_images(digits):
    small = load_images("digits", None, 8, "train", limit=50)
    assert torch.equal(small.images, digits["train"].images[:50])
    assert torch.equal(small.labels, digits["train"].labels[:50])


def test_resize_keeps_flat_images_flat_and_matches_interpolate():
    flat = torch.full((3, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(resize(flat, 20), torch.full((3, 3, 20, 20), 77, dtype=torch.uint8))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    expected = TF.resize(images, [64, 64], antialias=True)  # torchvision's uint8 resize
    assert (resize(images, 64).int() - expected.int()).abs().max() <= 1


def test_num_classes(tmp_path):
    assert [num_classes(d) for d in ("cifar10", "cifar100", "digits")] == [10, 100, 10]
    for name in ("cat", "dog", "emu"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert num_classes("folder", tmp_path) == 3
    with pytest.raises(
        UserError, match="no train.tar or training.tar; expected DATA_DIR/train.tar"
    ):
        num_classes("tar", tmp_path)
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; choose one of cifar10"):
        num_classes("imagenet")


def test_shapes_are_the_real_data_sets(digits):
    assert SHAPES["digits"] == (len(digits["train"]), len(digits["val"]), 10)
    assert SHAPES["cifar10"] == (50_000, 10_000, 10)


def test_available_never_downloads(tmp_path):
    assert available("digits") and available("synthetic")
    assert not available("cifar10", tmp_path) and not available("folder", tmp_path)
    assert not any(tmp_path.iterdir())
    (tmp_path / "train").mkdir()
    assert not available("folder", tmp_path)  # and its val/?
    (tmp_path / "validation").mkdir()  # timm's name for the split
    assert available("folder", tmp_path)


# ---- synthetic ----------------------------------------------------------------------------


def test_synthetic_is_random_uint8_in_the_asked_shape():
    data = synthetic(500, 12, 7, seed=0, split="train")
    assert data.images.shape == (500, 3, 12, 12) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) == set(range(7))
    assert data.classes == [str(c) for c in range(7)]
    counts = torch.bincount(data.images.flatten().long(), minlength=256)
    assert counts.min() > 0 and abs(data.images.float().mean().item() - 127.5) < 1


def test_synthetic_is_fixed_by_seed_and_split():
    first = synthetic(64, 8, 10, seed=3, split="val")
    again = synthetic(64, 8, 10, seed=3, split="val")
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    for other in (synthetic(64, 8, 10, seed=4, split="val"), synthetic(64, 8, 10, 3, "train")):
        assert not torch.equal(first.images, other.images)


def test_synthetic_is_not_loaded():
    with pytest.raises(UserError, match="made by data.synthetic"):
        load_images("synthetic", None, 32, "train")


# ---- CIFAR, from a fixture in the real pickle layout ----------------------------------------


def _write_cifar(root, dataset, per_file=4):
    """The layout of cifar-10-batches-py / cifar-100-python, with a few random images."""
    rng = np.random.default_rng(0)
    cls = tv_cifar.CIFAR100 if dataset == "cifar100" else tv_cifar.CIFAR10
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "fine_labels" if dataset == "cifar100" else "labels"
    n_classes = 100 if dataset == "cifar100" else 10
    written = {}
    for name, _ in cls.train_list + cls.test_list:
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, n_classes, per_file).tolist()
        entry = {"batch_label": name, "data": data, label_key: labels}
        (folder / name).write_bytes(pickle.dumps(entry))
        written[name] = (data, labels)
    names = [f"class{i}" for i in range(n_classes)]
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: names}))
    return cls, written, names


@pytest.fixture
def no_checksums(monkeypatch):
    """The fixture's files cannot have the real files' md5: check that they exist only."""
    real = tv_cifar.check_integrity
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: real(path, None))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_fixture_loads_through_torchvision(tmp_path, no_checksums, dataset):
    cls, written, names = _write_cifar(tmp_path, dataset)
    train = load_images(dataset, tmp_path, 32, "train")
    val = load_images(dataset, tmp_path, 32, "val")
    train_files = [name for name, _ in cls.train_list]
    expected = np.concatenate([written[name][0] for name in train_files])
    # the python-version layout: 1024 red, then 1024 green, then 1024 blue values, row-major
    assert torch.equal(train.images, torch.from_numpy(expected.reshape(-1, 3, 32, 32)))
    assert train.labels.tolist() == sum((written[name][1] for name in train_files), [])
    test_name = cls.test_list[0][0]
    assert val.labels.tolist() == written[test_name][1]
    assert train.classes == val.classes == names
    assert load_images(dataset, tmp_path, 64, "val").images.shape == (4, 3, 64, 64)


def test_cifar_offline_and_missing_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as err:
        load_images("cifar10", tmp_path / "data", 32, "train")
    text = str(err.value)
    assert "\n" not in text
    assert str(tmp_path / "data" / "cifar-10-batches-py") in text
    assert "data_batch_1" in text and "batches.meta" in text
    assert tv_cifar.CIFAR10.url in text and "no network" in text


def test_cifar_corrupt_files_are_one_line(tmp_path):
    _write_cifar(tmp_path, "cifar10")  # real md5 checks: the fixture fails them
    with pytest.raises(UserError) as err:
        load_images("cifar10", tmp_path, 32, "train")
    assert "\n" not in str(err.value) and "delete that folder" in str(err.value)


# ---- folder ---------------------------------------------------------------------------------


# ---- DeviceBatches ------------------------------------------------------------------------


def _numbered(n, size=8):
    """Images whose label is their index, so batches show which samples they hold."""
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    return ImageSet(images, torch.arange(n), [str(i) for i in range(n)])


def _labels(batches):
    return torch.cat([labels for _, labels in batches]).tolist()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_shards_cover_every_image_exactly_once(world_size, device):
    data = _numbered(23)
    seen = []
    for rank in range(world_size):
        shard = DeviceBatches(data, 4, device=device, train=False, rank=rank, world_size=world_size)
        labels = _labels(shard)
        assert len(labels) == shard.num_samples
        assert len(shard) == len(list(shard)) == math.ceil(shard.num_samples / 4)
        seen += labels
    assert sorted(seen) == list(range(23))


@pytest.mark.parametrize("device", DEVICES)
def test_eval_batches_are_the_images_normalised(device):
    data = _numbered(10)
    batches = DeviceBatches(data, 4, device=device, train=False, rank=1, world_size=2)
    images = torch.cat([x for x, _ in batches])
    assert images.device.type == device
    labels = _labels(batches)
    expected = TF.normalize(data.images[labels].float() / 255, MEAN, STD)
    torch.testing.assert_close(images.cpu(), expected)


def test_train_shards_are_equal_and_cover_every_sample():
    data = _numbered(23)
    shards = [
        _labels(DeviceBatches(data, 5, train=True, seed=3, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 12
    seen = Counter(shards[0] + shards[1])
    assert set(seen) == set(range(23))
    assert sum(seen.values()) - 23 == 1  # one repeat pads 23 to 24


def test_train_order_is_seeded_per_epoch():
    data = _numbered(40)

    def order(seed, epoch):
        batches = DeviceBatches(data, 8, train=True, seed=seed)
        batches.set_epoch(epoch)
        return _labels(batches)

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == list(range(40))
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


def test_an_epoch_replays_exactly():
    data = _numbered(30)
    batches = DeviceBatches(data, 8, train=True, seed=5)
    first = [x.clone() for x, _ in batches]
    batches.set_epoch(1)
    other = [x.clone() for x, _ in batches]
    batches.set_epoch(0)
    again = [x for x, _ in batches]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def _unnormalise(x):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x * std + mean).mul(255).round().to(torch.uint8)


def _crops_and_flips(image, pad):
    """Every output a random crop + flip may give for one image, made with plain slicing."""
    _, h, w = image.shape
    padded = torch.zeros((3, h + 2 * pad, w + 2 * pad), dtype=image.dtype)
    padded[:, pad : pad + h, pad : pad + w] = image
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop.flip(-1)


@pytest.mark.parametrize("device", DEVICES)
def test_augmentation_crops_and_flips_each_image(device):
    data = _numbered(64)
    batches = DeviceBatches(data, 64, device=device, train=True, seed=0, crop_padding=2)
    images, labels = next(iter(batches))
    assert images.shape == (64, 3, 8, 8) and images.dtype == torch.float32
    assert images.device.type == labels.device.type == device
    found = []
    for out, label in zip(_unnormalise(images.cpu()), labels.tolist(), strict=True):
        matches = [
            how for how, crop in _crops_and_flips(data.images[label], 2) if torch.equal(out, crop)
        ]
        assert matches, f"image {label} is not a crop/flip of its source"
        found.append(matches[0])
    assert any(flip for _, _, flip in found) and not all(flip for _, _, flip in found)
    assert len({(dy, dx) for dy, dx, _ in found}) > 5  # shifts vary per image


def test_no_augmentation_when_switched_off():
    data = _numbered(16)
    batches = DeviceBatches(data, 16, train=True, crop_padding=0, hflip=False)
    images, labels = next(iter(batches))
    assert torch.equal(_unnormalise(images), data.images[labels])


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_output(device):
    data = _numbered(8)
    images, _ = next(iter(DeviceBatches(data, 8, device=device, channels_last=True)))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError, match="rank 2"):
        DeviceBatches(_numbered(4), 2, rank=2, world_size=2)


def test_a_recipes_split_size_is_what_its_run_sees_each_epoch():
    """One count for the trainer, `--plan-from` and the search's plan: synthetic data of the
    recipe's own sizes (count_images gives it CIFAR-10's shape), limits applied."""
    from timm_scaling import data
    from timm_scaling.recipes import load_recipe

    synthetic = load_recipe(
        "digits",
        ["dataset=synthetic", "synthetic_train_size=96", "synthetic_val_size=40", "limit_train=64"],
    )
    assert (data.split_size(synthetic, "train"), data.split_size(synthetic, "val")) == (64, 40)
    assert data.count_images("synthetic", None, "val") == data.SHAPES["cifar10"][1] != 40
    digits = load_recipe("digits", ["limit_val=100"])
    assert data.split_size(digits, "train") == len(data.load_images("digits", None, 8, "train"))
    assert data.split_size(digits, "val") == 100
