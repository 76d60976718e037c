"""Trackers (``--log-with``), the finer lr/loss history and log lines off a terminal, through
real `timm-scaling train` processes on digits and TensorBoard's own event reader."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from timm_scaling import trackers
from timm_scaling.cli import app
from timm_scaling.errors import UserError
from timm_scaling.runs import METRICS_FILE, STEPS_FILE

runner = CliRunner()
# 4 updates an epoch; digits warms up over half an epoch.
SETTINGS = ["limit_train=64", "limit_val=64", "batch_size=16", "eval_batch_size=64"]
FOLDER = "digits-effnet_b0-s0"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def logged_run(module_tmp_path, tmp_path_factory):
    """`timm-scaling train digits --epochs 2 --log-with tensorboard`, stderr into a file."""
    output = module_tmp_path
    env = dict(os.environ, TIMM_SCALING_CACHE=str(tmp_path_factory.getbasetemp() / "cache"))
    command = [sys.executable, "-m", "timm_scaling", "train", "digits", "--epochs", "2"]
    command += ["--log-with", "tensorboard", "--output", str(output)]
    command += [arg for setting in SETTINGS for arg in ("--set", setting)]
    with open(output / "stderr.txt", "w") as stderr:
        done = subprocess.run(command, env=env, stderr=stderr, stdout=subprocess.PIPE, check=False)
    log = (output / "stderr.txt").read_text()
    assert done.returncode == 0, log
    return output / FOLDER, log


@pytest.mark.slow
def test_tensorboard_holds_the_run(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _ = logged_run
    events = EventAccumulator(str(folder / trackers.PROJECT))
    events.Reload()
    epochs, steps = lines(folder / METRICS_FILE), lines(folder / STEPS_FILE)
    top1 = events.Scalars("val/top1")
    assert [e.value for e in top1] == pytest.approx([row["top1"] for row in epochs], abs=1e-4)
    assert [e.step for e in top1] == [4, 8]  # the update count at each epoch's end
    for key in ("lr", "loss"):
        logged = [e.value for e in events.Scalars(f"train/{key}")]
        assert logged == pytest.approx([point[key] for point in steps], rel=1e-5)
    result = json.loads((folder / "result.json").read_text())
    assert events.Scalars("final/gmacs")[0].value == pytest.approx(result["gmacs"], rel=1e-5)
    assert "epoch/images_per_s" in events.Tags()["scalars"]


@pytest.mark.slow
def test_finer_history_shows_the_warm_up(logged_run):
    folder, _ = logged_run
    steps = lines(folder / STEPS_FILE)
    assert [p["update"] for p in steps] == list(range(1, 9))  # 4 updates: a point each
    assert [p["epoch"] for p in steps] == [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    assert steps[-1]["images"] == 128
    lrs = [p["lr"] for p in steps]
    # Warm-up from 1e-6 over 2 updates to the peak, digits' 0.0005 per 32 images at batch 16,
    # then x0.8 an epoch.
    assert lrs[:3] == pytest.approx([1e-6, 0.00025 / 2, 0.00025], rel=0.01)
    assert lrs[2:] == sorted(lrs[2:], reverse=True) and lrs[-1] == pytest.approx(0.0002)


@pytest.mark.slow
def test_no_progress_bars_off_a_terminal(logged_run):
    _, log = logged_run
    assert "\r" not in log and "it/s" not in log
    assert "epoch 1/2: loss" in log and "epoch 2/2: loss" in log
    assert "updates]" not in log  # epochs of 4 updates: no lines within them


@pytest.mark.slow
def test_long_epochs_log_every_interval(tmp_path, monkeypatch, caplog):
    """An epoch longer than LOG_INTERVAL updates logs a line each LOG_INTERVAL (2 here)."""
    from accelerate.state import AcceleratorState

    from timm_scaling.recipes import load_recipe
    from timm_scaling.train import train, update

    monkeypatch.setattr(update, "LOG_INTERVAL", 2)
    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe("digits", [*SETTINGS, "epochs=1", "limit_train=80"])  # 5 updates
    caplog.set_level("INFO", logger="timm_scaling.train")
    try:
        train(recipe, tmp_path, progress=False)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    within = re.findall(r"epoch 1/1 \[\d+/5 updates\]", caplog.text)
    assert within == ["epoch 1/1 [2/5 updates]", "epoch 1/1 [4/5 updates]"]


def test_a_tracker_that_is_not_installed_trains_nothing(tmp_path):
    missing = next((n for n in trackers.TRACKERS if not trackers.installed(n)), None)
    if missing is None:
        pytest.skip("every tracker is installed here")
    for command in ("train", "sweep"):
        name = "digits" if command == "train" else "demo"
        outcome = runner.invoke(
            app, [command, name, "--log-with", missing, "--output", str(tmp_path)]
        )
        assert outcome.exit_code == 2, outcome.output
        assert f"pip install {trackers.TRACKERS[missing][1]}" in outcome.output
        assert len(outcome.output.strip().splitlines()) == 1 and "Traceback" not in outcome.output
        assert not any(tmp_path.iterdir())


def test_an_unknown_tracker_is_one_line():
    outcome = runner.invoke(app, ["train", "digits", "--log-with", "tensorbored"])
    assert outcome.exit_code == 2 and "unknown tracker 'tensorbored'" in outcome.output


def test_hparams_are_flat_and_without_none():
    values = trackers.hparams({"lr": 0.1, "data_dir": None, "ema": False, "x": {"y": [1, 2]}})
    assert values == {"lr": 0.1, "data_dir": "None", "ema": False, "x/y": "[1, 2]"}
    assert trackers.scalars({"top1": 90.0, "model": "effnet_b0", "seed": 1}, "final/") == {
        "final/top1": 90.0,
        "final/seed": 1.0,
    }


def test_all_means_the_installed_trackers():
    names = trackers.require("all") if trackers.installed("tensorboard") else []
    assert names == [n for n in trackers.TRACKERS if trackers.installed(n)]
    with pytest.raises(UserError, match="unknown tracker"):
        trackers.parse("tensorboard,nope")
