"""Recipe keys for memory and GPU speed, as far as a CPU can check them: grad_checkpointing,
compile_mode, and the optimizer's fused or multi-tensor step. tests/test_cuda.py checks them on
a GPU."""

from __future__ import annotations

import inspect

import helpers
import pytest
import torch
from accelerate.state import AcceleratorState
from timm.optim import get_optimizer_class

from timm_scaling.errors import UserError
from timm_scaling.train import Trainer, is_out_of_memory, optimizer_speedups
from timm_scaling.train.machine import set_grad_checkpointing

pytestmark = pytest.mark.usefixtures("isolated")


def recipe(**changes):
    settings = {"limit_train": 16, "limit_val": 16, "batch_size": 16, "epochs": 1, **changes}
    return helpers.recipe("digits", **settings)


def one_update(trainer: Trainer) -> tuple[dict[str, torch.Tensor], int]:
    """One update: the new parameters, and how often one block started a forward pass."""
    block = trainer.unwrapped.blocks[1][0]  # a block (checkpointing flattens the stages)
    calls = []
    block.register_forward_pre_hook(lambda *_: calls.append(1))  # recompute stops early
    trainer._update(*next(iter(trainer.train_batches)))
    return {k: p.detach().clone() for k, p in trainer.unwrapped.named_parameters()}, len(calls)


@pytest.mark.slow
def test_grad_checkpointing_recomputes_blocks_and_keeps_the_update(tmp_path):
    plain, runs_plain = one_update(Trainer(recipe(), tmp_path / "plain"))
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = Trainer(recipe(grad_checkpointing=True), tmp_path / "checkpointed")
    assert trainer.unwrapped.grad_checkpointing
    checkpointed, runs_checkpointed = one_update(trainer)
    assert (runs_plain, runs_checkpointed) == (1, 2)  # forward, then again in backward
    torch.testing.assert_close(checkpointed, plain)


def test_grad_checkpointing_unsupported_is_one_line():
    with pytest.raises(UserError, match="grad_checkpointing: timm's mlp does not support it"):
        set_grad_checkpointing(torch.nn.Linear(2, 2), "mlp")


def test_compile_mode_reaches_torch_compile(tmp_path):
    trainer = Trainer(recipe(compile=True, compile_mode="reduce-overhead"), tmp_path)
    plugin = trainer.accelerator.state.dynamo_plugin
    assert plugin.to_kwargs()["mode"] == "reduce-overhead"
    assert isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)
    assert type(trainer.unwrapped).__name__ == "EfficientNet"  # the timm model, for EMA and hooks
    assert not trainer.cuda_graphs  # a CPU: no graphs to replay, nothing to copy out of them


def test_compile_mode_is_checked():
    with pytest.raises(UserError, match="compile_mode must be one of default, reduce-overhead"):
        recipe(compile_mode="fast")


def test_optimizer_steps_are_fused_or_multi_tensor_on_a_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert optimizer_speedups("adamw", cuda) == optimizer_speedups("sgd", cuda) == {"fused": True}
    takes = inspect.signature(get_optimizer_class("rmsproptf", bind_defaults=False)).parameters
    # timm's RMSpropTF has a multi-tensor step from timm 1.0.31 on.
    assert optimizer_speedups("rmsproptf", cuda) == (
        {"foreach": True} if "foreach" in takes else {}
    )
    assert all(optimizer_speedups(name, cpu) == {} for name in ("adamw", "sgd", "rmsproptf"))


def test_library_allocation_failures_count_as_out_of_memory():
    """cuBLAS and cuDNN report a failed allocation in their own words, not torch's."""
    for text in (
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    ):
        assert is_out_of_memory(RuntimeError(text))
    assert is_out_of_memory(torch.OutOfMemoryError("anything"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an error torch raises


def test_a_cpu_starts_with_the_micro_batches_its_memory_holds(tmp_path, monkeypatch, caplog):
    """Out of memory on a CPU is a SIGKILL, not an error to fall back from: the trainer splits
    the batch up front where the estimate (activations x bytes each) exceeds half the memory."""
    from timm_scaling.train import building as train_module

    trainer = Trainer(recipe(), tmp_path / "plenty")
    assert trainer.micro_batches == 1  # 16 digits at 32 px: a few MB
    per_image = trainer.cost["macts"] * 1e6 * train_module.CPU_BYTES_PER_ACTIVATION
    # memory for 4 of the 16 images (half of it for the batch): 4 micro-batches of 4
    monkeypatch.setattr(train_module, "available_memory", lambda: int(per_image * 8 + 1))
    with caplog.at_level("WARNING"):
        trainer = Trainer(recipe(), tmp_path / "scarce")
    assert trainer.micro_batches == 4
    assert "4 micro-batches of ~4 per update (the update is unchanged)" in caplog.text
    monkeypatch.setattr(train_module, "available_memory", lambda: 1)  # never below one image
    assert Trainer(recipe(), tmp_path / "none").micro_batches == 16


@pytest.mark.parametrize(
    ("changes", "updates", "warned"),
    [
        (
            {"ema": "true", "ema_decay": 0.999},
            187,
            ["ema_decay 0.999 averages over ~1,000 updates"],
        ),
        ({"bn_momentum": 0.01}, 187, ["bn_momentum 0.01 averages over ~100 updates"]),
        ({"ema": "true", "ema_decay": 0.999, "bn_momentum": 0.01}, 5000, []),
        ({"ema": "false", "ema_decay": 0.9999}, 187, []),
    ],
)
def test_an_average_that_outlasts_the_run_is_warned_of(caplog, changes, updates, warned):
    """folder-small on 6,000 images for one epoch (187 updates): EMA 0.999 and BN momentum 0.01
    left 83% of the initial weights and 15% of the initial statistics in what was evaluated."""
    from types import SimpleNamespace

    from accelerate.state import PartialState

    from timm_scaling.recipes import load_recipe
    from timm_scaling.train.building import Building

    PartialState(cpu=True)  # the trainer's logger is Accelerate's
    recipe = load_recipe("digits", [f"{k}={v}" for k, v in changes.items()])
    with caplog.at_level("WARNING"):
        Building._check_averages(SimpleNamespace(recipe=recipe), updates)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(warned)
    for line, start in zip(lines, warned, strict=True):
        assert line.startswith(start) and f"after this run's {updates}" in line
    if changes.get("ema") == "true" and warned:
        assert "83% of the evaluated average is still the initial weights" in lines[0]


def test_a_slow_speed_is_not_logged_as_zero_images_per_second():
    from timm_scaling.train.logs import rate

    assert [rate(x) for x in (0.31, 0.004, 5.44)] == ["0.31", "0.004", "5.4"]
    assert [rate(x) for x in (9.96, 237.4)] == ["10", "237"]


@pytest.mark.parametrize("processes", [[], ["--num-processes", "2"]])
def test_an_unknown_model_is_refused_before_any_process_or_accelerator(
    tmp_path, monkeypatch, processes
):
    from typer.testing import CliRunner

    from timm_scaling import train
    from timm_scaling.cli import app

    def started(*args, **kwargs):
        raise AssertionError("a run started for a model that does not exist")

    monkeypatch.setattr(train, "train", started)
    monkeypatch.setattr(train, "launch", started)
    args = ["train", "digits", "--model", "resnet1888", "--output", str(tmp_path), *processes]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "unknown model 'resnet1888': did you mean resnet18" in result.output
    assert not list(tmp_path.iterdir())
