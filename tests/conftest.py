"""Shared test set-up: tests marked ``cuda`` are skipped where no GPU is visible; modules that
train use the ``isolated`` fixture (``pytestmark = pytest.mark.usefixtures("isolated")``).

Trained runs take disk (a digits run's model and checkpoint are 60-180 MB): a passing test's
``tmp_path`` is removed when it ends (``tmp_path_retention_policy`` in pyproject.toml), and a
module's shared runs live in ``module_tmp_path``, removed after its module, so that the suite
needs about 1 GB of free disk at a time, not the sum of every run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def isolated(tmp_path_factory, monkeypatch):
    """Cost counts cached in the tests' own folder, not the home folder; no process count
    inherited from a launcher; Accelerate's process state reset after each test."""
    from accelerate.state import AcceleratorState

    from timm_scaling.train import NUM_PROCESSES_ENV

    monkeypatch.setenv("TIMM_SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv(NUM_PROCESSES_ENV, raising=False)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def module_tmp_path(request, tmp_path_factory):
    """A folder for a module's shared runs, removed after the module unless one of its tests
    failed (kept to look into, as pytest keeps a failed test's ``tmp_path``)."""
    failed = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m cuda` on one)")
    for item in cuda:
        item.add_marker(skip)


MPS_FAKE = """#!/bin/sh
if [ "$1" = "-d" ]; then
    [ -n "$MPS_FAIL" ] && { echo "$MPS_FAIL" >&2; exit 1; }
    touch "$CUDA_MPS_PIPE_DIRECTORY/control"
    echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$MPS_CALLS"
    exit 0
fi
read command
echo "$command $CUDA_MPS_PIPE_DIRECTORY" >> "$MPS_CALLS"
rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"
"""


@pytest.fixture
def mps_control(tmp_path, monkeypatch) -> Path:
    """A stand-in for NVIDIA's MPS control program on PATH, doing what the real one does to the
    files CUDA looks at (``-d`` makes the pipe folder's ``control``; ``quit`` on stdin removes
    it; MPS_FAIL set: ``-d`` fails saying it); returns the file each call is logged to."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "nvidia-cuda-mps-control"
    program.write_text(MPS_FAKE)
    program.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MPS_CALLS", str(calls))
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "nobody-runs-one"))
    return calls
