"""`subnetsearch train`: train a WeNet supernet (Algorithm 1) or one fixed sub-network."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from subnetsearch.cli._common import check_output_folder, console, data_spec, fail, parse_mode, parse_widths, set_threads
from subnetsearch.data import DataError, load_data
from subnetsearch.supernets import CIFAR_RESNET_DEFAULTS, ArchError, CheckpointError, build_supernet
from subnetsearch.trainers import WeNetRecipe, train_wenet


def train_command(
    out: Path = typer.Option(Path("runs/supernet"), help="Folder for last.pt, supernet.pt and train_log.jsonl."),
    data: str = typer.Option("fashion-mnist", help="fashion-mnist | cifar10 | imagefolder | synthetic"),
    data_root: str | None = typer.Option(None, help="Data folder (default for fashion-mnist: the Debian package's)."),
    val_size: int = typer.Option(5000, help="Validation images carved from the training set (imagefolder with a "
                                            "val/ folder: not used)."),
    split_seed: int = typer.Option(0, help="Seed of the train/validation split."),
    image_size: int | None = typer.Option(None, help="imagefolder: resize to this square size (default: the "
                                                     "images' own size, which must then be one size)."),
    channels: int | None = typer.Option(None, help="imagefolder: 1 (grayscale) or 3 (RGB); default: what the "
                                                   "images are."),
    hflip: bool = typer.Option(True, help="Random horizontal flips while training (--no-hflip for digits, text)."),
    depth: int = typer.Option(20, help="CIFAR ResNet depth (6n+2)."),
    widths: str = typer.Option("16,32,64", help="Stage widths."),
    groups: str = typer.Option("1,2,4,8,16", help="Allowed group counts."),
    shuffle: bool = typer.Option(True, help="Channel shuffle between the convolutions of a block."),
    shuffle_rule: str = typer.Option("balanced", help="balanced | max (the paper's G = max groups)."),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    samples_per_step: int = typer.Option(4, help="s of Algorithm 1: sub-networks per iteration."),
    sampling: str = typer.Option("uniform-stats", help="uniform-stats | independent (the paper's)."),
    distill: bool = typer.Option(True, help="In-place distillation from the full network."),
    fixed_mode: str | None = typer.Option(None, help="Train only this mode (full | smallest | uniform:G | JSON)."),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads."),
) -> None:
    """Train the default-family supernet on real data and write a checkpoint."""
    set_threads(threads)
    check_output_folder(out)
    spec = data_spec(data, data_root, val_size, split_seed, image_size=image_size, channels=channels, hflip=hflip)
    try:
        splits = load_data(spec)
        channels, size, _ = splits.input_shape
        arch = {**CIFAR_RESNET_DEFAULTS, "family": "wenet-cifar-resnet", "depth": depth,
                "widths": parse_widths(widths), "in_channels": channels, "input_size": size,
                "num_classes": splits.num_classes, "group_choices": parse_widths(groups), "shuffle": shuffle,
                "shuffle_rule": shuffle_rule}
        torch.manual_seed(seed)  # the initial weights too: the same command gives the same checkpoint
        supernet = build_supernet(arch)
    except (DataError, ArchError) as error:
        fail(str(error))
    mode_json = parse_mode(supernet, fixed_mode).to_json() if fixed_mode else None
    try:
        recipe = WeNetRecipe(epochs=epochs, batch_size=batch_size, lr=lr, samples_per_step=samples_per_step,
                             sampling=sampling, distill=distill, seed=seed, fixed_mode=mode_json,
                             max_steps_per_epoch=max_steps_per_epoch)
    except ValueError as error:
        fail(str(error))
    console.print(f"training {arch['family']} depth {depth} on {splits.name} "
                  f"({len(splits.train)} train / {len(splits.val)} val) -> {out}")
    columns = (TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
               TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=None, epoch=0, epochs=epochs, loss=0.0, acc=0.0)

        def report(state: dict) -> None:
            # one task over all epochs: a task that completes stops its elapsed-time clock
            bar.update(task, completed=(state["epoch"] - 1) * state["steps"] + state["step"],
                       total=state["epochs"] * state["steps"], epoch=state["epoch"],
                       loss=state["loss_full"], acc=state["acc_full"])

        def epoch_done(record: dict) -> None:
            bar.console.print(f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss_full']:.4f}, "
                              f"train acc {record['train_acc_full']:.4f}, val acc {record['val_acc_active_mode']:.4f}, "
                              f"{record['seconds']:.0f} s")

        try:
            result = train_wenet(supernet, splits, recipe, out, spec.to_dict(), progress=report, on_epoch=epoch_done)
        except (ValueError, CheckpointError) as error:  # e.g. resuming a folder written with another recipe
            fail(str(error))
    last = result["history"][-1]
    console.print(f"done: val accuracy (full mode, stored BN) {last['val_acc_active_mode']:.4f}; "
                  f"checkpoint {out / 'supernet.pt'}; recipe {asdict(recipe)}")
