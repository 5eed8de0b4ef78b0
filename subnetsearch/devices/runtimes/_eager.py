"""`eager`: the PyTorch module as it is (the runtime input-dependent modes always run on)."""

from __future__ import annotations

import torch
from torch import nn

from subnetsearch.devices.runtimes import Runnable, Runtime, register_runtime


@register_runtime
class Eager(Runtime):
    name = "eager"
    # index_select per shuffle: a median ratio to full of 0.786 against 0.80 for the native channel_shuffle,
    # within noise (benchmarks/results/shuffle_forms.json); taken as measured
    shuffle = "gather"
    summary = "PyTorch eager mode"
    torch_layout = True

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int) -> Runnable:
        return model.eval()
