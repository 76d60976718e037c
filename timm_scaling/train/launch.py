"""Several training processes on one machine, through ``accelerate launch``."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from timm_scaling.errors import UserError
from timm_scaling.train.logs import log

# Set by `launch` for its workers: the process count they must find themselves in.
NUM_PROCESSES_ENV = "TIMM_SCALING_NUM_PROCESSES"
# ... and the pid of the command that started their launcher.
LAUNCHED_BY_ENV = "TIMM_SCALING_LAUNCHED_BY"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel send this process SIGTERM when its parent ends (Linux; elsewhere
    nothing): a `--num-processes` launcher whose command was killed (kill -9 frees the run
    folder's lock), or workers whose launcher was, stop instead of training on unlocked.

    ``parent``: the pid of the process that started this one, where it is known; a process
    that calls this seconds after it started (a sweep's job, once torch is imported) must pass
    it, for its parent may have ended meanwhile, and ``os.getppid()`` would name the process
    that adopted it. None: the parent now (right after a fork)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid() if parent is None else parent
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request: nobody will send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_launcher() -> None:
    """In a worker of :func:`launch` (elsewhere nothing): end with the launcher between it and
    the command. It asks once its imports are done, seconds after it started: a launcher killed
    meanwhile (the process that adopted this one is no child of the command) ends it at once;
    it would train on with the run folder unlocked."""
    command = os.environ.get(LAUNCHED_BY_ENV)
    if command is None or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    if _parent_of(launcher) != int(command):
        os.kill(os.getpid(), signal.SIGTERM)
    die_with_parent(launcher)


def launched_world() -> int:
    """The number of processes the launcher that started this one started (the WORLD_SIZE of
    torchrun, which ``accelerate launch`` runs, beside its LOCAL_RANK); 1 where none did."""
    launched = "LOCAL_RANK" in os.environ
    return int(os.environ.get("WORLD_SIZE") or 1) if launched else 1


def _parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (Linux's /proc), None if it has ended."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: Sequence[str], num_processes: int) -> int:
    """Run ``timm-scaling ARGS`` in ``num_processes`` processes with ``accelerate launch``.

    On a CPU, ``accelerate launch --cpu --num_processes N`` starts a single process; with
    ``ACCELERATE_USE_CPU=1`` and ``--multi_gpu`` it starts N, talking over gloo. The workers
    inherit this environment (PYTHONPATH included) and check their count. Returns their exit code.
    """
    gpus = torch.cuda.device_count()
    env = dict(os.environ, **{NUM_PROCESSES_ENV: str(num_processes)})
    env[LAUNCHED_BY_ENV] = str(os.getpid())
    if gpus == 0:
        env["ACCELERATE_USE_CPU"] = "1"
    elif gpus < num_processes:
        raise UserError(
            f"--num-processes {num_processes}: this machine has {gpus} GPU(s); "
            f"use --num-processes {gpus} or fewer"
        )
    started_by = functools.partial(die_with_parent, os.getpid())
    # torchrun's log folder (empty unless it tees) went into /tmp at every launch and stayed
    with tempfile.TemporaryDirectory(prefix="timm-scaling-launch-") as logs:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--quiet",
            "--log_dir",
            logs,
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",  # the recipe's precision is passed to Accelerator, which takes precedence
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            "-m",
            "timm_scaling",
            *args,
        ]
        log.info(f"launching {num_processes} processes: {' '.join(command)}")
        with subprocess.Popen(command, env=env, preexec_fn=started_by) as launcher:
            try:
                return launcher.wait()
            except KeyboardInterrupt:  # Ctrl-C, or SIGINT to this process alone: stop them
                launcher.send_signal(signal.SIGINT)
                launcher.wait()
                raise
