"""Issue 3 benchmark: evaluator throughput (modes per second) on the shipped supernet with the
5,000 validation images, with and without per-mode BN recalibration (20 training batches), without
latency measurement (accuracy, loss, cost and modelled energy only)."""

from __future__ import annotations

import time

import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import default_host_device
from subnetsearch.search import CachedEvaluator, EvaluationSettings
from subnetsearch.supernets._pretrained import default_checkpoint


def main(modes: int = 12) -> None:
    torch.set_num_threads(2)
    checkpoint = default_checkpoint()
    supernet = checkpoint.build()
    splits = load_data(DataSpec(**checkpoint.data))
    generator = torch.Generator().manual_seed(0)
    sample = [supernet.random_mode(generator) for _ in range(modes)]
    results = {}
    for name, settings in (("recalibrated", EvaluationSettings()), ("stored_bn", EvaluationSettings(calibration_batches=0))):
        evaluator = CachedEvaluator(supernet, checkpoint.hash, splits, default_host_device(), None, settings, measure=False)
        evaluator.evaluate(sample[0])  # warm-up (also draws the calibration batches once)
        started = time.perf_counter()
        for mode in sample[1:]:
            evaluator.evaluate(mode)
        elapsed = time.perf_counter() - started
        results[name] = {"modes": len(sample) - 1, "seconds": round(elapsed, 2),
                         "modes_per_second": round((len(sample) - 1) / elapsed, 3)}
        print(name, results[name])
    write_result("evaluator_throughput", {"supernet": "shipped ResNet-20 WeNet", "validation_images": len(splits.val),
                                          "threads": 2, "results": results})


if __name__ == "__main__":
    main()
