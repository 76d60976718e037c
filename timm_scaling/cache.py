"""Where counted costs and timm's real architectures are cached between processes.

Imports nothing of ours: profile (costs) and models (architectures) both read it.
"""

from __future__ import annotations

import os
from pathlib import Path

# The cache folder, if set; else ~/.cache/timm-scaling.
CACHE_ENV = "TIMM_SCALING_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "timm-scaling")
