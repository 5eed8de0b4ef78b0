"""Issue 9 benchmark: dual dynamic inference on Fashion-MNIST (ResNet-20 backbone, CPU-sized budgets).

1. Fig. 9: accuracy vs average per-sample MACs for MGL2S, layer-only (SkipNet-style) and channel-only
   skipping at several skip targets, every network trained from the same plain backbone with the
   paper's two IADI steps (gates alone to zero skipping, then jointly toward the target).
2. Table II: RADI (exits added to the MGL2S network at the middle target) under budgets, against
   static plain ResNets (depths 8 and 14, trained as long as the backbone) of about the same MACs.
3. Fig. 12: MGL2S trained with Eq. (6) energy instead of MACs as the resource of Eq. (5), at the
   upper targets: accuracy, MACs and modelled energy of both.
4. Realized vs MACs-predicted savings: per-sample latency at batch 1 (one thread) of every skipping
   network running with real skipping (`run_one`) against the plain backbone: per round, medians over
   test samples measured one after the other; savings are medians over rounds of per-round ratios.

Resumable: trained networks are cached under HOME. `--smoke` runs everything on synthetic data in a
minute (a check that the script works, not a result).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy
import torch
from _common import RESULTS, write_result

from subnetsearch.data import DataSpec, load_data, synthetic
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._checkpoint import load_checkpoint, save_checkpoint
from subnetsearch.supernets._ddi_network import predict_under_budget
from subnetsearch.supernets._registry import DDI_RESNET_DEFAULTS
from subnetsearch.trainers import DDIPhase, copy_backbone, timeless, train_phase

HOME = Path(os.environ.get("SUBNETSEARCH_BENCH_HOME", Path.home() / ".cache" / "subnetsearch-bench")) / "ddi"
GATINGS = ("mgl2s", "layer", "channel")
TRAIN_SECONDS: dict[str, float | None] = {}  # wall time of each trained network (threads as given)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def trained(name: str, arch: dict, splits, phases: list[DDIPhase], start=None):
    """A DDI supernet trained through `phases` (from `start`'s weights), cached as a checkpoint."""
    path = HOME / f"{name}.pt"
    if path.exists():
        checkpoint = load_checkpoint(path)
        TRAIN_SECONDS[name] = checkpoint.metrics.get("train_seconds")
        return checkpoint.build()
    log(f"training {name}")
    supernet = build_supernet(arch)
    if start is not None:
        copy_backbone(start.network, supernet.network)
    began = time.perf_counter()
    history = [timeless(train_phase(supernet.network, splits, phase)) for phase in phases]
    TRAIN_SECONDS[name] = round(time.perf_counter() - began, 1)
    save_checkpoint(path, supernet, {}, {}, {"history": history, "train_seconds": TRAIN_SECONDS[name]})
    return supernet.eval()


@torch.no_grad()
def evaluate(supernet, splits, budget_fraction: float = 1.0) -> dict:
    """Test accuracy and per-sample MACs (threshold 0.5), batched with masked skipping."""
    net = supernet.network.eval()
    correct, macs, energy = 0, [], []
    for images, labels in splits.batches(splits.test, 500):
        decisions = net.forward_with_decisions(images)
        energy.append(decisions.energy)
        if budget_fraction < 1:
            logits, spent, _, _ = predict_under_budget(decisions, budget_fraction * net.static_macs(),
                                                       net.minimal_exit_macs())
        else:
            logits, spent = decisions.exits[-1], decisions.macs
        correct += int((logits.argmax(1) == labels).sum())
        macs.append(spent)
    macs = torch.cat(macs).double()
    # energy of the final classifier's path: not what a sample answering from an early exit spent
    relative_energy = {} if budget_fraction < 1 else {
        "relative_energy": round(float(torch.cat(energy).double().mean()) / net.static_energy_pj(), 4)}
    return {"test_acc": round(correct / len(splits.test), 5), "mean_macs": float(macs.mean()),
            "p10_macs": float(torch.quantile(macs, 0.1)), "p90_macs": float(torch.quantile(macs, 0.9)),
            "relative_macs": round(float(macs.mean()) / net.static_macs(), 4), **relative_energy}


@torch.no_grad()
def latencies(networks: dict, splits, samples: int, rounds: int) -> dict:
    """Per-sample latency (ms) at batch 1 with real skipping, one torch thread. Each round times every
    network on the same `samples` test images one by one (network order rotated per round) and takes
    each network's median; savings are ratios to the plain network within the same round, and the
    result is the median over rounds with its range (this host is shared and its speed drifts)."""
    images = next(iter(splits.batches(splits.test, samples)))[0]
    names = list(networks)
    per_round: list[dict[str, float]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for round_index in range(rounds):
            medians = {}
            for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                net = networks[name].eval()
                times = []
                for i in range(samples):
                    x = images[i:i + 1]
                    start = time.perf_counter()
                    net.run_one(x)
                    times.append((time.perf_counter() - start) * 1e3)
                medians[name] = statistics.median(times)
            per_round.append(medians)
    finally:
        torch.set_num_threads(threads)
    result = {"plain_ms": statistics.median(r["plain"] for r in per_round), "rounds": rounds}
    for name in names[1:]:
        ratios = [r[name] / r["plain"] for r in per_round]
        result[name] = {"latency_ms": statistics.median(r[name] for r in per_round),
                        "realized_saving": round(1 - statistics.median(ratios), 4),
                        "realized_saving_range": [round(1 - max(ratios), 4), round(1 - min(ratios), 4)]}
    return result


def at_equal_macs(points: dict) -> dict:
    """For every MGL2S network, each baseline's accuracy at the same average MACs (linear between the
    baseline's two neighbouring networks; only inside the MACs range the baseline covers)."""
    comparison = {}
    for other in GATINGS[1:]:
        rows = sorted(points[other], key=lambda r: r["relative_macs"])
        xs, ys = [r["relative_macs"] for r in rows], [r["test_acc"] for r in rows]
        comparison[other] = []
        for row in points["mgl2s"]:
            x = row["relative_macs"]
            if xs[0] <= x <= xs[-1]:
                baseline = float(numpy.interp(x, xs, ys))
                comparison[other].append({"relative_macs": x, "mgl2s_acc": row["test_acc"],
                                          f"{other}_acc": round(baseline, 4),
                                          "difference": round(row["test_acc"] - baseline, 4)})
    return comparison


def plot(points: dict, budgets: list[dict], statics: dict, plain_macs: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for gating, style in zip(GATINGS, ("-o", "--s", ":^"), strict=True):
        rows = sorted(points[gating], key=lambda r: r["relative_macs"])
        left.plot([r["relative_macs"] for r in rows], [r["test_acc"] for r in rows], style, label=gating)
    left.set_xlabel("average MACs per sample / plain ResNet-20 (gates included)")
    left.set_ylabel("test accuracy")
    left.set_title("Skipping strategies (the DDI paper's Fig. 9)")
    left.legend()
    right.plot([r["relative_macs"] for r in budgets], [r["test_acc"] for r in budgets], "-o",
               label="MGL2S + exits (RADI) under budgets")
    for depth, row in sorted(statics.items()):
        right.plot(row["mean_macs"] / plain_macs, row["test_acc"], "ks")
        right.annotate(f"ResNet-{depth}", (row["mean_macs"] / plain_macs, row["test_acc"]), textcoords="offset points",
                       xytext=(4, -10), fontsize=8)
    right.set_xlabel("average MACs per sample / plain ResNet-20")
    right.set_title("Exit budgets vs static ResNets (Table II)")
    right.legend()
    figure.suptitle("Dual dynamic inference on Fashion-MNIST (CPU-sized training)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main() -> None:
    global HOME
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone-epochs", type=int, default=3)
    parser.add_argument("--joint-epochs", type=int, default=2)
    parser.add_argument("--targets", default="0.3,0.5,0.7")
    parser.add_argument("--budgets", default="0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7, help="latency rounds (medians of per-round ratios)")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, a few steps: checks the script runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cap = 4 if args.smoke else None
    if args.smoke:
        HOME = HOME.with_name("ddi-smoke")
        splits = synthetic(num_classes=4, per_class=64, size=12)
        arch = {**DDI_RESNET_DEFAULTS, "family": "ddi-cifar-resnet", "widths": [8, 16, 16], "input_size": 12,
                "num_classes": 4}
    else:
        splits = load_data(DataSpec())
        arch = {**DDI_RESNET_DEFAULTS, "family": "ddi-cifar-resnet"}
    HOME.mkdir(parents=True, exist_ok=True)
    targets = [float(t) for t in args.targets.split(",")]
    phase = {"max_steps_per_epoch": cap}
    backbone = trained("backbone", {**arch, "gating": "none"}, splits,
                       [DDIPhase(epochs=args.backbone_epochs, **phase)])
    plain = evaluate(backbone, splits)
    points: dict[str, list[dict]] = {}
    networks = {}
    for gating in GATINGS:
        points[gating] = []
        for target in targets:
            net = trained(f"{gating}-{target}", {**arch, "gating": gating, "skip_target": target}, splits,
                          [DDIPhase(epochs=1, train="gates", target=0.0, **phase),
                           DDIPhase(epochs=args.joint_epochs, target=target, **phase)], start=backbone)
            points[gating].append({"skip_target": target, **evaluate(net, splits)})
            networks[f"{gating}-{target}"] = net
            log(f"{gating} target {target}: {points[gating][-1]}")
    energy_points = []  # the paper's Fig. 12: energy (Eq. 6) instead of MACs as the resource of Eq. (5)
    for target in targets[1:]:
        net = trained(f"mgl2s-energy-{target}", {**arch, "gating": "mgl2s", "skip_target": target}, splits,
                      [DDIPhase(epochs=1, train="gates", target=0.0, resource="energy", **phase),
                       DDIPhase(epochs=args.joint_epochs, target=target, resource="energy", **phase)], start=backbone)
        by_macs = next(row for row in points["mgl2s"] if row["skip_target"] == target)
        energy_points.append({"skip_target": target, "energy_loss": evaluate(net, splits), "macs_loss": by_macs})
        log(f"energy-trained target {target}: {energy_points[-1]['energy_loss']}")
    middle = targets[len(targets) // 2]
    radi = trained(f"radi-{middle}", {**arch, "gating": "mgl2s", "exits": True, "skip_target": middle}, splits,
                   [DDIPhase(epochs=1, target=middle, exits=True, **phase)], start=networks[f"mgl2s-{middle}"])
    statics = {depth: trained(f"static-{depth}", {**arch, "gating": "none", "depth": depth}, splits,
                              [DDIPhase(epochs=args.backbone_epochs, **phase)]) for depth in (8, 14)}
    static_points = {depth: evaluate(net, splits) for depth, net in statics.items()}
    static_points[arch["depth"]] = plain
    for row in static_points.values():  # relative to the plain ResNet-20, like every other row
        row["relative_macs"] = round(row["mean_macs"] / backbone.network.static_macs(), 4)
    budgets = []
    floor = radi.network.minimal_exit_macs() / radi.network.static_macs()
    for fraction in (float(b) for b in args.budgets.split(",")):
        if fraction < floor:
            continue
        result = evaluate(radi, splits, fraction)
        plain_macs = backbone.network.static_macs()
        nearest = min(static_points, key=lambda d: abs(static_points[d]["mean_macs"] - result["mean_macs"]))
        budgets.append({"budget": fraction, **result, "static_depth": nearest,
                        "static_test_acc": static_points[nearest]["test_acc"],
                        "static_relative_macs": round(static_points[nearest]["mean_macs"] / plain_macs, 4)})
        log(f"budget {fraction}: {budgets[-1]}")
    monotone = all(a["test_acc"] <= b["test_acc"] + 1e-9 for a, b in zip(budgets, budgets[1:], strict=False))
    runnable = {"plain": backbone.network, **{name: net.network for name, net in networks.items()}}
    timing = latencies(runnable, splits, 8 if args.smoke else args.latency_samples, 1 if args.smoke else args.rounds)
    for gating in GATINGS:
        for row in points[gating]:
            timing[f"{gating}-{row['skip_target']}"]["macs_saving"] = round(1 - row["relative_macs"], 4)
    comparison = at_equal_macs(points)
    differences = [row["difference"] for rows in comparison.values() for row in rows]
    picture = plot(points, budgets, static_points, backbone.network.static_macs(),
                   HOME / "ddi_skipping.png" if args.smoke else RESULTS / "ddi_skipping.png")
    if args.smoke:
        print(json.dumps({"latency": timing, "comparison": comparison, "plot": str(picture)}, indent=1)[:3000])
        return
    write_result("ddi_skipping", {
        "setup": {"backbone": "ResNet-20 (16-32-64), Fashion-MNIST", "backbone_epochs": args.backbone_epochs,
                  "gate_epochs": 1, "joint_epochs": args.joint_epochs, "targets": targets, "plot": picture.name,
                  "threads": args.threads, "train_seconds": TRAIN_SECONDS},
        "plain": plain, "fig9": points, "fig12_energy_vs_macs_loss": energy_points,
        "mgl2s_vs_baselines_at_equal_macs": comparison,
        "mgl2s_at_least_as_accurate": bool(differences) and min(differences) >= 0,
        "table2": budgets, "accuracy_monotone_in_budget": monotone,
        "static_baselines": static_points, "latency_batch1": timing})

if __name__ == "__main__":
    main()
