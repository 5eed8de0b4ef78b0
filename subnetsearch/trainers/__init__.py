"""Training: one loop (`fit`: seeded batches, learning-rate schedule, progress, log, resumable
checkpoints) and each family's step plugged into it: WeNet's Algorithm 1 (and single-mode "twin"
training; `WeNetStep` runs it in a loop of your own), the lasso family's penalized and fused
training, and DDI's phases. On a CPU or a GPU, in fp32 or autocast bf16/fp16 (`Accelerator`), and
data parallel (`DataParallel`; Ray Train runs it: `subnetsearch.distributed.train_wenet_ray`)."""

from subnetsearch.trainers._accelerate import ACCELERATORS, CPU, PRECISIONS, Accelerator, AcceleratorError, cuda_status
from subnetsearch.trainers._ddi import DDIPhase, DDIRecipe, backbone_arch, copy_backbone, train_ddi, train_gated, train_phase
from subnetsearch.trainers._evaluate import evaluate_accuracy, evaluate_split, evaluate_split_correct
from subnetsearch.trainers._lasso import (
    NEAR_ZERO,
    LassoRecipe,
    Penalty,
    count_channels,
    init_from_full,
    sort_channels,
    train_lasso,
)
from subnetsearch.trainers._loop import Callbacks, Saving, Schedule, Shard, fit, sgd, timeless
from subnetsearch.trainers._parallel import DataParallel, SyncedBatchNorm2d, all_reduce_gradients, sync_batchnorm
from subnetsearch.trainers._wenet import WeNetRecipe, WeNetStep, sample_patterns, train_step, train_wenet

__all__ = [
    "ACCELERATORS",
    "CPU",
    "PRECISIONS",
    "Accelerator",
    "AcceleratorError",
    "DataParallel",
    "SyncedBatchNorm2d",
    "WeNetStep",
    "all_reduce_gradients",
    "cuda_status",
    "sync_batchnorm",
    "NEAR_ZERO",
    "Penalty",
    "DDIPhase",
    "DDIRecipe",
    "Callbacks",
    "Saving",
    "Schedule",
    "Shard",
    "backbone_arch",
    "fit",
    "sgd",
    "timeless",
    "train_ddi",
    "train_gated",
    "WeNetRecipe",
    "LassoRecipe",
    "copy_backbone",
    "count_channels",
    "evaluate_accuracy",
    "evaluate_split",
    "evaluate_split_correct",
    "init_from_full",
    "sample_patterns",
    "sort_channels",
    "train_phase",
    "train_step",
    "train_wenet",
    "train_lasso",
]
