"""NVIDIA's Multi-Process Service for jobs that share a GPU (``sweep --mps``, issue 21).

Without MPS, processes on one GPU take turns (time slices); with it, their kernels run on the
GPU at once, which is what several launch-bound 32 px runs on one big GPU need. Where an MPS
control daemon already runs (``CUDA_MPS_PIPE_DIRECTORY``, by default ``/tmp/nvidia-mps``), every
CUDA process uses it as it is. Otherwise :func:`mps_daemon` starts one of the sweep's own, with
its pipe and log folders in a temporary folder (no other user's processes join it), hands the
jobs its environment, and stops it when the sweep ends, however it ends. Where the driver has
no ``nvidia-cuda-mps-control`` or the daemon does not start, the jobs share the GPU without it,
after a warning.

Imports no torch.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"
# Seconds the control program may take to start or stop the daemon.
TIMEOUT = 30


def running() -> bool:
    """An MPS control daemon is already up where CUDA processes look for it."""
    folder = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", DEFAULT_PIPE_DIRECTORY))
    return (folder / "control").exists()


def _control(env: dict[str, str], *args: str, text: str | None = None) -> str | None:
    """Run the control program; None where it worked, else why not."""
    try:
        done = subprocess.run(
            [CONTROL, *args],
            input=text,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[:200]


@contextmanager
def mps_daemon() -> Iterator[dict[str, str]]:
    """An MPS daemon for the block's jobs: yields what to add to their environment (nothing
    where one already runs, or none can be started)."""
    if running():
        log.warning("--mps: an MPS daemon is running already; the jobs use it")
        yield {}
        return
    if shutil.which(CONTROL) is None:
        log.warning(f"--mps: no {CONTROL} here (not an NVIDIA driver's machine); without MPS")
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="timm-scaling-mps-") as folder:
        env = {
            "CUDA_MPS_PIPE_DIRECTORY": str(Path(folder) / "pipe"),
            "CUDA_MPS_LOG_DIRECTORY": str(Path(folder) / "log"),
        }
        for path in env.values():
            Path(path).mkdir()
        failed = _control(env, "-d")
        if failed is not None:
            log.warning(f"--mps: the MPS daemon did not start ({failed}); without MPS")
            yield {}
            return
        try:
            yield env
        finally:
            failed = _control(env, text="quit\n")
            if failed is not None:
                log.warning(f"--mps: the MPS daemon did not stop ({failed})")
