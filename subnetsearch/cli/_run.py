"""`subnetsearch run`: the main job. Load (or train) the default supernet and evaluate a few modes."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import console, fail
from subnetsearch.data import DataError, DataSpec, load_data
from subnetsearch.devices import Device, LatencyProtocol, host_description
from subnetsearch.search import EvaluationSettings, calibration_batches, evaluate_mode
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._checkpoint import CheckpointError, load_checkpoint
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT, DEFAULT_TRAIN_COMMAND
from subnetsearch.trainers import WeNetRecipe, train_wenet


def run_command(
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="Supernet checkpoint (default: the shipped one)."),
    train_if_missing: bool = typer.Option(True, help="Train the default supernet if the checkpoint is missing."),
    epochs: int = typer.Option(10, help="Epochs when training is needed."),
    random_modes: int = typer.Option(2, help="Random mixed modes to add to the uniform ones."),
    runtime: str = typer.Option("optimized", help="Latency runtime: optimized | eager."),
    threads: int = typer.Option(2, help="Threads for latency measurement."),
    seed: int = typer.Option(0, help="Seed of the random modes."),
) -> None:
    """Load (or train) the default supernet and print a table of operating modes."""
    try:
        protocol = LatencyProtocol(runtime=runtime, threads=threads)  # type: ignore[arg-type]
    except ValueError as error:
        fail(str(error))
    device = Device("this-host", "host", protocol, description=host_description())
    if not checkpoint.exists():
        if not train_if_missing:
            fail(f"checkpoint not found: {checkpoint}")
        console.print(f"{checkpoint} not found: training the default supernet ({epochs} epochs), "
                      f"as `{DEFAULT_TRAIN_COMMAND}` does")
        splits = load_data(DataSpec())
        arch = {"family": "wenet-cifar-resnet"}
        supernet = build_supernet(arch)
        train_wenet(supernet, splits, WeNetRecipe(epochs=epochs), checkpoint.parent, DataSpec().to_dict())
    try:
        state = load_checkpoint(checkpoint)
        supernet = state.build()
        splits = load_data(DataSpec(**state.data))
    except (CheckpointError, DataError) as error:
        fail(str(error))
    torch.set_num_threads(threads)
    console.print(f"supernet {checkpoint} (hash {state.hash[:12]}), {len(supernet.space)} switchable layers, "
                  f"data {splits.name}: selection on {len(splits.val)} validation images")
    console.print(f"device {device.name}: {device.description}; energy: Eq. (6) model, {device.energy.source}")
    generator = torch.Generator().manual_seed(seed)
    modes = [("full", supernet.full_mode())]
    modes += [(f"uniform 1/{g}", supernet.uniform_mode(g)) for g in (2, 4, 8)]
    modes += [("smallest", supernet.smallest_mode())]
    modes += [(f"random {i + 1}", supernet.random_mode(generator)) for i in range(random_modes)]
    settings = EvaluationSettings()
    calibration = calibration_batches(splits, settings)
    table = Table(title=f"operating modes - latency: {runtime}, batch 1, {threads} threads, min of "
                        f"{protocol.repeats} medians")
    for column in ("mode", "groups per layer", "MMACs", "params", "val acc (stored BN)", "val acc (calibrated)",
                   "latency ms", "IQR ms", "energy mJ (model)", "id"):
        table.add_column(column, justify="left" if column in ("mode", "groups per layer", "id") else "right")
    full_latency = None
    for name, mode in modes:
        metrics = evaluate_mode(supernet, mode, splits, device, settings, with_stored_bn=True, calibration=calibration)
        full_latency = full_latency or metrics.latency.ms
        table.add_row(name, supernet.describe(mode), f"{metrics.macs / 1e6:.2f}", f"{metrics.params:,}",
                      f"{metrics.accuracy_stored_bn:.4f}", f"{metrics.accuracy:.4f}",
                      f"{metrics.latency.ms:.3f} ({full_latency / metrics.latency.ms:.2f}x)",
                      f"{metrics.latency.iqr_ms:.3f}", f"{metrics.energy_mj:.3f}", mode.id)
    console.print(table)
