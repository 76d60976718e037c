"""The ``timm-scaling`` command: parse, call one function, print.

Heavy imports (torch, timm, calflops) happen inside the commands that need them, so
``timm-scaling --help`` and ``timm-scaling frontier`` start fast. ``base`` holds the typer app;
``analysis`` (list, frontier, curves, profile), ``training`` (train, collect, sweep) and ``search``
register their commands on it.
"""

from __future__ import annotations

import signal

from timm_scaling.cli import analysis, search, training  # noqa: F401  (they register commands)
from timm_scaling.cli.base import Terminated, _terminate, app

__all__ = ["Terminated", "app", "main"]


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app(prog_name="timm-scaling")
    finally:  # the command has ended: a SIGTERM while Python exits ends it, with no traceback
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
