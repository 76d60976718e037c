"""Faults a trusted trainer survives (issue 20): a kill at any write point, a killed longer
continuation, two copies of one command, a diverged run, SIGTERM, damaged files, bad reports.

Each test reproduces one fault from outside (a kill injected where the files are replaced, a
second real process, a real signal) and checks that nothing finished is lost or wrong and that
the CLI says one line, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from helpers import start, wait_for
from typer.testing import CliRunner

import timm_scaling.report
from timm_scaling.cli import app
from timm_scaling.errors import InputError, UserError
from timm_scaling.recipes import load_recipe
from timm_scaling.report import COLUMNS, read_rows
from timm_scaling.runs import (
    CHECKPOINTS,
    LATEST,
    LOCK_FILE,
    RECIPE_FILE,
    RESULT_FILE,
    STATE_FILE,
    finished,
    lock_run,
    report_row,
    run_folder,
)
from timm_scaling.train import LossNotFinite, Trainer, train

TINY = [
    "limit_train=64",
    "limit_val=32",
    "batch_size=32",
    "eval_batch_size=32",
    "base_size=32",
    "epochs=1",
]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated")


class Killed(BaseException):
    """A kill -9 at a chosen moment: nothing after it runs (not even ``except Exception``)."""


def tiny(**changes):
    return load_recipe("digits", TINY + [f"{k}={v}" for k, v in changes.items()])


def reset() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)


def kill_at_replace(monkeypatch, at: int) -> list[str]:
    """Kill the process at the ``at``-th file replacement (every result, checkpoint pointer,
    recipe, report and model folder is committed by one rename); returns the names renamed."""
    renamed: list[str] = []
    real_replace, real_rename = os.replace, Path.rename

    def counted(commit, source, target):
        if len(renamed) == at:
            raise Killed
        renamed.append(Path(target).name)
        return commit(source, target)

    monkeypatch.setattr(os, "replace", lambda s, t: counted(real_replace, s, t))
    monkeypatch.setattr(Path, "rename", lambda s, t: counted(real_rename, s, t))
    return renamed


def report_has(output: Path, result: dict) -> bool:
    """``output``/report.csv holds ``result``'s row as the trainer writes it."""
    path = output / "report.csv"
    return path.is_file() and not timm_scaling.report.missing_rows(path, [report_row(result)])


