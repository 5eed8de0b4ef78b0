"""Issue 9 benchmark: dual dynamic inference on Fashion-MNIST (ResNet-20 backbone, CPU-sized budgets).

1. Fig. 9: accuracy vs average per-sample MACs for MGL2S, layer-only (SkipNet-style) and channel-only
   skipping at several skip targets, every network trained from the same plain backbone with the
   paper's two IADI steps (gates alone to zero skipping, then jointly toward the target).
2. Table II: RADI (exits added to the MGL2S network at the middle target) under budgets, against
   static plain ResNets (depths 8 and 14, trained as long as the backbone) of about the same MACs.
3. Realized vs MACs-predicted savings: per-sample latency at batch 1 of every skipping network running
   with real skipping (`run_one`) against the plain backbone, medians over test samples measured one
   after the other, interleaved in rounds.

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

import torch
from _common import RESULTS, write_result

from subnetsearch.data import DataSpec, load_data, synthetic
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._checkpoint import load_checkpoint, save_checkpoint
from subnetsearch.supernets._ddi import predict_under_budget
from subnetsearch.supernets._registry import DDI_RESNET_DEFAULTS
from subnetsearch.trainers._ddi import DDIPhase, copy_backbone, train_phase

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
    history = [train_phase(supernet.network, splits, phase) for phase in phases]
    TRAIN_SECONDS[name] = round(time.perf_counter() - began, 1)
    save_checkpoint(path, supernet, {}, {}, {"history": history, "train_seconds": TRAIN_SECONDS[name]})
    return supernet.eval()


@torch.no_grad()
def evaluate(supernet, splits, budget_fraction: float = 1.0) -> dict:
    """Test accuracy and per-sample MACs (threshold 0.5), batched with masked skipping."""
    net = supernet.network.eval()
    correct, macs = 0, []
    for images, labels in splits.batches(splits.test, 500):
        decisions = net.forward_with_decisions(images)
        if budget_fraction < 1:
            logits, spent, _, _ = predict_under_budget(decisions, budget_fraction * net.static_macs(),
                                                       net.minimal_exit_macs())
        else:
            logits, spent = decisions.exits[-1], decisions.macs
        correct += int((logits.argmax(1) == labels).sum())
        macs.append(spent)
    macs = torch.cat(macs).double()
    return {"test_acc": round(correct / len(splits.test), 5), "mean_macs": float(macs.mean()),
            "p10_macs": float(torch.quantile(macs, 0.1)), "p90_macs": float(torch.quantile(macs, 0.9)),
            "relative_macs": round(float(macs.mean()) / net.static_macs(), 4)}


@torch.no_grad()
def latencies(networks: dict, splits, samples: int, rounds: int) -> dict:
    """Median per-sample latency (ms) at batch 1 with real skipping, interleaved over rounds."""
    images = next(iter(splits.batches(splits.test, samples)))[0]
    times: dict[str, list[float]] = {name: [] for name in networks}
    for _ in range(rounds):
        for name, net in networks.items():
            net.eval()
            for i in range(samples):
                x = images[i:i + 1]
                start = time.perf_counter()
                net.run_one(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def plot(points: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for gating, style in zip(GATINGS, ("-o", "--s", ":^"), strict=True):
        rows = sorted(points[gating], key=lambda r: r["relative_macs"])
        axis.plot([r["relative_macs"] for r in rows], [r["test_acc"] for r in rows], style, label=gating)
    axis.set_xlabel("average MACs per sample / plain ResNet-20 (gates included)")
    axis.set_ylabel("test accuracy")
    axis.set_title("Skipping strategies (the DDI paper's Fig. 9), Fashion-MNIST")
    axis.legend()
    figure.tight_layout()
    path = RESULTS / "ddi_skipping.png"
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
    middle = targets[len(targets) // 2]
    radi = trained(f"radi-{middle}", {**arch, "gating": "mgl2s", "exits": True, "skip_target": middle}, splits,
                   [DDIPhase(epochs=1, target=middle, exits=True, **phase)], start=networks[f"mgl2s-{middle}"])
    statics = {depth: trained(f"static-{depth}", {**arch, "gating": "none", "depth": depth}, splits,
                              [DDIPhase(epochs=args.backbone_epochs, **phase)]) for depth in (8, 14)}
    static_points = {depth: evaluate(net, splits) for depth, net in statics.items()}
    static_points[arch["depth"]] = plain
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
    timing = latencies(runnable, splits, 8 if args.smoke else args.latency_samples,
                       1 if args.smoke else 3)
    relative = {f"{gating}-{row['skip_target']}": row["relative_macs"] for gating in GATINGS
                for row in points[gating]}
    realized = {name: {"latency_ms": ms, "realized_saving": round(1 - ms / timing["plain"], 4),
                       "macs_saving": round(1 - relative[name], 4)}
                for name, ms in timing.items() if name != "plain"}
    if args.smoke:
        print(json.dumps({"latency": realized, "train_seconds": TRAIN_SECONDS, "table2": budgets}, indent=1)[:3000])
        return
    picture = plot(points)
    write_result("ddi_skipping", {
        "setup": {"backbone": "ResNet-20 (16-32-64), Fashion-MNIST", "backbone_epochs": args.backbone_epochs,
                  "gate_epochs": 1, "joint_epochs": args.joint_epochs, "targets": targets, "plot": picture.name,
                  "threads": args.threads, "train_seconds": TRAIN_SECONDS},
        "plain": plain, "fig9": points, "table2": budgets, "accuracy_monotone_in_budget": monotone,
        "static_baselines": static_points, "latency_batch1": {"plain_ms": timing["plain"], **realized}})


if __name__ == "__main__":
    main()
