"""`--plan-from RECORD`: runs projected on another machine from the speeds it recorded.

The shipped H100 record is checked against the GPU check's own write-up (a second source); the
projection's arithmetic against numbers recomputed here from the record, the data set's size and
the models' real block counts.
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from timm_scaling import data, projection
from timm_scaling.cli import app
from timm_scaling.models import architecture
from timm_scaling.plan import COLUMNS
from timm_scaling.tables import csv_text

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated")


def shipped() -> list[dict[str, str]]:
    file = resources.files("timm_scaling") / "reference" / projection.RECORDS["h100"]
    return list(csv.DictReader(file.read_text().splitlines()))


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_shipped_h100_record_is_the_gpu_checks_table():
    text = (ROOT / "benchmarks" / "gpu_check-2026-11-26-h100.md").read_text()
    table = re.findall(
        r"^\s*\| (effnet\S*) \| (\w+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|", text, re.M
    )
    assert len(table) == 5
    record = {row["model"]: row for row in shipped()}
    for model, recipe, img, speed, peak, train_s in table:
        row = record[model]
        assert (row["recipe"], row["img_size"], row["batch_size"]) == (recipe, img, "128")
        assert (row["images_per_s"], row["peak_mem_mb"], row["train_epoch_s"]) == (
            speed,
            peak,
            train_s,
        )
        assert row["device"] == "NVIDIA H100 80GB HBM3"
        # the write-up's seconds per epoch are CIFAR-10's 50,000 images at that speed
        assert float(train_s) == pytest.approx(50_000 / float(speed), rel=0.01)


def test_fashion_full_is_projected_on_the_h100(tmp_path):
    outcome = runner.invoke(
        app, ["sweep", "fashion-full", "--plan-from", "h100", "--output", str(tmp_path)]
    )
    assert outcome.exit_code == 0, outcome.output
    rows = rows_of(tmp_path / "fashion-full" / "plan-from-h100.csv")
    assert len(rows) == 18
    record = {row["model"]: row for row in shipped()}
    train, val, _ = data.SHAPES["fashion_mnist"]
    by_model = {row["model"]: row for row in rows}
    # recorded: B0 at 32 px and r2 at 64 px take the record's speed
    for model in ("effnet_b0", "effnet_b0_r2"):
        speed = float(record[model]["images_per_s"])
        assert float(by_model[model]["images_per_s"]) == speed
        assert float(by_model[model]["run_s"]) == pytest.approx(40 * (train + val) / speed)
        assert "(recorded)" in by_model[model]["measured_on"]
    # estimated: phi 1 and width 2.17 on the least-squares line through the record's blocks
    blocks = {name: architecture(name).blocks for name in [*record, "effnet_b0_phi1"]}
    x = [blocks[name] for name in record]
    y = [1 / float(record[name]["images_per_s"]) for name in record]
    slope, intercept = np.polyfit(x, y, 1)
    expected = 1 / (intercept + slope * blocks["effnet_b0_phi1"])
    phi1 = by_model["effnet_b0_phi1"]
    assert float(phi1["images_per_s"]) == pytest.approx(expected, rel=1e-6)
    assert "(estimated by block count)" in phi1["measured_on"]
    # phi 1 (23 blocks) sits between B0 (16) and phi 2 (26)
    assert 1096 < float(phi1["images_per_s"]) < 1675
    # resnet18 is neither recorded nor an EfficientNet: no number, and the output says so
    assert by_model["resnet18"]["run_s"] == ""
    assert "not projected" in outcome.output and "resnet18" in outcome.output
    total = sum(float(row["run_s"]) for row in rows if row["run_s"])
    assert f"total: 18 run(s), {projection.duration(total)} of training" in outcome.output
    assert "NVIDIA H100 80GB HBM3" in outcome.output


def test_a_plan_csv_from_another_machine_is_a_record(tmp_path):
    theirs = tmp_path / "theirs.csv"
    measured = {"model": "resnet18", "img_size": 32, "batch_size": 64, "images_per_s": 400.0}
    measured |= {"device": "Some GPU", "measured_on": "fashion_mnist", "jobs": 1}
    theirs.write_text(csv_text([measured], COLUMNS))
    args = ["train", "fashion", "--model", "resnet18", "--plan-from", str(theirs)]
    outcome = runner.invoke(app, [*args, "--output", str(tmp_path / "runs")])
    assert outcome.exit_code == 0, outcome.output
    (row,) = rows_of(tmp_path / "runs" / "plan-from-theirs.csv")
    limit = 8000  # the fashion recipe's training subset
    expected = 4 * (limit + data.SHAPES["fashion_mnist"][1]) / 400.0
    assert float(row["run_s"]) == pytest.approx(expected)
    assert row["device"] == "Some GPU"
    # a projection is no record: projecting from it would repeat its guesses
    again = runner.invoke(
        app, ["train", "fashion", "--plan-from", str(tmp_path / "runs" / "plan-from-theirs.csv")]
    )
    assert again.exit_code == 2
    assert "no measured training speed" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "fashion", "--plan-from", "h10"], "no such record"),
        (["train", "fashion", "--plan-from", "h100"], "ran at batch 128, not 64"),
        (["train", "fashion-full", "--model", "resnet18", "--plan-from", "h100"], "neither"),
        (["train", "fashion-full", "--plan-from", "h100", "--resume"], "drop --resume"),
        (["sweep", "fashion", "--plan-from", "h100", "--fuse-seeds"], "without --fuse-seeds"),
        (["sweep", "fashion", "--plan-from", "h100", "--jobs", "auto"], "one job count"),
    ],
)
def test_what_cannot_be_projected_is_one_line(tmp_path, args, message):
    outcome = runner.invoke(app, [*args, "--output", str(tmp_path)])
    assert outcome.exit_code == 2
    assert message in outcome.output
    assert "Traceback" not in outcome.output
    assert not list(tmp_path.rglob("plan-from-*.csv"))
