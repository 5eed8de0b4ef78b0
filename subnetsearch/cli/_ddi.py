"""`subnetsearch ddi train`: a dual dynamic inference network (Wang et al.), trained in the paper's
phases: the plain backbone (or `--base`, one trained before), gates alone to zero skipping, gates and
backbone jointly toward the skip target, then exits. The checkpoint is searched (gate threshold and
exit budget), stored and queried with the same commands as any supernet."""

from __future__ import annotations

from pathlib import Path

import typer

from subnetsearch.cli._common import (
    ADDRESS_OPTION,
    SEED_OPTION,
    STORAGE_OPTION,
    TRIAL_THREADS_OPTION,
    TRIALS_BACKEND_OPTION,
    check_backend,
    check_output_folder,
    console,
    data_spec,
    fail,
    parse_range,
    parse_widths,
    set_threads,
    training_search,
)
from subnetsearch.cli._train import train_family
from subnetsearch.errors import SubnetsearchError
from subnetsearch.search import (
    SkipTargetResult,
    SkipTargetSearch,
    stored_results,
)
from subnetsearch.supernets import (
    GATINGS,
)
from subnetsearch.trainers import DDIRecipe, TrainJob, load_backbone

RESOURCE_HELP = "The cost E of Eq. (5): macs, or energy (Eq. 6, the devices module's model, gates included)."
ddi_app = typer.Typer(no_args_is_help=True, help="Dual dynamic inference: layer/channel skipping and early exits.")


@ddi_app.command("train")
def train_command(
    out: Path = typer.Option(Path("runs/ddi"), help="Folder for backbone.pt and supernet.pt."),
    skip_target: float = typer.Option(0.5, help="Skip ratio the gates are trained toward (training-time knob)."),
    gating: str = typer.Option("mgl2s", help="mgl2s (layer + channel) | layer (SkipNet-style) | channel | none."),
    exits: bool = typer.Option(True, help="Add early-exit classifiers (RADI) and train them last."),
    base: Path | None = typer.Option(None, help="A trained plain backbone (backbone.pt of an earlier run): "
                                               "skips the backbone phase."),
    data: str = typer.Option("fashion-mnist", help="fashion-mnist | cifar10 | imagefolder | synthetic"),
    data_root: str | None = typer.Option(None),
    depth: int = typer.Option(20, help="CIFAR ResNet depth (6n+2)."),
    widths: str = typer.Option("16,32,64"),
    backbone_epochs: int = typer.Option(3),
    gate_epochs: int = typer.Option(1, help="Step 1: gates alone, backbone frozen, toward zero skipping."),
    joint_epochs: int = typer.Option(2, help="Step 2: gates and backbone toward the skip target."),
    exit_epochs: int = typer.Option(1, help="Exits with the summed losses (Eq. 4)."),
    alpha: float = typer.Option(0.5, help="|alpha| of Eq. (5) on the cost relative to the plain network."),
    resource: str = typer.Option("macs", help=RESOURCE_HELP),
    lr: float = typer.Option(0.05),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads."),
) -> None:
    """Train a DDI network toward a skip target and write a searchable checkpoint (the same as
    `subnetsearch train --family ddi`)."""
    set_threads(threads)
    options = {"skip_target": skip_target, "gating": gating, "exits": exits, "base": base, "gate_epochs": gate_epochs,
               "joint_epochs": joint_epochs, "exit_epochs": exit_epochs, "alpha": alpha, "resource": resource}
    job = TrainJob(data_spec(data, data_root), out, backbone_epochs, 128, lr, max_steps_per_epoch, seed, depth,
                   tuple(parse_widths(widths)), {k: v for k, v in options.items() if v is not None})
    train_family("ddi", job)


@ddi_app.command("search")
def search_command(
    base: Path = typer.Option(Path("runs/ddi/backbone.pt"), help="The plain backbone (backbone.pt of `ddi train`)."),
    trials: int = typer.Option(6, help="Trials; each trains gates from the backbone toward one skip target."),
    target_range: str = typer.Option("0.1,0.8", help="Skip targets are sampled uniformly in this range (low,high)."),
    gating: str = typer.Option("mgl2s", help="mgl2s | layer | channel."),
    gate_epochs: int = typer.Option(1),
    joint_epochs: int = typer.Option(1),
    alpha: float = typer.Option(0.5),
    resource: str = typer.Option("macs", help=RESOURCE_HELP),
    lr: float = typer.Option(0.05),
    sampler: str = typer.Option("tpe", help="Optuna sampler."),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    out: Path = typer.Option(Path("runs/ddi/search"), help="One checkpoint per trial is written here (on this "
                                                          "machine, also for trials on other Ray nodes)."),
    name: str | None = typer.Option(None, help="Study name (default from the backbone and settings); rerunning "
                                               "with the same name adds trials."),
    storage: str | None = STORAGE_OPTION,
    backend: str = TRIALS_BACKEND_OPTION,
    address: str | None = ADDRESS_OPTION,
    seed: int = SEED_OPTION,
    threads: int = TRIAL_THREADS_OPTION,
) -> None:
    """Search the skip target (a training-time knob) with Optuna: validation accuracy vs mean MACs."""
    check_backend(backend, address)
    if trials < 1:
        fail(f"--trials must be >= 1, got {trials}")
    if gating not in GATINGS or gating == "none":
        fail(f"gating must be one of {GATINGS[:-1]}, got {gating!r}")
    low, high = parse_range(target_range) or (-1.0, -1.0)
    if not 0 <= low < high < 1:
        fail(f"--target-range must be two numbers 0 <= low < high < 1, got {target_range!r}")
    try:
        recipe = DDIRecipe(low, gating, False, gate_epochs=gate_epochs, joint_epochs=joint_epochs, alpha=alpha, lr=lr,
                           max_steps_per_epoch=max_steps_per_epoch, seed=seed, resource=resource)
        plain, _, state = load_backbone(base)
        search = SkipTargetSearch(state, base, recipe, low, high)
    except SubnetsearchError as error:
        fail(str(error))
    set_threads(threads)
    check_output_folder(out)

    def show(result: SkipTargetResult) -> None:
        console.print(f"trial: skip target {result.skip_target:.3f} -> skip ratio {result.skip_ratio:.3f}, "
                      f"{result.cost_profile['mean_macs'] / result.cost_profile['plain_macs']:.0%} of plain MACs, "
                      f"val accuracy {result.accuracy:.4f}")

    study, study_name = training_search(search, trials, storage, name, sampler, seed, out, backend, address, threads,
                                        show)
    results = stored_results(study)
    if not results:
        fail(f"no trial of study {study_name!r} completed", code=1)
    front = sorted((t for t in study.best_trials if "checkpoint" in t.user_attrs), key=lambda t: t.values[1])
    console.print(f"front of study {study_name!r} ({len(front)} of {len(results)} completed trials):")
    for trial in front:
        console.print(f"  accuracy {trial.values[0]:.4f}, {trial.values[1] / 1e6:.2f} MMACs: "
                      f"{trial.user_attrs['checkpoint']}")
    console.print("next: subnetsearch search --checkpoint <one of them> --strategy optuna --objectives accuracy,macs")
