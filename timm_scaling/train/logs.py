"""The trainer's logger: Accelerate's (the main process only), quiet about its own saves."""

from __future__ import annotations

import logging

from accelerate.logging import MultiProcessAdapter
from accelerate.state import PartialState


class _ProcessLog(MultiProcessAdapter):
    """Accelerate's logger (the main process only, by default), with its ``[RANK k]`` prefix
    only where there are several processes."""

    def process(self, msg, kwargs):
        if PartialState().num_processes > 1:
            return super().process(msg, kwargs)
        return msg, {"stacklevel": 2, **kwargs}


def rate(images_per_s: float) -> str:
    """A speed for a log line: whole images/s, or two digits under 10 (a CPU's large model at
    0.3 images/s reads 0.3, not 0)."""
    return f"{images_per_s:.0f}" if images_per_s >= 10 else f"{images_per_s:.2g}"


logger = _ProcessLog(logging.getLogger(__package__), {})
log = logging.getLogger(__package__)  # before an Accelerator exists
# Accelerate logs four or five lines per save_state or load_state; the trainer logs one.
for _name in ("accelerate.accelerator", "accelerate.checkpointing"):
    logging.getLogger(_name).setLevel(logging.WARNING)
