"""`timm-scaling curves`: on real tiny digits runs (drawn artists checked), and on run folders
written by hand for the bad input (a killed run's cut line, runs with other metrics)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from timm_scaling import curves
from timm_scaling.cli import app
from timm_scaling.runs import METRICS_FILE, RECIPE_FILE, STEPS_FILE

runner = CliRunner()
TINY = ["limit_train=32", "limit_val=32", "batch_size=16", "eval_batch_size=32", "epochs=2"]
RUNS = [("effnet_b0", 0), ("effnet_b0", 1), ("effnet_b0", 2), ("effnet_b0_w1p4", 0)]


@pytest.fixture(scope="module")
def trained(module_tmp_path, tmp_path_factory):
    """Two models on digits, 2 epochs of 2 updates: B0 with seeds 0-2, width 1.4 with one."""
    from accelerate.state import AcceleratorState

    from timm_scaling.recipes import load_recipe
    from timm_scaling.train import train

    output = module_tmp_path
    patch = pytest.MonkeyPatch()
    patch.setenv("TIMM_SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    try:
        for model, seed in RUNS:
            train(load_recipe("digits", [*TINY, f"model={model}", f"seed={seed}"]), output)
            AcceleratorState._reset_state(reset_partial_state=True)
    finally:
        patch.undo()
    return output


def metrics(folder: Path, name: str = METRICS_FILE) -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


@pytest.mark.slow
def test_curves_of_real_runs_are_drawn(trained):
    from matplotlib.image import imread

    outcome = runner.invoke(app, ["curves", str(trained)])
    assert outcome.exit_code == 0, outcome.output
    png, svg = trained / "curves.png", trained / "curves.svg"
    assert f"4 run(s) drawn; wrote {png}, {svg}" in outcome.output
    pixels = imread(png)[..., :3]
    assert (pixels < 0.5).mean() > 0.01  # lines and text on white, not a blank canvas
    assert svg.read_text().count("<path") > 10


@pytest.mark.slow
def test_seeds_of_a_model_are_one_band(trained):
    drawn = curves.read([trained])
    assert drawn.panels == ["top1", "loss", "lr"] and not drawn.warnings
    fig = curves.figure(drawn)
    b0 = [trained / f"digits-effnet_b0-s{seed}" for seed in range(3)]
    for ax, metric in zip(fig.axes, drawn.panels, strict=True):
        labels = [line.get_label() for line in ax.lines]
        assert labels == ["baseline B0 (3 seeds)", "width w=1.4"]
        assert len(ax.collections) == 1  # one band: B0's seeds; one run of w1p4 has none
        b0_line = ax.lines[0]
        if metric == "top1":
            seeds = np.array([[row["top1"] for row in metrics(f)] for f in b0])
            assert list(b0_line.get_xdata()) == [1, 2]
        else:  # the finer history: a point an update
            seeds = np.array([[p[metric] for p in metrics(f, STEPS_FILE)] for f in b0])
            assert list(b0_line.get_xdata()) == [0.5, 1, 1.5, 2]
        assert b0_line.get_ydata() == pytest.approx(seeds.mean(axis=0))
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        spread = seeds.std(axis=0, ddof=1)
        assert band.max() == pytest.approx((seeds.mean(axis=0) + spread).max())
        assert band.min() == pytest.approx((seeds.mean(axis=0) - spread).min())
    colours = {line.get_color() for line in fig.axes[0].lines}
    assert len(colours) == 2  # baseline and width: the frontier's method colours


@pytest.mark.slow
def test_images_and_compute_axes(trained):
    folder = trained / "digits-effnet_b0_w1p4-s0"
    gmacs = json.loads((folder / "result.json").read_text())["gmacs"]
    for x, scale in (("images", 1), ("compute", gmacs)):
        drawn = curves.read([folder], x=x)
        top1 = curves.figure(drawn).axes[0].lines[0]
        assert list(top1.get_xdata()) == pytest.approx([32 * scale, 64 * scale])


def write_run(folder: Path, model: str, rows: list[dict], cut: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / RECIPE_FILE).write_text(yaml.safe_dump({"name": "digits", "model": model, "seed": 0}))
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (folder / METRICS_FILE).write_text(text + cut)
    return folder


def epoch(n: int, **extra) -> dict:
    return {"epoch": n, "loss": 2.0 / n, "lr": 0.001, "train_images": 64, "top1": 30.0 * n, **extra}


def test_a_cut_line_is_a_warning_and_the_readable_lines_are_drawn(tmp_path):
    folder = write_run(tmp_path / "digits-effnet_b0-s0", "effnet_b0", [epoch(1), epoch(2)], '{"ep')
    (folder / STEPS_FILE).write_text('{"epoch": 0.5, "images": 32, "lr": 0.1, "loss": 2.0}\n{"lr"')
    outcome = runner.invoke(app, ["curves", str(folder), "--output", str(tmp_path / "pictures")])
    assert outcome.exit_code == 0, outcome.output
    assert f"warning: {folder / METRICS_FILE}: line 3 is cut" in outcome.output
    assert "used its 2 readable line(s)" in outcome.output
    assert f"warning: {folder / STEPS_FILE}: line 2 is cut" in outcome.output
    assert (tmp_path / "pictures" / "curves.svg").stat().st_size > 0
    line = curves.figure(curves.read([folder])).axes[0].lines[0]
    assert list(line.get_ydata()) == [30.0, 60.0]


def test_output_is_a_folder_not_a_picture_or_a_file(tmp_path):
    folder = write_run(tmp_path / "digits-effnet_b0-s0", "effnet_b0", [epoch(1), epoch(2)])
    afile = tmp_path / "notes"
    afile.write_text("")
    for out, problem in ((tmp_path / "curves.png", "names a file"), (afile, "is a file")):
        outcome = runner.invoke(app, ["curves", str(folder), "--output", str(out)])
        assert outcome.exit_code == 2 and outcome.output.count("\n") == 1, outcome.output
        assert outcome.output.startswith(f"error: --output {out} {problem}")
        assert "(it holds curves.png and curves.svg)" in outcome.output
    assert not (tmp_path / "curves.png").exists()  # no folder made under a picture's name
    assert (
        "pass --output " + str(tmp_path / "curves")
        in runner.invoke(app, ["curves", str(folder), "-o", str(tmp_path / "curves.png")]).output
    )


def test_runs_with_other_metrics_draw_the_panels_they_share(tmp_path):
    write_run(tmp_path / "a", "effnet_b0", [epoch(1, top5=90.0)])
    write_run(tmp_path / "b", "effnet_b0_d2", [epoch(1)])
    drawn = curves.read([tmp_path], metrics=["top5"])
    assert drawn.panels == ["top1", "loss", "lr"]
    assert drawn.warnings == ["1 of 2 runs have no 'top5': its panel left out"]
    alone = curves.read([tmp_path / "a"], metrics=["top5"])
    assert alone.panels == ["top1", "loss", "lr", "top5"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 3, "no run folders in it"),
        (["--metric", "nope"], 2, "--metric nope: no run has it"),
        (["--x", "time"], 2, "--x time: use one of epoch, images, compute"),
        (["--x", "compute"], 3, "no run with a finished epoch"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, code, message):
    target = tmp_path / "empty"
    target.mkdir()
    if args:
        target = write_run(tmp_path / "runs" / "r", "effnet_b0", [epoch(1)]).parent
    outcome = runner.invoke(app, ["curves", str(target), *args])
    assert outcome.exit_code == code, outcome.output
    errors = [line for line in outcome.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in outcome.output


def test_a_sweep_report_folder_finds_its_runs(tmp_path):
    from timm_scaling.report import put_row

    write_run(tmp_path / "digits-effnet_b0-s0", "effnet_b0", [epoch(1)])
    write_run(tmp_path / "digits-effnet_b0_d2-s0", "effnet_b0_d2", [epoch(1)])
    for model in ("effnet_b0", "effnet_b0_d2"):
        put_row(tmp_path / "study" / "report.csv", {"model": model, "recipe": "digits", "seed": 0})
    drawn = curves.read([tmp_path / "study"])
    assert sorted(r.model for r in drawn.runs) == ["effnet_b0", "effnet_b0_d2"]


def test_curves_imports_no_torch(tmp_path):
    folder = write_run(tmp_path / "r", "effnet_b0", [epoch(1), epoch(2)])
    code = (
        "import sys; from typer.testing import CliRunner; from timm_scaling.cli import app; "
        f"r = CliRunner().invoke(app, ['curves', {str(folder)!r}]); assert r.exit_code == 0, "
        "r.output; print(sorted(m for m in ('torch', 'timm', 'calflops') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
