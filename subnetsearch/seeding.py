"""Randomness without hidden global effects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator for the block, for what only draws from it (weight
    initialization, dropout, Gumbel noise), and give the caller's state back after: a measurement or
    a training run is reproducible from its seed and leaves the caller's random stream where it was."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
