"""Benchmark 1: switching modes of the resnet50 WeNet supernet vs loading a separate model's weights.

set_mode only assigns group counts (and S-BN keys); the alternative a static deployment has is
`load_state_dict` of another model of the same size. Target: switching >= 1000x faster.
"""

from __future__ import annotations

import copy

import torch
from _common import median, write_result
from torch.utils import benchmark

from subnetsearch.supernets import build_supernet


def main() -> None:
    torch.set_num_threads(2)
    supernet = build_supernet({"family": "wenet-torchvision", "model": "resnet50"}).eval()
    generator = torch.Generator().manual_seed(0)
    modes = [supernet.random_mode(generator) for _ in range(16)] + [supernet.full_mode(), supernet.smallest_mode()]
    static = supernet.materialize(supernet.full_mode())
    other_weights = copy.deepcopy(static.state_dict())  # a separate model of the same size
    size_mb = sum(t.numel() * t.element_size() for t in other_weights.values()) / 2**20
    cycle = iter(range(10**9))

    def switch() -> None:
        supernet.set_mode(modes[next(cycle) % len(modes)])

    switch_timer = benchmark.Timer("switch()", globals={"switch": switch}, num_threads=2)
    load_timer = benchmark.Timer("static.load_state_dict(weights)",
                                 globals={"static": static, "weights": other_weights}, num_threads=2)
    switch_medians, load_medians = [], []
    for _ in range(5):  # interleaved repeats; the ratio is taken within one run
        switch_medians.append(switch_timer.blocked_autorange(min_run_time=0.5).median)
        load_medians.append(load_timer.blocked_autorange(min_run_time=0.5).median)
    switch_s, load_s = median(switch_medians), median(load_medians)
    write_result("mode_switch", {
        "model": "torchvision resnet50 WeNet supernet", "switchable_layers": len(supernet.space),
        "state_dict_mb": round(size_mb, 1), "threads": 2,
        "set_mode_us": round(switch_s * 1e6, 2), "load_state_dict_us": round(load_s * 1e6, 1),
        "speedup": round(load_s / switch_s, 1), "target_speedup": 1000, "met": load_s / switch_s >= 1000,
        "repeats_us": {"set_mode": [round(v * 1e6, 2) for v in switch_medians],
                       "load_state_dict": [round(v * 1e6, 1) for v in load_medians]},
        "note": "set_mode validates the mode against the space, then assigns ints; medians of 5 repeats",
    })


if __name__ == "__main__":
    main()
