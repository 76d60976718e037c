"""Finishing a run: the exported model, recipe.yaml, result.json and the report row."""

from __future__ import annotations

import json
from typing import Any

import timm
import torch
from accelerate.utils import gather_object

import timm_scaling
from timm_scaling import trackers
from timm_scaling.errors import UserError
from timm_scaling.files import atomic_write, umask_mode
from timm_scaling.imagesets import data_label
from timm_scaling.models import export, scaling_of
from timm_scaling.recipe_keys import kwargs_text
from timm_scaling.report import put_row
from timm_scaling.runs import (
    EXPORT_KEY,
    MODEL_DIR,
    RECIPE_FILE,
    REPORT_FILE,
    RESULT_FILE,
)
from timm_scaling.train.logs import logger
from timm_scaling.train.machine import device_name, weights_checksum

MULTIPLIERS = ("depth_mult", "width_mult", "res_mult")


def method_columns(model: str, ours: bool) -> dict[str, Any]:
    """A report row's method and multipliers: ours from the name; another timm model's method
    is its family (the frontier's rule), its multipliers empty."""
    if not ours:
        from timm_scaling.frontier import method_of

        return {"method": method_of(model), **dict.fromkeys(MULTIPLIERS)}
    scaling = scaling_of(model)
    multipliers = (scaling.depth, scaling.width, scaling.resolution)
    return {"method": scaling.method, **dict(zip(MULTIPLIERS, multipliers, strict=True))}


class Finishing:
    """The end of :class:`~timm_scaling.train.Trainer`'s run."""

    def _finish(self, history: list[dict[str, float]]) -> dict[str, Any]:
        accelerator, recipe = self.accelerator, self.recipe
        checksums = gather_object([weights_checksum(self.unwrapped)])
        skipped = sorted(set(gather_object(self._skipped_files())))
        peaks = [row["peak_mem_mb"] for row in history if row.get("peak_mem_mb") is not None]
        result: dict[str, Any] = {}
        if accelerator.is_main_process:
            train_s = sum(row["train_s"] for row in history)
            row = {
                "model": recipe.model,
                **method_columns(recipe.model, recipe.is_ours),
                "img_size": recipe.image_size,
                **self.cost,
                "top1": history[-1]["top1"],
                "top5": history[-1]["top5"],
                "dataset": data_label(recipe.dataset, recipe.data_dir),
                "epochs": recipe.epochs,
                "seed": recipe.seed,
                "recipe": recipe.name,
                "train_time_s": sum(row["epoch_s"] for row in history),
                "train_samples_per_sec": sum(row["train_images"] for row in history) / train_s,
                "peak_mem_mb": max(peaks, default=None),
                "device": self._device_label(),
                "version": timm_scaling.__version__,
                "model_kwargs": kwargs_text(recipe.model_kwargs),
            }
            result = {
                **row,
                "world_size": accelerator.num_processes,
                "eval_images": history[-1]["eval_images"],
                "micro_batches": self.micro_batches,
                "drop_rate": self.drop_rate,
                "skipped_images": len(skipped),
                "skipped_files": skipped,
                "replica_checksums": checksums,
                "torch": torch.__version__,
                "timm": timm.__version__,
                # The same seed trains to other weights with another thread count.
                "threads": torch.get_num_threads(),
            }
            result[EXPORT_KEY] = self._export(row["top1"])
            # The run's recipe, then its result (a longer continuation replaces both; killed
            # between them, runs.changed_keys takes the epochs from the result).
            recipe.write(self.folder / RECIPE_FILE)
            atomic_write(self.folder / RESULT_FILE, json.dumps(result, indent=1) + "\n")
            self._put_row(row)
            accelerator.log(trackers.scalars(row, "final/"), step=self.num_updates)
            logger.info(f"finished {self.folder}: top1 {row['top1']:.2f}; row in {REPORT_FILE}")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return result

    def _put_row(self, row: dict[str, Any]) -> None:
        """The run's row into report.csv; a disk that fails there names the report and what
        is kept (the run is finished: the same command puts its row back)."""
        report = self.output / REPORT_FILE
        try:
            put_row(report, row)
        except OSError as err:
            raise UserError(
                f"could not add the run's row to {report} ({err.strerror or err}): the run is "
                f"finished and its {RESULT_FILE} kept in {self.folder}; free space (or make "
                "the report writable), then run the same command again to put the row back"
            ) from None

    def _skipped_files(self) -> list[str]:
        """The files this process skipped as undecodable (data read through timm's pipeline)."""
        return [
            name
            for batches in (self.train_batches, self.val_batches)
            for name in getattr(batches, "skipped_files", list)()
        ]

    def _export(self, top1: float) -> dict[str, int]:
        """<run>/model/: the evaluated weights as a timm checkpoint (timm's save_for_hf); returns
        each file's size, which result.json records (a damaged export is found by them)."""
        recipe = self.recipe
        notes = (
            f"trained {recipe.epochs} epoch{'s' * (recipe.epochs != 1)} on {recipe.dataset} "
            f"at {recipe.image_size} px "
            f"(recipe {recipe.name}, seed {recipe.seed}{', EMA weights' * recipe.ema}): "
            f"top-1 {top1:.2f}"
        )
        model_dir = self.folder / MODEL_DIR
        with self._writing(model_dir.with_name(model_dir.name + ".partial"), "the trained model"):
            export(self.evaluated_model, model_dir, self.data_config, notes, self.class_names)
        umask_mode(model_dir)  # safetensors writes model.safetensors 0600
        return {path.name: path.stat().st_size for path in sorted(model_dir.iterdir())}

    def _device_label(self) -> str:
        name = device_name(self.accelerator.device)
        world = self.accelerator.num_processes
        return name if world == 1 else f"{world}x {name}"
