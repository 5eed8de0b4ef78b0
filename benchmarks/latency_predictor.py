"""Issue 3 benchmark: latency lookup-table predictor error against end-to-end measurement.

For the shipped ResNet-20 supernet, per runtime: build the table (every layer configuration the
modes need, measured once; overhead from 5 calibration modes), then predict and measure N random
mixed modes (measured in one interleaved run). Target: within +-10 % for >= 95 % of the modes.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import write_result

from subnetsearch.devices import LatencyProtocol, measure_latencies
from subnetsearch.devices._lookup import build_table, conv_sites, layer_configs
from subnetsearch.supernets._pretrained import default_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", type=int, default=40)
    parser.add_argument("--runtimes", default="eager,optimized,onnxruntime")
    args = parser.parse_args()
    torch.manual_seed(0)
    supernet = default_checkpoint().build()
    generator = torch.Generator().manual_seed(0)
    calibration = [supernet.random_mode(generator) for _ in range(5)]
    modes = [supernet.random_mode(generator) for _ in range(args.modes)]
    sites = conv_sites(supernet)
    results = {}
    for runtime in args.runtimes.split(","):
        protocol = LatencyProtocol(runtime=runtime, threads=2, warmup=5, repeats=3, min_run_time=0.1)
        table = build_table(supernet, modes, protocol, calibration)
        measured = measure_latencies({m.id: supernet.materialize(m) for m in modes}, supernet.input_shape, protocol)
        errors = [(table.predict(layer_configs(sites, m)) - measured[m.id].ms) / measured[m.id].ms for m in modes]
        within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
        results[runtime] = {"table_entries": len(table.entries), "overhead_ms": round(table.overhead_ms, 4),
                            "within_10_percent": round(within, 3),
                            "median_abs_error": round(statistics.median(abs(e) for e in errors), 4),
                            "max_abs_error": round(max(abs(e) for e in errors), 4),
                            "measured_ms_median": round(statistics.median(measured[m.id].ms for m in modes), 4)}
        print(runtime, results[runtime])
    write_result("latency_predictor", {
        "supernet": "shipped ResNet-20 WeNet (Fashion-MNIST, 1x28x28)", "random_modes": args.modes,
        "calibration_modes": len(calibration), "runtimes": results, "target": "within +-10% for >= 95% of modes",
        "met": {runtime: r["within_10_percent"] >= 0.95 for runtime, r in results.items()},
    })


if __name__ == "__main__":
    main()
