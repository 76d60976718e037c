"""`--plan`: a run measured briefly with the trainer's own loop, projected to its epochs.

Timings on a shared CPU are noise, so these tests check the arithmetic, the files and what is
measured on; benchmarks/plan_accuracy.py compares a plan with the real run's time.
"""

from __future__ import annotations

import csv

import pytest
import torch
from accelerate.state import AcceleratorState
from typer.testing import CliRunner

from timm_scaling import plan as planning
from timm_scaling import workers
from timm_scaling.cli import app
from timm_scaling.plan import (
    COLUMNS,
    PLAN_FILE,
    PROCESS_OVERHEAD_MB,
    fitting_per_gpu,
    measure,
    stand_in,
    summary,
    wall_time,
)
from timm_scaling.recipes import load_recipe

TINY = ["limit_train=64", "limit_val=48", "batch_size=32", "eval_batch_size=16", "epochs=3"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def row(**values):
    base = dict.fromkeys(COLUMNS)
    base.update(model="effnet_b0", recipe="baseline", seed=0, measured_on="cifar10")
    base.update(grad_accum=1, micro_batches=1, run_s=60.0, peak_mem_mb=1000.0, device="cpu")
    return {**base, **values}


def test_wall_time_starts_each_run_in_the_first_free_job():
    assert wall_time([3, 1, 1, 1], jobs=1) == 6
    assert wall_time([3, 1, 1, 1], jobs=2) == 3  # 3 | 1+1+1
    assert wall_time([1, 1, 1, 3], jobs=2) == 4  # 1+1 | 1+3
    assert wall_time([5, 2], jobs=4) == 5
    assert wall_time([], jobs=2) == 0


def test_fitting_per_gpu_counts_each_process_overhead():
    gpu = {"device_mem_mb": 80_000.0, "device": "NVIDIA H100"}
    rows = [row(peak_mem_mb=3000.0, **gpu), row(peak_mem_mb=9000.0, **gpu)]
    assert fitting_per_gpu(rows) == 80_000 // (9000 + PROCESS_OVERHEAD_MB)
    assert fitting_per_gpu([row()]) is None  # measured on a CPU


def test_summary_says_total_wall_time_and_fallbacks():
    rows = [row(run_s=3600.0), row(model="effnet_b0_w2", micro_batches=4, run_s=1800.0)]
    rows.append(row(model="effnet_b0_d8", micro_batches=None, run_s=None))
    lines = summary(rows, jobs=2)
    assert "measured on cifar10" in lines
    assert "baseline effnet_b0_w2 s0: splits each batch into 4 micro-batches" in "\n".join(lines)
    assert "effnet_b0_d8 s0: does not fit even at one image per micro-batch" in "\n".join(lines)
    assert "total: 3 run(s), 1 h 30 min of training" in lines
    assert "wall time with --jobs 2: 1 h 0 min" in lines


def test_summary_says_whether_grad_checkpointing_fits_a_run_that_does_not():
    gpu = {"device": "NVIDIA H100", "micro_batches": 4}
    rows = [
        row(model="effnet_b0_w2", checkpointed_micro_batches=1, checkpointed_images_per_s=900.0),
        row(model="effnet_b0_w3", checkpointed_micro_batches=2, checkpointed_images_per_s=80.4),
        row(model="effnet_b0_w4", checkpointed_micro_batches=0),
        row(model="effnet_b0_w5"),  # not measured with checkpointing (no support in timm)
    ]
    lines = {line.split(":")[0]: line for line in summary([{**r, **gpu} for r in rows])}
    assert lines["baseline effnet_b0_w2 s0"].endswith(
        "4 micro-batches (out-of-memory fallback) on NVIDIA H100; with grad_checkpointing, "
        "it fits whole at 900 images/s (--set grad_checkpointing=true)"
    )
    assert (
        "with grad_checkpointing, 2 micro-batches at 80 images/s"
        in lines["baseline effnet_b0_w3 s0"]
    )
    assert lines["baseline effnet_b0_w4 s0"].endswith(
        "with grad_checkpointing it does not fit either"
    )
    assert lines["baseline effnet_b0_w5 s0"].endswith("on NVIDIA H100")


def test_durations_read_as_a_person_would():
    assert [planning.duration(s) for s in (42.46, 61, 3725, None)] == [
        "42.5 s",
        "1 min",
        "1 h 2 min",
        "-",
    ]


def test_absent_data_is_stood_in_for_by_synthetic_data_of_its_shape(tmp_path):
    cifar = load_recipe("baseline", [f"data_dir={tmp_path}"])
    measured, on = stand_in(cifar)
    assert on == "synthetic (cifar10 not found)"
    assert (measured.dataset, measured.data_dir) == ("synthetic", None)
    assert (measured.synthetic_train_size, measured.synthetic_val_size) == (50_000, 10_000)
    assert measured.synthetic_classes == 10 and measured.image_size == cifar.image_size
    c100 = stand_in(load_recipe("baseline", [f"data_dir={tmp_path}", "dataset=cifar100"]))[0]
    assert c100.synthetic_classes == 100
    digits = load_recipe("digits")
    assert stand_in(digits) == (digits, "digits")
    assert not any(tmp_path.iterdir())  # nothing downloaded


@pytest.mark.slow
def test_measure_projects_the_epochs_of_the_real_loop(tmp_path):
    recipe = load_recipe("digits", TINY)
    got = measure(recipe, seconds=0.001)
    assert list(got) == list(COLUMNS)
    assert got["updates_measured"] == 1  # the deadline passed after the first timed update
    assert (got["measured_on"], got["device"], got["micro_batches"]) == ("digits", "cpu", 1)
    assert got["images_per_s"] > 0
    assert got["peak_mem_mb"] is None or got["peak_mem_mb"] > 0  # measured where it means much
    assert got["epoch_s"] == pytest.approx(got["train_epoch_s"] + got["eval_epoch_s"])
    assert got["run_s"] == pytest.approx(3 * got["epoch_s"])
    # 64 images in 2 updates an epoch: one timed update of 32 images is half an epoch.
    assert got["train_epoch_s"] == pytest.approx(2 * 32 / got["images_per_s"], rel=0.05)


@pytest.mark.slow
def test_a_run_that_diverges_is_measured_and_said_to_diverge(caplog):
    """A plan times the updates whatever their loss: an lr of 1e12 ended the plan with the
    trainer's divergence error, naming a temporary folder that "keeps" nothing."""
    with caplog.at_level("WARNING", logger="timm_scaling.plan"):
        # 30 s: the whole 2-update epoch; the 2nd update's loss is nan (1e12 after the 1st)
        measured = measure(load_recipe("digits", TINY + ["lr=1e12"]), seconds=30)
    assert measured["images_per_s"] > 0 and measured["run_s"] > 0
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "timm_scaling.plan"]
    assert warning.startswith("effnet_b0 diverged in its plan (training loss is nan in epoch 1")
    assert "lower --lr" in warning and "timm-scaling-plan-" not in warning


