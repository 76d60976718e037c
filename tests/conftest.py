"""Shared test set-up: tests marked ``cuda`` are skipped where no GPU is visible."""

from __future__ import annotations

import pytest


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
