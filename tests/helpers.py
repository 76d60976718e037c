"""Helpers of several test modules (pytest puts tests/ on the path)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from timm_scaling.recipes import Recipe, load_recipe


def recipe(name: str = "digits", /, **settings) -> Recipe:
    """A built-in recipe with ``key=value`` overrides, as ``--set`` gives them."""
    return load_recipe(name, [f"{key}={value}" for key, value in settings.items()])


# -- real processes --------------------------------------------------------------------------

WAIT_S = 300  # a bound for a hang, not a speed target


def start(args: Sequence[str], env: dict) -> subprocess.Popen:
    """``timm-scaling ARGS`` in a process group of its own, as a shell runs a foreground job:
    with SIGINT's default action, even where the tests themselves run in the background (a
    shell's `make test &` starts them with SIGINT ignored, and children inherit that)."""
    return subprocess.Popen(
        [sys.executable, "-m", "timm_scaling", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(condition, process: subprocess.Popen, seconds: float = WAIT_S) -> None:
    """Until ``condition()`` holds; fails if ``process`` ends first or it takes ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def live_processes() -> dict[int, list[str]]:
    """Each live (not zombie) process's pid -> the fields of its /proc stat after the name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(stat.parent.name)] = fields
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    return [pid for pid, fields in live_processes().items() if int(fields[2]) == pgid]


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds ``text``."""
    found = []
    for pid in live_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(pid)
    return found


def left_alive(find: Callable[[], list[int]], seconds: float) -> list[int]:
    """The processes ``find()`` still lists after up to ``seconds``; they are killed (so that a
    failing test leaves none behind)."""
    deadline = time.monotonic() + seconds
    while find() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = find()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
