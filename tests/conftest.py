"""Shared test set-up: tests marked ``cuda`` are skipped where no GPU is visible; modules that
train use the ``isolated`` fixture (``pytestmark = pytest.mark.usefixtures("isolated")``)."""

from __future__ import annotations

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
