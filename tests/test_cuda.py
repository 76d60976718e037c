"""The training path on a real GPU: `pytest -m cuda` (every test here is skipped without one).

What a CPU cannot show: bf16 autocast, channels_last kernels, CUDA graphs, a real out-of-memory
error from the card, host syncs, and peak memory. benchmarks/gpu_check.py runs these first;
they are ordered cheapest first, so that a time limit cuts the slowest (compiling) last.
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path

import helpers
import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from timm_scaling import data
from timm_scaling.batches import DeviceBatches
from timm_scaling.recipes import load_recipe
from timm_scaling.report import read_rows
from timm_scaling.train import Trainer, evaluate, train

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("isolated")]

DIGITS_TRAIN = 1437  # scikit-learn's digits less the 20% held out


def recipe(**changes):
    """The digits recipe, cut to a few updates unless ``changes`` say otherwise."""
    return helpers.recipe("digits", **{"limit_train": 96, "limit_val": 64, "epochs": 1, **changes})


@pytest.fixture(autouse=True)
def _free_cuda_memory():
    yield
    torch.cuda.empty_cache()


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.unwrapped.named_parameters()}


def updates(trainer: Trainer, count: int) -> dict[str, torch.Tensor]:
    """Train ``count`` updates; the change of every parameter."""
    before = parameters(trainer)
    batches = iter(trainer.train_batches)
    for _ in range(count):
        trainer._update(*next(batches))
    return {name: p - before[name] for name, p in parameters(trainer).items()}


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """|a - b| / |b| over all parameters at once (L2)."""
    diff = sum(float((a[k].float() - b[k].float()).square().sum()) for k in b)
    norm = sum(float(b[k].float().square().sum()) for k in b)
    assert norm > 0, "the reference update changed nothing"
    return math.sqrt(diff / norm)


def test_a_bf16_update_in_channels_last(tmp_path):
    trainer = Trainer(recipe(), tmp_path)
    assert trainer.accelerator.device.type == "cuda"
    assert trainer.accelerator.mixed_precision == "bf16"  # `auto` on a GPU
    conv = next(m for m in trainer.unwrapped.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    conv.register_forward_hook(
        lambda module, args, out: seen.append(
            (out.dtype, args[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    change = updates(trainer, 1)
    assert seen == [(torch.bfloat16, True)]  # bf16 kernels on channels_last input
    assert all(p.dtype == torch.float32 for p in trainer.unwrapped.parameters())
    assert sum(bool(d.abs().sum() > 0) for d in change.values()) > len(change) // 2


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "cuda_graph"])
def test_an_update_makes_no_host_sync(tmp_path, graph):
    """The loop never waits for the GPU inside an epoch: no .item(), no copy to the host. A sync
    fails the test with the line that made it (torch's sync debug mode raises there). With
    cuda_graph, the epoch after the capture: replays and the schedule's lr fills."""
    trainer = Trainer(recipe(limit_train=32 * 6, cuda_graph=str(graph).lower()), tmp_path)
    trainer.train_epoch(0)  # warm-up: cuDNN's algorithm search, the allocator, the capture
    assert (trainer.static_step is not None and trainer.static_step.graph is not None) == graph
    trainer.train_batches.set_epoch(1)
    batches = iter(trainer.train_batches)
    first = next(batches)  # the epoch's shuffle is made (and copied over) once, here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer._update(*first)
        for images, labels in batches:
            trainer._update(images, labels)
    except RuntimeError as err:
        if "synchroniz" not in str(err):
            raise
        frames = traceback.extract_tb(err.__traceback__)[-4:]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[::-1])
        pytest.fail(f"a host sync in an update at {where}: {str(err).splitlines()[0]}")
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_evaluation_counts_every_image_once():
    """61 images in batches of 16 (the last one 13): each counted once, as on the CPU."""
    images = data.load_images("digits", None, 32, "val", 61)
    model = timm.create_model("effnet_b0", num_classes=10).eval()
    x, y = next(iter(DeviceBatches(images, 61, train=False)))
    with torch.no_grad():
        cpu_hits = int((model(x).argmax(1) == y).sum())
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        batches = DeviceBatches(images, 16, device="cuda", train=False)
        result = evaluate(model.cuda(), batches, Accelerator())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert result["eval_images"] == 61
    assert abs(result["top1"] * 61 / 100 - cpu_hits) <= 1  # a near-tie may flip, no more


