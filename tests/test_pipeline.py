"""Data read through timm's pipeline: folder and tar trees of real digits images, timm's
transforms, Mixup, undecodable files, and the errors of data that is not there."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from timm_scaling import data, pipeline
from timm_scaling.cli import app
from timm_scaling.errors import UserError
from timm_scaling.paper import _read_reference, paper_dropout
from timm_scaling.report import read_rows
from timm_scaling.train import Trainer, train

pytestmark = pytest.mark.usefixtures("isolated")

# Two epochs of timm's smallest EfficientNet on digits at 64 px, cropped to 32 px: a few seconds.
LEARNS = {
    "model": "test_efficientnet",
    "base_size": 32,
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.001,
    "warmup_epochs": 0.2,
    "ema": "false",
    "auto_augment": "null",
    "scale": "[0.5,1]",
    "num_workers": 1,
}


@pytest.fixture(scope="module")
def digits_trees(module_tmp_path):
    """scikit-learn's digits at 64 px as a folder tree and as two tar files."""
    root = module_tmp_path
    return {
        "folder": data.write_images("digits", root / "folder", 64),
        "tar": data.write_images("digits", root / "tar", 64, tar=True),
    }


def imagenet(tree, dataset="folder", **changes):
    return helpers.recipe("imagenet", dataset=dataset, data_dir=tree, **changes)


def test_written_trees_hold_every_digit_in_its_class(digits_trees, caplog):
    for dataset, tree in digits_trees.items():
        with caplog.at_level(logging.INFO):
            assert pipeline.classes(dataset, tree) == [str(d) for d in range(10)]
        counts = [data.count_images(dataset, tree, split) for split in ("train", "val")]
        assert counts == list(data.SHAPES["digits"][:2])
    assert not [r for r in caplog.records if r.name.startswith("timm.data")]  # tar scans: quiet
    image = Image.open(next((digits_trees["folder"] / "val" / "3").iterdir()))
    assert image.size == (64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["folder", "tar"])
def test_two_epochs_on_a_tree_learn(digits_trees, dataset, tmp_path):
    result = train(imagenet(digits_trees[dataset], dataset, **LEARNS), tmp_path)
    assert result["top1"] > 25, result  # chance: 10%
    assert result["eval_images"] == data.SHAPES["digits"][1]
    assert result["skipped_images"] == 0 and result["img_size"] == 32
    assert result["drop_rate"] == pytest.approx(0.2)  # the paper's B0 rate for a model this small
    (row,) = read_rows(tmp_path / "report.csv")
    # which data: two folders are two data sets to the frontier (issue 34.10)
    assert row["dataset"] == f"{dataset}:{digits_trees[dataset].resolve()}"
    assert row["model"] == "test_efficientnet"
    # timm's validate.py on the export: its model, its data config, timm's own data set
    assert validated_top1(next(tmp_path.glob("*/model")), digits_trees[dataset], dataset) == (
        pytest.approx(result["top1"])
    )


def validated_top1(model_dir, tree, dataset):
    """What timm's validate.py does with ``--model local-dir:MODEL_DIR --pretrained``: the
    export's data config (resolve_data_config), timm's eval transform, timm's ImageDataset."""
    import timm
    from timm.data import ImageDataset, create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    config = resolve_data_config(model=model)
    root = tree / "val" if dataset == "folder" else tree / "val.tar"
    images = ImageDataset(str(root), transform=create_transform(**config, is_training=False))
    assert model.pretrained_cfg["label_names"] == [str(d) for d in range(10)]
    loader = torch.utils.data.DataLoader(images, batch_size=128)
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    return 100 * correct / len(images)


def test_each_tar_is_scanned_once_for_its_classes_count_and_dataset(digits_trees, monkeypatch):
    """timm's scan of a tar's members takes minutes for ImageNet: one per split and run."""
    from timm.data.readers import reader_image_in_tar

    scans, scan = [], reader_image_in_tar.extract_tarinfos

    def counted(root, *args, **kwargs):
        scans.append(Path(root).name)
        return scan(root, *args, **kwargs)

    monkeypatch.setattr(reader_image_in_tar, "extract_tarinfos", counted)
    monkeypatch.setattr(pipeline, "_SCANS", {})
    pipeline._classes.cache_clear()
    tree = digits_trees["tar"]
    recipe = imagenet(tree, "tar")
    config = pipeline.data_config(recipe, {"interpolation": "bilinear", "crop_pct": 0.875})
    counts = [pipeline.count("tar", tree, split) for split in ("train", "val")]
    made = [pipeline.create(recipe, split, config) for split in ("train", "val")]
    assert sorted(scans) == ["train.tar", "val.tar"]
    assert [len(d) for d in made] == counts == list(data.SHAPES["digits"][:2])
    reader = made[0].dataset.reader  # labels: the class folders' indices
    assert all(reader[i][1] == int(reader.filename(i).split("/")[0]) for i in range(len(reader)))
    pipeline.create(recipe, "train", config)  # a dataset owns its reader: another scans anew
    assert sorted(scans) == ["train.tar", "train.tar", "val.tar"]


