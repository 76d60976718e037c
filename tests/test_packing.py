"""``sweep --jobs auto``: the job count whose plan (``--plan --jobs K``) projects the shortest
wall time, from the rows plan.csv keeps of each K; the fewest jobs among near-ties."""

from __future__ import annotations

import helpers
import pytest
from typer.testing import CliRunner

from timm_scaling import plan as planning
from timm_scaling.cli import app
from timm_scaling.packing import CLOSE, choose_jobs, parse_jobs, projections
from timm_scaling.plan import COLUMNS, read_plan, wall_time
from timm_scaling.sweep import check_jobs
from timm_scaling.sweep_file import load_sweep
from timm_scaling.sweep_file import plan as sweep_plan

runner = CliRunner()
MODELS = ("effnet_b0", "effnet_b0_d2")


def recipes(seeds: int = 1):
    """One job per run: the models of a two-model sweep, each with ``seeds`` seeds."""
    return [
        [helpers.recipe("digits", model=model, seed=seed, epochs=10)]
        for model in MODELS
        for seed in range(seeds)
    ]


def measured(epoch_s: dict[str, float]) -> list[dict]:
    """Plan rows of the sweep's models, seed 0, with these seconds an epoch."""
    rows = []
    for model, seconds in epoch_s.items():
        run = helpers.recipe("digits", model=model)
        row = dict.fromkeys(COLUMNS)
        row.update(model=model, recipe=run.name, seed=0, img_size=run.image_size)
        row.update(batch_size=run.batch_size, epoch_s=seconds, epochs=run.epochs)
        rows.append(row)
    return rows


def test_a_plan_keeps_the_rows_of_other_job_counts(tmp_path):
    path = tmp_path / "plan.csv"
    planning.write(path, measured({"effnet_b0": 1.0, "effnet_b0_d2": 2.0}), jobs=1)
    planning.write(path, measured({"effnet_b0": 3.0, "effnet_b0_d2": 4.0}), jobs=2)
    assert [(r["jobs"], r["epoch_s"]) for r in read_plan(path)] == [
        ("1", "1.0"),
        ("1", "2.0"),
        ("2", "3.0"),
        ("2", "4.0"),
    ]
    planning.write(path, measured({"effnet_b0": 5.0}), jobs=1)  # measured at 1 again
    assert [(r["jobs"], r["epoch_s"]) for r in read_plan(path)] == [
        ("2", "3.0"),
        ("2", "4.0"),
        ("1", "5.0"),
    ]


def test_plans_written_at_once_keep_each_others_rows(tmp_path, monkeypatch):
    """`--plan --jobs 1` and `--plan --jobs 2` started side by side: each read plan.csv, then
    wrote it with its own rows, so the slower one's write dropped the other's."""
    import threading
    import time

    path = tmp_path / "plan.csv"
    planning.write(path, measured({"effnet_b0": 9.0}), jobs=9)
    reading = planning.read_plan

    def slow_read(plan_file):
        rows = reading(plan_file)
        time.sleep(0.2)  # every writer has read before any writes, unless they take turns
        return rows

    monkeypatch.setattr(planning, "read_plan", slow_read)
    writers = [
        threading.Thread(target=planning.write, args=(path, measured({"effnet_b0": k}), k))
        for k in range(1, 5)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=30)
    assert sorted(int(r["jobs"]) for r in reading(path)) == [1, 2, 3, 4, 9]


def test_plans_under_mps_and_without_are_kept_apart(tmp_path):
    """--plan --jobs 2 --mps does not replace --plan --jobs 2; --jobs auto reads the plans
    measured as the sweep trains: under MPS with --mps, without it otherwise."""
    path = tmp_path / "plan.csv"
    planning.write(path, measured(dict.fromkeys(MODELS, 2.0)), jobs=1)
    planning.write(path, measured(dict.fromkeys(MODELS, 4.5)), jobs=2)  # slower together
    planning.write(path, measured(dict.fromkeys(MODELS, 2.5)), jobs=2, mps=True)
    assert [(r["jobs"], r["mps"]) for r in read_plan(path)] == [
        ("1", "false"),
        ("1", "false"),
        ("2", "false"),
        ("2", "false"),
        ("2", "true"),
        ("2", "true"),
    ]
    assert choose_jobs(recipes(), ["0"], path).jobs == 1  # 40 s alone, 45 s two at a time
    jobs, why, _ = choose_jobs(recipes(), ["0"], path, mps=True)
    assert jobs == 2 and "(projected under MPS 25.0 s with 2)" in why


