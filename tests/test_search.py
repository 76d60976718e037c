"""The compound-coefficient search: candidates, the halving schedule, and a real search on
digits (two candidates, 32 training images, one epoch) through the CLI, sharded and resumed."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from timm_scaling.cli import Terminated, app
from timm_scaling.coefficients import (
    DIVERGED,
    Candidate,
    enumerate_candidates,
    nominal_factor,
    successive_halving,
    winner,
)
from timm_scaling.errors import UserError
from timm_scaling.scaling import MAX_MULT, compound, parse_name
from timm_scaling.search import (
    NO_WINNER,
    SearchSettings,
    candidates,
    ladder,
    register_ladder,
    tie,
)
from timm_scaling.search_plan import rung_sizes

runner = CliRunner()
TINY = ["limit_train=32", "limit_val=32", "batch_size=32", "eval_batch_size=32"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    # Cost counts are cached on disk: keep the tests' cache out of the home folder.
    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


# ---------------------------------------------------------------------------- candidates


def staircase(alpha: float, beta: float, gamma: float) -> float:
    """Like measured cost: flat steps in alpha (rounded-up depth), never decreasing."""
    return math.ceil(alpha * 4) / 4 * beta**2 * gamma**2


def brute_force(target, tolerance, step, factor):
    """Every grid point with the cost in the band: no pruning, every axis up to the bound."""
    high = target * (1 + tolerance)
    axis = [round(1 + i * step, 6) for i in range(int((high - 1) / step) + 2)]
    return {
        (a, b, g)
        for a in axis
        for b in axis
        for g in axis
        if target * (1 - tolerance) <= factor(a, b, g) <= high
    }


@settings(max_examples=40, deadline=None)
@given(
    target=st.floats(1.2, 3.0),
    tolerance=st.floats(0.02, 0.3),
    step=st.sampled_from([0.05, 0.1, 0.2, 0.25]),
    factor=st.sampled_from([nominal_factor, staircase]),
)
def test_candidates_are_exactly_the_grid_points_in_the_band(target, tolerance, step, factor):
    found = enumerate_candidates(target, tolerance, step, factor)
    points = [(c.alpha, c.beta, c.gamma) for c in found]
    assert len(points) == len(set(points))
    assert set(points) == brute_force(target, tolerance, step, factor)
    for c in found:
        assert min(c.alpha, c.beta, c.gamma) >= 1
        assert c.factor == factor(c.alpha, c.beta, c.gamma)
        assert target * (1 - tolerance) <= c.factor <= target * (1 + tolerance)
        for value in (c.alpha, c.beta, c.gamma):
            assert math.isclose(1 + round((value - 1) / step) * step, value)
    distances = [abs(c.factor - target) for c in found]
    assert (
        distances == sorted(distances)
        or max(a - b for a, b in zip(distances, distances[1:], strict=False)) < 1e-9
    )


def test_max_candidates_keeps_the_closest_and_breaks_ties_by_coefficients():
    kept = enumerate_candidates(2.0, 0.1, 0.1, limit=4)
    assert [(c.alpha, c.beta, c.gamma) for c in kept] == [
        (2.0, 1.0, 1.0),  # 2.0 exactly
        (1.4, 1.0, 1.2),  # 2.016, tied with (1.4, 1.2, 1.0): smaller beta first
        (1.4, 1.2, 1.0),
        (1.2, 1.0, 1.3),  # 2.028
    ]
    assert kept == enumerate_candidates(2.0, 0.1, 0.1)[:4]
    assert kept[1].model() == "effnet_b0_phi1_a1p4b1g1p2"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": 1.0}, "--target"),
        ({"tolerance": 0.0}, "--tolerance"),
        ({"step": 0.001}, "--grid-step"),
        ({"limit": 0}, "--max-candidates"),
    ],
)
def test_bad_constraint_is_a_one_line_error(options, message):
    with pytest.raises(UserError, match=message):
        enumerate_candidates(**options)


@pytest.mark.slow
def test_exact_cost_uses_measured_macs_after_rounding():
    from timm_scaling.cost import measure_cost

    proxy = SearchSettings(exact_cost=True)
    exact = enumerate_candidates(2.0, 0.15, 0.5, proxy.measured_cost().ratio)
    base = measure_cost("effnet_b0", 32, 10)["gmacs"]
    for c in exact:
        name = compound(1, c.alpha, c.beta, c.gamma)
        measured = measure_cost(c.model(), name.image_size(32), 10)["gmacs"]
        assert c.factor == pytest.approx(measured / base)
        assert 1.7 <= c.factor <= 2.3
    nominal = enumerate_candidates(2.0, 0.15, 0.5)
    # At 32 px, gamma 1.5 (48 px) costs 2.7x B0, not 2.25x: out of the band when measured.
    assert (1.0, 1.0, 1.5) in {(c.alpha, c.beta, c.gamma) for c in nominal}
    assert {(c.alpha, c.beta, c.gamma) for c in exact} == {(2.0, 1.0, 1.0), (1.0, 1.5, 1.0)}


def test_grid_points_of_one_network_are_one_candidate_the_closest_kept():
    def network(c):  # a staircase in alpha, like timm's rounded-up depths
        return math.ceil(c.alpha * 4), c.beta, c.gamma

    every = enumerate_candidates(1.75, 0.1, 0.1)
    merged = enumerate_candidates(1.75, 0.1, 0.1, network=network)
    assert len({network(c) for c in every}) == len(merged) < len(every)
    for kept in merged:
        same = [c for c in every if network(c) == network(kept)]
        assert (kept.alpha, kept.beta, kept.gamma) == (same[0].alpha, same[0].beta, same[0].gamma)
        assert kept.aliases == tuple(c.model() for c in same[1:])
    assert enumerate_candidates(1.75, 0.1, 0.1, limit=3, network=network) == merged[:3]


@pytest.mark.slow
def test_alpha_1p4_and_1p5_build_the_same_network():
    """The issue's case: after timm's rounding both have blocks 2 3 3 5 5 6 2."""
    settings = SearchSettings(target=1.75, grid_step=0.1)
    costs = settings.measured_cost()

    def network(alpha, beta=1.1, gamma=1.0):
        return costs.network(Candidate(alpha, beta, gamma, 0.0))

    assert network(1.4) == network(1.5)
    assert network(1.4)[0] == (2, 3, 3, 5, 5, 6, 2)
    assert network(1.4) != network(1.6)  # 2 4 4 5 5 7 2
    assert network(1.4) != network(1.4, beta=1.2) != network(1.4, gamma=1.1)
    (kept,) = [c for c in candidates(settings, costs) if c.alpha in (1.4, 1.5) and c.beta == 1.1]
    assert kept.gamma == 1.0 and "effnet_b0_phi1_a1p5b1p1g1" in kept.aliases + (kept.model(),)
    assert {kept.model(), *kept.aliases} >= {
        "effnet_b0_phi1_a1p4b1p1g1",
        "effnet_b0_phi1_a1p5b1p1g1",
    }


def test_scores_within_binomial_noise_are_a_tie():
    # The README's command before: 10.28 / 10 / 10 / 9.44 % on 360 images, chance 10%.
    assert "chance" in tie([10.28, 10.0, 10.0, 9.44], 360, 10.0)
    # 95 vs 92 on 360 images: 3 points, less than 1.96 standard errors of the difference...
    assert "best two" in tie([95.0, 92.0, 40.0], 360, 10.0)
    # ...but more on 4 x 360 (four seeds): distinguishable.
    assert tie([95.0, 92.0, 40.0], 4 * 360, 10.0) is None
    assert tie([95.0, 60.0], 360, 10.0) is None
    assert tie([100.0, 100.0], 360, 10.0) is not None


@pytest.mark.parametrize("halving", [True, False])
def test_plan_rungs_are_the_schedule_rungs(halving):
    for n in range(1, 20):
        scorer = FakeScorer({2**r: {i: float(i) for i in range(n)} for r in range(8)})
        rungs = successive_halving(list(range(n)), scorer, epochs=1, halving=halving)
        assert rung_sizes(n, halving) == [len(r.scores) for r in rungs]


# ---------------------------------------------------------------------------- the schedule


class FakeScorer:
    """Scores from a table per epoch budget; records what it was asked."""

    def __init__(self, table: dict[int, dict[str, float]], unknown: frozenset = frozenset()):
        self.table, self.unknown, self.calls = table, unknown, []

    def __call__(self, candidates, epochs):
        self.calls.append((list(candidates), epochs))
        return [None if (c, epochs) in self.unknown else self.table[epochs][c] for c in candidates]


NAMES = list("abcdefgh")
# After 1 epoch h looks worst but would win at 4: halving judges by each rung's budget.
SCORES = {
    1: dict(zip(NAMES, [50, 60, 55, 70, 40, 65, 45, 10], strict=True)),
    2: dict(zip(NAMES, [0, 72, 0, 71, 0, 80, 0, 99], strict=True)),
    4: dict(zip(NAMES, [0, 0, 0, 90, 0, 85, 0, 99], strict=True)),
}


def test_successive_halving_keeps_the_better_half_and_doubles_the_epochs():
    scorer = FakeScorer(SCORES)
    rungs = successive_halving(NAMES, scorer, epochs=1)
    assert scorer.calls == [
        (NAMES, 1),
        (["d", "f", "b", "c"], 2),  # best four at 1 epoch, best first
        (["f", "b"], 4),  # best two at 2 epochs
    ]
    assert [(r.index, r.epochs, len(r.scores)) for r in rungs] == [(0, 1, 8), (1, 2, 4), (2, 4, 2)]
    assert winner(rungs) == "f"


def test_odd_counts_round_the_half_up_and_ties_keep_the_order():
    scorer = FakeScorer({e: dict.fromkeys("vwxyz", 1.0) for e in (3, 6, 12)})
    rungs = successive_halving(list("vwxyz"), scorer, epochs=3)
    assert [candidates for candidates, _ in scorer.calls] == [
        list("vwxyz"),
        list("vwx"),
        ["v", "w"],
    ]
    assert [epochs for _, epochs in scorer.calls] == [3, 6, 12]
    assert winner(rungs) == "v"


def test_without_halving_one_rung_scores_every_candidate():
    scorer = FakeScorer(SCORES)
    rungs = successive_halving(NAMES, scorer, epochs=1, halving=False)
    assert len(rungs) == 1 and scorer.calls == [(NAMES, 1)]
    assert winner(rungs) == "d"


def test_a_rung_with_pending_scores_stops_the_schedule():
    scorer = FakeScorer(SCORES, unknown=frozenset({("b", 2)}))
    rungs = successive_halving(NAMES, scorer, epochs=1)
    assert len(rungs) == 2 and rungs[0].complete and not rungs[1].complete
    assert winner(rungs) is None
    with pytest.raises(UserError, match="no candidates"):
        successive_halving([], scorer)


def test_a_diverged_candidate_is_never_promoted_nor_the_winner():
    """Diverged candidates rank last; the next rung takes the better half of the rung, or
    fewer where fewer trained; a rung where every candidate diverged has no winner."""
    table = {
        1: {"a": DIVERGED, "b": 50.0, "c": DIVERGED, "d": 40.0, "e": 30.0},
        2: {"b": DIVERGED, "d": 35.0, "e": 20.0},
        4: {"d": 60.0, "e": 70.0},
    }
    scorer = FakeScorer(table)
    rungs = successive_halving(list("abcde"), scorer, epochs=1)
    assert scorer.calls == [(list("abcde"), 1), (["b", "d", "e"], 2), (["d", "e"], 4)]
    assert rungs[0].ranked()[-2:] == ["a", "c"] and winner(rungs) == "e"
    # Four of five diverge at once: the one left wins without a second rung.
    scorer = FakeScorer({1: dict.fromkeys("abcd", DIVERGED) | {"e": 5.0}})
    rungs = successive_halving(list("abcde"), scorer, epochs=1)
    assert len(rungs) == 1 and winner(rungs) == "e"
    scorer = FakeScorer({1: dict.fromkeys("ab", DIVERGED)})
    rungs = successive_halving(["a", "b"], scorer, epochs=1)
    assert rungs[0].complete and winner(rungs) is None


# ---------------------------------------------------------------------------- the ladder


def test_ladder_names_parse_back_and_register():
    found = Candidate(1.25, 1.1, 1.1, nominal_factor(1.25, 1.1, 1.1))
    names = ladder(found)
    assert names[1] == "effnet_b0_phi2_a1p25b1p1g1p1"
    assert [parse_name(n) for n in names] == [compound(p, 1.25, 1.1, 1.1) for p in range(1, 8)]
    import timm

    assert all(timm.is_model(n) for n in register_ladder(found))
    # alpha = 2 cannot go past phi = 6: 2^7 = 128 is beyond what a name carries.
    assert ladder(Candidate(2.0, 1.0, 1.0, 2.0))[-1] == "effnet_b0_phi6_a2b1g1"
    assert 2.0**7 > MAX_MULT


def test_recipes_and_sweeps_name_found_coefficients(tmp_path):
    import timm
    import torch

    from timm_scaling.models import ensure_registered
    from timm_scaling.recipes import load_recipe
    from timm_scaling.sweep_file import load_sweep, plan

    names = ladder(Candidate(1.25, 1.1, 1.1, nominal_factor(1.25, 1.1, 1.1)))
    recipe = load_recipe("digits", [f"model={names[1]}"])
    assert recipe.model == "effnet_b0_phi2_a1p25b1p1g1p1"
    assert recipe.image_size == round(32 * 1.1**2)
    model = timm.create_model(ensure_registered(recipe.model), num_classes=10)
    # depth 1.25^2 = 1.5625: timm rounds each of B0's stages (1 2 2 3 3 4 1 blocks) up.
    assert [len(stage) for stage in model.blocks] == [2, 4, 4, 5, 5, 7, 2]
    assert model.conv_stem.out_channels == 40  # 32 * 1.1^2 = 38.7, to a multiple of 8
    with torch.no_grad():
        logits = model.eval()(torch.zeros(1, 3, recipe.image_size, recipe.image_size))
    assert logits.shape == (1, 10)

    sweep = tmp_path / "ladder.yaml"
    sweep.write_text(f"recipe: digits\nmodels: [{', '.join(names[:3])}]\n")
    assert [r.model for r in plan(load_sweep(str(sweep)))] == names[:3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seeds": 0}, "--seeds"),
        ({"proxy_epochs": 0}, "--proxy-epochs"),
        ({"base_model": "effnet_b0_w2"}, "--base-model"),
        ({"shard": "3/2"}, "K/N"),
        ({"overrides": ("nope=1",)}, "unknown key 'nope'"),
    ],
)
def test_bad_settings_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message):
        SearchSettings(**options)


# ---------------------------------------------------------------------------- end to end


def one_line_error(output: str) -> bool:
    return output.startswith("error: ") and output.count("\n") == 1 and "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "1.7", "--tolerance", "0.01", "--grid-step", "0.5"], "no grid point"),
        (["--shard", "0/2"], "--shard '0/2'"),
        (["--grid-step", "0"], "--grid-step 0"),
        (["--set", "epochs=zero"], "epochs"),
        (["--dataset", "nope"], "error: --dataset nope: unknown dataset 'nope'"),  # as typed
    ],
)
def test_cli_bad_input_is_one_line_and_trains_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["search", "--output", str(tmp_path), *args])
    assert result.exit_code == 2
    assert one_line_error(result.output) and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def search(output, *extra):
    args = ["search", "--grid-step", "0.1", "--max-candidates", "2", "--proxy-epochs", "1"]
    args += ["--halving", "--output", str(output), *extra]
    args += [a for o in TINY for a in ("--set", o)]
    return runner.invoke(app, args)


def statuses(output: str) -> list[str]:
    return re.findall(r"seed 0: (train|done|diverged|other shard)$", output, flags=re.M)


@pytest.mark.slow
def test_two_candidate_search_shards_resumes_and_registers(tmp_path):
    first = search(tmp_path, "--shard", "1/2")
    assert first.exit_code == 0, first.output
    assert statuses(first.output) == ["train", "other shard"]
    assert "1 run(s) pending" in first.output
    assert not (tmp_path / "search.json").exists()

    second = search(tmp_path, "--shard", "2/2")
    assert second.exit_code == 0, second.output
    assert statuses(second.output) == ["done", "train"]
    saved = json.loads((tmp_path / "search.json").read_text())
    with (tmp_path / "search.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    coefficients = [(float(r["alpha"]), float(r["beta"]), float(r["gamma"])) for r in rows]
    assert sorted(coefficients) == [(1.4, 1.0, 1.2), (2.0, 1.0, 1.0)]  # the two closest to 2
    for row in rows:  # each candidate's score is its proxy run's top-1
        run = tmp_path / "epochs1" / f"digits-{row['model']}-s0" / "result.json"
        assert float(row["top1_s0"]) == pytest.approx(json.loads(run.read_text())["top1"])
    best = rows[0]
    assert best["chosen"] == "True" and rows[1]["chosen"] == "False"
    assert float(best["top1_mean"]) >= float(rows[1]["top1_mean"])
    assert float(best["top1_s0"]) == float(best["top1_mean"])
    assert (saved["alpha"], saved["beta"], saved["gamma"]) == tuple(
        float(best[k]) for k in ("alpha", "beta", "gamma")
    )
    chosen = f"alpha={saved['alpha']:g} beta={saved['beta']:g} gamma={saved['gamma']:g}"
    assert chosen in second.output
    assert second.output.startswith("plan: 2 candidates")
    # 32 images each: the choice is a tie exactly when tie() says so, and then it says so.
    tied = tie([float(r["top1_mean"]) for r in rows], 32, 10.0)
    assert saved["tie"] == (tied is not None) and (NO_WINNER in second.output) == saved["tie"]
    assert saved["aliases"] == best["aliases"].split()
    for row in rows:
        assert float(row["nominal"]) == pytest.approx(
            nominal_factor(float(row["alpha"]), float(row["beta"]), float(row["gamma"]))
        )
        assert float(row["gmacs"]) > 0 and float(row["gmacs_ratio"]) > 1
        assert row["epochs"] == "1" and row["rung"] == "0"

    again = search(tmp_path, "--register")
    assert again.exit_code == 0, again.output
    assert statuses(again.output) == ["done", "done"]
    assert chosen in again.output
    registered = re.search(r"registered: (.*)$", again.output, flags=re.M).group(1).split()
    assert registered == saved["ladder"] and registered[0] == saved["model"]

    changed = runner.invoke(
        app,
        ["search", "--grid-step", "0.1", "--max-candidates", "2", "--proxy-epochs", "1"]
        + ["--output", str(tmp_path), "--set", "limit_train=16"]
        + [a for o in TINY[1:] for a in ("--set", o)],
    )
    assert changed.exit_code == 2
    assert one_line_error(changed.output) and "other settings (limit_train)" in changed.output


@pytest.mark.slow
def test_a_diverged_proxy_run_ranks_last_and_every_shard_counts_it(tmp_path, monkeypatch):
    """The second candidate's model outputs nan when evaluated: its proxy run diverges. The
    search went no further (one line, exit 3); now the candidate ranks last and the other is
    chosen. Its folder says it diverged, so the other shard, run after it, and a rerun count it
    as diverged, not pending, and do not train it again."""
    from timm_scaling.train.trainer import Trainer

    real, bad = Trainer.evaluate, {Candidate(1.4, 1.0, 1.2, 2.016).model()}

    def evaluate(self, batches=None):
        scores = real(self, batches)
        if self.recipe.model in bad:
            scores["nonfinite_images"] = scores["eval_images"]
        return scores

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    first = search(tmp_path, "--shard", "2/2")
    assert first.exit_code == 0, first.output
    assert statuses(first.output) == ["other shard", "train"]
    assert "1 run(s) pending" in first.output
    folder = tmp_path / "epochs1" / f"digits-{next(iter(bad))}-s0"
    assert "validation images after epoch 1" in (folder / "diverged.json").read_text()

    second = search(tmp_path, "--shard", "1/2")
    assert second.exit_code == 0, second.output
    assert statuses(second.output) == ["train", "diverged"]
    with (tmp_path / "search.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["diverged"], r["top1_mean"]) for r in rows][1] == (*bad, "True", "")
    assert rows[0]["chosen"] == "True" and rows[0]["diverged"] == "False"
    assert float(rows[0]["top1_mean"]) >= 0
    assert json.loads((tmp_path / "search.json").read_text())["model"] == rows[0]["model"]
    table_row = next(
        line for line in second.output.splitlines() if line.split()[:2] == ["2", "1.4"]
    )
    assert table_row.split()[-1] == "diverged"
    assert f"1 proxy run(s) diverged, so their candidates rank last ({folder.name})" in (
        second.output
    )
    again = search(tmp_path)
    assert again.exit_code == 0 and statuses(again.output) == ["done", "diverged"], again.output

    # Every candidate diverges: no winner, one line naming a diverged run of the last rung.
    bad.add(Candidate(2.0, 1.0, 1.0, 2.0).model())
    none = search(tmp_path / "none")
    assert none.exit_code == 3 and one_line_error(none.stderr), none.output
    assert "every candidate of rung 0 diverged in its proxy runs" in none.output
    assert "lower the proxy's lr (--set lr=...)" in none.output
    assert (tmp_path / "none" / "search.csv").is_file()
    assert not (tmp_path / "none" / "search.json").exists()


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    args = ["search", "--grid-step", "0.1", "--max-candidates", "3", "--proxy-epochs", "2"]
    args += ["--halving", "--seeds", "2", "--dry-run", "--output", str(tmp_path / "s")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("plan: 3 candidates")
    assert lines[1:3] == [
        "  rung 0: 6 proxy run(s) of 2 epoch(s)",  # 3 candidates x 2 seeds
        "  rung 1: 4 proxy run(s) of 4 epoch(s)",  # the better 2 x 2 seeds
    ]
    minutes = re.search(r"10 proxy runs; about (\d+) min", lines[3])
    assert minutes is not None and "B0 epoch" in lines[3]
    assert len(lines) == 4 and not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [KeyboardInterrupt, Terminated])
def test_an_interrupted_search_says_what_is_kept_and_goes_on(tmp_path, monkeypatch, stop):
    """Ctrl-C (130) or SIGTERM (143) in the second proxy run: one line on what is kept, the
    first run's result stays, and the same command again trains only the second."""
    from timm_scaling import train as training

    real, calls = training.train, []

    def second_is_stopped(*args, **kwargs):
        calls.append(args[0].model)
        if len(calls) == 2:
            raise stop
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", second_is_stopped)
    stopped = search(tmp_path)
    assert stopped.exit_code == (130 if stop is KeyboardInterrupt else 143), stopped.output
    word = "interrupted" if stop is KeyboardInterrupt else "terminated"
    assert f"{word}: the proxy runs finished so far are kept in {tmp_path}" in stopped.output
    assert "Traceback" not in stopped.output and not (tmp_path / "search.json").exists()
    assert (tmp_path / "epochs1" / f"digits-{calls[0]}-s0" / "result.json").is_file()

    monkeypatch.setattr(training, "train", real)
    again = search(tmp_path)
    assert again.exit_code == 0, again.output
    assert statuses(again.output) == ["done", "train"] and (tmp_path / "search.json").is_file()
