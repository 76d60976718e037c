"""Profiling: calflops' counts cross-checked, its global patching guarded, the cache, the
command, the paper tables and the FLOP-matched set."""

import csv
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from timm_scaling import cost, paper, profile
from timm_scaling.cache import CACHE_ENV
from timm_scaling.cli import app
from timm_scaling.errors import UserError
from timm_scaling.models import register_variant, registered, scaling_of
from timm_scaling.recipes import load_recipe
from timm_scaling.scaling import Scaling


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
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
    assert cost.count_cost(model, 64)["param_count"] == pytest.approx(5.288548)


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
        assert cost.count_cost(model, size)["gmacs"] == pytest.approx(
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
    assert cost.count_cost(model, 128)["macts"] == pytest.approx(sum(seen) / 1e6)


def test_guard_restores_functionals_when_the_forward_raises():
    before = profile.measure_cost("effnet_b0", 64)
    original = F.conv2d
    broken = meta_model("effnet_b0", in_chans=4)  # fed 3 channels: the stem conv raises
    with pytest.raises(Exception):  # noqa: B017 - whatever the forward raises must propagate
        cost.count_cost(broken, 64)
    assert F.conv2d is original
    again = cost.count_cost(meta_model("effnet_b0"), 64)
    assert again == pytest.approx(before)  # not doubled, as it is after calflops' own leak


def test_guard_fails_loudly_when_a_patch_is_left_behind():
    from calflops.calculate_pipline import CalFlopsPipline

    original = F.conv2d
    with pytest.raises(RuntimeError, match="conv2d"), cost.functional_guard():
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


def test_a_cache_that_cannot_be_written_is_one_warning_not_an_error(tmp_path, monkeypatch, caplog):
    from timm_scaling import cache as cache_module
    from timm_scaling.models import cached_architectures

    counted = profile.measure_cost("effnet_b0_d2", 64, num_classes=10)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked))  # every cache path lies under a file
    cache_module._warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="timm_scaling.cache"):
        assert profile.measure_cost("effnet_b0_d2", 64, num_classes=10) == counted
        assert profile.measure_cost("effnet_b0_d3", 64, num_classes=10)["param_count"] > 0
        assert cached_architectures(["effnet_b0_d2"])["effnet_b0_d2"].blocks == 32
    warned = [r.getMessage() for r in caplog.records if r.name == "timm_scaling.cache"]
    assert len(warned) == 1 and f"cache not written to {blocked} (Not a directory)" in warned[0]
    assert blocked.read_text() == ""


def test_b3_coefficients_at_300px_cost_what_the_paper_says():
    name = register_variant(Scaling(depth=1.4, width=1.2))
    # Table 2: 1.8B FLOPS (multiply-adds), 12M params; timm's efficientnet_b3 card: 1.83 GMACs.
    cost = profile.measure_cost(name, 300)
    assert cost["gmacs"] == pytest.approx(1.83, rel=0.01)
    assert cost["param_count"] == pytest.approx(12.23, rel=0.01)


def test_resolution_keeps_params_and_macs_grow_about_r_squared():
    base = profile.measure_cost("effnet_b0", 64)
    assert profile.image_size("effnet_b0_r2", base_size=64) == 128
    r2 = profile.measure_cost("effnet_b0_r2", 128)
    assert r2["param_count"] == base["param_count"]
    # "same" padding makes small maps cost a little more than r^2 predicts: allow 10%
    assert r2["gmacs"] / base["gmacs"] == pytest.approx(4, rel=0.1)
    assert r2["macts"] / base["macts"] == pytest.approx(4, rel=0.1)


def test_default_size_is_the_pretrained_cfg_size():
    for name in ("effnet_b0", "effnet_b0_r2", "effnet_b0_phi2"):
        cfg_size = timm.data.resolve_data_config({}, model=meta_model(name))["input_size"][-1]
        assert profile.image_size(name) == cfg_size


def test_globs_match_the_registry_and_names_register():
    widths = profile.resolve_models(["effnet_b0_w*", "effnet_b0_w2"])
    assert widths == [n for n in registered() if n.startswith("effnet_b0_w")]
    assert profile.resolve_models(["effnet_b0_d1p7"]) == ["effnet_b0_d1p7"]
    assert "effnet_b0_d1p7" in timm.list_models("effnet_b0_d*")


