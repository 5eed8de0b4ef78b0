"""`subnetsearch ddi train`: a dual dynamic inference network (Wang et al.), trained in the paper's
phases: the plain backbone (or `--base`, one trained before), gates alone to zero skipping, gates and
backbone jointly toward the skip target, then exits. The checkpoint is searched (gate threshold and
exit budget), stored and queried with the same commands as any supernet."""

from __future__ import annotations

from pathlib import Path

import optuna
import torch
import typer

from subnetsearch.cli._common import (
    TRIALS_BACKEND_HELP,
    after_tune_trials,
    attach_ray,
    check_backend,
    check_output_folder,
    console,
    data_spec,
    fail,
    parse_range,
    parse_widths,
    set_threads,
)
from subnetsearch.cli._devices import STORAGE_HELP, open_store
from subnetsearch.data import DataError, DataSpec, Splits, load_data
from subnetsearch.distributed import ADDRESS_HELP
from subnetsearch.search import (
    SkipTargetRecipe,
    SkipTargetResult,
    backbone_arch,
    make_sampler,
    open_study,
    recorded,
    skip_target_distributions,
    skip_target_search,
    skip_target_space,
    start_training_search,
    stored_results,
)
from subnetsearch.storage import StorageError, storage_url
from subnetsearch.supernets import (
    DDI_RESNET_DEFAULTS,
    GATINGS,
    ArchError,
    Checkpoint,
    CheckpointError,
    DDISupernet,
    build_supernet,
    load_checkpoint,
    save_checkpoint,
)
from subnetsearch.trainers import DDIPhase, copy_backbone, evaluate_accuracy, train_phase

RESOURCE_HELP = "The cost E of Eq. (5): macs, or energy (Eq. 6, the devices module's model, gates included)."
ddi_app = typer.Typer(no_args_is_help=True, help="Dual dynamic inference: layer/channel skipping and early exits.")


