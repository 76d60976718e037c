"""The whole update as one CUDA graph (recipe key cuda_graph, issue 21), on the CPU: the static
step (the lr a tensor, the EMA inside the step, the batch copied into static buffers) trains
the same weights and EMA as the plain update; full batches only; the recipe refuses keys that
clash. The captured graph itself is tested on a GPU (tests/test_cuda.py)."""

from __future__ import annotations

import helpers
import pytest
import torch
from accelerate.state import AcceleratorState

from timm_scaling.errors import UserError
from timm_scaling.train import Trainer, evaluate

pytestmark = pytest.mark.usefixtures("isolated")

# Three full batches. A small lr: the first updates of an untrained B0 at the recipe's lr
# amplify float rounding (a tensor lr multiplies where a float lr scales in one kernel).
SIZES = {"limit_train": 96, "batch_size": 32, "limit_val": 32, "epochs": 1, "lr": 1e-4}


def trained(tmp_path, **changes) -> Trainer:
    trainer = Trainer(helpers.recipe("digits", **{"ema": "true", **SIZES, **changes}), tmp_path)
    trainer.train_epoch(0)
    AcceleratorState._reset_state(reset_partial_state=True)
    return trainer


def test_the_static_step_trains_as_the_plain_update(tmp_path):
    plain = trained(tmp_path / "plain")
    static = trained(tmp_path / "static", cuda_graph="true")
    assert plain.static_step is None and static.static_step is not None
    assert static.static_step.graph is None  # a CPU: the same step, eagerly
    assert static.num_updates == plain.num_updates == 3
    start = Trainer(helpers.recipe("digits", **SIZES), tmp_path / "start").unwrapped.state_dict()
    for mine, theirs in ((static.unwrapped, plain.unwrapped), (static.ema, plain.ema)):
        weights, reference = mine.state_dict(), theirs.state_dict()
        assert weights.keys() == reference.keys()
        for name, tensor in reference.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    # The updates moved the weights and the EMA followed: equal because both trained.
    moved = [n for n, t in plain.unwrapped.state_dict().items() if not torch.equal(t, start[n])]
    assert len(moved) > 100
    ema = static.ema.module.state_dict()
    assert any(not torch.equal(ema[n], start[n]) for n in moved)
    # The schedule's lr reaches the tensor the step reads.
    assert static.static_step.lrs[0].item() == pytest.approx(
        plain.optimizer.param_groups[0]["lr"], rel=1e-6
    )


def test_cuda_graph_trains_full_batches_only(tmp_path):
    sizes = {"limit_train": 100, "batch_size": 32}
    assert len(Trainer(helpers.recipe("digits", **sizes), tmp_path / "a").train_batches) == 4
    AcceleratorState._reset_state(reset_partial_state=True)
    full = Trainer(helpers.recipe("digits", **sizes, cuda_graph="true"), tmp_path / "b")
    assert len(full.train_batches) == 3
    assert [len(labels) for _, labels in full.train_batches] == [32, 32, 32]
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(UserError, match="no full batch of 128 images; lower --batch-size"):
        Trainer(
            helpers.recipe("digits", limit_train=100, batch_size=128, cuda_graph="true"), tmp_path
        )


@pytest.mark.parametrize(
    ("key", "value"),
    [("compile", "true"), ("grad_accum", 2), ("grad_checkpointing", "true")],
)
def test_cuda_graph_refuses_what_changes_the_captured_update(key, value):
    with pytest.raises(UserError, match=f"cuda_graph and {key}={value}: .*--set {key}="):
        helpers.recipe("digits", cuda_graph="true", **{key: value})


def test_cuda_graph_evaluates_as_the_plain_path(tmp_path):
    """On a CPU evaluation's forward is the model's own (no graph), whole batches and the last
    partial one, and scores what the plain evaluation scores."""
    sizes = {**SIZES, "limit_val": 40, "eval_batch_size": 32, "cuda_graph": "true"}
    static = Trainer(helpers.recipe("digits", **sizes), tmp_path)
    assert [len(labels) for _, labels in static.val_batches] == [32, 8]
    assert static.static_forward is not None and not static.static_forward.capture
    scores = static.evaluate()
    assert scores["eval_images"] == 40
    assert scores == evaluate(static.evaluated_model, static.val_batches, static.accelerator)
    assert static.static_forward.graphs == {}