@pytest.fixture(scope="module")
def finished_run(module_tmp_path, tmp_path_factory):
    """A finished one-epoch run whose report row was lost: killed just before the row was put
    into report.csv (issue 20, case 1). Returns its output folder and result."""
    os.environ["TIMM_SCALING_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    output = module_tmp_path / "runs"
    monkeypatch = pytest.MonkeyPatch()

    def killed(*args):
        raise Killed

    monkeypatch.setattr("timm_scaling.train.finishing.put_row", killed)
    with pytest.raises(Killed):
        train(tiny(), output)
    monkeypatch.undo()
    reset()
    folder = run_folder(output, tiny())
    result = json.loads((folder / RESULT_FILE).read_text())
    assert not (output / "report.csv").exists()
    return output, result


def copy_of(finished_run, tmp_path) -> Path:
    output = tmp_path / "runs"
    shutil.copytree(finished_run[0], output)
    return output


@pytest.mark.slow
def test_a_rerun_of_a_finished_run_puts_its_lost_row_back(finished_run, tmp_path):
    output = copy_of(finished_run, tmp_path)
    outcome = runner.invoke(app, ["train", "digits", "--output", str(output), *sets(TINY)])
    assert outcome.exit_code == 0, outcome.output
    assert "not retraining" in outcome.output and "put back" in outcome.output
    assert report_has(output, finished_run[1])
    assert [r["model"] for r in read_rows(output / "report.csv")] == ["effnet_b0"]
    # The result records the CPU threads it trained with: the same seed differs with another.
    assert finished_run[1]["threads"] == torch.get_num_threads()
    again = runner.invoke(app, ["train", "digits", "--output", str(output), *sets(TINY)])
    assert "put back" not in again.output and len(read_rows(output / "report.csv")) == 1


def sets(overrides: list[str]) -> list[str]:
    return [arg for text in overrides for arg in ("--set", text)]


@pytest.mark.slow
def test_a_kill_at_every_write_of_a_longer_continuation_keeps_a_whole_result(
    finished_run, tmp_path, monkeypatch
):
    """`--resume --epochs 2` on a finished one-epoch run, killed at each file replacement in
    turn: the folder holds the one-epoch result or the two-epoch one, never neither, and a
    rerun of either command puts that result's row into the report."""
    old, longer = tiny(), tiny(epochs=2)
    points = None
    at = 0
    while points is None or at < len(points):
        output = tmp_path / (f"kill-{at}" if points is not None else "whole")
        shutil.copytree(finished_run[0], output)
        renamed = kill_at_replace(monkeypatch, at if points is not None else 10**6)
        if points is None:  # a first continuation, not killed: count its write points
            train(longer, output, resume=True)
            points = list(renamed)
            assert RESULT_FILE in points and "report.csv" in points
            monkeypatch.undo()
            reset()
            continue
        with pytest.raises(Killed):
            train(longer, output, resume=True)
        monkeypatch.undo()
        reset()
        folder = run_folder(output, old)
        result = json.loads((folder / RESULT_FILE).read_text())
        assert result["epochs"] in (1, 2), (at, points[at])
        # The command whose result the folder holds finds it finished, and puts its row back.
        kept = old if result["epochs"] == 1 else longer
        assert finished(output, kept, resume=True) == folder, (at, points[at])
        assert train(kept, output, resume=True) == result
        reset()
        assert report_has(output, result), (at, points[at])
        if result["epochs"] == 1 and at == len(points) // 2:  # the continuation goes on
            assert train(longer, output, resume=True)["epochs"] == 2
            reset()
            assert report_has(output, json.loads((folder / RESULT_FILE).read_text()))
        shutil.rmtree(output)
        at += 1


@pytest.mark.slow
def test_a_second_copy_of_a_training_run_is_refused_at_once(tmp_path):
    """While one process holds a run folder, the same command in another process is one line
    and trains nothing; the lock file goes with its holder."""
    recipe = tiny()
    folder = run_folder(tmp_path, recipe)
    with lock_run(folder):
        second = subprocess.run(
            [sys.executable, "-m", "timm_scaling", "train", "digits"]
            + ["--output", str(tmp_path), *sets(TINY)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stderr
        assert f"is being trained by another process (pid {os.getpid()})" in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
    assert not folder.exists()  # refused before it wrote anything: no folder left behind


@pytest.mark.slow
def test_a_diverging_loss_stops_the_run_as_nan_does(tmp_path):
    """A loss 100x its first (an lr far too high: 1e9 while top-1 falls to chance) is divergence
    as a nan is: no result, no row, the message names the loss and the fix."""
    recipe = tiny(epochs=2)
    trainer = Trainer(recipe, tmp_path)
    forwards = 0

    def blow_up(module, args, output):
        nonlocal forwards
        forwards += module.training
        return output * 1e6 if module.training and forwards > 1 else None

    trainer.unwrapped.register_forward_hook(blow_up)
    with pytest.raises(LossNotFinite) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "over 100x its first" in message and "epoch 1" in message and "\n" not in message
    assert "lower --lr" in message and "no checkpoint of a finished epoch is kept" in message
    assert message.endswith("lower --lr (or raise opt_eps) and train again")  # nothing kept
    assert not (run_folder(tmp_path, recipe) / RESULT_FILE).exists()
    assert not (tmp_path / "report.csv").exists()


@pytest.mark.slow
def test_nan_weights_after_the_last_update_are_divergence_not_a_result(tmp_path):
    """The last update of epoch 2 leaves nan weights (its own loss was finite, counted before):
    evaluation's logits are nan, and topk ranks a nan first, so top-1 was class 0's share of
    the images, written as the run's result (and checkpointed). Now it is divergence."""
    recipe = tiny(epochs=2)
    trainer = Trainer(recipe, tmp_path)
    count = trainer.count

    def poisoning(tally, loss, images, lr):
        count(tally, loss, images, lr)
        if trainer.num_updates == recipe.epochs * len(trainer.train_batches):
            with torch.no_grad():
                trainer.evaluated_model.get_classifier().weight.fill_(float("nan"))

    trainer.count = poisoning
    with pytest.raises(LossNotFinite) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "outputs hold nan or inf for 32 of 32 validation images after epoch 2" in message
    assert "its last finished epoch (1, epoch-0001) is kept" in message and "\n" not in message
    folder = run_folder(tmp_path, recipe)
    # Resumed, it would go on at the lr it diverged with: the advice says where to train again.
    assert message.endswith(f"and train again into another --output, or delete {folder} first")
    assert (folder / CHECKPOINTS / LATEST).read_text().strip() == "epoch-0001"
    assert not (folder / RESULT_FILE).exists()
    assert not (tmp_path / "report.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "whole_group", "word"),
    [
        (signal.SIGINT, True, "interrupted"),  # a terminal's Ctrl-C, to the whole group
        (signal.SIGTERM, False, "terminated"),  # SLURM's and Kubernetes', to the process
        (signal.SIGHUP, True, "hung up"),  # a terminal closed (it killed the run outright)
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_signal_stops_a_run_keeping_its_epochs_and_it_resumes(
    tmp_path, signum, whole_group, word
):
    """Stopped mid-run, `train` ends at once with 128 + the signal and one line saying what the
    run folder keeps and how to go on; its lock is let go; --resume trains the epochs left."""
    env = dict(os.environ)
    command = ["train", "digits", "--output", str(tmp_path), *sets(TINY + ["epochs=3"])]
    folder = run_folder(tmp_path, tiny(epochs=3))
    process = start(command, env)
    wait_for(lambda: (folder / CHECKPOINTS / LATEST).exists(), process)
    if whole_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    kept = rf"{word}: {re.escape(str(folder))} keeps its last finished epoch \([12]\); run "
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(kept + "the same command with --resume to continue it", last), err
    assert "Traceback" not in err
    assert not (folder / LOCK_FILE).exists()
    if signum != signal.SIGINT:  # the folder each leaves is the same: resumed once (CI's time)
        return
    resumed = runner.invoke(app, [*command, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]


# -- damaged files: one line, never a traceback -------------------------------------------------


def one_line(outcome, *words: str) -> None:
    """A CLI outcome that failed with one ``error:`` line naming ``words``, no traceback."""
    assert outcome.exit_code != 0, outcome.output
    assert isinstance(outcome.exception, SystemExit), outcome.exception
    assert "Traceback" not in outcome.output
    lines = outcome.output.strip().splitlines()
    assert lines[-1].startswith("error: "), outcome.output
    assert all(word in lines[-1] for word in words), outcome.output


def damage(output: Path, how) -> Path:
    folder = run_folder(output, tiny())
    (folder / RESULT_FILE).unlink()  # an unfinished run: its checkpoint is what resumes
    how(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, words",
    [
        (
            lambda f: (f / CHECKPOINTS / "epoch-0001" / STATE_FILE).write_text("{garbage"),
            [STATE_FILE, "is not valid JSON"],
        ),
        (lambda f: (f / CHECKPOINTS / LATEST).write_text("epoch-0042\n"), ["names 'epoch-0042'"]),
        (lambda f: (f / CHECKPOINTS / LATEST).write_text(""), ["names ''"]),
        (
            lambda f: shutil.rmtree(f / CHECKPOINTS / "epoch-0001"),
            ["names 'epoch-0001', which is no whole checkpoint"],
        ),
        # recipe.yaml, against which a rerun is checked, damaged or gone: the folder is damaged
        # (not "write one `key: value` a line", nor finished whatever the settings asked).
        (
            lambda f: (f / RECIPE_FILE).write_text("model: [oops\n"),
            [RECIPE_FILE, "cannot be read as a recipe", "is damaged"],
        ),
        (lambda f: (f / RECIPE_FILE).unlink(), [RECIPE_FILE, "is missing", "is damaged"]),
        # emptied, or bytes that are not UTF-8: damaged, not a 14-key diff nor a traceback
        (lambda f: (f / RECIPE_FILE).write_text(""), [RECIPE_FILE, "is empty", "is damaged"]),
        (
            lambda f: (f / RECIPE_FILE).write_bytes(b"model: effnet_b0\nlr: \xff\xfe\n"),
            [RECIPE_FILE, "not UTF-8 text", "is damaged"],
        ),
    ],
)
def test_a_damaged_checkpoint_is_one_line_in_dry_run_and_resume(finished_run, tmp_path, how, words):
    output = copy_of(finished_run, tmp_path)
    damage(output, how)
    recipe = ["--output", str(output), *sets(TINY)]
    one_line(runner.invoke(app, ["train", "digits", "--resume", *recipe]), *words, "delete")
    sweep = tmp_path / "one.yaml"
    sweep.write_text(f"recipe: digits\nset: {TINY}\nmodels: [effnet_b0]\n")
    dry = runner.invoke(app, ["sweep", str(sweep), "--output", str(output), "--dry-run"])
    one_line(dry, *words)


@pytest.mark.slow
def test_resume_speaks_of_epoch_1_only_for_a_run_stopped_in_it(tmp_path, caplog):
    """Sweeps and search start every run with resume: a new run's log said `--resume: ... has no
    checkpoint`, an option nobody passed. Only a run stopped in its first epoch (its recipe
    written, no checkpoint yet) says it starts over."""
    with caplog.at_level("INFO", logger="timm_scaling.train"):
        train(tiny(), tmp_path / "new", resume=True)
    said = [record.getMessage() for record in caplog.records]
    assert said and not any("--resume" in m or "starting from" in m for m in said), said
    reset()
    folder = run_folder(tmp_path / "stopped", tiny())
    folder.mkdir(parents=True)
    tiny().write(folder / "recipe.yaml")  # what a run killed in epoch 1 leaves
    caplog.clear()
    with caplog.at_level("INFO", logger="timm_scaling.train"):
        train(tiny(), tmp_path / "stopped", resume=True)
    assert f"{folder}: no finished epoch to resume; starting from epoch 1" in caplog.text


@pytest.mark.slow
def test_truncated_weights_are_one_line_on_resume(finished_run, tmp_path):
    output = copy_of(finished_run, tmp_path)
    weights = damage(output, lambda f: None) / CHECKPOINTS / "epoch-0001" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    command = ["train", "digits", "--resume", "--output", str(output), *sets(TINY)]
    outcome = runner.invoke(app, command)
    one_line(outcome, "cannot be loaded", "damaged")


@pytest.mark.slow
def test_a_result_holding_a_list_is_one_line_in_collect(finished_run, tmp_path):
    output = copy_of(finished_run, tmp_path)
    (run_folder(output, tiny()) / RESULT_FILE).write_text("[1, 2]\n")
    one_line(runner.invoke(app, ["collect", str(output)]), "holds a JSON list")


# -- collect never replaces rows with fewer without saying so ----------------------------------


@pytest.mark.slow
def test_a_damaged_export_is_exported_again_from_the_last_checkpoint(finished_run, tmp_path):
    """Issue 32.2: a finished run whose model.safetensors was cut (or model/ deleted) counted as
    finished; timm then failed in safetensors. result.json records the export's sizes."""
    output = copy_of(finished_run, tmp_path)
    folder = run_folder(output, tiny())
    weights = folder / "model" / "model.safetensors"
    whole = weights.read_bytes()
    recorded = json.loads((folder / RESULT_FILE).read_text())["export"]
    assert recorded == {p.name: p.stat().st_size for p in (folder / "model").iterdir()}
    weights.write_bytes(whole[:1000])
    sweep = tmp_path / "one.yaml"
    sweep.write_text(f"recipe: digits\nset: {TINY}\nmodels: [effnet_b0]\n")
    dry = runner.invoke(app, ["sweep", str(sweep), "--output", str(output), "--dry-run"])
    assert f"finished, but its exported model/model.safetensors has 1000 of its {len(whole)}" in (
        dry.output
    )
    outcome = runner.invoke(app, ["train", "digits", "--output", str(output), *sets(TINY)])
    assert outcome.exit_code == 0, outcome.output
    assert "finishing it again from its last checkpoint" in outcome.output
    assert weights.read_bytes() == whole  # the same weights, from the final checkpoint
    assert report_has(output, finished_run[1])
    import timm

    timm.create_model(f"local-dir:{folder / 'model'}", pretrained=True)  # loads again
    # Issue 32.8: a damaged result.json beside the final checkpoint is made again from it (it
    # was "delete the folder"); collect names the rerun.
    result = folder / RESULT_FILE
    kept = json.loads(result.read_text())
    result.write_text("{garbage")
    one_line(runner.invoke(app, ["collect", str(output)]), "not valid JSON", "train or sweep")
    dry = runner.invoke(app, ["sweep", str(sweep), "--output", str(output), "--dry-run"])
    assert "finished, but its result.json is not valid JSON: finished again" in dry.output
    outcome = runner.invoke(app, ["train", "digits", "--output", str(output), *sets(TINY)])
    assert outcome.exit_code == 0, outcome.output
    assert "its result.json is not valid JSON: finishing it again" in outcome.output
    again = json.loads(result.read_text())
    assert again == kept | {key: again[key] for key in ("device", "threads")}
    assert weights.read_bytes() == whole
    # no checkpoint to export from: the folder is named damaged
    shutil.rmtree(folder / "model")
    shutil.rmtree(folder / CHECKPOINTS)
    again = runner.invoke(app, ["train", "digits", "--output", str(output), *sets(TINY)])
    one_line(again, "config.json is missing", "keeps no checkpoint", "delete that folder")


@pytest.mark.slow
def test_collect_refuses_to_empty_or_shrink_a_report(finished_run, tmp_path):
    output = copy_of(finished_run, tmp_path)
    assert runner.invoke(app, ["collect", str(output)]).exit_code == 0
    report = output / "report.csv"
    before = report.read_text()
    # A sweep's report folder, or a folder with no runs: an error, the report untouched.
    sweep_folder = output / "demo"
    sweep_folder.mkdir()
    (sweep_folder / "report.csv").write_text(before)
    one_line(runner.invoke(app, ["collect", str(sweep_folder)]), "holds no finished run")
    assert (sweep_folder / "report.csv").read_text() == before
    # A run folder deleted: its row goes only with --prune.
    shutil.rmtree(run_folder(output, tiny()))
    (output / "other").mkdir()
    shutil.copytree(finished_run[0] / run_folder(Path(), tiny()), output / "other" / "run")
    extra = output / "other" / "run" / RESULT_FILE
    extra.write_text(json.dumps(json.loads(extra.read_text()) | {"seed": 7}))
    shrink = runner.invoke(app, ["collect", str(output)])
    one_line(shrink, "1 row(s) with no finished run", "effnet_b0 s0", "--prune")
    assert report.read_text() == before
    pruned = runner.invoke(app, ["collect", str(output), "--prune"])
    assert pruned.exit_code == 0, pruned.output
    assert [r["seed"] for r in read_rows(report)] == ["7"]


@pytest.mark.slow
def test_a_run_finishing_while_collect_rebuilds_keeps_its_row(finished_run, tmp_path, monkeypatch):
    """`collect runs` beside a sweep: a run that finishes while collect reads the run folders
    (its result.json, then its row, as `finishing` writes them) lost its row when collect
    wrote the folders it had read over it. Now its row waits for collect's write, then lands."""
    import threading

    from timm_scaling import collecting, runs

    output = copy_of(finished_run, tmp_path)
    report = output / "report.csv"
    late = output / "late" / "run"
    shutil.copytree(finished_run[0] / run_folder(Path(), tiny()), late)
    (late / RESULT_FILE).unlink()
    result = finished_run[1] | {"seed": 9}

    def finish_late_run() -> None:
        (late / RESULT_FILE).write_text(json.dumps(result))
        timm_scaling.report.put_row(report, runs.report_row(result))

    finisher = threading.Thread(target=finish_late_run)
    read_results = collecting.results

    def results_while_a_run_finishes(paths):
        finisher.start()
        time.sleep(1.0)  # the finishing run's put_row, unless it waits for collect's lock
        return read_results(paths)

    monkeypatch.setattr(collecting, "results", results_while_a_run_finishes)
    outcome = runner.invoke(app, ["collect", str(output)])
    finisher.join(timeout=30)
    assert outcome.exit_code == 0, outcome.output
    assert sorted(r["seed"] for r in read_rows(report)) == ["0", "9"]


@pytest.mark.slow
def test_a_damaged_report_is_refused_before_training_and_collect_rebuilds_it(
    finished_run, tmp_path
):
    """Issue 32.3-5: a run into a damaged report.csv trained whole, then lost its row (or a
    UnicodeDecodeError traceback); the message's `collect` failed the same way."""
    output = copy_of(finished_run, tmp_path)
    assert runner.invoke(app, ["collect", str(output)]).exit_code == 0
    report = output / "report.csv"
    whole = report.read_text()
    cut = whole[: whole.rindex("digits")]  # the row cut mid-write
    not_utf8 = whole.replace("digits", "digits\udcff", 1)  # a byte that is no UTF-8
    args = ["train", "digits", "--output", str(output), *sets(TINY), "--seed", "5"]
    header_cut = whole[:150]  # cut in its header: damaged, not a foreign table
    kinds = [
        (cut, ["line 2 has", "a row cut short"]),
        (not_utf8, ["byte", "not UTF-8 text"]),
        (header_cut, ["cut short in its header (after 150 bytes)"]),
    ]
    for n, (text, words) in enumerate(kinds, 1):
        damaged = text.encode("utf-8", "surrogateescape")
        report.write_bytes(damaged)
        outcome = runner.invoke(app, args)
        one_line(outcome, *words, f"timm-scaling collect {output}")
        assert outcome.exit_code == 3
        assert not run_folder(output, tiny(seed=5)).exists()  # refused before it trained
        assert report.read_bytes() == damaged
        rebuilt = runner.invoke(app, ["collect", str(output)])
        assert rebuilt.exit_code == 0, rebuilt.output
        assert report.read_text() == whole  # the row again, from the run's result.json
        kept = output / ("report.csv.damaged" + f"-{n}" * (n > 1))
        assert kept.read_bytes() == damaged  # kept aside, not lost


def test_a_recipe_file_that_is_not_utf8_is_one_line(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_bytes(b"base: digits\nepochs: 2 # \xe9poques\n")
    outcome = runner.invoke(app, ["train", str(recipe), "--output", str(tmp_path)])
    one_line(outcome, str(recipe), "not UTF-8 text (byte 25)", "save it as UTF-8")


# -- reports: cut rows and impossible accuracies -------------------------------------------------


def test_a_cut_report_row_is_named_by_its_line_not_rewritten(tmp_path):
    report = tmp_path / "report.csv"
    row = {"model": "effnet_b0", "top1": 80.0, "gmacs": 0.4, "seed": 0, "recipe": "digits"}
    timm_scaling.report.put_row(report, row)
    timm_scaling.report.put_row(report, row | {"seed": 1})
    whole = report.read_text()
    report.write_text(whole[: whole.rindex("digits")])  # the last row cut mid-write
    cut = report.read_text()
    fields = rf"report.csv line 3 has \d+ of {len(COLUMNS)} fields"
    with pytest.raises(InputError, match=fields) as caught:
        timm_scaling.report.put_row(report, row | {"seed": 2})
    assert caught.value.exit_code == 3
    assert report.read_text() == cut  # not rewritten with blanks
    outcome = runner.invoke(app, ["frontier", str(report), "-o", str(tmp_path / "f")])
    assert outcome.exit_code == 3
    one_line(outcome, "line 3 has", "collect")


def test_frontier_drops_impossible_accuracies_naming_their_lines(tmp_path):
    report = tmp_path / "report.csv"
    base = {"recipe": "digits", "epochs": 3, "dataset": "digits"}
    good = [("effnet_b0", 0.03, 80.0), ("effnet_b0_w2", 0.1, 85.0), ("effnet_b0_d2", 0.06, 82.0)]
    bad = [("effnet_b0_d3", 0.09, float("inf")), ("effnet_b0_r2", 0.1, 150.0)]
    bad.append(("effnet_b0_phi1", 0.05, -5.0))
    rows = [{"model": m, "gmacs": g, "top1": t, "seed": 0, **base} for m, g, t in good + bad]
    timm_scaling.report.write_rows(report, rows)
    out = tmp_path / "front"
    outcome = runner.invoke(app, ["frontier", str(report), "-o", str(out), "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    assert "dropped 3 of 6 rows" in outcome.output and "outside 0..100" in outcome.output
    assert "lines 5, 6, 7" in outcome.output
    points = json.loads((out / "frontier.json").read_text())["points"]
    assert sorted(p["model"] for p in points) == sorted(m for m, _, _ in good)


def test_sort_based_pareto_front_equals_the_pairwise_definition():
    import numpy as np

    from timm_scaling.frontier import pareto_front

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 25))
        xs, ys = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)
        for lower_x, higher_y in ((True, True), (False, True), (True, False), (False, False)):
            x = xs * (1 if lower_x else -1)
            y = ys * (1 if higher_y else -1)
            no_worse = (x[None, :] <= x[:, None]) & (y[None, :] >= y[:, None])
            better = (x[None, :] < x[:, None]) | (y[None, :] > y[:, None])
            expected = ~(no_worse & better).any(axis=1)
            assert (pareto_front(xs, ys, lower_x, higher_y) == expected).all(), (xs, ys)


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "digits", "--output", "FILE/sub"], ["--output", "a file is in the way"]),
        (["train", "digits", "--output", "x" * 300], ["a name over 255 bytes"]),
        (["profile", "effnet_b0", "--no-speed", "--csv", "FOLDER"], ["Is a directory"]),
        (["train", "digits", "--output", "."], ["report.csv is not a file", "move it away"]),
        (["sweep", "demo", "--output", "."], ["report.csv is not a file"]),
        # Someone else's report.csv there: its header refused the row once the run had trained.
        (["train", "digits", "--output", "FOREIGN"], ["FOREIGN/report.csv is not a timm-scaling"]),
        (["sweep", "demo", "--output", "FOREIGN"], ["header differs from ours"]),
        (["collect", "FOREIGN"], ["move it away", "collect FOREIGN --prune` replaces it"]),
    ],
)
def test_unwritable_outputs_are_one_line(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("a file\n")
    Path("FOLDER").mkdir()
    Path("report.csv").mkdir()  # where every finished run would add its row
    Path("FOREIGN").mkdir()
    Path("FOREIGN/report.csv").write_text("model,top1,note\nfoo,50,mine\n")
    outcome = runner.invoke(app, args)
    one_line(outcome, *words)
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    # nothing made: refused before training
    assert made == ["FILE", "FOLDER", "FOREIGN", "FOREIGN/report.csv", "report.csv"]


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "free space"),
        (errno.EEXIST, "move that file away"),
        (errno.EISDIR, "a folder is where a file goes"),
        (errno.EACCES, "pick a path you can write to, or change its permissions"),
    ],
)
def test_a_file_system_error_says_what_to_do_about_it(code, advice):
    # issue 32.8: every OS error said "free space, or pick a path you can write to"
    from timm_scaling.cli.base import os_error

    message = os_error(OSError(code, os.strerror(code), "runs/x"))
    assert message.startswith(f"runs/x: {os.strerror(code)}: {advice}")
    assert ("free space" in message) == (code == errno.ENOSPC)