@pytest.mark.slow
def test_a_run_out_of_memory_is_measured_again_with_grad_checkpointing(monkeypatch):
    """A card that holds 16 images' activations, or 32 with checkpointing (simulated: a CPU
    raises no out-of-memory error): the plan measures both and says checkpointing fits it."""
    from timm_scaling import train

    built, card = [], {False: 16, True: 32}

    class SmallCard(train.Trainer):
        def __init__(self, recipe, *args, **kwargs):
            super().__init__(recipe, *args, **kwargs)
            built.append(recipe.grad_checkpointing)
            holds = card[recipe.grad_checkpointing]

            def out_of_memory(module, args):
                if module.training and len(args[0]) > holds:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

            self.unwrapped.register_forward_pre_hook(out_of_memory)

    monkeypatch.setattr(train, "Trainer", SmallCard)
    got = measure(load_recipe("digits", TINY), seconds=0.001)
    assert built == [False, True]
    assert (got["micro_batches"], got["checkpointed_micro_batches"]) == (2, 1)
    assert got["checkpointed_images_per_s"] > 0
    line = summary([got])[1]
    assert "2 micro-batches" in line and "with grad_checkpointing, it fits whole" in line
    # A run that fits is measured once.
    built.clear()
    card[False] = 32
    fits = measure(load_recipe("digits", TINY), seconds=0.001)
    assert (fits["micro_batches"], fits["checkpointed_micro_batches"]) == (1, None)
    assert built == [False]


