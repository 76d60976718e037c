"""The training loop: one recipe -> one run folder (see timm_scaling.runs), on Accelerate.

Runs on a CPU, one GPU or many processes. Batches: ``recipe.batch_size`` images make one
optimizer update, summed over processes and micro-batches. Each process takes
``batch_size / world_size`` of them and splits them into micro-batches (``grad_accum`` at first,
twice as many after each out-of-memory fallback); each micro-batch's loss is weighted by its
share of the batch, so the update's gradient is the mean over the batch whatever the split
(BatchNorm, which normalises per micro-batch, excepted).

One module per step of a run, in the order it takes them: ``building`` (model, optimizer,
schedule, EMA, data), ``update`` (an epoch's updates, divergence, evaluation), ``checkpoints``
(save, resume), ``finishing`` (model, result, report row); ``trainer`` puts them together,
``launch`` starts several processes, ``machine`` says what the device can do, ``graphed`` makes
the whole update one CUDA graph (recipe key ``cuda_graph``).
"""

from timm_scaling.train.building import CUDA_GRAPH_MODES, check_model, cost_columns
from timm_scaling.train.finishing import method_columns
from timm_scaling.train.launch import NUM_PROCESSES_ENV, free_port, launch
from timm_scaling.train.machine import (
    device_name,
    is_out_of_memory,
    optimizer_speedups,
    peak_memory_mb,
    weights_checksum,
)
from timm_scaling.train.trainer import Trainer, train
from timm_scaling.train.update import DIVERGED_FACTOR, LossNotFinite, evaluate

__all__ = [
    "CUDA_GRAPH_MODES",
    "DIVERGED_FACTOR",
    "NUM_PROCESSES_ENV",
    "LossNotFinite",
    "Trainer",
    "check_model",
    "cost_columns",
    "device_name",
    "evaluate",
    "free_port",
    "is_out_of_memory",
    "launch",
    "method_columns",
    "optimizer_speedups",
    "peak_memory_mb",
    "train",
    "weights_checksum",
]