def test_grad_checkpointing_lowers_peak_memory(tmp_path):
    peaks = {}
    sizes = {"base_size": 160, "batch_size": 64, "limit_train": 128}  # activations dominate
    for on in (False, True):
        trainer = Trainer(recipe(**sizes, grad_checkpointing=on), tmp_path / str(on))
        updates(trainer, 1)  # allocates the gradients and optimizer state
        torch.cuda.reset_peak_memory_stats()
        updates(trainer, 1)
        peaks[on] = torch.cuda.max_memory_allocated()
        AcceleratorState._reset_state(reset_partial_state=True)
        del trainer
        torch.cuda.empty_cache()
    assert peaks[True] < 0.8 * peaks[False], peaks


def test_digits_learns_as_on_the_cpu(tmp_path):
    """The shipped digits recipe, all its data and 8 epochs: the CPU's bar (test_train)."""
    result = train(load_recipe("digits"), tmp_path)
    assert result["device"] == torch.cuda.get_device_name()
    assert result["eval_images"] == 360 and result["epochs"] == 8
    assert result["top1"] >= 85, f"digits on the GPU: {result['top1']:.1f}% top-1"
    (row,) = read_rows(tmp_path / "report.csv")
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 < float(row["peak_mem_mb"]) < total_mb


def training_bytes_per_image(base_size: int, tmp_path) -> float:
    """The memory one more image adds to an update at this size (two probe batches)."""
    trainer = Trainer(recipe(base_size=base_size, batch_size=8, limit_train=32), tmp_path)
    images, labels = next(iter(trainer.train_batches))
    fmt = torch.channels_last
    trainer._update(images, labels)  # gradients, optimizer state, cuDNN's search
    peaks = []
    for n in (8, 24):
        many = (images.repeat(3, 1, 1, 1)[:n].contiguous(memory_format=fmt), labels.repeat(3)[:n])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        trainer._update(*many)
        peaks.append(torch.cuda.max_memory_allocated())
    AcceleratorState._reset_state(reset_partial_state=True)
    return (peaks[1] - peaks[0]) / 16


def test_a_real_out_of_memory_splits_the_batch_and_keeps_the_update(tmp_path):
    """A batch twice too large for the memory allowed: the run finishes with more micro-batches,
    and its update equals a run planned with that many micro-batches from the start. The
    process may use 4 GiB of the card (set_per_process_memory_fraction: torch's allocator raises
    the card's own out-of-memory error past it), so that the batches take seconds, not the
    minutes of twice an 80 GB card."""
    card = torch.cuda.get_device_properties(0).total_memory
    total = min(card, 4 * 2**30)
    torch.cuda.set_per_process_memory_fraction(total / card)
    try:
        _out_of_memory_fallback(tmp_path, total)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def _out_of_memory_fallback(tmp_path, total: int) -> None:
    probe = 448
    per_image = training_bytes_per_image(probe, tmp_path / "probe")
    # Large enough images that twice the card's memory takes at most 1,024 of digits' images.
    size = max(probe, 32 * math.ceil(probe * math.sqrt(2 * total / 1024 / per_image) / 32))
    per_image *= (size / probe) ** 2
    batch = 2 ** math.ceil(math.log2(2 * total / per_image))
    assert batch <= DIGITS_TRAIN, (size, batch)
    big = {"base_size": size, "batch_size": batch, "limit_train": batch, "limit_val": 16}
    big["eval_batch_size"] = 16

    trainer = Trainer(recipe(**big), tmp_path / "oom")
    before = parameters(trainer)
    fallen_back = trainer.fit()
    after = parameters(trainer)
    assert fallen_back["micro_batches"] > 1, f"batch {batch} at {size} px fit in the card"
    AcceleratorState._reset_state(reset_partial_state=True)
    del trainer
    torch.cuda.empty_cache()

    planned = Trainer(recipe(**big, grad_accum=fallen_back["micro_batches"]), tmp_path / "plan")
    reference = updates(planned, 1)
    change = {name: after[name] - before[name] for name in before}
    difference = relative_difference(change, reference)
    assert difference < 0.1, f"the update after the fallback differs by {difference:.1%}"


