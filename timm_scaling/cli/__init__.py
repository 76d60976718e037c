"""The ``timm-scaling`` command: parse, call one function, print.

Heavy imports (torch, timm, calflops) happen inside the commands that need them, so
``timm-scaling --help`` and ``timm-scaling frontier`` start fast. ``base`` holds the typer app;
``analysis`` (list, frontier, curves, profile), ``training`` (train, collect, sweep) and ``search``
register their commands on it.
"""

from __future__ import annotations

import signal

from timm_scaling.cli import analysis, search, training  # noqa: F401  (they register commands)
from timm_scaling.cli.base import HungUp, Terminated, _terminate, app, stop_signals

__all__ = ["HungUp", "Terminated", "app", "main"]


def main() -> None:
    handled = stop_signals()
    for signum in handled:
        signal.signal(signum, _terminate)
    try:
        app(prog_name="timm-scaling")
    finally:  # the command has ended: a signal while Python exits ends it, with no traceback
        for signum in handled:
            signal.signal(signum, signal.SIG_DFL)
