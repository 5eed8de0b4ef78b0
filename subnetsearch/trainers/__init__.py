"""Training: one loop (`fit`: seeded batches, learning-rate schedule, progress, log, resumable
checkpoints) and each family's step plugged into it: WeNet's Algorithm 1 (and single-mode "twin"
training; `WeNetStep` runs it in a loop of your own), the lasso family's penalized and fused
training, and DDI's phases. On a CPU or a GPU, in fp32 or autocast bf16/fp16 (`Accelerator`), and
data parallel (`DataParallel`; Ray Train runs it: `subnetsearch.distributed.train_on_ray`).

Each family's training is a `FamilyTrainer` (its options, defaults and `train`) in `TRAINERS`:
`get_trainer("wenet").train(TrainJob(...))` is what `subnetsearch train --family wenet` runs, and
`register_trainer` adds a family of your own to both."""

from subnetsearch.trainers._accelerate import ACCELERATORS, CPU, PRECISIONS, Accelerator, AcceleratorError, cuda_status
from subnetsearch.trainers._ddi import (
    DDIPhase,
    DDIRecipe,
    DDITrainer,
    PhaseEvents,
    backbone_arch,
    copy_backbone,
    load_backbone,
    train_ddi,
    train_gated,
    train_phase,
)
from subnetsearch.trainers._evaluate import evaluate_accuracy, evaluate_split, evaluate_split_correct
from subnetsearch.trainers._family import (
    TRAINERS,
    FamilyTrainer,
    TrainEvents,
    TrainJob,
    TrainOption,
    TrainOutcome,
    get_trainer,
    last_accuracy,
    register_trainer,
    unregister_trainer,
)
from subnetsearch.trainers._lasso import (
    NEAR_ZERO,
    LassoRecipe,
    LassoTrainer,
    Penalty,
    count_channels,
    init_from_full,
    sort_channels,
    train_lasso,
)
from subnetsearch.trainers._loop import Callbacks, Saving, Schedule, Shard, fit, sgd, timeless
from subnetsearch.trainers._nested import NestedTrainer
from subnetsearch.trainers._parallel import DataParallel, SyncedBatchNorm2d, sync_batchnorm
from subnetsearch.trainers._wenet import WeNetRecipe, WeNetStep, WeNetTrainer, sample_patterns, train_step, train_wenet

for _trainer in (WeNetTrainer(), LassoTrainer(), DDITrainer(), NestedTrainer()):  # the built-in families, in this order
    register_trainer(_trainer)
del _trainer

__all__ = [
    "ACCELERATORS",
    "CPU",
    "NEAR_ZERO",
    "PRECISIONS",
    "TRAINERS",
    "Accelerator",
    "AcceleratorError",
    "Callbacks",
    "DDIPhase",
    "DDIRecipe",
    "DDITrainer",
    "DataParallel",
    "FamilyTrainer",
    "LassoRecipe",
    "LassoTrainer",
    "NestedTrainer",
    "Penalty",
    "PhaseEvents",
    "Saving",
    "Schedule",
    "Shard",
    "SyncedBatchNorm2d",
    "TrainEvents",
    "TrainJob",
    "TrainOption",
    "TrainOutcome",
    "WeNetRecipe",
    "WeNetStep",
    "WeNetTrainer",
    "backbone_arch",
    "copy_backbone",
    "count_channels",
    "cuda_status",
    "evaluate_accuracy",
    "evaluate_split",
    "evaluate_split_correct",
    "fit",
    "get_trainer",
    "init_from_full",
    "last_accuracy",
    "load_backbone",
    "register_trainer",
    "sample_patterns",
    "sgd",
    "sort_channels",
    "sync_batchnorm",
    "timeless",
    "train_ddi",
    "train_gated",
    "train_lasso",
    "train_phase",
    "train_step",
    "train_wenet",
    "unregister_trainer",
]