def _load_backbone(path: Path) -> tuple[DDISupernet, Splits, Checkpoint]:
    """A plain DDI backbone (gating none), its data and its checkpoint, or a clear failure."""
    try:
        state = load_checkpoint(path)
        plain = state.build()
        splits = load_data(DataSpec.from_dict(state.data))
    except (CheckpointError, DataError) as error:
        fail(str(error))
    if not isinstance(plain, DDISupernet) or plain.arch["gating"] != "none":
        fail(f"{path} is not a plain DDI backbone (gating none) written by `subnetsearch ddi train`")
    return plain, splits, state


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
    """Train a DDI network toward a skip target and write a searchable checkpoint."""
    set_threads(threads)
    check_output_folder(out)
    if not 0 <= skip_target < 1:
        fail(f"--skip-target must be in [0, 1), got {skip_target}")
    if gating not in GATINGS:
        fail(f"gating must be one of {GATINGS}, got {gating!r}")
    try:
        phase = {"lr": lr, "max_steps_per_epoch": max_steps_per_epoch, "seed": seed, "alpha": alpha,
                 "resource": resource}
        phases = [("gates", DDIPhase(epochs=gate_epochs, train="gates", target=0.0, **phase)),
                  ("joint", DDIPhase(epochs=joint_epochs, target=skip_target, **phase))]
        if exits:
            phases.append(("exits", DDIPhase(epochs=exit_epochs, target=skip_target, exits=True, **phase)))
        backbone_phase = DDIPhase(epochs=backbone_epochs, **phase) if base is None else None
    except ValueError as error:
        fail(str(error))
    if base is not None:
        plain, splits, state = _load_backbone(base)
        spec = DataSpec.from_dict(state.data)
        arch = backbone_arch(plain)
    else:
        spec = data_spec(data, data_root)
        try:
            splits = load_data(spec)
            channels, size, _ = splits.input_shape
            arch = {**DDI_RESNET_DEFAULTS, "family": "ddi-cifar-resnet", "depth": depth,
                    "widths": parse_widths(widths), "in_channels": channels, "input_size": size,
                    "num_classes": splits.num_classes}
            torch.manual_seed(seed)  # the initial weights too: the same command gives the same checkpoint
            plain = build_supernet({**arch, "gating": "none", "exits": False})
        except (DataError, ArchError) as error:
            fail(str(error))
        console.print(f"backbone: plain ResNet-{depth}, {backbone_epochs} epochs on {splits.name}")
        history = train_phase(plain.network, splits, backbone_phase)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "backbone.pt", plain, {"phase": "backbone", "epochs": backbone_epochs}, spec.to_dict(),
                        {"history": history})
        console.print(f"  val accuracy {evaluate_accuracy(plain, splits, splits.val):.4f}; {out / 'backbone.pt'}")
    try:
        supernet = build_supernet({**arch, "gating": gating, "exits": exits, "skip_target": skip_target})
    except ArchError as error:
        fail(str(error))
    copy_backbone(plain.network, supernet.network)
    histories = {}
    for name, settings in phases:
        if name == "gates" and gating == "none":
            continue
        console.print(f"{name}: {settings.epochs} epoch(s), skip target {settings.target}")
        histories[name] = train_phase(supernet.network, splits, settings)
        last = histories[name][-1]
        console.print(f"  skip ratio {last['skip_ratio']:.3f}, cost {last['relative_macs']:.3f} of the plain network")
    supernet.set_mode(supernet.full_mode())
    out.mkdir(parents=True, exist_ok=True)
    accuracy = evaluate_accuracy(supernet, splits, splits.val)
    recipe = {"skip_target": skip_target, "alpha": alpha, "resource": resource, "lr": lr,
              "phases": {n: s.epochs for n, s in phases}}
    save_checkpoint(out / "supernet.pt", supernet, recipe, spec.to_dict(), {"history": histories,
                                                                            "val_acc_full_mode": accuracy})
    console.print(f"done: val accuracy {accuracy:.4f} (threshold 0.5, no budget); checkpoint {out / 'supernet.pt'}")
    console.print(f"next: subnetsearch search --checkpoint {out / 'supernet.pt'} --strategy optuna "
                  "--objectives accuracy,macs")


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
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    backend: str = typer.Option("local", help=TRIALS_BACKEND_HELP),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads (per trial)."),
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
        recipe = SkipTargetRecipe(gating, gate_epochs, joint_epochs, alpha, lr, max_steps_per_epoch, seed, resource)
        recipe.phases(low)
    except ValueError as error:
        fail(str(error))
    set_threads(threads)
    check_output_folder(out)
    plain, splits, state = _load_backbone(base)
    url = storage_url(storage)
    shared, slots = attach_ray(address, url, threads) if backend == "ray" else (url, 1)
    study_name = name or (f"ddi-cifar-resnet-{state.hash[:8]}/skip-target-{gating}/joint={joint_epochs},lr={lr}"
                          + ("" if resource == "macs" else f",resource={resource}"))
    store = open_store(storage)
    settings = {"gating": gating, "gate_epochs": gate_epochs, "joint_epochs": joint_epochs, "alpha": alpha, "lr": lr,
                "resource": resource, "target_range": [low, high], "sampler": sampler, "seed": seed}
    try:
        start_training_search(store, state, base, study_name, f"ddi-skip-target-{gating}",
                              skip_target_space(low, high), settings)
        study = open_study(url, study_name, ["accuracy", "macs"], make_sampler(sampler, seed),
                           {"supernet_hash": state.hash, "strategy": f"ddi-skip-target-{gating}", "search": study_name})
    except StorageError as error:
        fail(str(error))
    except (ValueError, optuna.exceptions.OptunaError) as error:
        fail(f"cannot open the study in {url}: {error}")
    console.print(f"search and study {study_name!r} in {store.url}: {len(stored_results(study))} stored trials; "
                  f"{trials} more")

    def show(result: SkipTargetResult) -> None:
        console.print(f"trial: skip target {result.skip_target:.3f} -> skip ratio {result.skip_ratio:.3f}, "
                      f"{result.cost_profile['mean_macs'] / result.cost_profile['plain_macs']:.0%} of plain MACs, "
                      f"val accuracy {result.accuracy:.4f}")

    with recorded(store, study_name) as summary:
        if backend == "local":
            skip_target_search(plain, splits, state.data, study, trials, low, high, recipe, out, on_trial=show)
        else:
            from subnetsearch.distributed._tune import tune_ddi

            _, errors = tune_ddi(study, shared, make_sampler(sampler, seed), skip_target_distributions(low, high),
                                 state, recipe, str(out.resolve()), trials, slots, threads, max_failures=3)
            study = after_tune_trials(errors, summary, study_name, url, trials, stored_results, show)
        summary.update({"trials": len(stored_results(study)), "new_trials": trials})
    results = stored_results(study)
    if not results:
        fail(f"no trial of study {study_name!r} completed", code=1)
    front = sorted((t for t in study.best_trials if "checkpoint" in t.user_attrs), key=lambda t: t.values[1])
    console.print(f"front of study {study_name!r} ({len(front)} of {len(results)} completed trials):")
    for trial in front:
        console.print(f"  accuracy {trial.values[0]:.4f}, {trial.values[1] / 1e6:.2f} MMACs: "
                      f"{trial.user_attrs['checkpoint']}")
    console.print("next: subnetsearch search --checkpoint <one of them> --strategy optuna --objectives accuracy,macs")
