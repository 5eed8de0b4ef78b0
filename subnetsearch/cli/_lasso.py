"""`subnetsearch lasso ...`: the non-uniform subnets family (clipped group-Lasso).

base -> (generate | search) -> fuse: train the full 1x1-shortcut ResNet, generate subnets from it
with the clipped group-Lasso penalty (one (lambda, a) or an Optuna search over them), then train the
chosen subnets and the full network together (Algorithm 1). The fused checkpoint is searched,
stored and queried with the same commands as a WeNet supernet (`subnetsearch search --checkpoint`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from subnetsearch.cli._common import (
    ADDRESS_OPTION,
    SEED_OPTION,
    STORAGE_OPTION,
    TRIAL_THREADS_OPTION,
    TRIALS_BACKEND_OPTION,
    check_backend,
    check_output_file,
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
from subnetsearch.data import DataSpec, Splits, load_data
from subnetsearch.errors import SubnetsearchError
from subnetsearch.files import OutputPathError, write_atomically
from subnetsearch.search import (
    EvaluationSettings,
    GeneratedSubnet,
    LassoSearch,
    fused_supernet,
    generate_subnet,
    pick_subnets,
    stored_subnets,
)
from subnetsearch.supernets import (
    ArchError,
    Checkpoint,
    LassoSupernet,
    load_checkpoint,
)
from subnetsearch.trainers import NEAR_ZERO, LassoRecipe, TrainJob, train_lasso

lasso_app = typer.Typer(no_args_is_help=True, help="Non-uniform subnets from clipped group-Lasso (Yang et al.).")

BASE_HELP = "The trained full network (`subnetsearch lasso base`)."
EPOCHS_HELP = "Fine-tune epochs per generated subnet, from the trained full network."
THRESHOLD_HELP = "Channels whose filter norm is below this x the largest of their layer are pruned."
QUICK = EvaluationSettings(calibration_batches=5, calibration_batch_size=128)


def _load_base(path: Path) -> tuple[LassoSupernet, Splits, Checkpoint]:
    try:
        checkpoint = load_checkpoint(path)
        supernet = checkpoint.build()
        splits = load_data(DataSpec.from_dict(checkpoint.data))
    except SubnetsearchError as error:
        fail(str(error))
    if not isinstance(supernet, LassoSupernet) or len(supernet.configs) != 1:
        fail(f"{path} is not a full width network without subnets (family {checkpoint.arch.get('family')!r}, "
             f"{len(getattr(supernet, 'configs', [])) - 1} subnets); train one with `subnetsearch lasso base`")
    return supernet, splits, checkpoint


def _recipe(**fields) -> LassoRecipe:
    try:
        return LassoRecipe(**fields)
    except ValueError as error:
        fail(str(error))


def _progress(label: str):
    last = {"step": -1}

    def report(state: dict) -> None:
        if state["step"] == state["steps"] or state["step"] - last["step"] >= 100:
            last["step"] = state["step"]
            console.print(f"  {label} epoch {state['epoch']}/{state['epochs']} step {state['step']}/{state['steps']} "
                          f"loss {state['loss']:.3f}")
    return report


def _show(subnets: list[GeneratedSubnet], full_macs: int, title: str) -> None:
    table = Table(title=title)
    for column in ("penalty", "lambda", "a", "MACs (M)", "of full", "params", "pruned acc", "channels per slot"):
        table.add_column(column, justify="right")
    for s in subnets:
        table.add_row(s.penalty, f"{s.lam:.4g}", f"{s.a:.3g}", f"{s.macs / 1e6:.2f}", f"{s.macs / full_macs:.0%}",
                      f"{s.params:,}", f"{s.accuracy:.4f}", "-".join(map(str, s.channels)))
    console.print(table)


def _write_json(path: Path, payload: dict) -> None:
    try:
        write_atomically(path, (json.dumps(payload, indent=2) + "\n").encode())
    except OutputPathError as error:
        fail(str(error))


@lasso_app.command("base")
def base_command(
    out: Path = typer.Option(Path("runs/lasso/base"), help="Folder for supernet.pt and train_log.jsonl."),
    data: str = typer.Option("fashion-mnist", help="fashion-mnist | cifar10 | imagefolder | synthetic"),
    data_root: str | None = typer.Option(None, help="Data folder (default for fashion-mnist: the Debian package's)."),
    val_size: int = typer.Option(5000, help="Validation images carved from the training set."),
    split_seed: int = typer.Option(0),
    depth: int = typer.Option(20, help="CIFAR ResNet depth (6n+2)."),
    widths: str = typer.Option("16,32,64", help="Stage widths."),
    epochs: int = typer.Option(5),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads."),
) -> None:
    """Train the full network with 1x1-conv shortcuts (Fig. 5b): what subnets are generated from
    (the same as `subnetsearch train --family lasso`)."""
    set_threads(threads)
    job = TrainJob(data_spec(data, data_root, val_size, split_seed), out, epochs, batch_size, lr, max_steps_per_epoch,
                   seed, depth, tuple(parse_widths(widths)))
    train_family("lasso", job)


@lasso_app.command("generate")
def generate_command(
    base: Path = typer.Option(Path("runs/lasso/base/supernet.pt"), help=BASE_HELP),
    penalty: str = typer.Option("clipped", help="clipped (Eq. 3) | group (Eq. 1, the baseline)."),
    lam: float = typer.Option(0.5, "--lambda", help="Penalty weight lambda."),
    a: float = typer.Option(0.75, help="Clipping scale a: delta_l = a x mean group norm of layer l."),
    epochs: int = typer.Option(1, help=EPOCHS_HELP),
    lr: float = typer.Option(0.02),
    threshold: float = typer.Option(NEAR_ZERO, help=THRESHOLD_HELP),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    out: Path = typer.Option(Path("runs/lasso/subnet.json"), help="Where the subnet's architecture is written."),
    threads: int = typer.Option(2, help="torch intra-op threads."),
) -> None:
    """Generate one subnet: fine-tune with the penalty for (lambda, a), count the surviving channels."""
    set_threads(threads)
    check_output_file(out)
    if penalty not in ("clipped", "group"):
        fail(f"--penalty must be clipped or group, got {penalty!r}")
    if threshold <= 0:
        fail(f"--threshold must be > 0, got {threshold}")
    full, splits, _ = _load_base(base)
    recipe = _recipe(epochs=epochs, lr=lr, max_steps_per_epoch=max_steps_per_epoch, penalty=penalty, lam=lam, a=a)
    subnet = generate_subnet(full, splits, penalty, lam, a, recipe, QUICK, threshold, progress=_progress("penalty"))
    full_macs = full.cost(full.full_mode()).macs
    _show([subnet], full_macs, f"subnet generated with {penalty} group-Lasso")
    for note in subnet.forced:
        console.print(f"[yellow]note:[/] {note}")
    _write_json(out, {"base": str(base), "subnets": [subnet.to_dict()]})
    console.print(f"wrote {out}; next: subnetsearch lasso fuse --base {base} --subnets {out}")


@lasso_app.command("search")
def search_command(
    base: Path = typer.Option(Path("runs/lasso/base/supernet.pt"), help=BASE_HELP),
    penalty: str = typer.Option("clipped", help="clipped (searches lambda and a) | group (lambda only)."),
    trials: int = typer.Option(8, help="Generation trials (each one is a fine-tune)."),
    sampler: str = typer.Option("tpe", help="Optuna sampler: tpe, nsga2, random, ..."),
    epochs: int = typer.Option(1, help=EPOCHS_HELP),
    lr: float = typer.Option(0.02),
    threshold: float = typer.Option(NEAR_ZERO, help=THRESHOLD_HELP),
    pick: int = typer.Option(4, help="Subnets to choose from the front for fused training."),
    lambda_range_text: str = typer.Option("0.01,3", "--lambda-range", help="lambda is sampled log-uniformly in "
                                                                             "this range (low,high)."),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    out: Path = typer.Option(Path("runs/lasso/subnets.json"), help="Where the chosen subnets are written."),
    name: str | None = typer.Option(None, help="Study name (default from the base and the settings); rerunning "
                                               "with the same name adds trials to it."),
    storage: str | None = STORAGE_OPTION,
    backend: str = TRIALS_BACKEND_OPTION,
    address: str | None = ADDRESS_OPTION,
    seed: int = SEED_OPTION,
    threads: int = TRIAL_THREADS_OPTION,
) -> None:
    """Search (lambda, a) with Optuna (accuracy of the pruned subnet vs its MACs); pick subnets."""
    check_backend(backend, address)
    set_threads(threads)
    check_output_file(out)
    if penalty not in ("clipped", "group"):
        fail(f"--penalty must be clipped or group, got {penalty!r}")
    if trials < 1 or pick < 1:
        fail(f"--trials and --pick must be >= 1, got {trials} and {pick}")
    if threshold <= 0:
        fail(f"--threshold must be > 0, got {threshold}")
    lambda_range = parse_range(lambda_range_text)
    if lambda_range is None or not 0 < lambda_range[0] < lambda_range[1]:
        fail(f"--lambda-range must be two numbers 0 < low < high, got {lambda_range_text!r}")
    full, _, checkpoint = _load_base(base)
    recipe = _recipe(epochs=epochs, lr=lr, max_steps_per_epoch=max_steps_per_epoch, penalty=penalty, lam=1.0)
    full_macs = full.cost(full.full_mode()).macs

    def show(subnet: GeneratedSubnet) -> None:
        console.print(f"trial: lambda {subnet.lam:.4g}, a {subnet.a:.3g} -> {subnet.macs / full_macs:.0%} of full "
                      f"MACs, pruned accuracy {subnet.accuracy:.4f}")

    try:
        search = LassoSearch(checkpoint, base, penalty, recipe, QUICK, threshold, lambda_range)
    except SubnetsearchError as error:
        fail(str(error))
    study, study_name = training_search(search, trials, storage, name, sampler, seed, None, backend, address, threads,
                                        show)
    subnets = stored_subnets(study)
    chosen = pick_subnets(subnets, pick, full_macs)
    if not chosen:
        fail(f"none of the study's {len(subnets)} trials pruned a channel; raise --lambda-range or --epochs "
             f"(penalized filters need steps to shrink)", code=1)
    _show(chosen, full_macs, f"{len(chosen)} subnets picked from the front of {len(subnets)} trials")
    _write_json(out, {"base": str(base), "study": study_name, "subnets": [s.to_dict() for s in chosen]})
    console.print(f"wrote {out}; next: subnetsearch lasso fuse --base {base} --subnets {out}")


def _read_subnets(path: Path) -> list[GeneratedSubnet]:
    try:
        payload = json.loads(path.read_text())
        return [GeneratedSubnet(**entry) for entry in payload["subnets"]]
    except FileNotFoundError:
        fail(f"subnets file not found: {path}")
    except (ValueError, KeyError, TypeError) as error:
        fail(f"{path} is not a subnets file written by `subnetsearch lasso generate/search`: {error}")


@lasso_app.command("fuse")
def fuse_command(
    base: Path = typer.Option(Path("runs/lasso/base/supernet.pt"), help=BASE_HELP),
    subnets: list[Path] = typer.Option([Path("runs/lasso/subnets.json")], help="Subnets file(s) from generate/search."),
    uniform: bool = typer.Option(False, help="Instead: uniform widths (slimmable, S-NN) matching each subnet's MACs."),
    scales: str = typer.Option("", help="Section V-A: also train subnets between the smallest one and the full "
                                        "network, every layer of the smallest scaled by these ratios (e.g. 1.5,2,3)."),
    epochs: int = typer.Option(3, help="Fused training epochs, from the trained full network."),
    lr: float = typer.Option(0.02),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    out: Path = typer.Option(Path("runs/lasso/fused"), help="Folder for supernet.pt and train_log.jsonl."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads."),
) -> None:
    """Fused subnet training (Algorithm 1): the subnets and the full network, one private BN each."""
    set_threads(threads)
    check_output_folder(out)
    try:
        ratios = [float(r) for r in scales.split(",") if r.strip()]
    except ValueError:
        ratios = [0.0]
    if any(not r > 1 for r in ratios):
        fail(f"--scales must be ratios > 1 (of the smallest subnet's widths), got {scales!r}")
    full, splits, checkpoint = _load_base(base)
    generated = [subnet for path in subnets for subnet in _read_subnets(path)]
    if not generated:
        fail("no subnets to train: the subnets file(s) list none")
    try:
        supernet, method = fused_supernet(full, generated, uniform, ratios)
    except ArchError as error:
        fail(f"these subnets cannot share one supernet: {error}")
    recipe = _recipe(epochs=epochs, lr=lr, seed=seed, max_steps_per_epoch=max_steps_per_epoch)
    console.print(f"fused training of {len(supernet.configs)} configurations ({', '.join(supernet.names)}) -> {out}")
    result = train_lasso(supernet, splits, recipe, out, checkpoint.data, progress=_progress("fused"))
    table = Table(title=f"fused {method} supernet")
    for column in ("subnet", "MACs (M)", "params", "val acc", "channels per slot"):
        table.add_column(column, justify="right")
    accuracies = result["history"][-1]["val_acc"]
    for index, subnet_name in enumerate(supernet.names):
        mode = supernet.space.mode({"width": index})
        cost = supernet.cost(mode)
        table.add_row(subnet_name, f"{cost.macs / 1e6:.2f}", f"{cost.params:,}", f"{accuracies[subnet_name]:.4f}",
                      "-".join(map(str, supernet.channels(mode))))
    console.print(table)
    console.print(f"checkpoint {out / 'supernet.pt'} (recipe {asdict(recipe)}); next: subnetsearch search "
                  f"--checkpoint {out / 'supernet.pt'} --strategy optuna --objectives accuracy,latency")
