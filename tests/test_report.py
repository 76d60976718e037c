"""report.csv rows keyed by run folder; every file the tool writes gets the umask's mode."""

import os
import stat

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from timm_scaling.cli import app
from timm_scaling.files import atomic_write
from timm_scaling.report import (
    COLUMNS,
    LEGACY_COLUMNS,
    missing_rows,
    put_row,
    put_rows,
    read_rows,
)

runner = CliRunner()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def row(model: str, seed: int, top1: float, recipe: str = "digits") -> dict:
    return dict(model=model, method="baseline", recipe=recipe, seed=seed, top1=top1, epochs=1)


def test_a_run_trained_again_replaces_its_row(tmp_path):
    report = tmp_path / "report.csv"
    put_row(report, row("effnet_b0", 0, 50.0))
    put_row(report, row("effnet_b0", 1, 60.0))  # another seed: another run folder
    put_row(report, row("effnet_b0", 0, 70.0, recipe="demo"))  # another recipe: another folder
    put_row(report, row("effnet_b0", 0, 80.0))  # the first run, trained again
    rows = read_rows(report)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["recipe"], r["seed"], r["top1"]) for r in rows] == [
        ("digits", "1", "60.0"),
        ("demo", "0", "70.0"),
        ("digits", "0", "80.0"),
    ]


def test_rows_put_at_once_replace_their_runs_and_keep_the_others(tmp_path):
    report = tmp_path / "report.csv"
    put_row(report, row("effnet_b0", 0, 50.0))
    put_row(report, row("effnet_b0", 1, 60.0))
    put_rows(report, [row("effnet_b0", 0, 80.0), row("resnet18", 0, 40.0)])
    assert [(r["model"], r["seed"], r["top1"]) for r in read_rows(report)] == [
        ("effnet_b0", "1", "60.0"),
        ("effnet_b0", "0", "80.0"),
        ("resnet18", "0", "40.0"),
    ]
    held, changed, absent = row("effnet_b0", 1, 60.0), row("resnet18", 0, 41.0), row("x", 0, 1)
    assert missing_rows(report, [held, changed, absent]) == [changed, absent]
    assert missing_rows(tmp_path / "none.csv", [held]) == [held]


def test_runs_differing_only_in_model_kwargs_keep_a_row_each(tmp_path):
    report = tmp_path / "report.csv"
    dilated = {**row("resnet18", 0, 50.0), "model_kwargs": '{"output_stride": 8}'}
    put_row(report, row("resnet18", 0, 40.0))
    put_row(report, dilated)
    put_row(report, {**dilated, "top1": 55.0})  # the dilated run, trained again
    rows = read_rows(report)
    assert [(r["model_kwargs"], r["top1"]) for r in rows] == [
        ("", "40.0"),
        ('{"output_stride": 8}', "55.0"),
    ]


def test_a_report_written_before_model_kwargs_is_upgraded(tmp_path):
    report = tmp_path / "report.csv"
    old = dict.fromkeys(LEGACY_COLUMNS, "") | {"model": "effnet_b0", "recipe": "digits"}
    old |= {"seed": "0", "top1": "50.0"}
    report.write_text(",".join(LEGACY_COLUMNS) + "\n" + ",".join(old.values()) + "\n")
    put_row(report, row("effnet_b0", 1, 60.0))
    put_row(report, row("effnet_b0", 0, 70.0))  # replaces the old row: the same run folder
    rows = read_rows(report)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["seed"], r["top1"]) for r in rows] == [("1", "60.0"), ("0", "70.0")]


@pytest.mark.slow
def test_written_files_get_the_umask_mode(tmp_path, umask_022, monkeypatch):
    atomic_write(tmp_path / "note.txt", "x")
    put_row(tmp_path / "report.csv", row("effnet_b0", 0, 50.0))
    rng = np.random.default_rng(0)
    points = [
        dict(model=f"{method}_{k}", method=method, gmacs=cost, top1=60 + 5 * k + rng.normal())
        for method in ("compound", "width")
        for k, cost in enumerate((0.1, 0.2, 0.4))
    ]
    pd.DataFrame(points).to_csv(tmp_path / "points.csv", index=False)
    out = tmp_path / "frontier"
    outcome = runner.invoke(
        app, ["frontier", str(tmp_path / "points.csv"), "--out", str(out), "--bootstrap", "100"]
    )
    assert outcome.exit_code == 0, outcome.output
    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path / "cache"))
    costs = tmp_path / "cost.csv"
    outcome = runner.invoke(app, ["profile", "effnet_b0", "--no-speed", "--csv", str(costs)])
    assert outcome.exit_code == 0, outcome.output
    written = [tmp_path / "note.txt", tmp_path / "report.csv", costs, *out.iterdir()]
    assert {p.name for p in out.iterdir()} >= {"frontier.json", "frontier.md", "frontier.png"}
    assert {p.name: oct(mode(p)) for p in written} == {p.name: "0o644" for p in written}


def test_a_killed_writers_temporary_file_goes_at_the_next_write(tmp_path):
    # issue 32.9: a sweep's `.frontier.md.*.tmp` from a kill stayed for good
    import socket
    import subprocess

    from timm_scaling.files import atomic_write

    host = socket.gethostname()
    ended = subprocess.Popen(["true"])
    ended.wait()  # a pid that no process has now
    target = tmp_path / "frontier.md"
    dead = tmp_path / f".frontier.md.{host}-{ended.pid}.x1.tmp"
    live = tmp_path / f".frontier.md.{host}-{os.getpid()}.x2.tmp"  # a writer at work
    elsewhere = tmp_path / f".frontier.md.otherhost-{ended.pid}.x3.tmp"  # a shared disk's
    for path in (dead, live, elsewhere):
        path.write_text("half")
    atomic_write(target, "whole\n")
    assert target.read_text() == "whole\n"
    assert not dead.exists() and live.exists() and elsewhere.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == sorted(
        [live.name, elsewhere.name]
    )


def test_a_lock_file_that_no_process_holds_is_removed_one_held_stays(tmp_path):
    # issue 32.9: `runs/.report.csv.lock` after SIGINT, a kill-era `.lock` in a run folder
    from timm_scaling.files import Busy, clear_stale_lock, locked
    from timm_scaling.outputs import check_output

    stale = tmp_path / ".report.csv.lock"
    stale.write_text("12345\n")  # its holder was killed
    check_output(tmp_path)
    assert not stale.exists()
    held = tmp_path / "run" / ".lock"
    held.parent.mkdir()
    with locked(held, wait=False):
        clear_stale_lock(held)
        assert held.exists()  # its holder is alive: left alone
        with pytest.raises(Busy), locked(held, wait=False):
            pass
    assert not held.exists()