def test_a_run_folder_it_cannot_write_is_one_line_naming_its_lock(tmp_path, monkeypatch):
    """Issue 32.8: a read-only run folder was reported as a `.lock` cleanup error. (Root ignores
    modes: the folder refuses its lock file as a read-only one does.)"""
    folder = run_folder(tmp_path, tiny())
    folder.mkdir(parents=True)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if Path(path) == folder / LOCK_FILE:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    outcome = runner.invoke(app, ["train", "digits", "--output", str(tmp_path), *sets(TINY)])
    one_line(outcome, f"{folder / LOCK_FILE}: Permission denied", "change its permissions")
    assert "clean" not in outcome.output and list(folder.iterdir()) == []


def test_an_empty_report_is_named_empty_not_foreign(tmp_path):
    (tmp_path / "report.csv").write_text("")
    outcome = runner.invoke(app, ["curves", str(tmp_path)])
    one_line(outcome, "report.csv is empty", f"timm-scaling collect {tmp_path}")
    assert "header differs" not in outcome.output


def test_frontier_of_a_top5_at_100_fits_without_a_bounds_error(tmp_path):
    """Every top-5 at 100% (digits): 100 - accuracy is 0, which left the power law's c no room."""
    report = tmp_path / "report.csv"
    costs = {"effnet_b0": 0.03, "effnet_b0_w1p4": 0.05, "effnet_b0_w2": 0.1}
    costs |= {"effnet_b0_d2": 0.06, "effnet_b0_d3": 0.09, "effnet_b0_r1p3": 0.05}
    costs |= {"effnet_b0_r1p5": 0.07, "effnet_b0_phi1": 0.05, "effnet_b0_phi2": 0.1}
    rows = [
        {"model": m, "gmacs": g, "top1": 80 + s, "top5": 100.0, "seed": s, "recipe": "digits"}
        for m, g in costs.items()
        for s in range(2)
    ]
    timm_scaling.report.write_rows(report, rows)
    out = tmp_path / "front"
    outcome = runner.invoke(app, ["frontier", str(report), "--y", "top5", "-o", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads((out / "frontier.json").read_text())["y"]["column"] == "top5"


@pytest.mark.slow
@pytest.mark.parametrize(
    "resume, full",
    [(False, 2), (True, 2), (False, 1)],
    ids=["train", "train --resume, sweep", "the first epoch's"],
)
def test_a_disk_filling_up_at_a_checkpoint_is_one_line_keeping_the_last(tmp_path, resume, full):
    """safetensors raises its own error on a full disk: the half-written checkpoint goes, the
    last whole one stays, and the message says to free space and run the same command with
    --resume, or again where it resumes already (`sweep` has no --resume: it resumes each run)
    or where no epoch is kept (it starts afresh)."""
    recipe = tiny(epochs=2)
    trainer = Trainer(recipe, tmp_path, resume=resume)
    save_state = trainer.accelerator.save_state

    def full_disk(path):
        if path.endswith(f"epoch-000{full}"):
            Path(path).mkdir(parents=True)
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("Error while serializing: I/O error: No space left on device")
        return save_state(path)

    trainer.accelerator.save_state = full_disk
    with pytest.raises(UserError) as caught:
        trainer.fit()
    message = str(caught.value)
    free = shutil.disk_usage(tmp_path).free / 2**20
    assert re.search(r"No space left on device; (\d+) MB free there\)", message), message
    assert abs(int(re.search(r"(\d+) MB free", message)[1]) - free) < 100  # others write too
    kept = "its last finished epoch (1, epoch-0001) is kept"
    assert (kept if full == 2 else "no checkpoint of a finished epoch is kept") in message
    again = "with --resume" if full == 2 and not resume else "again"
    assert message.endswith(f"free space, then run the same command {again}")
    assert "\n" not in message
    checkpoints = run_folder(tmp_path, recipe) / CHECKPOINTS
    left = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else []
    assert left == (["epoch-0001", LATEST] if full == 2 else [])


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(tmp_path):
    """`timm-scaling sweep demo --dry-run | head -1` on more lines than a pipe holds (64 KiB):
    the reader goes away, and the command ends without an error line about it."""
    dry = f"{sys.executable} -m timm_scaling sweep demo --seeds 300 --dry-run --output runs"
    command = f"{dry} | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.stdout.count("\n") == 1 and "demo-effnet_b0-s0" in done.stdout
    assert done.stderr == "" and done.returncode == 141


# -- smaller faults (issue 20, case 11) ----------------------------------------------------------


def test_a_model_kwarg_without_a_value_is_named_as_typed():
    outcome = runner.invoke(app, ["profile", "effnet_b0", "--no-speed", "--model-kwarg", "foo"])
    one_line(outcome, "--model-kwarg 'foo': expected key=value")
    assert "--set" not in outcome.output


def test_curves_on_a_report_file_names_the_folder_to_pass(tmp_path):
    report = tmp_path / "report.csv"
    report.write_text("model\n")
    one_line(
        runner.invoke(app, ["curves", str(report)]), f"pass the folder holding it ({tmp_path})"
    )


def test_an_unknown_model_lists_the_recipes():
    from timm_scaling.recipes import list_recipes

    outcome = runner.invoke(app, ["profile", "effnet_b0_dd2", "--no-speed"])
    one_line(outcome, "unknown model 'effnet_b0_dd2'", ", ".join(list_recipes()))


def test_measure_missing_measures_an_accuracy_table_with_no_cost_table(tmp_path):
    table = tmp_path / "acc.csv"
    table.write_text("model,top1,img_size\neffnet_b0,77.0,224\nresnet18,69.7,224\n")
    out = tmp_path / "front"
    outcome = runner.invoke(
        app, ["frontier", str(table), "--measure-missing", "-o", str(out), "--format", "json"]
    )
    assert outcome.exit_code == 0, outcome.output
    points = {p["model"]: p for p in json.loads((out / "frontier.json").read_text())["points"]}
    assert points.keys() == {"effnet_b0", "resnet18"}
    assert points["resnet18"]["costs"]["gmacs"] > points["effnet_b0"]["costs"]["gmacs"] > 0.3


def test_frontier_of_extreme_costs_drops_or_writes_them_short(tmp_path):
    # issue 32.7: gmacs 1e308 was a matplotlib traceback, 1e-320 a 330-character number
    rows = "resnet18,1.8,70\nresnet34,3.6,73\n"
    for cost, kept in (("1e308", False), ("1e-320", True)):
        table = tmp_path / f"{cost}.csv"
        table.write_text(f"model,gmacs,top1\n{rows}resnet50,{cost},76\n")
        outcome = runner.invoke(app, ["frontier", str(table), "-o", str(tmp_path / cost)])
        assert outcome.exit_code == 0, outcome.output
        assert (tmp_path / cost / "frontier.png").is_file()
        points = json.loads((tmp_path / cost / "frontier.json").read_text())["points"]
        assert ("resnet50" in {p["model"] for p in points}) == kept
        if not kept:
            assert "below 1e+30 (lines 4)" in outcome.output
        assert max(map(len, re.findall(r"[\d.e+-]{12,}", outcome.output)), default=0) < 20


@pytest.mark.slow
def test_a_full_disk_at_the_row_names_the_report_and_the_kept_result(
    finished_run, tmp_path, monkeypatch
):
    """Issue 32.8: the row's write failing on a full disk named a temporary file, and not that
    the run was finished with its result.json kept; the same command puts the row back."""
    output = copy_of(finished_run, tmp_path)
    folder = run_folder(output, tiny())
    (folder / RESULT_FILE).unlink()  # finished again from its last checkpoint, then its row

    def full(path, row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{path}.x.tmp")

    monkeypatch.setattr("timm_scaling.train.finishing.put_row", full)
    args = ["train", "digits", "--resume", "--output", str(output), *sets(TINY)]
    one_line(
        runner.invoke(app, args),
        f"could not add the run's row to {output / 'report.csv'} (No space left on device)",
        f"its result.json kept in {folder}",
        "run the same command again to put the row back",
    )
    assert (folder / RESULT_FILE).is_file()
    monkeypatch.undo()
    reset()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "put back" in again.output, again.output
