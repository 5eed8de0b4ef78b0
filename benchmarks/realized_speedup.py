"""Issue 17: realized speedup of uniform modes per runtime, with and without per-layer kernel choice,
at batch 1 and 32, against the MAC ratio and the roofline bound.

Runtimes: every installed one (eager, TorchScript `optimized` in NCHW and channels_last, ONNX
Runtime, OpenVINO, ExecuTorch/XNNPACK). Models: the converted torchvision ResNet-50 (3x224x224;
`--model resnet50`) and the shipped ResNet-20 supernet (1x28x28; `--model shipped`). Modes: uniform
1, 2, 4, 8, 16 groups. Every mode is realized as grouped kernels and (where it has grouped layers)
as dense equivalents; "without choice" is the grouped realization, "with choice" the faster of the
two, as the evaluator keeps it.

Per runtime and batch, all realizations are timed in one interleaved run (min of `--repeats`
medians) in a process of its own (runtimes sharing a process crashed here), one after another.
The roofline's bandwidths and torch's matmul peak are measured once at the start; each runtime's
child also measures its dense-convolution peak, and the peak is the best of all of them.

Reported per group count: speedup over full (with and without choice), MAC ratio, roofline-bound
ratio (bound of full / bound of the mode), realized / bound (speedup / bound ratio) and the share
of the roofline reached (bound ms / latency ms). Targets: ResNet-50 1/16 >= 4.68x on the best
runtime (the WeNet paper's Jetson figure); every uniform mode of the shipped supernet >= 1.0x of
full on the default device (ONNX Runtime, batch 1); realized / bound >= 0.85 at every group count on
the best runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _common import write_result

from subnetsearch.devices import (
    LatencyProtocol,
    Roofline,
    available_runtimes,
    both_realizations,
    measure_latencies,
    measure_roofline,
)
from subnetsearch.devices._latency import measurement_lock
from subnetsearch.devices._roofline import _conv_peak, levels_text
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._checkpoint import load_checkpoint
from subnetsearch.supernets._pretrained import WENET_CHECKPOINT

GROUPS = (1, 2, 4, 8, 16)
PARTIAL = Path(os.environ.get("SUBNETSEARCH_BENCH_HOME", Path.home() / ".cache" / "subnetsearch-bench")) / "realized"
# one file per runtime and batch: an interrupted run resumes with what it measured


def build(model: str, input_size: int):
    if model == "shipped":
        return load_checkpoint(WENET_CHECKPOINT).build().eval(), "shipped ResNet-20 WeNet supernet (Fashion-MNIST, 1x28x28)"
    supernet = build_supernet({"family": "wenet-torchvision", "model": "resnet50", "input_size": input_size}).eval()
    return supernet, "torchvision resnet50 WeNet supernet (every dense conv group-switchable, shuffles as in the paper)"


def child(args) -> None:
    """Time every realization of every uniform mode on one runtime at one batch size, and that
    runtime's dense-convolution peak; JSON out."""
    torch.manual_seed(0)
    supernet, _ = build(args.model, args.input_size)
    statics = both_realizations(supernet, {f"g{g}": supernet.uniform_mode(g) for g in GROUPS})
    runtime, _, layout = args.child.partition("+")
    protocol = LatencyProtocol(runtime=runtime, batch_size=args.batch, threads=2, warmup=3, repeats=args.repeats,
                               min_run_time=args.min_run_time, channels_last=layout == "channels_last")
    latencies = measure_latencies(statics, supernet.input_shape, protocol)
    with measurement_lock():
        peak = _conv_peak(runtime, 2, repeats=3, min_time=0.1)
    Path(args.out).write_text(json.dumps({"latencies": {name: latency.to_dict() for name, latency in latencies.items()},
                                          "conv_peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["resnet50", "shipped"], default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--runtimes", default=",".join([*available_runtimes(), "optimized+channels_last"]),
                        help="runtime[+channels_last], comma-separated (default: every installed one)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds per runtime and batch.")
    parser.add_argument("--fresh", action="store_true", help="Re-measure every runtime and batch (default: reuse "
                        "what an earlier, interrupted run of the same model measured, kept under ~/.cache).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    supernet, description = build(args.model, args.input_size)
    roofline = measure_roofline(2)  # torch's matmul and the bandwidths; each runtime's conv peak comes from its child
    macs = {g: supernet.cost(supernet.uniform_mode(g)).macs for g in GROUPS}
    results: dict[str, dict] = {}
    measured: dict[str, dict] = {}
    for batch in (int(b) for b in args.batches.split(",")):
        for runtime in args.runtimes.split(","):
            key = f"{runtime}@{batch}"
            kept = PARTIAL / f"{args.model}-{args.input_size}-r{args.repeats}-t{args.min_run_time}-{key}.json"
            if kept.exists() and not args.fresh:
                measured[key] = json.loads(kept.read_text())
                print(f"{key}: measured by an earlier run ({kept})")
                continue
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [sys.executable, __file__, "--child", runtime, "--batch", str(batch), "--out", out.name,
                           "--model", args.model, "--input-size", str(args.input_size), "--repeats", str(args.repeats),
                           "--min-run-time", str(args.min_run_time)]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    results[key] = {"error": f"no result within {args.timeout:.0f} s"}
                    print(f"{key}: timed out")
                    continue
                if done.returncode != 0:
                    results[key] = {"error": f"exit code {done.returncode}: {done.stderr.strip()[-400:]}"}
                    print(f"{key}: failed ({done.returncode})")
                    continue
                measured[key] = json.loads(Path(out.name).read_text())
                PARTIAL.mkdir(parents=True, exist_ok=True)
                kept.write_text(json.dumps(measured[key]))
                print(f"{key}: measured", flush=True)
    kernels = {"torch matmul": roofline.peak_macs_per_s, **{f"{key} conv": m["conv_peak"] for key, m in measured.items()}}
    peak = max(kernels.values())
    roofline = dataclasses.replace(roofline, peak_macs_per_s=peak, how=(
        f"peak {peak / 1e9:.0f} GMAC/s, the best of "
        + ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in kernels.items())
        + "; bandwidths " + levels_text(roofline.levels)))
    print(f"roofline: {roofline.how}")
    for key, m in measured.items():
        runtime, _, batch_text = key.partition("@")
        batch = int(batch_text)
        bounds = {g: roofline.bound_ms(*supernet.layers_for(supernet.uniform_mode(g)), batch=batch) for g in GROUPS}
        results[key] = summarize(m["latencies"], macs, bounds, roofline)
        results[key]["runtime"], results[key]["batch"] = runtime, batch
        for row in results[key]["modes"]:
            print(f"{key:18s} g={row['groups']:2d} grouped {row['speedup_grouped']:5.2f}x kept "
                  f"{row['speedup_kept']:5.2f}x ({row['kept']}) MACs {row['mac_ratio']:5.2f}x bound "
                  f"{row['bound_ratio']:5.2f}x realized/bound {row['realized_over_bound']:.2f} "
                  f"of roofline {row['of_roofline']:.0%}")
    finished = {k: r for k, r in results.items() if "modes" in r}
    payload: dict = {"model": description, "input": list(supernet.input_shape), "threads": 2,
                     "roofline": roofline.to_dict(), "runtimes": results}
    for batch in sorted({r["batch"] for r in finished.values()}):
        at = {k: r for k, r in finished.items() if r["batch"] == batch}
        best = max(at, key=lambda k: at[k]["modes"][-1]["speedup_kept"])
        payload[f"best_runtime_batch{batch}"] = {"runtime": at[best]["runtime"],
                                                 "speedup_1_16": at[best]["modes"][-1]["speedup_kept"],
                                                 "min_realized_over_bound": at[best]["min_realized_over_bound"]}
    targets = {}
    if args.model == "resnet50" and "best_runtime_batch1" in payload:
        best = payload["best_runtime_batch1"]
        targets["resnet50_1_16_at_least_4.68x"] = {"value": best["speedup_1_16"], "met": best["speedup_1_16"] >= 4.68}
        targets["realized_over_bound_at_least_0.85"] = {"value": best["min_realized_over_bound"],
                                                        "met": best["min_realized_over_bound"] >= 0.85}
    if args.model == "shipped" and "onnxruntime@1" in finished:
        worst = min(r["speedup_kept"] for r in finished["onnxruntime@1"]["modes"][1:])
        targets["every_uniform_mode_at_least_1.0x_on_onnxruntime_batch1"] = {"value": worst, "met": worst >= 1.0}
    payload["targets"] = targets
    write_result("realized_speedup" if args.model == "resnet50" else "realized_speedup_resnet20", payload)


def summarize(latencies: dict, macs: dict, bounds: dict, roofline: Roofline) -> dict:
    full = latencies["g1|grouped"]["ms"]
    rows = []
    for g in GROUPS:
        grouped = latencies[f"g{g}|grouped"]["ms"]
        dense = latencies.get(f"g{g}|dense", {}).get("ms")
        kept = grouped if dense is None else min(grouped, dense)
        bound_ratio = bounds[1] / bounds[g]
        rows.append({"groups": g, "gmacs": round(macs[g] / 1e9, 4), "grouped_ms": round(grouped, 4),
                     "dense_ms": None if dense is None else round(dense, 4),
                     "kept": "dense" if dense is not None and dense < grouped else "grouped",
                     "speedup_grouped": round(full / grouped, 3), "speedup_kept": round(full / kept, 3),
                     "mac_ratio": round(macs[1] / macs[g], 3), "bound_ms": round(bounds[g], 4),
                     "bound_ratio": round(bound_ratio, 3), "realized_over_bound": round(full / kept / bound_ratio, 3),
                     "of_roofline": round(bounds[g] / kept, 3),
                     "medians_ms": latencies[f"g{g}|grouped"]["medians_ms"]})
    return {"protocol": {k: v for k, v in latencies["g1|grouped"].items() if k not in ("ms", "iqr_ms", "medians_ms")},
            "modes": rows, "min_realized_over_bound": min(r["realized_over_bound"] for r in rows[1:])}


if __name__ == "__main__":
    main()