def test_eval_transform_resizes_to_size_over_crop_pct_and_centre_crops(tmp_path):
    """A 64 px image whose pixels say their column, evaluated at 32 px with crop_pct 0.5: the
    resize to 64 keeps it, the centre crop keeps columns 16..47."""
    columns = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    recipe = helpers.recipe(
        "imagenet", data_dir=str(tmp_path), base_size=32, crop_pct=0.5, model="resnet18"
    )
    config = pipeline.data_config(recipe, {"interpolation": "bilinear", "crop_pct": 0.875})
    assert config["crop_pct"] == 0.5 and config["input_size"] == (3, 32, 32)
    out = pipeline.transform(recipe, config, train=False)(Image.fromarray(columns).convert("RGB"))
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert out[0, 0].tolist() == [4 * c for c in range(16, 48)]
    assert torch.equal(out[0], out[0, :1].expand(32, -1))  # every row the same columns


def test_interpolation_and_crop_come_from_the_models_cfg(tmp_path):
    recipe = helpers.recipe("imagenet", data_dir=str(tmp_path))
    cfg = {"interpolation": "bicubic", "crop_pct": 0.875, "mean": (0.5,) * 3, "std": (0.25,) * 3}
    config = pipeline.data_config(recipe, cfg)
    assert (config["interpolation"], config["crop_pct"]) == ("bicubic", 0.875)
    assert config["mean"] == (0.5,) * 3 and config["input_size"] == (3, 224, 224)
    steps = [type(t).__name__ for t in pipeline.transform(recipe, config, train=True).transforms]
    assert steps[0] == "RandomResizedCropAndInterpolation" and "AutoAugment" in steps


def test_mixup_gives_soft_targets_and_trains(tmp_path):
    trainer = Trainer(
        helpers.recipe("digits", mixup=0.8, cutmix=1.0, limit_train=33, limit_val=32, epochs=1),
        tmp_path,
    )
    images, labels = next(iter(trainer.train_batches))
    before = images.clone()
    mixed, targets = trainer.prepared(images, labels)  # timm mixes in place
    assert targets.shape == (len(labels) // 2 * 2, 10) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(len(targets)))
    # one batch-wide lam: each target is lam * its own label + (1 - lam) * its partner's
    own, partner = (torch.nn.functional.one_hot(y[: len(targets)], 10).float()
                    for y in (labels, labels[: len(targets)].flip(0)))  # fmt: skip
    lam = ((targets - partner) * (own - partner)).sum() / ((own - partner) ** 2).sum()
    assert 0 < lam < 1 and torch.allclose(targets, lam * own + (1 - lam) * partner, atol=1e-6)
    assert not torch.equal(mixed, before[: len(targets)])
    assert type(trainer.criterion).__name__ == "SoftTargetCrossEntropy"
    result = trainer.fit()  # 33 images in batches of 32: the last, of one, is dropped
    assert np.isfinite(
        json.loads((tmp_path / "digits-effnet_b0-s0" / "metrics.jsonl").read_text())["loss"]
    )
    assert result["top1"] >= 0


def test_an_undecodable_image_is_skipped_named_and_counted(digits_trees, tmp_path, caplog):
    tree = tmp_path / "tree"
    for split in ("train", "val"):
        for label in ("0", "1"):
            # 16 training images with the broken one: every one is in a batch of 4
            files = sorted((digits_trees["folder"] / split / label).iterdir())[: 8 - int(label)]
            (tree / split / label).mkdir(parents=True)
            for file in files:
                shutil.copy(file, tree / split / label / file.name)
    bad = tree / "train" / "1" / "00000-broken.png"
    bad.write_bytes(b"not a png")
    settings = {**LEARNS, "epochs": 1, "num_workers": 0, "batch_size": 4, "eval_batch_size": 8}
    with caplog.at_level(logging.WARNING, logger="timm_scaling.pipeline"):
        result = train(imagenet(tree, **settings), tmp_path / "runs")
    assert f"skipped {bad.resolve()}: cannot decode it" in caplog.text
    assert result["skipped_images"] == 1 and result["skipped_files"] == [str(bad.resolve())]
    saved = json.loads(
        (tmp_path / "runs" / "imagenet-test_efficientnet-s0" / "result.json").read_text()
    )
    assert saved["skipped_images"] == 1


runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def test_streamed_reader_without_its_package_is_one_line(tmp_path):
    message = one_line_error(
        ["train", "imagenet", "--dataset", "hfds/x", "--set", "num_classes=10",
         "--output", str(tmp_path)]
    )  # fmt: skip
    assert "timm's hfds reader needs the datasets package; pip install datasets" in message
    message = one_line_error(["train", "imagenet", "--dataset", "wds/x", "--output", str(tmp_path)])
    assert "--set num_classes=N" in message


@pytest.mark.parametrize("dataset", ["folder", "tar"])
def test_one_class_is_refused_before_it_trains_to_100_percent(tmp_path, dataset):
    for split in ("train", "val"):
        folder = tmp_path / "tree" / split / "shirt"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "0.png")
        if dataset == "tar":
            with tarfile.open(tmp_path / f"{split}.tar", "w") as archive:
                archive.add(folder / "0.png", arcname="shirt/0.png")
    root = tmp_path / "tree" if dataset == "folder" else tmp_path
    train = (root / ("train" if dataset == "folder" else "train.tar")).resolve()
    message = one_line_error(
        [
            "train",
            "imagenet",
            "--dataset",
            dataset,
            "--data-dir",
            str(root),
            "--output",
            str(tmp_path / "r"),
        ]
    )
    assert f"{train} has 1 class folder(s) (shirt); a classifier needs 2 or more" in message
    assert not any((tmp_path / "r").iterdir())  # no run folder, no report


