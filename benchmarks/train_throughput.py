"""Benchmark 5: training throughput of one Algorithm 1 step vs the same sub-networks stepped alone.

One step with s=4 patterns (full, smallest, one uniform, one random mixed: the default sampling)
against the sum of four standalone steps (forward, backward, optimizer step) of the same patterns on
the same batch. Ratio = sum of standalone / Algorithm 1 step; target >= 0.9. Interleaved repeats,
medians, 2 threads, the default ResNet-20 on Fashion-MNIST batches.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.supernets import build_supernet
from subnetsearch.trainers import WeNetRecipe, sample_patterns, sgd, train_step


def main(repeats: int = 7, steps: int = 5) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    splits = load_data(DataSpec())
    supernet = build_supernet({"family": "wenet-cifar-resnet"}).train()
    recipe = WeNetRecipe()
    optimizer = sgd(supernet, recipe.lr, recipe.momentum, recipe.weight_decay)
    generator = torch.Generator().manual_seed(0)
    batches = list(splits.batches(splits.train, recipe.batch_size, shuffle=True, augment=True,
                                  generator=generator, max_batches=steps))
    pattern_sets = [sample_patterns(supernet, recipe, generator) for _ in range(steps)]

    def algorithm_1() -> float:
        started = time.perf_counter()
        for (images, labels), patterns in zip(batches, pattern_sets, strict=True):
            train_step(supernet, optimizer, images, labels, patterns, recipe.distill)
        return time.perf_counter() - started

    def standalone() -> float:
        started = time.perf_counter()
        for (images, labels), patterns in zip(batches, pattern_sets, strict=True):
            for mode, track in patterns:
                optimizer.zero_grad(set_to_none=True)
                supernet.set_mode(mode)
                supernet.set_bn_tracking(track)
                F.cross_entropy(supernet(images), labels).backward()
                optimizer.step()
        supernet.set_bn_tracking(True)
        return time.perf_counter() - started

    algorithm_1(), standalone()  # warm-up
    fused, alone = [], []
    for _ in range(repeats):
        fused.append(algorithm_1() / steps)
        alone.append(standalone() / steps)
    ratio = statistics.median(a / f for a, f in zip(alone, fused, strict=True))
    write_result("train_throughput", {
        "model": "ResNet-20 WeNet (16-32-64), Fashion-MNIST 28x28, batch 128, 2 threads",
        "samples_per_step": recipe.samples_per_step, "sampling": recipe.sampling, "distill": recipe.distill,
        "algorithm_1_step_s": round(statistics.median(fused), 4),
        "standalone_sum_s": round(statistics.median(alone), 4),
        "ratio": round(ratio, 3), "target_ratio": 0.9, "met": ratio >= 0.9,
        "repeats": repeats, "steps_per_repeat": steps,
    })


if __name__ == "__main__":
    main()
