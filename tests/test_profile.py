"""Profiling: calflops' counts cross-checked, its global patching guarded, the cache, the
command, the paper tables and the FLOP-matched set."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from timm_scaling import profile


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(profile.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def test_b0_at_224_matches_the_paper_and_timm():
    cost = profile.measure_cost("effnet_b0", 224)
    assert set(cost) == {"param_count", "gmacs", "gflops", "macts"}
    # timm's efficientnet_b0 card: 5.29 M params, 0.39 GMACs; the paper's Table 2: 0.39B FLOPS.
    assert cost["param_count"] == pytest.approx(5.29, abs=0.005)
    assert cost["gmacs"] == pytest.approx(0.386, rel=0.01)
    # calflops adds batch norm, activations, pooling and biases to 2 x MACs.
    assert 2.0 < cost["gflops"] / cost["gmacs"] < 2.1


def test_params_counted_even_when_frozen():
    model = meta_model("effnet_b0")
    model.requires_grad_(False)  # calflops alone would report 0 params here
    assert profile.count_cost(model, 64)["param_count"] == pytest.approx(5.288548)


def test_calflops_agrees_with_torchs_flop_counter():
    # FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matmuls and nothing
    # else; calflops' MACs come from exactly those layers too (its batch norm, activation,
    # pooling and elementwise entries add FLOPs but zero MACs). Two independent counters of the
    # same quantity: they should agree to rounding, so the tolerance is 0.1%, far tighter than
    # any real error (a missed depthwise `groups` would be off by 10x, a missed layer by >1%).
    for name, size in (("effnet_b0", 224), ("effnet_b0_w1p4", 96), ("effnet_b0_phi1", 64)):
        model = meta_model(name)
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, size, size, device="meta"))
        assert profile.count_cost(model, size)["gmacs"] == pytest.approx(
            counter.get_total_flops() / 2e9, rel=1e-3
        )


def test_activations_are_conv_and_linear_outputs():
    # A second counter at the dispatcher level: output elements of every convolution and
    # linear (addmm) op, the definition of Dollar et al.
    model = meta_model("effnet_b0")
    seen = []

    class Outputs(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten.addmm):
                seen.append(out.numel())
            return out

    with Outputs():
        model(torch.empty(1, 3, 128, 128, device="meta"))
    assert profile.count_cost(model, 128)["macts"] == pytest.approx(sum(seen) / 1e6)


def test_guard_restores_functionals_when_the_forward_raises():
    before = profile.measure_cost("effnet_b0", 64)
    original = F.conv2d
    broken = meta_model("effnet_b0", in_chans=4)  # fed 3 channels: the stem conv raises
    with pytest.raises(Exception):  # noqa: B017 - whatever the forward raises must propagate
        profile.count_cost(broken, 64)
    assert F.conv2d is original
    again = profile.count_cost(meta_model("effnet_b0"), 64)
    assert again == pytest.approx(before)  # not doubled, as it is after calflops' own leak


def test_guard_fails_loudly_when_a_patch_is_left_behind():
    from calflops.calculate_pipline import CalFlopsPipline

    original = F.conv2d
    with pytest.raises(RuntimeError, match="conv2d"), profile.functional_guard():
        # calflops' own patching, started and never ended
        CalFlopsPipline(meta_model("effnet_b0"), False, 2.0).start_flops_calculate()
    assert F.conv2d is original


def test_cost_is_cached_on_disk_by_model_size_classes_and_timm_version(cache):
    first = profile.measure_cost("effnet_b0_d2", 64, num_classes=10)
    files = list(cache.rglob("*.json"))
    assert len(files) == 1
    assert timm.__version__ in str(files[0])
    record = json.loads(files[0].read_text())
    assert record["key"]["img_size"] == 64 and record["key"]["num_classes"] == 10
    # a hit is read back from the file: edit it and the edit comes back
    record["cost"]["gmacs"] = 123.0
    files[0].write_text(json.dumps(record))
    assert profile.measure_cost("effnet_b0_d2", 64, num_classes=10)["gmacs"] == 123.0
    # another class count is another entry, and fewer classes cost fewer params
    assert profile.measure_cost("effnet_b0_d2", 64)["param_count"] > first["param_count"]
    assert len(list(cache.rglob("*.json"))) == 2
