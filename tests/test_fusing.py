"""`sweep --fuse-seeds` (issue 21): the seeds of one configuration trained in one process as one
vmapped step are the runs each seed trains alone (weights, BatchNorm statistics, top-1, report
rows), resume fused, and a seed that diverges stops alone."""

from __future__ import annotations

import json

import helpers
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from typer.testing import CliRunner

from timm_scaling.cli import app
from timm_scaling.report import read_rows
from timm_scaling.runs import RESULT_FILE, latest_checkpoint, run_folder
from timm_scaling.train import LossNotFinite, train
from timm_scaling.train.fusing import train_fused
from timm_scaling.train.update import Updating

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated")]
runner = CliRunner()

# Dropout off (digits has none): a fused seed draws its own, not the lone run's. A small lr: the
# first updates of an untrained B0 amplify float rounding (test_fused.py says how much).
TINY = {"limit_train": 64, "limit_val": 32, "batch_size": 32, "lr": 1e-4}
SEEDS = (0, 1)


def recipes(epochs: int = 2):
    return [helpers.recipe("digits", **TINY, epochs=epochs, seed=s) for s in SEEDS]


def weights(output, recipe) -> dict[str, torch.Tensor]:
    (path,) = (run_folder(output, recipe) / "model").glob("*.safetensors")
    return load_file(path)


@pytest.fixture(scope="module")
def alone(module_tmp_path):
    output = module_tmp_path / "alone"
    results = []
    for recipe in recipes():
        results.append(train(recipe, output))
        AcceleratorState._reset_state(reset_partial_state=True)
    return output, results


def test_fused_seeds_train_as_each_seed_alone(alone, tmp_path, caplog):
    output = tmp_path / "fused"
    with caplog.at_level("INFO", logger="timm_scaling"):
        results = train_fused(recipes(), output)
    assert "2 seeds fused into one step" in caplog.text
    assert [r["seed"] for r in results] == list(SEEDS)
    assert [r["top1"] for r in results] == [r["top1"] for r in alone[1]]
    for recipe in recipes():
        fused, reference = weights(output, recipe), weights(alone[0], recipe)
        assert fused.keys() == reference.keys()
        for name, tensor in reference.items():
            torch.testing.assert_close(fused[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        assert latest_checkpoint(run_folder(output, recipe)).name == "epoch-0002"
    seed0, seed1 = (weights(output, r) for r in recipes())
    assert not torch.equal(seed0["conv_stem.weight"], seed1["conv_stem.weight"])  # own weights
    rows = read_rows(output / "report.csv")
    assert sorted(row["seed"] for row in rows) == ["0", "1"]


def test_a_fused_group_resumes_fused(alone, tmp_path, caplog):
    output = tmp_path / "fused"
    train_fused(recipes(epochs=1), output)
    AcceleratorState._reset_state(reset_partial_state=True)
    with caplog.at_level("INFO", logger="timm_scaling"):
        results = train_fused(recipes(epochs=2), output)  # resumes each from epoch 1
    assert "2 seeds fused into one step" in caplog.text
    assert [r["epochs"] for r in results] == [2, 2]
    for recipe in recipes():
        fused, reference = weights(output, recipe), weights(alone[0], recipe)
        for name, tensor in reference.items():
            torch.testing.assert_close(fused[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # Run again: both finished, nothing trains.
    AcceleratorState._reset_state(reset_partial_state=True)
    assert train_fused(recipes(epochs=2), output) == results


@pytest.mark.parametrize("where", ["its loss", "its evaluation"])
def test_a_diverged_seed_stops_alone(tmp_path, monkeypatch, where):
    """Seed 1 diverges in epoch 2: its training loss is nan, or its last update leaves nan
    weights (a finite loss, then nan outputs in evaluation); seed 0 finishes."""
    count = Updating.count

    def diverging(self, tally, loss, images, lr):
        if self.recipe.seed == 1 and where == "its loss" and self.num_updates == 3:
            raise LossNotFinite("training loss is nan (a test's)")
        count(self, tally, loss, images, lr)
        last = self.num_updates == self.recipe.epochs * len(self.train_batches)
        if self.recipe.seed == 1 and where == "its evaluation" and last:
            with torch.no_grad():
                self.evaluated_model.get_classifier().weight.fill_(float("nan"))

    monkeypatch.setattr(Updating, "count", diverging)
    output = tmp_path / "fused"
    message = "a test's" if where == "its loss" else "outputs hold nan or inf for 32 of 32"
    with pytest.raises(LossNotFinite, match=message):
        train_fused(recipes(), output)
    finished, diverged = (run_folder(output, r) for r in recipes())
    assert json.loads((finished / RESULT_FILE).read_text())["epochs"] == 2
    assert not (diverged / RESULT_FILE).exists()
    assert latest_checkpoint(diverged).name == "epoch-0001"  # its last good epoch, kept
    assert [row["seed"] for row in read_rows(output / "report.csv")] == ["0"]


def test_sweep_fuse_seeds_writes_every_seeds_row(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("runs: [digits]\n")
    sets = [a for k, v in {**TINY, "epochs": 1}.items() for a in ("--set", f"{k}={v}")]
    args = ["sweep", str(spec), "--seeds", "2", "--output", str(tmp_path / "runs"), *sets]
    done = runner.invoke(app, [*args, "--fuse-seeds"])
    assert done.exit_code == 0, done.output
    rows = read_rows(tmp_path / "runs" / "two" / "report.csv")
    assert sorted(row["seed"] for row in rows) == ["0", "1"]
    refused = runner.invoke(app, [*args, "--fuse-seeds", "--set", "cuda_graph=true"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        "error: --fuse-seeds and cuda_graph=true: the graph captures one model's update; "
        "--set cuda_graph=false or train without --fuse-seeds"
    ]