def test_unknown_model_names_close_matches():
    with pytest.raises(UserError, match="effnet_b0_w2") as err:
        profile.measure_cost("effnet_b0_w22x", 224)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="matches no model"):
        profile.resolve_models(["effnet_b9*"])


def test_too_small_input_is_a_clear_error():
    with pytest.raises(UserError, match="too small") as err:
        profile.measure_cost("effnet_b0", 16)
    assert "32" in str(err.value) and "\n" not in str(err.value)


def test_speed_runs_a_real_train_step():
    speed = profile.measure_speed("effnet_b0", 32, num_classes=10, batch_size=2, warmup=1, steps=1)
    assert speed["device"] == "cpu" and speed["peak_mem_mb"] is None
    assert speed["infer_samples_per_sec"] > 0 and speed["train_samples_per_sec"] > 0
    with pytest.raises(UserError, match="batch-size"):
        profile.measure_speed("effnet_b0", 32, batch_size=1)


@pytest.mark.slow
def test_match_gmacs_finds_single_axis_models_within_3_percent():
    rows = profile.match_gmacs(1.8)
    assert [row["method"] for row in rows] == ["depth", "width", "resolution"]
    for row in rows:
        assert row["model"] in registered()
        # re-measured from scratch, not the search's own number
        counted = cost.count_cost(meta_model(row["model"]), row["img_size"])
        assert counted["gmacs"] == pytest.approx(1.8, rel=0.03)
        scaling = scaling_of(row["model"])
        assert (
            getattr(scaling, row["method"]) == row["multiplier"] and scaling.method == row["method"]
        )


def test_cli_profile_writes_csv_and_markdown_with_the_columns(tmp_path):
    out = tmp_path / "x.csv"
    args = ["profile", "effnet_b0", "effnet_b0_r2", "--base-size", "32", "--no-speed"]
    markdown = tmp_path / "x.md"
    result = CliRunner().invoke(
        app, [*args, "--csv", str(out), "--markdown", str(markdown), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    table = markdown.read_text().splitlines()  # the same rows as a Markdown table
    assert table[0] == "| " + " | ".join(rows[0]) + " |" and len(table) == 2 + len(rows)
    assert table[3].startswith("| effnet_b0_r2 | 64 |")
    assert list(rows[0]) == ["model", "img_size", "param_count", "gmacs", "gflops", "macts"]
    assert [(r["model"], r["img_size"]) for r in rows] == [
        ("effnet_b0", "32"),
        ("effnet_b0_r2", "64"),
    ]
    assert json.loads(result.stdout)[1]["model"] == "effnet_b0_r2"
    # What it is doing, on stderr: a large model takes minutes on a CPU.
    assert result.stderr.splitlines() == [
        "[1/2] effnet_b0 at 32 px: counting its cost",
        "[2/2] effnet_b0_r2 at 64 px: counting its cost",
    ]


def test_cli_errors_are_one_line():
    result = CliRunner().invoke(app, ["profile", "effnet_bo", "--no-speed"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "effnet_b0" in result.output
    result = CliRunner().invoke(app, ["profile"])
    assert result.exit_code == 2 and "--paper" in result.output


def test_paper_tables_stand_beside_the_reference():
    table7 = {row["method"]: row for row in paper.paper_table7()}
    assert table7["compound"]["model"] == "effnet_b0_phi2"
    assert table7["resolution"]["img_size"] == 448
    # the single-axis models cost less than the paper printed; compound lands on it
    for method in ("depth", "width", "resolution"):
        assert table7[method]["gmacs_diff_pct"] < -10
    assert abs(table7["compound"]["gmacs_diff_pct"]) < 3


def test_a_recipe_brings_its_base_size_and_class_count(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path))
    (row,) = profile.profile_rows(["res2"], speed=False)
    recipe = load_recipe("res2")
    assert row["model"] == recipe.model == "effnet_b0_r2"
    assert row["img_size"] == recipe.image_size == 64  # base 32 x 2
    # CIFAR-10's 10 classes: 1280 x 10 + 10 head params instead of 1280 x 1000 + 1000
    b0 = profile.measure_cost("effnet_b0_r2", 64, 1000)["param_count"]
    assert row["param_count"] == pytest.approx(b0 - (1280 * 990 + 990) / 1e6)
