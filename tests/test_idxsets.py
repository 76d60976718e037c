"""The MNIST family in memory (fashion_mnist, mnist, kmnist): IDX files the tests write, in
each layout the tool finds, gzipped and not; damaged files and the offline error; grey images
into 3-channel and 1-channel models."""

import gzip
import struct
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.mnist as tv_mnist

from timm_scaling import idxsets
from timm_scaling.batches import DeviceBatches
from timm_scaling.data import MEAN, STD, available, load_images, num_classes
from timm_scaling.errors import UserError

SIZES = {"train": 12, "val": 5}


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder, gz=True, seed=0):
    """The four IDX files of a tiny set in ``folder``; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, (images_name, labels_name) in idxsets.FILES.items():
        images = rng.integers(0, 256, (SIZES[split], 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, SIZES[split], dtype=np.uint8)
        for name, array in ((images_name, images), (labels_name, labels)):
            raw = _idx(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        written[split] = (images, labels)
    return written


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """No Debian folder, whatever this machine has installed; cwd (./data) empty."""
    for name, (cls, package, _) in list(idxsets.SETS.items()):
        monkeypatch.setitem(idxsets.SETS, name, (cls, package, str(tmp_path / "no-debian")))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def offline(monkeypatch):
    calls = []

    def fail(url, *args, **kwargs):
        calls.append(url)
        raise URLError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fail)
    return calls


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    "layout", ["torchvision", "flat"], ids=["DATA/FashionMNIST/raw", "DATA itself"]
)
def test_idx_files_load_as_written(tmp_path, gz, layout, no_debian, offline):
    folder = tmp_path / "d" / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path / "d"
    written = write_idx(folder, gz=gz)
    for split, (images, labels) in written.items():
        got = load_images("fashion_mnist", tmp_path / "d", 28, split)
        assert got.images.dtype == torch.uint8 and got.images.shape == (SIZES[split], 1, 28, 28)
        assert torch.equal(got.images[:, 0], torch.from_numpy(images))
        assert got.labels.tolist() == labels.tolist()
        assert got.classes == idxsets.CLASSES["fashion_mnist"]
    assert load_images("fashion_mnist", tmp_path / "d", 32, "val").images.shape == (5, 1, 32, 32)
    assert available("fashion_mnist", tmp_path / "d") and not offline


def test_the_debian_folder_is_found_unnamed_and_only_then(tmp_path, monkeypatch, offline):
    debian = tmp_path / "usr-share"
    written = write_idx(debian)
    cls, package, _ = idxsets.SETS["fashion_mnist"]
    monkeypatch.setitem(idxsets.SETS, "fashion_mnist", (cls, package, str(debian)))
    monkeypatch.chdir(tmp_path)
    got = load_images("fashion_mnist", None, 28, "train")
    assert got.labels.tolist() == written["train"][1].tolist()
    # a data folder the user names is where the files must be: not silently the Debian copy
    assert not available("fashion_mnist", tmp_path / "mine")
    with pytest.raises(UserError, match="download failed"):
        load_images("fashion_mnist", tmp_path / "mine", 28, "train")
    # mnist is not the Debian package's set
    assert not available("mnist", None)


def test_available_never_downloads(tmp_path, no_debian, offline):
    assert not available("fashion_mnist", tmp_path / "empty")
    assert not offline and not (tmp_path / "empty").exists()
    assert num_classes("kmnist") == 10


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist", "kmnist"])
def test_offline_and_absent_is_one_line_naming_the_fix(tmp_path, no_debian, offline, dataset):
    with pytest.raises(UserError) as err:
        load_images(dataset, tmp_path / "data", 28, "train")
    text = str(err.value)
    assert "\n" not in text and "no network" in text and offline  # torchvision really tried
    cls = idxsets.SETS[dataset][0]
    assert str(tmp_path / "data" / cls / "raw") in text and "train-images-idx3-ubyte.gz" in text
    assert ("apt-get install dataset-fashion-mnist" in text) == (dataset == "fashion_mnist")


def test_a_download_that_works_lands_where_it_is_read(tmp_path, no_debian, monkeypatch):
    """torchvision's download (here: copying files that stand for the mirror) into
    DATA/FashionMNIST/raw; the next load finds them there without downloading again."""
    mirror = tmp_path / "mirror"
    written = write_idx(mirror)
    calls = []

    def fetch(url, download_root, filename, md5):
        calls.append(filename)
        raw = gzip.decompress((mirror / filename).read_bytes())
        (tmp_path / "data" / "FashionMNIST" / "raw" / filename.removesuffix(".gz")).write_bytes(raw)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fetch)
    monkeypatch.setattr(tv_mnist.MNIST, "_check_exists", lambda self: len(calls) == 4)
    got = load_images("fashion_mnist", tmp_path / "data", 28, "val")
    assert got.labels.tolist() == written["val"][1].tolist() and len(calls) == 4
    load_images("fashion_mnist", tmp_path / "data", 28, "train")
    assert len(calls) == 4


def _damage(folder, kind):
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if kind == "truncated gzip":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "not gzip":
        path.write_bytes(raw)
    elif kind == "short body":
        path.write_bytes(gzip.compress(raw[:-7]))
    elif kind == "wrong magic":
        path.write_bytes(gzip.compress(b"\0\0\x0d\x03" + raw[4:]))
    elif kind == "labels of another count":
        labels = folder / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(_idx(np.zeros(3, np.uint8))))
        return labels.parent
    elif kind == "label 10":
        labels = folder / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(_idx(np.full(SIZES["train"], 10, np.uint8))))
        return labels
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "truncated gzip",
        "not gzip",
        "short body",
        "wrong magic",
        "labels of another count",
        "label 10",
    ],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, no_debian, offline, kind):
    write_idx(tmp_path / "d")
    named = _damage(tmp_path / "d", kind)
    with pytest.raises(UserError) as err:
        load_images("fashion_mnist", tmp_path / "d", 28, "train")
    text = str(err.value)
    assert "\n" not in text and str(named) in text and "download it again" in text
    assert not offline


def _grey(n=6, size=8):
    images = torch.arange(n * size * size, dtype=torch.int64).remainder(256).to(torch.uint8)
    return images.view(n, 1, size, size), torch.arange(n) % 10


@pytest.mark.parametrize("train", [True, False])
def test_grey_images_feed_a_3_channel_model_as_repeated_channels(train):
    images, labels = _grey()
    from timm_scaling.data import ImageSet

    batches = DeviceBatches(ImageSet(images, labels, []), 6, train=train, crop_padding=0)
    batches.hflip = False
    ((x, y),) = list(batches)
    assert x.shape == (6, 3, 8, 8) and y.tolist() == labels[batches.indices()].tolist()
    grey = images[batches.indices(), 0].float() / 255
    for channel in range(3):
        assert torch.allclose(x[:, channel], (grey - MEAN[channel]) / STD[channel], atol=1e-5)


def test_grey_images_feed_a_1_channel_model_normalised_by_the_mean_statistics():
    images, labels = _grey()
    from timm_scaling.data import ImageSet

    batches = DeviceBatches(ImageSet(images, labels, []), 6, train=False, channels=1)
    ((x, _),) = list(batches)
    assert x.shape == (6, 1, 8, 8)
    expected = (images[:, 0].float() / 255 - sum(MEAN) / 3) / (sum(STD) / 3)
    assert torch.allclose(x[:, 0], expected, atol=1e-5)
    rgb = ImageSet(images.expand(-1, 3, -1, -1), labels, [])
    with pytest.raises(ValueError, match="3-channel images cannot feed a 1-channel model"):
        DeviceBatches(rgb, 6, channels=1)


@pytest.mark.parametrize("typed", ["torch/fashion_mnist", "FashionMNIST", "fashion-mnist"])
def test_the_names_timm_and_torchvision_use_get_a_did_you_mean(typed):
    from timm_scaling.recipe_keys import check_dataset

    with pytest.raises(UserError, match=f"unknown dataset '{typed}'; did you mean fashion_mnist"):
        check_dataset(typed)


@pytest.mark.slow
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("channels", [3, 1])
def test_a_run_on_idx_files_exports_what_timm_evaluates_as_the_run_did(tmp_path, channels):
    """Trained from IDX files (in_chans 3: the grey channel repeated; 1: a grey stem); the
    export's config is the run's evaluation, so timm's own transform of the test images (as
    validate.py makes it) and the exported weights give the run's top-1, image by image."""
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from timm_scaling.recipes import load_recipe
    from timm_scaling.train import train

    written = write_idx(tmp_path / "idx", gz=False)
    kwargs = "{}" if channels == 3 else "{in_chans: 1}"
    recipe = load_recipe(
        "fashion",
        [
            "dataset=fashion_mnist",
            f"data_dir={tmp_path / 'idx'}",
            "epochs=1",
            "batch_size=4",
            "eval_batch_size=8",
            f"model_kwargs={kwargs}",
        ],
    )
    result = train(recipe, tmp_path / "runs")
    model_dir = next((tmp_path / "runs").glob("*/model"))
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    config = resolve_data_config(model=model)
    assert config["input_size"] == (channels, 32, 32)
    assert model.pretrained_cfg["label_names"] == idxsets.CLASSES["fashion_mnist"]
    transform = create_transform(**config, is_training=False)
    mode = "RGB" if channels == 3 else "L"
    images, labels = written["val"]
    batch = torch.stack([transform(Image.fromarray(image).convert(mode)) for image in images])
    ours = DeviceBatches(
        load_images("fashion_mnist", tmp_path / "idx", 32, "val"), 8, train=False, channels=channels
    )
    ((run_batch, _),) = list(ours)
    with torch.no_grad():
        logits = model(batch)
        assert torch.allclose(logits, model(run_batch), atol=1e-3)  # the run's own evaluation
    predicted = logits.argmax(1)
    top1 = 100 * (predicted == torch.from_numpy(labels.astype(np.int64))).float().mean()
    assert top1.item() == pytest.approx(result["top1"])


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
def test_a_folder_of_images_is_not_a_place_to_download_into(tmp_path, dataset, offline):
    (tmp_path / "imgs" / "train" / "shirt").mkdir(parents=True)
    (tmp_path / "imgs" / "val" / "shirt").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        load_images(dataset, tmp_path / "imgs", 32, "train")
    assert str(err.value) == (
        f"{dataset}: {tmp_path / 'imgs'} holds train/ and val/, a folder of images, not "
        f"{dataset}'s files; to train on it pass --dataset folder"
    )
    assert not offline and sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [
        "train",
        "val",
    ]
