"""Latency repeatability: is a faster figure a faster mode?

The shipped supernet's full network, its 4 uniform modes and 6 random modes (grouped realizations;
their all-dense realizations are the full network's graph, checked by digest), each measured in
`--evaluations` separate evaluations spread over the run, the graphs in a rotating order, with other
work between windows (a forward pass of a batch through the supernet, as a search does). Each
evaluation measures a graph two ways, back to back:

- paired (devices.measure_paired, what the evaluator now stores): one window of the graph
  interleaved with the reference; its figure = the window's median ratio x the reference's pooled
  median over the whole run;
- alone (devices.measure_latency, the protocol before pairing: min of 5 medians in its own window).

Reported per graph: max/min over the evaluations of each window's own figure, and of the graph's
stored figure after each evaluation (every window so far: GraphSamples.figure, the median of the
windows' medians), from the third evaluation on (target <= 1.05); the final figure with its interval;
the device's noise profile measured first (its `between`: how far a grouped graph's ratio itself moves
between windows); and whether the all-dense realizations are the reference's graph (they get ratio 1
by digest, never measured apart).

    python benchmarks/latency_repeatability.py [--evaluations 10] [--runtimes onnxruntime,eager]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_result  # noqa: E402

from subnetsearch.devices import (  # noqa: E402
    LatencyProtocol,
    MemoryBook,
    available_runtimes,
    graph_digest,
    measure_latency,
    measure_noise,
    measure_paired,
)
from subnetsearch.supernets import DEFAULT_CHECKPOINT, PLAIN, Realization, load_checkpoint  # noqa: E402


def run(runtime: str, evaluations: int, seed: int) -> dict:
    supernet = load_checkpoint(DEFAULT_CHECKPOINT).build()
    protocol = LatencyProtocol(runtime=runtime, batch_size=1, threads=2)
    generator = torch.Generator().manual_seed(seed)
    modes = dict(supernet.named_modes())
    for index in range(6):
        modes[f"random {index}"] = supernet.random_mode(generator)
    shape = supernet.input_shape
    reference = supernet.realize(supernet.full_mode(), PLAIN)
    reference_digest = graph_digest(reference, shape, protocol)
    graphs, dense_same = {}, {}
    for name, mode in modes.items():
        grouped = supernet.grouped_layers(mode)
        graphs[name] = supernet.realize(mode, PLAIN) if grouped else reference  # grouped kernels everywhere
        if grouped:
            as_grouped = graph_digest(graphs[name], shape, protocol)
            all_dense = graph_digest(supernet.realize(mode, Realization(tuple(grouped))), shape, protocol)
            dense_same[name] = {"all_dense_is_reference_graph": all_dense == reference_digest,
                                "grouped_is_reference_graph": as_grouped == reference_digest}
    noise = measure_noise(reference, shape, protocol, reference_digest, windows=5,
                          other=graphs["smallest"] if "smallest" in graphs else None)
    book = MemoryBook()
    window_ratios: dict[str, list[float]] = {name: [] for name in graphs}
    stored_ratios: dict[str, list[float]] = {name: [] for name in graphs}  # the graph's figure after each window
    alone_ms: dict[str, list[float]] = {name: [] for name in graphs}
    batch = torch.randn(64, *shape)
    names = list(graphs)
    started = time.perf_counter()
    for evaluation in range(evaluations):
        order = names[evaluation % len(names):] + names[:evaluation % len(names)]
        for name in order:
            with torch.no_grad():  # other work between windows, as a search's accuracy part
                supernet.set_mode(modes[name])
                supernet(batch)
            window = measure_paired({name: graphs[name]}, reference, shape, protocol)[name]
            samples = book.add(name, window)
            window_ratios[name].append(statistics.median(window.ratios))
            stored_ratios[name].append(samples.figure(between=noise.between)[0])
            alone_ms[name].append(measure_latency(graphs[name], shape, protocol, label=name).ms)
    pooled = book.pooled_reference_ms()
    assert pooled is not None
    per_graph = {}
    for name in names:
        samples = book.get(name)
        assert samples is not None
        ratio, low, high, confidence = samples.figure(between=noise.between)
        paired_figures = [r * pooled for r in window_ratios[name]]
        stored = [r * pooled for r in stored_ratios[name]]
        per_graph[name] = {
            "macs": supernet.cost(modes[name]).macs,
            "is_reference_graph": graph_digest(graphs[name], shape, protocol) == reference_digest,
            "paired_window_ms": [round(v, 5) for v in paired_figures],
            "paired_max_over_min": max(paired_figures) / min(paired_figures),
            "stored_figure_ms": [round(v, 5) for v in stored],  # the graph's figure after each evaluation
            "stored_max_over_min": max(stored) / min(stored),
            "stored_max_over_min_from_3rd": max(stored[2:]) / min(stored[2:]),
            "alone_ms": [round(v, 5) for v in alone_ms[name]],
            "alone_max_over_min": max(alone_ms[name]) / min(alone_ms[name]),
            "pooled_figure_ms": ratio * pooled, "pooled_interval_ms": [low * pooled, high * pooled],
            "pooled_ratio": ratio, "interval_confidence": confidence,
            **dense_same.get(name, {}),
        }
    paired_spreads = [g["paired_max_over_min"] for g in per_graph.values() if not g["is_reference_graph"]]
    stored_spreads = [g["stored_max_over_min_from_3rd"] for g in per_graph.values() if not g["is_reference_graph"]]
    alone_spreads = [g["alone_max_over_min"] for g in per_graph.values()]
    return {"runtime": runtime, "evaluations": evaluations, "seconds": time.perf_counter() - started,
            "reference_pooled_ms": pooled, "reference_blocks": len(book.reference_ms()),
            "noise_profile": noise.to_dict(), "graphs": per_graph,
            "summary": {
                "paired_max_over_min": {"median": statistics.median(paired_spreads), "max": max(paired_spreads),
                                        "graphs_within_1.05": sum(s <= 1.05 for s in paired_spreads),
                                        "graphs": len(paired_spreads)},
                "stored_max_over_min_from_3rd": {"median": statistics.median(stored_spreads),
                                                 "max": max(stored_spreads),
                                                 "graphs_within_1.05": sum(s <= 1.05 for s in stored_spreads)},
                "alone_max_over_min": {"median": statistics.median(alone_spreads), "max": max(alone_spreads)},
                "full_paired_max_over_min": per_graph["full"]["paired_max_over_min"],
                "full_alone_max_over_min": per_graph["full"]["alone_max_over_min"],
                "all_dense_realizations_are_the_reference_graph": all(
                    v["all_dense_is_reference_graph"] for v in dense_same.values()),
            }}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=10)
    parser.add_argument("--runtimes", default="onnxruntime")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # runtimes measured in earlier runs are kept (one run per runtime fits in a sitting)
    previous = RESULTS / "latency_repeatability.json"
    results = json.loads(previous.read_text()).get("runtimes", {}) if previous.exists() else {}
    for runtime in args.runtimes.split(","):
        if runtime not in available_runtimes():
            results[runtime] = {"skipped": f"runtime {runtime} is not installed here"}
            continue
        results[runtime] = {**run(runtime, args.evaluations, args.seed), "measured": environment()["date"]}
        summary = results[runtime]["summary"]
        print(runtime, summary, flush=True)
    write_result("latency_repeatability", {"protocol": "ONNX Runtime etc., batch 1, 2 threads; pairing: "
                                           "devices.PAIRING (15 rounds, 20 ms blocks)", "runtimes": results})


if __name__ == "__main__":
    main()
