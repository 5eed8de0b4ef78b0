"""Issue 31: which kind of mode pays on which runtime - narrower layers, group counts, or both - on
one backbone trained three ways with the same recipe and steps.

The backbone: the nested ResNet-20 (16-32-64 channels, Fashion-MNIST 1x28x28), trained from scratch
by `subnetsearch train --family nested` with the same seed, epochs, steps and sandwich recipe as
  - width:  per-layer widths 1, 3/4, 1/2, 1/4 (`--ratios 1,0.75,0.5,0.25 --groups 1`),
  - groups: full width, per-conv group counts 1, 2, 4, 8 (`--ratios 1 --groups 1,2,4,8`),
  - both:   widths 1, 3/4, 1/2, 1/4 and group counts 1, 2, 4 in one layer (`--groups 1,2,4`).
Each arm's modes (its named ones and `--random` random ones, seeded) are scored on validation
images (BN recalibrated per mode), materialized, and timed on every installed runtime that exports
a file (ONNX Runtime, OpenVINO) at batch 1 and 32, all arms' modes interleaved in each round;
latency is each mode's ratio to the width arm's full network in the same round (median over
rounds). Per runtime and batch: each arm's accuracy-latency front and its hypervolume (one
reference point for all three: the lowest accuracy minus 0.01, the slowest ratio times 1.05), and
the union front with each member's kind marked. Target (issue 31): on the default runtime (ONNX
Runtime, batch 1) the combined front's hypervolume at least that of either alone.

Run: .venv/bin/python benchmarks/family_per_device.py [--epochs 1] [--steps 150] [--random 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import LatencyProtocol, RuntimeUnavailable, measure_latencies
from subnetsearch.pareto import front_indices, hypervolume
from subnetsearch.search import EvaluationSettings, mode_accuracy
from subnetsearch.supernets import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"width": ("1,0.75,0.5,0.25", "1"), "groups": ("1", "1,2,4,8"), "both": ("1,0.75,0.5,0.25", "1,2,4")}
OBJECTIVES = ("accuracy", "latency")


def train(arm: str, out: Path, epochs: int, steps: int) -> float:
    if (out / "supernet.pt").exists():
        return float("nan")  # kept from an earlier run
    ratios, groups = ARMS[arm]
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/subnetsearch"), "train", "--family", "nested", "--data", "fashion-mnist",
                    "--widths", "16,32,64", "--ratios", ratios, "--groups", groups, "--epochs", str(epochs),
                    "--max-steps-per-epoch", str(steps), "--threads", "2", "--seed", "0", "--out", str(out)],
                   cwd=ROOT, check=True, env=dict(os.environ))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=150, help="steps per epoch (batches of 128)")
    parser.add_argument("--random", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-batches", type=int, default=4, help="validation batches of 500 images")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/family-per-device")
    args = parser.parse_args()
    torch.set_num_threads(2)
    seconds = {arm: train(arm, args.runs / arm, args.epochs, args.steps) for arm in ARMS}
    supernets, modes, rows = {}, {}, {}
    settings = EvaluationSettings(max_eval_batches=args.eval_batches)
    splits = None
    for arm in ARMS:
        state = load_checkpoint(args.runs / arm / "supernet.pt")
        supernet = state.build().eval()
        splits = splits or load_data(DataSpec(**state.data))
        generator = torch.Generator().manual_seed(0)
        chosen = dict(supernet.named_modes())
        chosen.update({f"random {i + 1}": supernet.random_mode(generator) for i in range(args.random)})
        unique = {mode.id: (name, mode) for name, mode in chosen.items()}
        supernets[arm], modes[arm] = supernet, list(unique.values())
        for name, mode in modes[arm]:
            rows[f"{arm}/{name}"] = {"arm": arm, "mode": supernet.describe(mode), "kind": supernet.kind_of(mode),
                                     "macs": supernet.cost(mode).macs,
                                     "accuracy": round(mode_accuracy(supernet, mode, splits, settings), 4)}
        print(arm, {name: rows[f"{arm}/{name}"]["accuracy"] for name, _ in modes[arm]}, flush=True)
    networks = {f"{arm}/{name}": supernets[arm].materialize(mode) for arm in ARMS for name, mode in modes[arm]}
    reference = "width/full"
    fronts = {}
    for runtime in ("onnxruntime", "openvino"):
        for batch in (1, 32):
            key = f"{runtime} batch {batch}"
            protocol = LatencyProtocol(runtime=runtime, batch_size=batch, threads=2, repeats=3)
            rounds = []
            try:
                for index in range(args.rounds):
                    measured = measure_latencies(networks, (1, 28, 28), protocol)
                    rounds.append({name: latency.ms for name, latency in measured.items()})
                    print(f"{key} round {index + 1}: full {rounds[-1][reference]:.3f} ms", flush=True)
            except RuntimeUnavailable as error:
                fronts[key] = {"unavailable": str(error)}
                continue
            ratio = {name: statistics.median(r[name] / r[reference] for r in rounds) for name in networks}
            for name in networks:
                rows[name].setdefault("latency_ratio", {})[key] = round(ratio[name], 4)
            points = {name: (rows[name]["accuracy"], ratio[name]) for name in networks}
            ref = (min(p[0] for p in points.values()) - 0.01, max(p[1] for p in points.values()) * 1.05)
            result: dict = {"reference_ms": round(statistics.median(r[reference] for r in rounds), 4),
                            "hypervolume": {}, "front": {}}
            for arm in ARMS:
                names = [n for n in networks if n.startswith(f"{arm}/")]
                result["hypervolume"][arm] = round(hypervolume([points[n] for n in names], OBJECTIVES, ref), 6)
                result["front"][arm] = [names[i] for i in front_indices([points[n] for n in names], OBJECTIVES)]
            names = list(networks)
            union = [names[i] for i in front_indices([points[n] for n in names], OBJECTIVES)]
            result["union_front"] = sorted(({"mode": n, "kind": rows[n]["kind"], "accuracy": points[n][0],
                                             "latency_ratio": round(points[n][1], 4)} for n in union),
                                           key=lambda row: row["latency_ratio"])
            result["union_members_by_arm"] = {arm: sum(n.startswith(f"{arm}/") for n in union) for arm in ARMS}
            best = max(result["hypervolume"], key=result["hypervolume"].get)
            result["best_arm"] = best
            fronts[key] = result
            print(key, result["hypervolume"], result["union_members_by_arm"], flush=True)
    default = fronts.get("onnxruntime batch 1", {}).get("hypervolume", {})
    write_result("family_per_device", {
        "backbone": "nested ResNet-20, 16-32-64 channels, Fashion-MNIST 1x28x28",
        "arms": {arm: {"ratios": r, "groups": g} for arm, (r, g) in ARMS.items()},
        "training": {"epochs": args.epochs, "steps_per_epoch": args.steps, "batch": 128, "seed": 0,
                     "seconds": {k: (None if v != v else round(v, 1)) for k, v in seconds.items()}},
        "evaluation": {"validation_images": 500 * args.eval_batches, "bn": "recalibrated per mode (20 batches)",
                       "random_modes_per_arm": args.random, "rounds": args.rounds},
        "fronts": fronts,
        "target": "on onnxruntime batch 1 the combined (both) front's hypervolume at least that of either alone",
        "target_met": bool(default) and default["both"] >= max(default["width"], default["groups"]),
        "modes": rows,
    })


if __name__ == "__main__":
    main()
