"""Checkpoints: each finished epoch saved whole before ``latest`` points at it; resumed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from timm_scaling.errors import UserError, first_line
from timm_scaling.files import atomic_write, umask_mode
from timm_scaling.runs import (
    CHECKPOINTS,
    LATEST,
    METRICS_FILE,
    RECIPE_FILE,
    STATE_FILE,
    STEPS_FILE,
    checkpoint_state,
    latest_checkpoint,
    what_is_kept,
)
from timm_scaling.train.logs import logger


class Checkpoints:
    """Saving and loading :class:`~timm_scaling.train.Trainer`'s state."""

    def _save_checkpoint(self, history: list[dict[str, float]]) -> None:
        """save_state into checkpoints/epoch-K, then point ``latest`` at it, then drop older."""
        accelerator = self.accelerator
        root = self.folder / CHECKPOINTS
        name = f"epoch-{len(history):04d}"
        with self._writing(root / name, f"epoch {len(history)}'s checkpoint"):
            accelerator.save_state(str(root / name))
        logger.info(f"checkpoint {root / name}")
        if accelerator.is_main_process:
            umask_mode(root / name)
            state = {
                "epoch": len(history),
                "num_updates": self.num_updates,
                "micro_batches": self.micro_batches,
                "history": history,
                "steps": self.steps,
            }
            atomic_write(root / name / STATE_FILE, json.dumps(state, indent=1))
            atomic_write(root / LATEST, name + "\n")
            for path, rows in ((METRICS_FILE, history), (STEPS_FILE, self.steps)):
                atomic_write(self.folder / path, "".join(json.dumps(r) + "\n" for r in rows))
            for old in root.glob("epoch-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    @contextmanager
    def _writing(self, partial: Path, what: str) -> Iterator[None]:
        """Writing ``what`` into ``partial``: a failure (a full disk; safetensors and torch.save
        raise their own kinds) removes the half-written folder and is one line saying what the
        run folder keeps. Trained with ``resume`` (as sweep and search train every run), the same
        command again resumes it; `train` without --resume needs it added."""
        try:
            yield
        except Exception as err:
            shutil.rmtree(partial, ignore_errors=True)
            reason = first_line(err)[:200]
            # torch's own words for a full disk can be "unexpected pos 8224960 vs 8224852"
            free = shutil.disk_usage(self.folder).free / 2**20
            why = f"{reason}; {free:.0f} MB free there"
            # --resume only where an epoch is kept: with none, the same command starts afresh
            again = (
                "with --resume" if latest_checkpoint(self.folder) and not self.resume else "again"
            )
            raise UserError(
                f"could not write {what} into {self.folder} ({why}); "
                f"{what_is_kept(self.folder)}: free space, then run the same command {again}"
            ) from None

    def _load_checkpoint(self) -> list[dict[str, float]]:
        path = latest_checkpoint(self.folder)
        if path is None:
            if (self.folder / RECIPE_FILE).exists():  # an earlier attempt stopped in epoch 1
                logger.info(f"{self.folder}: no finished epoch to resume; starting from epoch 1")
            return []
        state = checkpoint_state(path)
        try:
            self.accelerator.load_state(str(path))
        except Exception as err:  # safetensors, torch.load and pickle raise their own kinds
            reason = first_line(err)[:200]
            raise UserError(
                f"{path} cannot be loaded ({reason}): the checkpoint is damaged; delete "
                f"{self.folder} and train again"
            ) from None
        self.num_updates = state["num_updates"]
        self.micro_batches = state["micro_batches"]
        self.steps = state.get("steps", [])  # absent in checkpoints of earlier versions
        self.scheduler.step_update(num_updates=self.num_updates)
        logger.info(f"resumed {self.folder} after epoch {state['epoch']}")
        return state["history"]
