"""Batch-norm recalibration for one mode.

Why it is needed: a layer's S-BN is keyed by that layer's own group count, but its input
distribution depends on the group counts of every layer before it. Running statistics collected
during training under random per-layer patterns therefore fit no particular mode. Re-estimating
them for the mode being evaluated (US-Nets' "BN calibration") restores its accuracy; it costs a few
forward passes and changes no weight.

Only the normalization layers run in training mode while statistics are re-estimated: everything
else (Dropout, StochasticDepth, gates) computes its inference function, so the statistics are those
of the network that will be evaluated and deployed, and two calibrations of one mode agree exactly.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from subnetsearch.errors import InputError
from subnetsearch.spaces import Mode
from subnetsearch.supernets._base import BaseSupernet, module_device
from subnetsearch.supernets._lasso import SlimBatchNorm2d
from subnetsearch.supernets._layers import SwitchableBatchNorm2d


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    """Every module whose training flag decides how it normalizes (wrappers and plain BN layers)."""
    return [m for m in model.modules()
            if isinstance(m, (SwitchableBatchNorm2d, SlimBatchNorm2d, nn.modules.batchnorm._BatchNorm))]


def _active_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN layers a forward pass uses now: each S-BN's active private BN, and every plain BN."""
    switchable = [m for m in model.modules() if isinstance(m, (SwitchableBatchNorm2d, SlimBatchNorm2d))]
    private = {id(norm) for m in switchable for norm in m.norms}
    plain = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in private]
    return [m.active for m in switchable] + plain


def _statistics(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A BN layer's running mean, variance and batch count (every BN a supernet has tracks them)."""
    if norm.running_mean is None or norm.running_var is None or norm.num_batches_tracked is None:
        raise InputError(f"{norm} keeps no running statistics: nothing to calibrate")
    return norm.running_mean, norm.running_var, norm.num_batches_tracked


@contextmanager
def _in_mode(supernet: BaseSupernet, mode: Mode) -> Iterator[list[nn.modules.batchnorm._BatchNorm]]:
    """Within the block, `supernet` is in `mode` and the block may change the running statistics of
    the BN layers that mode uses (yielded); on exit they, their momentum, the previous mode and the
    training flag come back, so nothing leaks into other modes."""
    previous_mode, was_training = supernet.mode, supernet.training
    supernet.set_mode(mode)
    norms = _active_norms(supernet)
    saved = [(tuple(t.clone() for t in _statistics(n)), n.momentum) for n in norms]
    try:
        yield norms
    finally:
        for norm, (statistics, momentum) in zip(norms, saved, strict=True):
            for tensor, value in zip(_statistics(norm), statistics, strict=True):
                tensor.copy_(value)
            norm.momentum = momentum
        supernet.set_mode(previous_mode)
        supernet.train(was_training)


@contextmanager
def calibrated_bn(supernet: BaseSupernet, mode: Mode, batches: Iterable[torch.Tensor]) -> Iterator[None]:
    """Within the block, `supernet` is in `mode` with BN statistics re-estimated on `batches`
    (cumulative average over all of them). On exit the stored statistics and the previous mode
    come back, so calibration never leaks into other modes."""
    with _in_mode(supernet, mode) as norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average: every batch weighs the same
        supernet.set_bn_tracking(True)
        supernet.eval()
        for module in _norm_modules(supernet):
            module.train()
        seen = 0
        device = module_device(supernet)
        with torch.no_grad():
            for images in batches:
                supernet(images.to(device, non_blocking=True))  # on the accelerator the supernet is on
                seen += 1
        if seen == 0:
            raise InputError("BN calibration needs at least one batch")
        supernet.eval()
        yield


def bn_state(supernet: BaseSupernet) -> bytes:
    """The running statistics of the BN layers the current mode uses, in a fixed order (what
    `stored_bn` puts back): inside `calibrated_bn`, the calibrated statistics of that mode."""
    tensors = [t.detach().cpu().clone() for n in _active_norms(supernet) for t in _statistics(n)[:2]]
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


@contextmanager
def stored_bn(supernet: BaseSupernet, mode: Mode, state: bytes) -> Iterator[None]:
    """Within the block, `supernet` is in `mode` with the BN statistics `bn_state` took for that
    mode (no data needed); on exit the stored statistics and the previous mode come back."""
    with _in_mode(supernet, mode) as norms:
        tensors = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        expected = [t.shape for n in norms for t in _statistics(n)[:2]]
        if not isinstance(tensors, list) or [getattr(t, "shape", None) for t in tensors] != expected:
            raise InputError("the stored BN statistics do not fit this mode of this supernet")
        for index, norm in enumerate(norms):
            mean, var, _ = _statistics(norm)
            mean.copy_(tensors[2 * index])
            var.copy_(tensors[2 * index + 1])
        supernet.eval()
        yield
