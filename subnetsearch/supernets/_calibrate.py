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

from subnetsearch.spaces import Mode
from subnetsearch.supernets._lasso import SlimBatchNorm2d
from subnetsearch.supernets._layers import SwitchableBatchNorm2d


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    """Every module whose training flag decides how it normalizes (wrappers and plain BN layers)."""
    return [m for m in model.modules()
            if isinstance(m, (SwitchableBatchNorm2d, SlimBatchNorm2d, nn.modules.batchnorm._BatchNorm))]


def _active_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BN layers a forward pass uses now: each S-BN's active private BN, and every plain BN."""
    switchable = [m for m in model.modules() if isinstance(m, (SwitchableBatchNorm2d, SlimBatchNorm2d))]
    private = {id(norm) for m in switchable for norm in m.norms}
    plain = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in private]
    return [m.active for m in switchable] + plain


@contextmanager
def calibrated_bn(supernet: nn.Module, mode: Mode, batches: Iterable[torch.Tensor]) -> Iterator[None]:
    """Within the block, `supernet` is in `mode` with BN statistics re-estimated on `batches`
    (cumulative average over all of them). On exit the stored statistics and the previous mode
    come back, so calibration never leaks into other modes."""
    previous_mode, was_training = supernet.mode, supernet.training
    supernet.set_mode(mode)
    norms = _active_norms(supernet)
    saved = [(n.running_mean.clone(), n.running_var.clone(), n.num_batches_tracked.clone(), n.momentum)
             for n in norms]
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average: every batch weighs the same
        supernet.set_bn_tracking(True)
        supernet.eval()
        for module in _norm_modules(supernet):
            module.train()
        seen = 0
        with torch.no_grad():
            for images in batches:
                supernet(images)
                seen += 1
        if seen == 0:
            raise ValueError("BN calibration needs at least one batch")
        supernet.eval()
        yield
    finally:
        for norm, (mean, var, count, momentum) in zip(norms, saved, strict=True):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(count)
            norm.momentum = momentum
        supernet.set_mode(previous_mode)
        supernet.train(was_training)


def bn_state(supernet: nn.Module) -> bytes:
    """The running statistics of the BN layers the current mode uses, in a fixed order (what
    `stored_bn` puts back): inside `calibrated_bn`, the calibrated statistics of that mode."""
    tensors = [t.detach().cpu().clone() for n in _active_norms(supernet) for t in (n.running_mean, n.running_var)]
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


@contextmanager
def stored_bn(supernet: nn.Module, mode: Mode, state: bytes) -> Iterator[None]:
    """Within the block, `supernet` is in `mode` with the BN statistics `bn_state` took for that
    mode (no data needed); on exit the stored statistics and the previous mode come back."""
    previous_mode, was_training = supernet.mode, supernet.training
    supernet.set_mode(mode)
    norms = _active_norms(supernet)
    try:
        tensors = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        expected = [t.shape for n in norms for t in (n.running_mean, n.running_var)]
        if not isinstance(tensors, list) or [getattr(t, "shape", None) for t in tensors] != expected:
            raise ValueError("the stored BN statistics do not fit this mode of this supernet")
    except Exception:
        supernet.set_mode(previous_mode)
        raise
    saved = [(n.running_mean.clone(), n.running_var.clone()) for n in norms]
    try:
        for index, norm in enumerate(norms):
            norm.running_mean.copy_(tensors[2 * index])
            norm.running_var.copy_(tensors[2 * index + 1])
        supernet.eval()
        yield
    finally:
        for norm, (mean, var) in zip(norms, saved, strict=True):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        supernet.set_mode(previous_mode)
        supernet.train(was_training)