def test_a_folder_without_splits_shows_the_tree_it_expects(tmp_path, monkeypatch):
    from timm_scaling import train

    def started(*args, **kwargs):
        raise AssertionError("a run started for data that is not there")

    monkeypatch.setattr(train, "train", started)  # the check comes before any process
    monkeypatch.setattr(train, "launch", started)
    (tmp_path / "images" / "cat").mkdir(parents=True)
    args = ["train", "imagenet", "--data-dir", str(tmp_path), "--output", str(tmp_path / "r")]
    message = one_line_error(args)
    assert "has no train/ or training/;" in message
    assert "expected DATA_DIR/train/CLASS/IMAGE and DATA_DIR/val/CLASS/IMAGE" in message
    message = one_line_error([*args, "--dataset", "tar"])
    assert "expected DATA_DIR/train.tar and DATA_DIR/val.tar" in message
    sweep = tmp_path / "pair.yaml"
    sweep.write_text(f"recipe: imagenet\nset: [data_dir={tmp_path}]\nmodels: [effnet_b0]\n")
    message = one_line_error(["sweep", str(sweep), "--output", str(tmp_path / "s")])
    assert "has no train/ or training/;" in message and not (tmp_path / "s").exists()
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "bird").mkdir(parents=True)
    message = one_line_error([*args, "--num-processes", "2"])
    assert f"{tmp_path} has no val/ or validation/ or valid/ or eval/;" in message
    # The data there in another shape says what to pass (issue 34.11).
    message = one_line_error(["train", "imagenet", "--data-dir", str(tmp_path / "train")])
    assert message.endswith(f"is a split itself: pass the folder above it, --data-dir {tmp_path}\n")
    message = one_line_error([*args, "--dataset", "tar"])
    assert message.endswith(f"{tmp_path} holds folder data: pass --dataset folder\n")
    (tmp_path / "val" / "dog").mkdir(parents=True)
    with pytest.raises(UserError, match=r"classes that the training split lacks \(dog\)"):
        pipeline.classes("folder", tmp_path)


def test_an_auto_augment_timm_cannot_parse_quotes_timm(tmp_path):
    recipe = helpers.recipe("imagenet", data_dir=str(tmp_path), auto_augment="rand-x9")
    config = pipeline.data_config(recipe, {"interpolation": "bicubic", "crop_pct": 0.875})
    with pytest.raises(UserError, match=r"auto_augment 'rand-x9': timm cannot parse it \(") as err:
        pipeline.transform(recipe, config, train=True)
    assert "\n" not in str(err.value)


def test_in_memory_data_refuse_pipeline_keys_and_keep_their_path():
    with pytest.raises(UserError, match="auto_augment: applies to data read through timm's"):
        helpers.recipe("digits", auto_augment="original")
    digits = helpers.recipe("digits")
    assert digits.in_memory and not digits.streamed
    assert (digits.mixup, digits.bn_momentum, digits.auto_augment) == (0.0, None, None)


def test_paper_dropout_follows_table_2():
    rows = _read_reference("paper_table2_b0_b7.csv")
    for row in rows:  # every B model gets its own rate back
        assert paper_dropout(float(row["gmacs"])) == pytest.approx(float(row["dropout"]))
    assert paper_dropout(0.01) == 0.2 and paper_dropout(100.0) == 0.5
    b1, b2 = (float(rows[i]["gmacs"]) for i in (1, 2))
    assert paper_dropout((b1 * b2) ** 0.5) == pytest.approx(0.25)  # halfway in log MACs


def test_bn_momentum_reaches_every_batch_norm(tmp_path):
    trainer = Trainer(
        helpers.recipe("digits", bn_momentum=0.01, limit_train=16, limit_val=16), tmp_path
    )
    norms = [
        m
        for m in trainer.unwrapped.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert norms and {m.momentum for m in norms} == {0.01}
