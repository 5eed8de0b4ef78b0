"""Issue 17, part 1: grouped layers as grouped kernels or as dense equivalents, per runtime.

The shipped ResNet-20 supernet; modes: full, the uniform 1/2, 1/4, 1/8, 1/16 modes and random
mixes. For each runtime, every mode is realized both ways (the same function: a dense layer whose
weight is zero off the blocks; a shuffle next to a dense layer folds away) and all of them are timed
in one interleaved run (batch 1, 2 threads, min of `--repeats` medians), so their ratios are fair.
The evaluator keeps the faster realization of each mode; this reports, per mode, the speedup over
the full network of each realization and of the kept one. Target (issue 17): every uniform mode at
least 1.0x of full on the default device (ONNX Runtime).
"""

from __future__ import annotations

import argparse

import torch
from _common import write_result

from subnetsearch.devices import LatencyProtocol, measure_latencies
from subnetsearch.supernets import Realization
from subnetsearch.supernets._pretrained import default_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtimes", default="onnxruntime,optimized,eager")
    parser.add_argument("--random-modes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    args = parser.parse_args()
    supernet = default_checkpoint().build()
    generator = torch.Generator().manual_seed(0)
    modes = {"full": supernet.full_mode(), **{f"uniform:{g}": supernet.uniform_mode(g) for g in (2, 4, 8, 16)},
             **{f"random {i + 1}": supernet.random_mode(generator) for i in range(args.random_modes)}}
    statics = {}
    for name, mode in modes.items():
        statics[f"{name}|grouped"] = supernet.realize(mode, Realization())
        if supernet.grouped_layers(mode):
            statics[f"{name}|dense"] = supernet.realize(mode, Realization(supernet.grouped_layers(mode)))
    full_macs = supernet.cost(supernet.full_mode()).macs
    results = {}
    for runtime in args.runtimes.split(","):
        protocol = LatencyProtocol(runtime=runtime, threads=2, warmup=5, repeats=args.repeats,
                                   min_run_time=args.min_run_time)
        latencies = measure_latencies(statics, supernet.input_shape, protocol)
        full = latencies["full|grouped"].ms
        rows = []
        for name, mode in modes.items():
            grouped = latencies[f"{name}|grouped"].ms
            dense = latencies[f"{name}|dense"].ms if f"{name}|dense" in latencies else None
            kept = min(grouped, dense) if dense is not None else grouped
            rows.append({"mode": name, "mac_ratio": round(full_macs / supernet.cost(mode).macs, 3),
                         "grouped_ms": round(grouped, 4), "dense_ms": None if dense is None else round(dense, 4),
                         "kept": "dense" if dense is not None and dense < grouped else "grouped",
                         "speedup_grouped": round(full / grouped, 3),
                         "speedup_dense": None if dense is None else round(full / dense, 3),
                         "speedup_kept": round(full / kept, 3)})
            print(f"{runtime:12s} {name:10s} grouped {full / grouped:5.2f}x"
                  + ("" if dense is None else f"  dense {full / dense:5.2f}x") + f"  kept {full / kept:5.2f}x")
        uniform = [r for r in rows if r["mode"].startswith("uniform")]
        results[runtime] = {"protocol": latencies["full|grouped"].to_dict(), "modes": rows,
                            "min_uniform_speedup_kept": min(r["speedup_kept"] for r in uniform),
                            "min_uniform_speedup_grouped": min(r["speedup_grouped"] for r in uniform),
                            "kept_span": round(max(r["speedup_kept"] for r in rows)
                                               / min(r["speedup_kept"] for r in rows), 3)}
    default = results.get("onnxruntime")
    write_result("realization_choice", {
        "model": "shipped ResNet-20 WeNet supernet (Fashion-MNIST, 1x28x28)", "input": [1, *supernet.input_shape],
        "threads": 2, "runtimes": results, "target": "every uniform mode >= 1.0x of full on onnxruntime (kept)",
        "met": None if default is None else default["min_uniform_speedup_kept"] >= 0.97,
        "note": "met allows 3 % measurement noise: a dense realization has the full network's shapes",
    })


if __name__ == "__main__":
    main()
