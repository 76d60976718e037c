"""Our variants are real timm models: registry, cfgs, timm's model API, parameter counts."""

import inspect
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.data import resolve_data_config
from timm.models import create_feature_extractor, get_graph_node_names
from timm.models.efficientnet import _gen_efficientnet

import timm_scaling.models as models
from timm_scaling.scaling import Scaling, compound

GOLDEN = json.loads((Path(__file__).parent / "golden" / "params.json").read_text())
BUILTIN = [s.name for s in models.BUILTIN_SCALINGS]
# Three variants that span the axes for the heavier API checks.
SAMPLE = ["effnet_b0", "effnet_b0_d2", "effnet_b0_w1p4", "effnet_b0_phi1"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def test_every_builtin_is_listed_by_timm():
    listed = timm.list_models("effnet_b0*")
    assert set(BUILTIN) <= set(listed)
    assert len(BUILTIN) == 1 + 5 + 6 + 5 + 7


def test_effnet_b0_is_timms_efficientnet_b0():
    ours, theirs = timm.create_model("effnet_b0"), timm.create_model("efficientnet_b0")
    assert n_params(ours) == n_params(theirs) == 5_288_548
    tree = [(n, type(m).__name__) for n, m in ours.named_modules()]
    assert tree == [(n, type(m).__name__) for n, m in theirs.named_modules()]
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in theirs.state_dict().items()}


def test_golden_covers_exactly_the_builtins():
    assert sorted(GOLDEN["params"]) == sorted(BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_params_match_golden_and_timms_builder(name):
    s = models.scaling_of(name)
    for num_classes in (1000, 10):
        ours = meta_model(name, num_classes=num_classes)
        with torch.device("meta"):
            direct = _gen_efficientnet(
                "efficientnet_b0",
                channel_multiplier=s.width,
                depth_multiplier=s.depth,
                num_classes=num_classes,
            )
        assert n_params(ours) == n_params(direct) == GOLDEN["params"][name][str(num_classes)]


@pytest.mark.parametrize("name", BUILTIN)
def test_pool_size_matches_the_real_feature_map(name):
    model = meta_model(name)
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    assert size % 8 == 0 and size == models.scaling_of(name).image_size(divisor=8)
    features = model.forward_features(torch.empty(1, 3, size, size, device="meta"))
    assert tuple(features.shape[-2:]) == tuple(cfg["pool_size"])
    assert cfg["num_classes"] == 1000 and cfg["first_conv"] == "conv_stem"
    assert cfg["classifier"] == "classifier" and cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN


def test_resolution_variant_resolves_to_448():
    config = resolve_data_config(model=timm.create_model("effnet_b0_r2"))
    assert config["input_size"] == (3, 448, 448)
    # Same weights as B0: resolution scaling changes only the input.
    assert n_params(timm.create_model("effnet_b0_r2")) == 5_288_548


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_forward_and_backward_at_small_input(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("name", SAMPLE)
def test_timm_model_api_contract(name):
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape[1] == model.num_features
    pre = model.forward_head(features, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size) == (2, model.num_features)
    assert torch.allclose(model.forward_head(features), model(x), atol=1e-5)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    assert model.get_classifier().out_features == 3


@pytest.mark.parametrize("name", SAMPLE)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert [64 // m.shape[-1] for m in maps] == model.feature_info.reduction()


def test_fx_tracing():
    model = timm.create_model("effnet_b0_w1p4", num_classes=5).eval()
    _, eval_nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(extractor(x)[eval_nodes[-1]], model(x), atol=1e-5)


def test_keyword_arguments_pass_through():
    model = timm.create_model(
        "effnet_b0_w2", num_classes=3, in_chans=1, drop_rate=0.3, drop_path_rate=0.1
    )
    assert model.conv_stem.in_channels == 1 and model.num_classes == 3
    assert model.drop_rate == 0.3
    assert any(getattr(m, "drop_prob", 0) > 0 for m in model.modules())


def test_pretrained_weights_fail_clearly():
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        timm.create_model("effnet_b0_w2", pretrained=True)


def test_timm_rounds_stage_depths_up():
    # B0's stages repeat 1 2 2 3 3 4 1 blocks; timm takes ceil(repeats * depth) per stage.
    b0 = models.architecture("effnet_b0")
    assert b0.blocks_per_stage == (1, 2, 2, 3, 3, 4, 1) and b0.blocks == models.B0_BLOCKS
    phi1 = models.architecture("effnet_b0_phi1")
    expected = tuple(-(-r * 12 // 10) for r in b0.blocks_per_stage)  # ceil(r * 1.2)
    assert phi1.blocks_per_stage == expected == (2, 3, 3, 4, 4, 5, 2)
    assert phi1.blocks > models.nominal_blocks(compound(1))
    # channels: multiples of 8 near 1.1 x B0's (16 24 40 80 112 192 320)
    assert phi1.channels_per_stage == (16, 24, 48, 88, 120, 208, 352)
    assert b0.channels_per_stage == (16, 24, 40, 80, 112, 192, 320)
    assert phi1.param_count == GOLDEN["params"]["effnet_b0_phi1"]["1000"]


def test_register_variant_at_run_time():
    scaling = Scaling(depth=2, width=1.4, resolution=1.3)
    name = models.register_variant(scaling)
    assert name == "effnet_b0_d2_w1p4_r1p3" and name in timm.list_models("effnet_b0*")
    assert models.register_variant(scaling) == name  # same spec again: no-op
    assert timm.create_model(name).pretrained_cfg["input_size"] == (3, 288, 288)
    with pytest.raises(ValueError, match="already registered"):
        models.register_variant(Scaling(depth=3), name=name)
    with pytest.raises(ValueError, match="already a timm model"):
        models.register_variant(Scaling(depth=3), name="efficientnet_b0")


def test_builder_signature_is_checked(monkeypatch):
    def changed(variant, channel_mult=1.0, depth_mult=1.0, pretrained=False, **kwargs):
        raise AssertionError("not called")

    monkeypatch.setattr(models, "_gen_efficientnet", changed)
    with pytest.raises(RuntimeError, match="channel_multiplier"):
        models.check_timm_builder()
    assert "channel_multiplier" in inspect.signature(_gen_efficientnet).parameters


def test_any_grammar_name_can_be_registered_on_first_use():
    assert models.ensure_registered("effnet_b0_d1p9") == "effnet_b0_d1p9"
    assert models.registered()["effnet_b0_d1p9"] == Scaling(depth=1.9)
    assert models.ensure_registered("effnet_b0_d1p9") == "effnet_b0_d1p9"  # idempotent
    with pytest.raises(ValueError, match="not a timm-scaling model name"):
        models.ensure_registered("resnet50")
