"""Benchmark 4: the WeNet paper's Table II on Fashion-MNIST - uniform modes with and without channel
shuffle, accuracy and latency.

Accuracy: two ResNet-20 supernets trained with the same recipe and budget, one with --no-shuffle
(test split, reported only; BN calibrated per mode). Latency: materialized modes of both, and of the
resnet50 supernet with shuffles on/off (the paper's model; latency does not depend on the weights),
measured in one interleaved run per model (optimized runtime, batch 1, 2 threads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import LatencyProtocol, measure_latencies
from subnetsearch.search import EvaluationSettings, mode_accuracy
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._checkpoint import load_checkpoint

GROUPS = (16, 8, 4, 2, 1)
RUNS = Path.home() / ".cache/subnetsearch-runs"


def latency_table(supernets: dict[str, object], protocol: LatencyProtocol) -> dict[str, float]:
    models = {f"{name}/g{g}": net.materialize(net.uniform_mode(g)) for name, net in supernets.items() for g in GROUPS}
    input_shape = next(iter(supernets.values())).input_shape
    return {key: round(latency.ms, 3) for key, latency in measure_latencies(models, input_shape, protocol).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--with-shuffle", type=Path, default=RUNS / "ablation-default" / "supernet.pt")
    parser.add_argument("--without-shuffle", type=Path, default=RUNS / "ablation-noshuffle" / "supernet.pt")
    parser.add_argument("--result", default="table2_shuffle", help="Result name (e.g. table2_shuffle_10epoch).")
    args = parser.parse_args()
    torch.set_num_threads(2)
    protocol = LatencyProtocol(runtime="optimized", threads=2, repeats=5, min_run_time=0.3)
    states = {"with": load_checkpoint(args.with_shuffle), "without": load_checkpoint(args.without_shuffle)}
    if states["with"].arch["shuffle"] is not True or states["without"].arch["shuffle"] is not False:
        raise SystemExit("--with-shuffle must be a shuffle supernet and --without-shuffle a --no-shuffle one")
    if states["with"].recipe["epochs"] != states["without"].recipe["epochs"]:
        raise SystemExit("the two supernets must be trained for the same number of epochs")
    supernets = {name: state.build() for name, state in states.items()}
    splits = load_data(DataSpec(**states["with"].data))
    small_latency = latency_table(supernets, protocol)
    big = {name: build_supernet({"family": "wenet-torchvision", "model": "resnet50", "shuffle": name == "with"}).eval()
           for name in ("with", "without")}
    big_latency = latency_table(big, LatencyProtocol(runtime="optimized", threads=2, repeats=3, min_run_time=0.5))
    rows = []
    for g in GROUPS:
        row = {"sub_network": "full" if g == 1 else f"1/{g}"}
        for name, supernet in supernets.items():
            accuracy = mode_accuracy(supernet, supernet.uniform_mode(g), splits, EvaluationSettings(split="test"))
            row[f"{name}_shuffle_test_acc"] = round(accuracy, 4)
            row[f"{name}_shuffle_resnet20_ms"] = small_latency[f"{name}/g{g}"]
            row[f"{name}_shuffle_resnet50_ms"] = big_latency[f"{name}/g{g}"]
        row["acc_gain_points"] = round(100 * (row["with_shuffle_test_acc"] - row["without_shuffle_test_acc"]), 2)
        rows.append(row)
        print(row)
    average = {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in rows[0] if key != "sub_network"}
    write_result(args.result, {
        "recipe": states["with"].recipe, "epochs": states["with"].recipe["epochs"],
        "checkpoints": {name: str(path) for name, path in (("with", args.with_shuffle), ("without", args.without_shuffle))},
        "latency_protocol": protocol.__dict__, "rows": rows, "average": average,
        "paper_table_ii_average_gain_points": 2.98,
    })


if __name__ == "__main__":
    main()
