"""Benchmark 2: realized speedup of materialized uniform modes of the resnet50 WeNet supernet.

For g in 1/2/4/8/16 groups: (latency full / latency mode) / (MACs full / MACs mode), batch 1,
2 threads, per runtime (eager PyTorch, TorchScript frozen + optimize_for_inference, ONNX Runtime) and
layout (NCHW, channels_last).
All modes of one runtime are measured in one interleaved run (min of 5 medians each).
Target: >= 0.85 of the ideal (MAC-ratio) speedup at every group count.
"""

from __future__ import annotations

import argparse

import torch
from _common import write_result

from subnetsearch.devices import RUNTIMES, LatencyProtocol, measure_latencies
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._pretrained import default_checkpoint

GROUPS = (1, 2, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["resnet50", "shipped"], default="resnet50",
                        help="resnet50: torchvision ResNet-50 converted; shipped: the default ResNet-20 supernet")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--configs", default="eager,eager+channels_last,optimized,optimized+channels_last,onnxruntime",
                        help="runtime[+channels_last], comma-separated")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model == "shipped":
        supernet = default_checkpoint().build()
        description = "shipped ResNet-20 WeNet supernet (Fashion-MNIST, 1x28x28)"
    else:
        supernet = build_supernet({"family": "wenet-torchvision", "model": "resnet50",
                                   "input_size": args.input_size}).eval()
        description = "torchvision resnet50 WeNet supernet (every dense conv group-switchable, shuffles as in the paper)"
    modes = {g: supernet.uniform_mode(g) for g in GROUPS}
    macs = {g: supernet.cost(mode).macs for g, mode in modes.items()}
    static = {f"g{g}": supernet.materialize(mode) for g, mode in modes.items()}
    results = {}
    for config in args.configs.split(","):
        runtime, _, layout = config.partition("+")
        if runtime not in RUNTIMES:
            parser.error(f"unknown runtime {runtime!r}")
        protocol = LatencyProtocol(runtime=runtime, batch_size=1, threads=2, warmup=5, repeats=args.repeats,
                                   min_run_time=args.min_run_time, channels_last=layout == "channels_last")
        latencies = measure_latencies(static, supernet.input_shape, protocol)
        full = latencies["g1"].ms
        rows = []
        for g in GROUPS:
            latency = latencies[f"g{g}"]
            ideal = macs[1] / macs[g]
            realized = full / latency.ms
            rows.append({"groups": g, "gmacs": round(macs[g] / 1e9, 3), "latency_ms": round(latency.ms, 3),
                         "iqr_ms": round(latency.iqr_ms, 3), "medians_ms": [round(m, 3) for m in latency.medians_ms],
                         "speedup": round(realized, 3), "ideal_speedup": round(ideal, 3),
                         "fraction_of_ideal": round(realized / ideal, 3)})
            print(f"{config:24s} g={g:2d} {latency.ms:8.2f} ms  speedup {realized:5.2f} / ideal {ideal:5.2f}"
                  f" = {realized / ideal:.2f}")
        results[config] = {"protocol": latencies["g1"].to_dict(), "modes": rows,
                            "min_fraction_of_ideal": min(r["fraction_of_ideal"] for r in rows[1:])}
    best = max(results, key=lambda r: results[r]["min_fraction_of_ideal"])
    eager = results.get("eager")
    versus_eager = {config: [round(e["latency_ms"] / r["latency_ms"], 3) for e, r in zip(eager["modes"], result["modes"],
                                                                                      strict=True)]
                    for config, result in results.items()} if eager else {}
    write_result("realized_speedup" if args.model == "resnet50" else "realized_speedup_resnet20", {
        "model": description, "input": [1, *supernet.input_shape], "threads": 2, "runtimes": results,
        "speedup_vs_eager_per_group_count": versus_eager,
        "best_runtime": best, "target_fraction": 0.85,
        "met": results[best]["min_fraction_of_ideal"] >= 0.85,
    })


if __name__ == "__main__":
    main()
