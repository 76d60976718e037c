"""``sweep --mps``: jobs that share a GPU get an MPS daemon of the sweep's own, stopped when the
sweep ends however it ends; one running already is used as it is; none to be had is a warning.

The control program here is conftest's ``mps_control``, a stand-in for NVIDIA's: no CPU
machine has the driver. A GPU session runs the real one (benchmarks/gpu_check.py, step e).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from timm_scaling import mps, workers


def test_a_daemon_of_its_own_starts_and_stops(mps_control):
    with mps.mps_daemon() as env:
        pipe = Path(env["CUDA_MPS_PIPE_DIRECTORY"])
        assert (pipe / "control").exists()  # started, in a folder of its own
        assert Path(env["CUDA_MPS_LOG_DIRECTORY"]).is_dir()
        assert pipe.name == "pipe" and pipe.parent.name.startswith("timm-scaling-mps-")
    assert mps_control.read_text().splitlines() == [
        f"start {pipe} {env['CUDA_MPS_LOG_DIRECTORY']}",
        f"quit {pipe}",
    ]
    assert not pipe.parent.exists()  # its folder is removed


def test_the_daemon_stops_when_the_sweep_is_interrupted(mps_control):
    with pytest.raises(KeyboardInterrupt), mps.mps_daemon() as env:
        raise KeyboardInterrupt
    assert mps_control.read_text().splitlines()[-1] == f"quit {env['CUDA_MPS_PIPE_DIRECTORY']}"


def test_a_running_daemon_is_used_as_it_is(mps_control, tmp_path, monkeypatch, caplog):
    pipe = tmp_path / "theirs"
    pipe.mkdir()
    (pipe / "control").touch()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    with caplog.at_level(logging.WARNING), mps.mps_daemon() as env:
        assert env == {}
    assert not mps_control.exists()  # never started nor stopped
    assert (pipe / "control").exists() and "running already" in caplog.text


def test_without_mps_the_jobs_share_the_gpu_after_a_warning(mps_control, monkeypatch, caplog):
    monkeypatch.setenv("MPS_FAIL", "An instance of this daemon is already running")
    with caplog.at_level(logging.WARNING), mps.mps_daemon() as env:
        assert env == {}
    assert "did not start (An instance of this daemon is already running)" in caplog.text
    monkeypatch.setenv("PATH", "/nonexistent")
    with mps.mps_daemon() as env:
        assert env == {}
    assert f"no {mps.CONTROL} here" in caplog.text


def test_mps_only_where_jobs_share_a_gpu(mps_control, caplog):
    for jobs, gpus in ((2, ["0", "1"]), (4, [])):
        with caplog.at_level(logging.WARNING), workers.sharing(True, jobs, gpus) as env:
            assert env == {}
        assert f"{jobs} job(s) on {len(gpus)} GPU(s) share none" in caplog.text
    with workers.sharing(False, 4, ["0"]) as env:
        assert env == {}
    assert not mps_control.exists()


@pytest.mark.slow
def test_every_job_sharing_a_gpu_runs_under_the_daemon(mps_control):
    """Real spawned workers: each sees the daemon's pipe folder, and the daemon stops after."""
    seen = []
    tasks = ["CUDA_MPS_PIPE_DIRECTORY"] * 4
    with workers.sharing(True, 2, ["0"]) as shared:
        workers.in_pool(
            os.getenv, tasks, 2, ["0"], lambda *done: seen.append(done[2]), shared=shared
        )
    assert seen == [shared["CUDA_MPS_PIPE_DIRECTORY"]] * 4
    assert mps_control.read_text().splitlines()[-1] == f"quit {seen[0]}"
