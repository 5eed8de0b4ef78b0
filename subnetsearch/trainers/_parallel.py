"""Data-parallel training of a supernet: gradients averaged over the ranks once per step, and batch
norm with statistics over every rank's batch (optional).

Why not `DistributedDataParallel`'s wrapper: Algorithm 1 runs s forward/backward passes per step,
each through another sub-network, and every mode leaves the private BNs of the other group counts
unused. DDP all-reduces during each backward and needs `find_unused_parameters` scans (and
`no_sync` for all but the last pass) to survive that. Here every rank samples the same sub-networks
(the step's generator is seeded alike), so the gradients are complete after the s-th backward and
one bucketed all-reduce of exactly the parameters that have a gradient is the same average DDP
computes, with one communication per step. A parameter no pattern used keeps no gradient, as in a
one-process run (the optimizer skips it: no weight decay, no momentum); that every rank has the same
such set is checked every step, so ranks that disagree fail with a clear error instead of averaging
gradients of different sub-networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from subnetsearch.errors import InputError

BUCKET_BYTES = 25 * 1024**2  # DDP's default bucket size


@dataclass(frozen=True)
class DataParallel:
    """This process's place in data-parallel training: `rank` of `world`; `on_saved(path, record)`
    is called on every rank when an epoch's checkpoint is written (by rank 0)."""

    rank: int
    world: int
    on_saved: Callable[[Path, dict], None] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise InputError(f"rank must be in [0, world), got rank {self.rank} of {self.world}")

    @property
    def shard(self) -> tuple[int, int]:
        return (self.rank, self.world)

    def reduce_gradients(self, model: nn.Module) -> None:
        all_reduce_gradients(model, self.world)


def all_reduce_gradients(model: nn.Module, world: int) -> None:
    """Average the gradients of `model` over the process group, in buckets of about 25 MB."""
    if world == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    used = [index for index, p in enumerate(params) if p.grad is not None]
    device = params[0].device if params else torch.device("cpu")
    # which parameters have gradients must be the same everywhere, else the buckets would not line up
    signature = torch.tensor([float(len(used)), float(sum(used)), float(sum(i * i for i in used))],
                             dtype=torch.float64, device=device)
    everyone = signature.clone()
    dist.all_reduce(everyone)
    if not torch.equal(everyone, signature * world):
        raise RuntimeError("data-parallel ranks have gradients for different parameters: they trained different "
                           "sub-networks this step (was every rank's step generator seeded alike?)")
    bucket: list[torch.Tensor] = []
    size = 0
    for index in used:
        grad = params[index].grad
        assert grad is not None
        bucket.append(grad)
        size += grad.numel() * grad.element_size()
        if size >= BUCKET_BYTES:
            _reduce(bucket, world)
            bucket, size = [], 0
    if bucket:
        _reduce(bucket, world)


def _reduce(grads: list[torch.Tensor], world: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d whose training-mode statistics are over the whole process group's batch (the
    one-process batch of all ranks together), on any backend (gloo on CPUs, nccl on GPUs), where
    `torch.nn.SyncBatchNorm` only runs on GPUs. Same parameters and buffers as BatchNorm2d, so
    checkpoints do not change; `sync_batchnorm` swaps it in and out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_available() or not dist.is_initialized():
            return super().forward(x)
        return self.forward_synced(x, update=self.track_running_stats)

    def forward_without_stats(self, x: torch.Tensor) -> torch.Tensor:
        """Training-mode normalization that leaves the running statistics alone."""
        if not dist.is_available() or not dist.is_initialized():
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return self.forward_synced(x, update=False)

    def forward_synced(self, x: torch.Tensor, update: bool) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        values = x.float()
        channels = values.shape[1]
        count = values.new_tensor([values.numel() / channels])
        # two passes, as one process computes them: the global mean, then the squared deviations from
        # it (E[x^2] - E[x]^2 in one pass cancels catastrophically where |mean| >> std)
        total = all_reduce(torch.cat([values.sum((0, 2, 3)), count]))
        n = total[-1]
        mean = total[:channels] / n
        centred = values - mean.view(1, -1, 1, 1)
        var = all_reduce((centred * centred).sum((0, 2, 3))) / n
        if update and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                tracked = self.num_batches_tracked
                momentum = self.momentum if self.momentum is not None else 1.0 / float(tracked if tracked is not None else 1)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        scale = torch.rsqrt(var + self.eps)
        out = centred * scale.view(1, -1, 1, 1)
        if self.weight is not None and self.bias is not None:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def sync_batchnorm(model: nn.Module, enabled: bool) -> int:
    """Make every BatchNorm2d of `model` (switchable BNs' private ones too) synchronized, or plain
    again; returns how many were switched. Parameters and buffers stay the same tensors, so an
    optimizer built before or after is unaffected."""
    count = 0
    for module in model.modules():
        if enabled and type(module) is nn.BatchNorm2d:
            module.__class__ = SyncedBatchNorm2d
            count += 1
        elif not enabled and type(module) is SyncedBatchNorm2d:
            module.__class__ = nn.BatchNorm2d  # type: ignore[assignment]
            count += 1
    return count
