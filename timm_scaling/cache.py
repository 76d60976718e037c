"""Where counted costs and timm's real architectures are cached between processes.

Imports nothing of ours at import time: profile (costs) and models (architectures) both read
it. A cache is only a shortcut: one that cannot be written is a warning, never an error.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# The cache folder, if set; else ~/.cache/timm-scaling.
CACHE_ENV = "TIMM_SCALING_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "timm-scaling")


def store(path: Path, text: str) -> None:
    """Write a cache file atomically; where it cannot be (a read-only home, a full disk), warn
    once and go on: the value is counted again next time."""
    from timm_scaling.files import atomic_write

    try:
        atomic_write(path, text)
    except OSError as err:
        _warn_once(str(err.strerror or err))


@functools.cache
def _warn_once(why: str) -> None:
    log.warning(
        f"cache not written to {cache_dir()} ({why}): costs and architectures are counted "
        f"again next time; set {CACHE_ENV} to a folder you can write to"
    )