def test_auto_takes_the_count_projected_fastest(tmp_path):
    path = tmp_path / "plan.csv"
    planning.write(path, measured({"effnet_b0": 1.0, "effnet_b0_d2": 3.0}), jobs=1)
    planning.write(path, measured({"effnet_b0": 1.5, "effnet_b0_d2": 3.5}), jobs=2)
    # Three seeds each: one configuration's row serves all its seeds; 10 epochs a run.
    groups = recipes(seeds=3)
    times = projections(read_plan(path), groups)
    assert times == {
        1: wall_time([10.0] * 3 + [30.0] * 3, 1),
        2: wall_time([15.0] * 3 + [35.0] * 3, 2),
    }
    assert times[2] < times[1]
    jobs, why, compared = choose_jobs(groups, [], path)
    assert jobs == 2 and compared == 2
    assert why.startswith("--jobs auto: 2, by ") and "with 1" in why and "with 2" in why


def test_auto_takes_the_fewest_jobs_among_near_ties(tmp_path):
    """Two runs of 10 epochs: 40 s one at a time; 29 s two at a time; 28.5 s four at a time,
    where the two runs share the CPU with no one: within CLOSE of two, so two."""
    path = tmp_path / "plan.csv"
    planning.write(path, measured({"effnet_b0": 2.0, "effnet_b0_d2": 2.0}), jobs=1)
    planning.write(path, measured({"effnet_b0": 2.9, "effnet_b0_d2": 2.9}), jobs=2)
    planning.write(path, measured({"effnet_b0": 2.85, "effnet_b0_d2": 2.85}), jobs=4)
    times = projections(read_plan(path), recipes())
    assert times == pytest.approx({1: 40.0, 2: 29.0, 4: 28.5})
    assert choose_jobs(recipes(), ["0"], path).jobs == 2


def test_auto_ignores_counts_that_did_not_measure_every_configuration(tmp_path):
    path = tmp_path / "plan.csv"
    planning.write(path, measured({"effnet_b0": 1.0, "effnet_b0_d2": 3.0}), jobs=1)
    planning.write(path, measured({"effnet_b0": 0.1}), jobs=4)  # depth 2 not measured at 4
    assert set(projections(read_plan(path), recipes())) == {1}
    assert choose_jobs(recipes(), [], path).jobs == 1
    # Another batch size is another configuration: the plan does not speak for it.
    other = [[helpers.recipe("digits", model=m, batch_size=64)] for m in MODELS]
    jobs, why, compared = choose_jobs(other, ["0", "1"], path)
    assert jobs == 2 and compared == 0 and "no plan measured these runs" in why  # one a GPU


def test_a_damaged_plan_is_one_line_and_a_new_plan_replaces_it(tmp_path):
    """Bytes that are no CSV: --jobs auto says so before anything trains; a plan's write
    replaces the file. Cells that are no numbers (an edited file) count as not measured."""
    plan_csv = tmp_path / "demo" / planning.PLAN_FILE
    plan_csv.parent.mkdir()
    plan_csv.write_bytes(bytes(range(256)))
    outcome = runner.invoke(app, ["sweep", "demo", "--jobs", "auto", "--output", str(tmp_path)])
    assert outcome.exit_code == 2 and outcome.output.count("\n") == 1, outcome.output
    assert f"{plan_csv} is not a plan.csv" in outcome.output and "--plan" in outcome.output
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no run folder: nothing trained
    planning.write(plan_csv, measured({"effnet_b0": 1.0, "effnet_b0_d2": 3.0}), jobs=2)
    assert [row["jobs"] for row in read_plan(plan_csv)] == ["2", "2"]
    edited = plan_csv.read_text().replace(",2,false\n", ",two,false\n", 1)
    plan_csv.write_text(edited)
    assert projections(read_plan(plan_csv), recipes()) == {}  # effnet_b0 is not measured now
    assert choose_jobs(recipes(), [], plan_csv).jobs == 1


