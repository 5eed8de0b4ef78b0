"""Issue 31: what the nested-width family's modes save on this CPU, against WeNet's group switching.

Builds nested-width supernets of the shipped supernet's shape (ResNet-20, 1x28x28, 10 classes) at
stage widths 16-32-64 and 32-64-128 and measures their uniform width modes (1, 3/4, 1/2, 1/4 of
every layer), materialized as plain dense networks, beside the WeNet supernet of the same shape's
uniform 1/2 and 1/4 group modes (grouped kernels and dense equivalents: the faster counts, as in a
search). Latency only (weights do not change it): ONNX Runtime (the default device's runtime),
batch 1, 2 threads. Every round times all of a shape's networks interleaved
(`devices.measure_latencies`); the speedup over the full network is taken per round and reported
as the median of the rounds with its range. MACs from the analytic cost model.

Run: .venv/bin/python benchmarks/nested_widths.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import write_result

from subnetsearch.devices import LatencyProtocol, both_realizations, measure_latencies
from subnetsearch.supernets import build_supernet

SHAPE = {"depth": 20, "in_channels": 1, "num_classes": 10, "input_size": 28}


def networks(widths: list[int]) -> tuple[dict[str, torch.nn.Module], dict[str, int]]:
    """name -> materialized network, and name -> MACs."""
    nested = build_supernet({"family": "nested-cifar-resnet", **SHAPE, "widths": widths}).eval()
    wenet = build_supernet({"family": "wenet-cifar-resnet", **SHAPE, "widths": widths}).eval()
    models, macs = {}, {}
    for ratio in (1.0, 0.75, 0.5, 0.25):
        mode = nested.full_mode() if ratio == 1.0 else nested.uniform_mode(ratio)
        models[f"width {ratio:g}"] = nested.materialize(mode)
        macs[f"width {ratio:g}"] = nested.cost(mode).macs
    grouped = both_realizations(wenet, {f"groups {g}": wenet.uniform_mode(g) for g in (2, 4)})
    for name, model in grouped.items():
        mode_name, kind = name.split("|")
        models[f"{mode_name} ({kind})"] = model
        macs[f"{mode_name} ({kind})"] = wenet.cost(wenet.uniform_mode(int(mode_name.split()[1]))).macs
    return models, macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    protocol = LatencyProtocol(runtime="onnxruntime", batch_size=1, threads=2, repeats=3)
    torch.manual_seed(0)
    shapes = {}
    for widths in ([16, 32, 64], [32, 64, 128]):
        models, macs = networks(widths)
        rounds = []
        for index in range(args.rounds):
            measured = measure_latencies(models, (1, 28, 28), protocol)
            rounds.append({name: latency.ms for name, latency in measured.items()})
            print(f"{widths} round {index + 1}: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in rounds[-1].items()),
                  flush=True)
        full = "width 1"
        rows = {}
        for name in models:
            speedups = [r[full] / r[name] for r in rounds]
            rows[name] = {"ms_median": round(statistics.median(r[name] for r in rounds), 4),
                          "speedup_median": round(statistics.median(speedups), 3),
                          "speedup_range": [round(min(speedups), 3), round(max(speedups), 3)],
                          "macs": macs[name], "mac_ratio": round(macs[full] / macs[name], 3)}
        groups = {name: row for name, row in rows.items() if name.startswith("groups")}
        best_groups = {g: max((row["speedup_median"] for n, row in groups.items() if n.startswith(f"groups {g} ")))
                       for g in (2, 4)}
        shapes["-".join(map(str, widths))] = {"modes": rows, "best_group_speedup": best_groups}
    summary = {key: {"width 0.5": value["modes"]["width 0.5"]["speedup_median"],
                     "width 0.25": value["modes"]["width 0.25"]["speedup_median"],
                     "groups 4 (best realization)": value["best_group_speedup"][4]} for key, value in shapes.items()}
    print(summary)
    write_result("nested_widths", {"protocol": {"runtime": protocol.runtime, "batch": 1, "threads": 2,
                                                "repeats_per_round": protocol.repeats, "rounds": args.rounds},
                                   "shapes": shapes, "summary": summary})


if __name__ == "__main__":
    main()
