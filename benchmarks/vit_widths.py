"""Issue 31: a small ViT trained briefly as a width supernet (MatFormer's comparison).

torchvision's ViT definition at Fashion-MNIST's 28x28 (7x7 patches: 16 tokens and a class token, 4
blocks of width 64, MLP hidden width 256, 4 heads), converted by `train --model`: every block's MLP
hidden width is a knob of 1, 3/4, 1/2 and 1/4 (attention stays whole). Three runs of the same recipe
and epochs through the project's `train` command:
  - the width supernet (sandwich rule with in-place distillation),
  - the same network trained alone at half and at quarter MLP width (`--fixed-mode width:R`).
Then (1) validation accuracy of the supernet's width modes against the networks trained alone at
those widths (all BN-free: no calibration), and (2) the latency of the materialized width modes on
the default runtime (ONNX Runtime, batch 1, 2 threads; every round times all modes interleaved,
speedup over full per round, median and range over rounds).

Run: .venv/bin/python benchmarks/vit_widths.py [--epochs 3] [--rounds 5] [--runs runs/vit-widths]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "benchmarks.vit_widths:small_vit"
RATIOS = (1.0, 0.75, 0.5, 0.25)


def small_vit(num_classes: int = 10) -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=28, patch_size=7, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=256,
                             num_classes=num_classes)


def train(out: Path, epochs: int, fixed: str | None) -> float:
    """Train through the CLI (resumes an interrupted run; a finished one is kept); its seconds."""
    if (out / "supernet.pt").exists():
        return float("nan")
    command = [str(ROOT / ".venv/bin/subnetsearch"), "train", "--model", FACTORY, "--data", "fashion-mnist",
               "--epochs", str(epochs), "--out", str(out), "--threads", "2"]
    if fixed:
        command += ["--fixed-mode", fixed]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/vit-widths")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from _common import write_result  # here: `train --model` imports this module for small_vit

    from subnetsearch.data import DataSpec, load_data
    from subnetsearch.devices import LatencyProtocol, measure_latencies
    from subnetsearch.search import EvaluationSettings, mode_accuracy
    from subnetsearch.supernets import load_checkpoint

    seconds = {"supernet": train(args.runs / "supernet", args.epochs, None)}
    for ratio in (0.5, 0.25):
        seconds[f"alone {ratio:g}"] = train(args.runs / f"alone-{ratio:g}", args.epochs, f"width:{ratio:g}")
    state = load_checkpoint(args.runs / "supernet" / "supernet.pt")
    supernet = state.build().eval()
    splits = load_data(DataSpec(**state.data))
    settings = EvaluationSettings(calibration_batches=0)  # no BN anywhere in a ViT
    modes = {f"width {r:g}": (supernet.full_mode() if r == 1.0 else supernet.width_mode(r)) for r in RATIOS}
    rows = {}
    for name, mode in modes.items():
        rows[name] = {"mode": supernet.describe(mode), "macs": supernet.cost(mode).macs,
                      "params": supernet.cost(mode).params,
                      "supernet_val_acc": round(mode_accuracy(supernet, mode, splits, settings), 4)}
    for ratio in (0.5, 0.25):
        alone_state = load_checkpoint(args.runs / f"alone-{ratio:g}" / "supernet.pt")
        alone = alone_state.build().eval()
        accuracy = mode_accuracy(alone, alone.width_mode(ratio), splits, settings)
        row = rows[f"width {ratio:g}"]
        row["alone_val_acc"] = round(accuracy, 4)
        row["gap_points"] = round(100 * (row["supernet_val_acc"] - accuracy), 2)
    print(rows, flush=True)
    protocol = LatencyProtocol(runtime="onnxruntime", batch_size=1, threads=2, repeats=3)
    networks = {name: supernet.materialize(mode) for name, mode in modes.items()}
    rounds = []
    for index in range(args.rounds):
        measured = measure_latencies(networks, supernet.input_shape, protocol)
        rounds.append({name: latency.ms for name, latency in measured.items()})
        print(f"round {index + 1}: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in rounds[-1].items()), flush=True)
    for name in networks:
        speedups = [r["width 1"] / r[name] for r in rounds]
        rows[name].update({"ms_median": round(statistics.median(r[name] for r in rounds), 4),
                           "speedup_median": round(statistics.median(speedups), 3),
                           "speedup_range": [round(min(speedups), 3), round(max(speedups), 3)],
                           "mac_ratio": round(rows["width 1"]["macs"] / rows[name]["macs"], 3)})
    write_result("vit_widths", {
        "model": "torchvision VisionTransformer(image_size=28, patch_size=7, num_layers=4, num_heads=4, "
                 "hidden_dim=64, mlp_dim=256), 1x28x28 Fashion-MNIST (stem adapted to 1 channel)",
        "recipe": {key: state.recipe.get(key) for key in ("epochs", "lr", "batch_size", "samples_per_step",
                                                          "sampling", "distill") if key in state.recipe},
        "train_seconds": {k: (None if v != v else round(v, 1)) for k, v in seconds.items()},  # nan: run kept
        "supernet_hash": state.hash,
        "protocol": {"runtime": protocol.runtime, "batch": 1, "threads": 2, "repeats_per_round": protocol.repeats,
                     "rounds": args.rounds},
        "modes": rows,
    })


if __name__ == "__main__":
    main()