def test_a_dry_run_says_what_jobs_auto_takes(tmp_path):
    sweep = tmp_path / "pair.yaml"
    sweep.write_text(f"recipe: digits\nmodels: {list(MODELS)}\n")
    output = tmp_path / "runs"
    planning.write(output / "pair" / planning.PLAN_FILE, measured(dict.fromkeys(MODELS, 2.0)), 1)
    planning.write(output / "pair" / planning.PLAN_FILE, measured(dict.fromkeys(MODELS, 3.0)), 2)
    args = ["sweep", str(sweep), "--jobs", "auto", "--dry-run", "--output", str(output)]
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert len(lines) == 3 and all(line.endswith("  to train") for line in lines[:2])
    assert lines[2].startswith("--jobs auto: 2, by ") and "with 1, " in lines[2]
    assert [p.name for p in output.iterdir()] == ["pair"]  # nothing trained


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5"])
def test_a_bad_jobs_count_is_one_line(text, tmp_path):
    outcome = runner.invoke(app, ["sweep", "demo", "--jobs", text, "--output", str(tmp_path)])
    assert outcome.exit_code == 2
    assert outcome.output.count("\n") == 1 and f"--jobs {text}: give the runs" in outcome.output
    assert parse_jobs(" Auto ") == "auto" and parse_jobs("3") == 3
    assert check_jobs("3") == 3 and check_jobs("AUTO") == "auto"  # the API parses as the CLI


def test_a_plan_at_jobs_auto_is_refused(tmp_path):
    args = ["sweep", "demo", "--plan", "--jobs", "auto", "--output", str(tmp_path)]
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 2 and "plan with --jobs K for a few K" in outcome.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_sweep_at_jobs_auto_trains_with_the_count_its_plans_measured_fastest(tmp_path, caplog):
    """Real plans at one and two jobs on this CPU, then `--jobs auto` trains with the count
    whose projection is the shortest and says so."""
    sweep = tmp_path / "pair.yaml"
    tiny = ["limit_train=64", "limit_val=48", "batch_size=32", "eval_batch_size=16", "epochs=1"]
    sweep.write_text(f"recipe: digits\nset: {tiny}\nmodels: {list(MODELS)}\n")
    output = tmp_path / "runs"
    for jobs in ("1", "2"):
        args = ["sweep", str(sweep), "--plan", "--plan-seconds", "0.2", "--jobs", jobs]
        outcome = runner.invoke(app, [*args, "--output", str(output)])
        assert outcome.exit_code == 0, outcome.output
        # Once two counts are measured, the plan says which --jobs auto takes.
        assert ("--jobs auto: " in outcome.output) == (jobs == "2")
        plan_says = outcome.output
    rows = read_plan(output / "pair" / planning.PLAN_FILE)
    assert sorted(row["jobs"] for row in rows) == ["1", "1", "2", "2"]
    runs = [[run] for run in sweep_plan(load_sweep(str(sweep)), 1, [])]
    times = projections(rows, runs)
    expected = min(k for k, s in times.items() if s <= min(times.values()) * (1 + CLOSE))
    outcome = runner.invoke(app, ["sweep", str(sweep), "--jobs", "auto", "--output", str(output)])
    assert outcome.exit_code == 0, outcome.output
    assert f"--jobs auto: {expected}, by " in caplog.text  # a log line, on stderr
    assert f"--jobs auto: {expected}, by " in plan_says
    assert "trained 2 run(s)" in outcome.output
