"""Regenerate tests/golden/params.json: parameter counts of every built-in variant.

Never edit the JSON by hand: run `python tests/golden/regenerate.py` after a deliberate change
(a new variant, a new timm), and review the diff. Counted on the meta device through timm's
registry at timm's default 1000 classes and at 10 classes (the CIFAR-10 head).
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch

from timm_scaling.models import BUILTIN_SCALINGS

GOLDEN = Path(__file__).with_name("params.json")
NUM_CLASSES = (1000, 10)


def count(name: str, num_classes: int) -> int:
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def compute() -> dict:
    return {
        "timm": timm.__version__,
        "params": {
            s.name: {str(n): count(s.name, n) for n in NUM_CLASSES} for s in BUILTIN_SCALINGS
        },
    }


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
