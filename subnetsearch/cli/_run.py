"""`subnetsearch run`: the main job. Load (or train) the default supernet and evaluate a few modes on
the default device, with every result kept in the store."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import console, fail
from subnetsearch.cli._devices import STORAGE_HELP, device_or_default, open_store
from subnetsearch.data import DataError, DataSpec, load_data
from subnetsearch.search import CachedEvaluator, EvaluationSettings
from subnetsearch.supernets import build_supernet
from subnetsearch.supernets._checkpoint import CheckpointError, load_checkpoint
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT, DEFAULT_TRAIN_COMMAND
from subnetsearch.trainers import WeNetRecipe, train_wenet


def run_command(
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="Supernet checkpoint (default: the shipped one)."),
    train_if_missing: bool = typer.Option(True, help="Train the default supernet if the checkpoint is missing."),
    epochs: int = typer.Option(10, help="Epochs when training is needed."),
    device_name: str = typer.Option("this-host", "--device", help="A recorded device (this-host is added if missing)."),
    random_modes: int = typer.Option(2, help="Random mixed modes to add to the uniform ones."),
    seed: int = typer.Option(0, help="Seed of the random modes."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Load (or train) the default supernet and print a table of operating modes on a device."""
    store = open_store(storage)
    device = device_or_default(store, device_name)
    if not checkpoint.exists():
        if not train_if_missing:
            fail(f"checkpoint not found: {checkpoint}")
        console.print(f"{checkpoint} not found: training the default supernet ({epochs} epochs), "
                      f"as `{DEFAULT_TRAIN_COMMAND}` does")
        train_wenet(build_supernet({"family": "wenet-cifar-resnet"}), load_data(DataSpec()), WeNetRecipe(epochs=epochs),
                    checkpoint.parent, DataSpec().to_dict())
    try:
        state = load_checkpoint(checkpoint)
        supernet = state.build()
        splits = load_data(DataSpec(**state.data))
    except (CheckpointError, DataError) as error:
        fail(str(error))
    store.register_supernet(state, checkpoint.resolve())
    torch.set_num_threads(device.protocol.threads)
    console.print(f"supernet {checkpoint} (hash {state.hash[:12]}), {len(supernet.space)} switchable layers, "
                  f"data {splits.name}: selection on {len(splits.val)} validation images")
    console.print(f"device {device.name}: {device.description}; storage {store.url}")
    generator = torch.Generator().manual_seed(seed)
    modes = [("full", supernet.full_mode())]
    modes += [(f"uniform 1/{g}", supernet.uniform_mode(g)) for g in (2, 4, 8)]
    modes += [("smallest", supernet.smallest_mode())]
    modes += [(f"random {i + 1}", supernet.random_mode(generator)) for i in range(random_modes)]
    calibrated = CachedEvaluator(supernet, state.hash, splits, device, store, EvaluationSettings())
    stored_bn = CachedEvaluator(supernet, state.hash, splits, device, store, EvaluationSettings(calibration_batches=0),
                                measure=False)
    p = device.protocol
    table = Table(title=f"operating modes on {device.name} - latency: {p.runtime}, batch {p.batch_size}, "
                        f"{p.threads} threads, min of {p.repeats} medians; energy: Eq. (6) model")
    for column in ("mode", "groups per layer", "MMACs", "params", "val acc (stored BN)", "val acc (calibrated)",
                   "latency ms", "IQR ms", "energy mJ", "id"):
        table.add_column(column, justify="left" if column in ("mode", "groups per layer", "id") else "right")
    full_latency = None
    for name, mode in modes:
        result = calibrated.evaluate(mode)
        full_latency = full_latency or result.latency_ms
        table.add_row(name, supernet.describe(mode), f"{result.macs / 1e6:.2f}", f"{result.params:,}",
                      f"{stored_bn.evaluate(mode).accuracy:.4f}", f"{result.accuracy:.4f}",
                      f"{result.latency_ms:.3f} ({full_latency / result.latency_ms:.2f}x)",
                      f"{result.latency['iqr_ms']:.3f}", f"{result.energy_mj:.3f}", mode.id)
    console.print(table)
    console.print(f"{calibrated.misses} modes evaluated now, {calibrated.hits} reused from stored results "
                  "(a mode is never evaluated twice for the same supernet, device and settings)")
