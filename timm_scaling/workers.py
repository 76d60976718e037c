"""A pool of training processes on this machine: ``--jobs`` workers, each with its GPU, its
port and its share of the CPU threads; how many fit on a GPU by a sweep's plan; and stopping
them all at once (Ctrl-C, SIGTERM).

Imports no torch until a worker or a GPU count needs it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from timm_scaling.errors import RunError, UserError
from timm_scaling.plan import fitting_per_gpu, read_plan

log = logging.getLogger(__name__)
T = TypeVar("T")


def device_count() -> int:
    """The GPUs this process can see (0 on a CPU machine)."""
    import torch

    return torch.cuda.device_count()


def visible_gpus() -> list[str]:
    """The GPUs this process sees, each as a child's CUDA_VISIBLE_DEVICES must name it (our
    ``cuda:1`` is physical GPU 5 under CUDA_VISIBLE_DEVICES=4,5)."""
    count = device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(" ", "")
    names = listed.split(",") if listed else [str(i) for i in range(count)]
    return names[:count]


def select_gpus(text: str | None) -> list[str]:
    """``--gpus 0,2`` -> the CUDA_VISIBLE_DEVICES names of those visible GPUs; None: all."""
    visible = visible_gpus()
    if text is None:
        return visible
    shown = ", ".join(str(i) for i in range(len(visible))) or "none"
    try:
        chosen = sorted({int(part) for part in text.split(",")})
    except ValueError:
        chosen = [-1]
    missing = [i for i in chosen if not 0 <= i < len(visible)]
    if missing:
        raise UserError(
            f"--gpus {text}: no GPU {missing[0]} here; the visible GPUs are: {shown} "
            "(comma-separated indices, e.g. --gpus 0,1)"
        )
    return [visible[i] for i in chosen]


def job_environments(
    jobs: int, gpus: Sequence[str], shared: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """What each of ``jobs`` worker processes adds to its environment: ``shared`` (an MPS
    daemon's), job i's GPU ``gpus[i mod len(gpus)]`` (none on a CPU) and a free port of its
    own, so that no two jobs' Accelerate or torch.distributed meet on the default port 29500."""
    from timm_scaling.train import free_port

    ports: set[int] = set()
    while len(ports) < jobs:
        ports.add(free_port())
    envs = [{**(shared or {}), "MASTER_PORT": str(port)} for port in sorted(ports)]
    for i, env in enumerate(envs):
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    return envs


def start_worker(threads: int, environments, sweep: int) -> None:
    """A ``--jobs`` worker process: its own GPU and port (before torch starts), and ``threads``
    CPU threads. It ignores Ctrl-C and SIGHUP (a terminal sends them to the whole process
    group): the sweep stops every job itself, and none starts a new run on the way out. The
    ``sweep`` process (its pid) killed outright (kill -9) ends it too, even while it was
    starting: it would train on, its run locked against the sweep run again, or wait for work
    forever."""
    os.environ.update(environments.get())
    import torch
    from tqdm import tqdm

    from timm_scaling.train.launch import die_with_parent

    die_with_parent(sweep)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing one: a job ended mid-run would leak it.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (the pool's queues register with it) with SIGHUP
    blocked, as it starts itself with Ctrl-C and SIGTERM blocked: a closed terminal's SIGHUP to
    the process group killed it, the sweep started another on its way out, and that one printed
    a KeyError traceback for each queue it had not seen."""
    from multiprocessing import resource_tracker

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones now (what Python 3.14's
    ``terminate_workers`` does). A run stopped mid-epoch resumes from its last checkpoint: every
    file it writes is replaced atomically, and ``latest`` moves only after a checkpoint is whole."""
    for process in list((pool._processes or {}).values()):
        process.terminate()
    pool.shutdown(cancel_futures=True)  # the pool, broken now, frees its queues


def in_pool(
    task: Callable[..., Any],
    items: Sequence[T],
    jobs: int,
    gpus: Sequence[str],
    on_done: Callable[[int, T, Any], None],
    *args: Any,
    shared: Mapping[str, str] | None = None,
) -> None:
    """``task(item, *args)`` for each item (a recipe) in ``jobs`` processes (spawned: no
    forked torch or Accelerate state), each with an equal share of the CPU threads and, on GPUs,
    the GPU and port of :func:`job_environments` (and ``shared``, every job's);
    ``on_done(i, item, value)`` as each ends. No more processes than items: each takes one
    environment off the queue, and one left on it would keep this process from exiting. A task
    that raises (or Ctrl-C) stops the others at once; what they finished is kept."""
    jobs = max(1, min(jobs, len(items)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    start_resource_tracker()
    environments = context.Queue()
    for env in job_environments(jobs, gpus, shared):
        environments.put(env)
    ended = 0
    started = (threads, environments, os.getpid())
    with ProcessPoolExecutor(jobs, context, start_worker, started) as pool:
        futures = {pool.submit(task, item, *args): item for item in items}
        try:
            for future in as_completed(futures):
                value = future.result()
                ended += 1
                on_done(ended, futures[future], value)
        except BrokenProcessPool:  # a worker killed (the kernel's out-of-memory killer, kill -9)
            stop_workers(pool)
            raise RunError(
                f"a job's process was killed (out of memory? `dmesg` says) with "
                f"{len(items) - ended} of {len(items)} run(s) unfinished; those finished are "
                "kept and a stopped one resumes from its last finished epoch: run the same "
                "command again, with fewer --jobs if memory ran out"
            ) from None
        except BaseException:  # Ctrl-C, or a run's error (a full disk): now, not after the rest
            stop_workers(pool)
            raise


def packed_jobs(jobs: int, gpus: Sequence[str], plan_csv: Path) -> int:
    """``jobs``, or fewer where a plan measured that they would not fit in the GPUs' memory:
    at most (GPU memory // the largest planned peak) jobs share a GPU."""
    if not gpus or not plan_csv.is_file():
        return jobs
    per_gpu = fitting_per_gpu(read_plan(plan_csv))
    if per_gpu is None or jobs <= per_gpu * len(gpus):
        return jobs
    fitting = max(1, per_gpu * len(gpus))
    log.warning(
        f"{plan_csv}: runs peak at a size that fits {per_gpu} per GPU: "
        f"{fitting} job(s) at once on {len(gpus)} GPU(s), not {jobs}"
    )
    return fitting


@contextmanager
def sharing(mps: bool, jobs: int, gpus: Sequence[str]) -> Iterator[dict[str, str]]:
    """What the jobs add to their environment for ``--mps``: an MPS daemon's, where two or more
    of them share a GPU (:func:`timm_scaling.mps.mps_daemon`); nothing otherwise."""
    if not mps:
        yield {}
        return
    if not gpus or jobs <= len(gpus):
        log.warning(f"--mps: {jobs} job(s) on {len(gpus)} GPU(s) share none; without MPS")
        yield {}
        return
    from timm_scaling.mps import mps_daemon

    with mps_daemon() as env:
        yield env
