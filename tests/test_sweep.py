"""Sweep files, their plan, shards: torch-free parts here; the end-to-end run with training."""

import pytest

from timm_scaling.recipes import load_recipe
from timm_scaling.sweep import list_sweeps, load_sweep, parse_shard, plan


def test_builtin_sweeps_are_listed_and_plan():
    assert {"table7", "figure8"} <= set(list_sweeps())
    table7 = plan(load_sweep("table7"))
    assert [r.name for r in table7] == ["baseline", "depth4", "width2", "res2", "compound"]
    assert [r.model for r in table7] == [
        load_recipe(n).model for n in ("baseline", "depth4", "width2", "res2", "compound")
    ]


def test_figure8_has_a_ladder_of_four_costs_per_method():
    models = [r.model for r in plan(load_sweep("figure8"))]
    assert len(models) == len(set(models)) == 13
    for prefix in ("_d", "_w", "_r", "_phi"):
        assert sum(prefix in m for m in models) == 3  # plus effnet_b0, shared by every ladder


def test_seeds_and_overrides_apply_to_every_run():
    runs = plan(load_sweep("table7"), seeds=3, overrides=["dataset=digits", "epochs=2"])
    assert len(runs) == 15
    assert {r.dataset for r in runs} == {"digits"} and {r.epochs for r in runs} == {2}
    assert [r.seed for r in runs[:3]] == [0, 1, 2]


def test_shards_partition_the_sweep():
    sweep = load_sweep("figure8")
    everything = plan(sweep, seeds=2)
    shards = [plan(sweep, seeds=2, shard=(k, 3)) for k in (1, 2, 3)]
    flat = [(r.model, r.seed) for s in shards for r in s]
    assert sorted(flat) == sorted((r.model, r.seed) for r in everything)
    assert len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("bad", ["0/2", "3/2", "x", "1-2", "1/"])
def test_bad_shard_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="K/N"):
        parse_shard(bad)


def test_sweep_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [baseline]\nepochs: 3\n")
    with pytest.raises(ValueError, match="unknown key.*epochs"):
        load_sweep(str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("description: nothing\n")
    with pytest.raises(ValueError, match="no runs"):
        load_sweep(str(empty))
    with pytest.raises(ValueError, match="unknown sweep 'nope'.*table7"):
        load_sweep("nope")
    twice = tmp_path / "twice.yaml"
    twice.write_text("runs: [baseline, {model: effnet_b0}]\n")
    with pytest.raises(ValueError, match="same run twice"):
        plan(load_sweep(str(twice)))


def test_a_sweep_file_with_run_mappings(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "recipe: digits\nset: [epochs=1]\n"
        "runs:\n  - {model: effnet_b0_w1p4, set: [lr=0.01]}\n  - depth4\n"
        "models: [effnet_b0_d1p5]\n"
    )
    runs = plan(load_sweep(str(path)))
    assert [(r.name, r.model) for r in runs] == [
        ("digits", "effnet_b0_w1p4"),
        ("depth4", "effnet_b0_d4"),
        ("digits", "effnet_b0_d1p5"),
    ]
    assert runs[0].lr == 0.01 and {r.epochs for r in runs} == {1}