def test_the_whole_update_as_one_cuda_graph_gives_the_eager_update(tmp_path):
    """cuda_graph: three eager warm-up updates, the capture, then replays, with the EMA inside
    the graph; the same six updates as the plain eager path within bf16's rounding (a replay
    that read a stale batch or lr would differ by far more)."""
    sizes = {"limit_train": 32 * 6, "ema": "true"}
    eager = Trainer(recipe(**sizes), tmp_path / "eager")
    change = updates(eager, 6)
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = Trainer(recipe(**sizes, cuda_graph="true"), tmp_path / "graph")
    graphed = updates(trainer, 6)
    assert trainer.static_step.graph is not None  # captured, and replayed twice
    difference = relative_difference(graphed, change)
    assert difference < 0.1, f"the graphed updates differ from eager by {difference:.1%}"
    ema = {k: v.float() for k, v in trainer.ema.module.state_dict().items()}
    reference = {k: v.float() for k, v in eager.ema.module.state_dict().items()}
    assert relative_difference(ema, reference) < 0.01


def test_evaluation_graphs_count_as_the_eager_forward(tmp_path):
    """cuda_graph's evaluation: 100 images in batches of 32 (three full, one of 4), evaluated
    three times: eagerly (warm-up), captured, replayed; each time the counts of the plain
    forward (a replay of a stale input or a lost partial batch would differ)."""
    sizes = {"limit_val": 100, "batch_size": 32, "eval_batch_size": 32}
    trainer = Trainer(recipe(**sizes, cuda_graph="true"), tmp_path)
    assert [len(labels) for _, labels in trainer.val_batches] == [32, 32, 32, 4]
    updates(trainer, 1)
    plain = evaluate(trainer.evaluated_model, trainer.val_batches, trainer.accelerator)
    for _ in range(3):
        assert trainer.evaluate() == pytest.approx(plain, abs=1.01)  # a bf16 tie may flip
    shapes = sorted(key[1][0] for key in trainer.static_forward.graphs)
    assert shapes == [4, 32]


def test_cuda_graphs_give_the_eager_update(tmp_path):
    """compile with CUDA graphs (reduce-overhead) and two micro-batches per update: the same
    three updates as eager (the graphs hand out .grad buffers their next replay overwrites; a
    lost micro-batch would differ by 50% or more, bf16 kernels by a few %). Micro-batches of
    128 images: the graph benchmarks/train_throughput.py compiles next (a compile-cache hit)."""
    sizes = {"batch_size": 256, "grad_accum": 2, "limit_train": 768}
    eager = updates(Trainer(recipe(**sizes), tmp_path / "eager"), 3)
    AcceleratorState._reset_state(reset_partial_state=True)
    graphs = recipe(**sizes, compile="true", compile_mode="reduce-overhead")
    trainer = Trainer(graphs, tmp_path / "graphs")
    assert trainer.cuda_graphs
    compiled = updates(trainer, 3)
    difference = relative_difference(compiled, eager)
    assert difference < 0.2, f"CUDA graphs' updates differ from eager by {difference:.1%}"