@pytest.mark.slow
def test_train_plan_writes_plan_csv_and_no_run_folder(tmp_path):
    args = ["train", "digits", "--plan", "--plan-seconds", "0.001", "--output", str(tmp_path)]
    outcome = runner.invoke(app, [*args, *(a for o in TINY for a in ("--set", o))])
    assert outcome.exit_code == 0, outcome.output
    assert [p.name for p in tmp_path.iterdir()] == [PLAN_FILE]
    with (tmp_path / PLAN_FILE).open() as handle:
        (got,) = list(csv.DictReader(handle))
    assert got["model"] == "effnet_b0" and int(got["epochs"]) == 3
    assert "measured on digits" in outcome.output and "total: 1 run(s)" in outcome.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "--plan measures a run without training it: drop --resume"),
        (["--plan-seconds", "0"], "--plan-seconds 0.0: measure for more than 0 seconds"),
        (["--num-processes", "2"], "drop --num-processes"),
    ],
)
def test_train_plan_bad_options_are_one_line(args, message, tmp_path):
    outcome = runner.invoke(app, ["train", "digits", "--plan", "--output", str(tmp_path), *args])
    assert outcome.exit_code == 2
    assert outcome.output.count("\n") == 1 and message in outcome.output, outcome.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_plan_measures_every_run_in_jobs_on_the_gpus(tmp_path, monkeypatch):
    """Two jobs on two (patched) GPUs: the workers get CUDA_VISIBLE_DEVICES 0 and 1, which a
    CPU ignores; the plan has every run, in the sweep's order, and nothing was trained."""
    monkeypatch.setattr(workers, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sweep = tmp_path / "pair.yaml"
    sweep.write_text(f"recipe: digits\nset: {TINY}\nmodels: [effnet_b0, effnet_b0_d2]\n")
    output = tmp_path / "runs"
    args = ["sweep", str(sweep), "--plan", "--plan-seconds", "0.001", "--jobs", "2"]
    outcome = runner.invoke(app, [*args, "--gpus", "0,1", "--output", str(output)])
    assert outcome.exit_code == 0, outcome.output
    assert [p.name for p in output.iterdir()] == ["pair"]
    assert [p.name for p in (output / "pair").iterdir()] == [PLAN_FILE]
    rows = planning.read_plan(output / "pair" / PLAN_FILE)
    assert [r["model"] for r in rows] == ["effnet_b0", "effnet_b0_d2"]
    assert "total: 2 run(s)" in outcome.output and "wall time with --jobs 2" in outcome.output


def test_render_is_one_aligned_line_per_run():
    rows = [row(images_per_s=1234.5, train_epoch_s=40.0, eval_epoch_s=3.0, epochs=35)]
    rows.append(
        row(
            model="effnet_b0_phi1",
            micro_batches=None,
            images_per_s=None,
            run_s=None,
            peak_mem_mb=None,
        )
    )
    lines = planning.render(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("model") and set(lines[1]) == {"-", " "}
    assert lines[2].split()[:3] == ["effnet_b0", "baseline", "0"] and "1234" in lines[2]
    assert "OOM" in lines[3].split() and lines[3].index("OOM") < lines[2].index("1234")
