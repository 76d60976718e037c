"""A finished run is a timm checkpoint: ``<run>/model/`` as timm's save_for_hf writes it, loaded
back through timm's own paths (local-dir:, pretrained=True with a file, checkpoint_path=)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from timm_scaling import data
from timm_scaling.batches import DeviceBatches
from timm_scaling.recipes import load_recipe
from timm_scaling.runs import CHECKPOINTS, MODEL_DIR, run_folder
from timm_scaling.train import evaluate, train

REPO = Path(__file__).resolve().parents[1]
# One epoch of compound phi 1 at base size 32: it trains at 37 px, its registry cfg says 256.
RUN = [
    "model=effnet_b0_phi1",
    "limit_train=64",
    "limit_val=100",
    "batch_size=32",
    "eval_batch_size=100",
    "base_size=32",
    "epochs=1",
    "ema=true",
    "ema_decay=0.5",  # two updates move the EMA off the initial weights, and off the raw ones
]


@pytest.fixture(scope="module")
def exported(module_tmp_path, tmp_path_factory):
    """A finished one-epoch digits run with EMA: its recipe, result.json and model/ folder."""
    output = module_tmp_path
    os.environ["TIMM_SCALING_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    recipe = load_recipe("digits", RUN)
    result = train(recipe, output)
    AcceleratorState._reset_state(reset_partial_state=True)
    return recipe, result, run_folder(output, recipe)


def top1_top5(model: torch.nn.Module, recipe) -> tuple[float, float]:
    """The run's validation split, prepared as the model's own pretrained cfg says."""
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    images = data.load_images("digits", None, size, "val", recipe.limit_val)
    batches = DeviceBatches(images, 100, train=False, mean=cfg["mean"], std=cfg["std"])
    scores = evaluate(model, batches, Accelerator(cpu=True))
    AcceleratorState._reset_state(reset_partial_state=True)
    return scores["top1"], scores["top5"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_run_exports_save_for_hf_with_the_trained_cfg(exported):
    recipe, result, folder = exported
    assert recipe.image_size == 37
    config = json.loads((folder / MODEL_DIR / "config.json").read_text())
    assert config["architecture"] == "effnet_b0_phi1" and config["num_classes"] == 10
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 37, 37] and cfg["num_classes"] == 10
    assert cfg["mean"] == list(data.MEAN) and cfg["std"] == list(data.STD)
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    assert f"top-1 {result['top1']:.2f}" in cfg["notes"][-1] and "EMA" in cfg["notes"][-1]
    # The EMA weights were evaluated, so they are the ones exported, not the raw weights.
    weights = load_file(folder / MODEL_DIR / "model.safetensors")
    raw = load_file(folder / CHECKPOINTS / "epoch-0001" / "model.safetensors")
    assert weights.keys() == raw.keys() and not same_weights(weights, raw)
    # Readable by collaborators: the umask's mode, not safetensors' own 0600.
    umask = os.umask(0)
    os.umask(umask)
    for path in (folder / MODEL_DIR).iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


@pytest.mark.slow
def test_local_dir_round_trip_scores_what_result_json_says(exported):
    recipe, result, folder = exported
    model = timm.create_model(f"local-dir:{folder / MODEL_DIR}", pretrained=True)
    assert model.pretrained_cfg["input_size"][-2:] in ([37, 37], (37, 37))
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 37, 37)
    assert model.num_classes == 10
    assert top1_top5(model, recipe) == (result["top1"], result["top5"])


@pytest.mark.slow
def test_pretrained_true_loads_a_file_with_its_exported_cfg(exported):
    recipe, result, folder = exported
    file = folder / MODEL_DIR / "model.safetensors"
    model = timm.create_model(
        "effnet_b0_phi1", pretrained=True, pretrained_cfg_overlay=dict(file=str(file))
    )
    assert model.num_classes == 10 and tuple(model.pretrained_cfg["input_size"]) == (3, 37, 37)
    assert same_weights(model.state_dict(), load_file(file))
    assert top1_top5(model, recipe) == (result["top1"], result["top5"])

    # checkpoint_path= loads the same weights (into the registry's cfg: the file carries none).
    loaded = timm.create_model("effnet_b0_phi1", num_classes=10, checkpoint_path=str(file))
    assert same_weights(loaded.state_dict(), load_file(file))


@pytest.mark.slow
def test_a_fresh_interpreter_resolves_the_architecture_through_the_hook(exported):
    """No import of timm_scaling: the autoload hook registers effnet_b0_phi1 for local-dir:."""
    _, _, folder = exported
    code = (
        "import timm, sys; m = timm.create_model(sys.argv[1], pretrained=True); "
        "print(m.num_classes, tuple(m.pretrained_cfg['input_size']), "
        "'timm_scaling.models' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), TIMM_SCALING_AUTOLOAD="1")
    done = subprocess.run(
        [sys.executable, "-c", code, f"local-dir:{folder / MODEL_DIR}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "10 (3, 37, 37) True"


def test_pretrained_true_loads_a_state_dict_and_refuses_nothing():
    source = timm.create_model("effnet_b0_w1p4", num_classes=4)
    overlay = dict(state_dict=source.state_dict(), num_classes=4)
    model = timm.create_model("effnet_b0_w1p4", pretrained=True, pretrained_cfg_overlay=overlay)
    assert model.num_classes == 4 and same_weights(model.state_dict(), source.state_dict())
    with pytest.raises(RuntimeError, match="no pretrained weights.*local-dir"):
        timm.create_model("effnet_b0_w1p4", pretrained=True)


# ---------------------------------------------------------------------------- more epochs

TINY = ["limit_train=64", "limit_val=64", "batch_size=32", "eval_batch_size=64", "base_size=32"]


def train_cli(output: Path, *args: str):
    from typer.testing import CliRunner

    from timm_scaling.cli import app

    sets = [a for o in TINY for a in ("--set", o)]
    outcome = CliRunner().invoke(app, ["train", "digits", "--output", str(output), *sets, *args])
    AcceleratorState._reset_state(reset_partial_state=True)
    return outcome


def history(folder: Path) -> list[dict]:
    """Per epoch what must not depend on timing: loss, lr, top-1, top-5."""
    keys = ("epoch", "loss", "lr", "top1", "top5", "eval_images")
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{key: json.loads(line)[key] for key in keys} for line in lines]


@pytest.mark.slow
def test_resume_with_more_epochs_continues_a_finished_run(tmp_path):
    from timm_scaling.report import read_rows

    straight = train_cli(tmp_path / "straight", "--epochs", "2")
    assert straight.exit_code == 0, straight.output
    short = train_cli(tmp_path / "runs", "--epochs", "1")
    assert short.exit_code == 0, short.output
    refused = train_cli(tmp_path / "runs", "--epochs", "2")  # without --resume: as before
    assert refused.exit_code == 2 and "other settings (epochs)" in refused.output
    assert "--resume` to continue it for more epochs" in refused.output

    longer = train_cli(tmp_path / "runs", "--epochs", "2", "--resume")
    assert longer.exit_code == 0, longer.output
    recipe = load_recipe("digits", [*TINY, "epochs=2"])
    folder, reference = (
        run_folder(tmp_path / "runs", recipe),
        run_folder(tmp_path / "straight", recipe),
    )
    # The step schedule does not depend on the epoch count: 1 + 1 epochs is the 2-epoch run.
    assert history(folder) == history(reference) and len(history(folder)) == 2
    result = json.loads((folder / "result.json").read_text())
    expected = json.loads((reference / "result.json").read_text())
    assert result["epochs"] == 2 and result["replica_checksums"] == expected["replica_checksums"]
    assert (result["top1"], result["top5"]) == (expected["top1"], expected["top5"])
    (row,) = read_rows(tmp_path / "runs" / "report.csv")
    assert row["epochs"] == "2" and float(row["top1"]) == result["top1"]
    config = json.loads((folder / MODEL_DIR / "config.json").read_text())
    assert "trained 2 epochs" in config["pretrained_cfg"]["notes"][-1]

    fewer = train_cli(tmp_path / "runs", "--epochs", "1", "--resume")
    assert fewer.exit_code == 2 and "other settings (epochs)" in fewer.output
    other = train_cli(tmp_path / "runs", "--epochs", "3", "--resume", "--lr", "0.1")
    assert other.exit_code == 2 and "other settings (lr)" in other.output
    assert json.loads((folder / "result.json").read_text()) == result
