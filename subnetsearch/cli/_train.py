"""`subnetsearch train --family F`: train a supernet of any family (WeNet's Algorithm 1 or one fixed
sub-network; the lasso family's full network, what subnets are generated from; DDI's phases)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from subnetsearch.cli._common import check_output_folder, console, data_spec, fail, parse_mode, parse_widths, set_threads
from subnetsearch.data import DataError, DataSpec, Splits, load_data
from subnetsearch.distributed import ADDRESS_HELP, RayTrainSettings, train_wenet_ray
from subnetsearch.errors import SubnetsearchError
from subnetsearch.files import file_digest
from subnetsearch.seeding import seeded
from subnetsearch.supernets import (
    CIFAR_RESNET_DEFAULTS,
    DDI_RESNET_DEFAULTS,
    GATINGS,
    LASSO_RESNET_DEFAULTS,
    MODEL_HELP,
    ArchError,
    Checkpoint,
    DDISupernet,
    LassoSupernet,
    WeNetSupernet,
    build_model_supernet,
    build_supernet_of,
    load_checkpoint,
    model_arch,
)
from subnetsearch.trainers import (
    CPU,
    Accelerator,
    AcceleratorError,
    DDIPhase,
    DDIRecipe,
    LassoRecipe,
    WeNetRecipe,
    train_ddi,
    train_lasso,
    train_wenet,
)

TRAIN_FAMILIES = ("wenet", "lasso", "ddi")
DEFAULT_OUT = {"wenet": Path("runs/supernet"), "lasso": Path("runs/lasso/base"), "ddi": Path("runs/ddi")}
DEFAULT_EPOCHS = {"wenet": 10, "lasso": 5, "ddi": 3}
RESOURCE_HELP = "The cost E of Eq. (5): macs, or energy (Eq. 6, the devices module's model, gates included)."
# the options only one family reads (None on the command line: not given)
FAMILY_OPTIONS = {
    "wenet": ("groups", "shuffle", "shuffle_rule", "samples_per_step", "sampling", "distill", "fixed_mode", "model",
              "weights", "accelerator", "precision", "channels_last", "backend", "address", "workers",
              "gpus_per_worker", "max_failures", "sync_bn"),
    "ddi": ("skip_target", "gating", "exits", "base", "gate_epochs", "joint_epochs", "exit_epochs", "alpha", "resource"),
}


def train_command(
    family: str = typer.Option("wenet", help="wenet (group switching) | lasso (the full network non-uniform "
                                             "subnets are generated from) | ddi (layer/channel skipping, exits)."),
    out: Path | None = typer.Option(None, help="Folder for the checkpoints and train_log.jsonl (default: "
                                               "runs/supernet, runs/lasso/base or runs/ddi)."),
    data: str = typer.Option("fashion-mnist", help="fashion-mnist | cifar10 | imagefolder | synthetic"),
    data_root: str | None = typer.Option(None, help="Data folder (default for fashion-mnist: the Debian package's)."),
    val_size: int = typer.Option(5000, help="Validation images carved from the training set (imagefolder with a "
                                            "val/ folder: not used)."),
    split_seed: int = typer.Option(0, help="Seed of the train/validation split."),
    image_size: int | None = typer.Option(None, help="imagefolder: the network's square input size (default: the "
                                                     "images' own size, which must then be one size)."),
    resize: int | None = typer.Option(None, help="imagefolder: resize images to this square size and cut the "
                                                 "--image-size input from it (random crops in training, the centre "
                                                 "in evaluation), e.g. --resize 256 --image-size 224 [--image-size]."),
    augment: str | None = typer.Option(None, help="Training augmentation: resized-crop (random area and aspect, "
                                                  "the ImageNet recipe) | pad-crop (2-pixel padded random crop, the "
                                                  "CIFAR recipe) | none [imagefolder: resized-crop, else pad-crop]."),
    min_crop_scale: float = typer.Option(0.08, help="resized-crop: the smallest share of the image's area a crop "
                                                    "keeps (torchvision's 0.08)."),
    normalize: str | None = typer.Option(None, help="data (the training images' channel mean and std) | imagenet "
                                                    "(what torchvision's weights expect) | MEAN,.../STD,... "
                                                    "[imagenet with --model torchvision:NAME --weights on RGB images, "
                                                    "else data]."),
    channels: int | None = typer.Option(None, help="imagefolder: 1 (grayscale) or 3 (RGB); default: what the "
                                                   "images are."),
    hflip: bool = typer.Option(True, help="Random horizontal flips while training (--no-hflip for digits, text)."),
    depth: int | None = typer.Option(None, help="CIFAR ResNet depth (6n+2) [20]."),
    widths: str | None = typer.Option(None, help="Stage widths [16,32,64]."),
    epochs: int | None = typer.Option(None, help="Epochs (ddi: of the plain backbone); default 10 (wenet), 5 "
                                                 "(lasso), 3 (ddi)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads."),
    groups: str | None = typer.Option(None, help="wenet: allowed group counts [1,2,4,8,16]."),
    shuffle: bool | None = typer.Option(None, "--shuffle/--no-shuffle", help="wenet: channel shuffle between the "
                                                                             "convolutions of a block [on]."),
    shuffle_rule: str | None = typer.Option(None, help="wenet: balanced | max (the paper's G = max groups) "
                                                       "[balanced]."),
    samples_per_step: int | None = typer.Option(None, help="wenet: s of Algorithm 1, sub-networks per iteration [4]."),
    sampling: str | None = typer.Option(None, help="wenet: uniform-stats | independent (the paper's) "
                                                   "[uniform-stats]."),
    distill: bool | None = typer.Option(None, "--distill/--no-distill", help="wenet: in-place distillation from "
                                                                             "the full network [on]."),
    fixed_mode: str | None = typer.Option(None, help="wenet: train only this mode (full | smallest | uniform:G | "
                                                     "JSON)."),
    skip_target: float | None = typer.Option(None, help="ddi: skip ratio the gates are trained toward [0.5]."),
    gating: str | None = typer.Option(None, help="ddi: mgl2s (layer + channel) | layer (SkipNet-style) | channel | "
                                                 "none [mgl2s]."),
    exits: bool | None = typer.Option(None, "--exits/--no-exits", help="ddi: add early-exit classifiers (RADI) "
                                                                       "and train them last [on]."),
    base: Path | None = typer.Option(None, help="ddi: a trained plain backbone (backbone.pt of an earlier run): "
                                                "skips the backbone phase."),
    gate_epochs: int | None = typer.Option(None, help="ddi: IADI step 1, gates alone toward zero skipping [1]."),
    joint_epochs: int | None = typer.Option(None, help="ddi: IADI step 2, gates and backbone toward the skip "
                                                       "target [2]."),
    exit_epochs: int | None = typer.Option(None, help="ddi: exits with the summed losses (Eq. 4) [1]."),
    alpha: float | None = typer.Option(None, help="ddi: |alpha| of Eq. (5) on the cost relative to the plain "
                                                  "network [0.5]."),
    resource: str | None = typer.Option(None, help=f"ddi: {RESOURCE_HELP} [macs]"),
    model: str | None = typer.Option(None, help=f"wenet: your model instead of the CIFAR ResNet: {MODEL_HELP}."),
    weights: Path | None = typer.Option(None, help="wenet, with --model: start from this local state-dict file "
                                                   "(nothing is downloaded; a classifier for another number of "
                                                   "classes starts fresh). Default: random initialization."),
    accelerator: str | None = typer.Option(None, help="wenet: auto (a CUDA GPU when there is one) | cpu | cuda | "
                                                      "cuda:N [auto]."),
    precision: str | None = typer.Option(None, help="wenet: fp32 | bf16 | fp16 (autocast; fp16 with a gradient "
                                                    "scaler) [fp32]."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last",
                                              help="wenet: channels-last memory format (faster on GPUs) [off]."),
    backend: str | None = typer.Option(None, help="wenet: local (this process) | ray (Ray Train, data parallel "
                                                  "over --workers) [local]."),
    address: str | None = typer.Option(None, help=f"wenet --backend ray: {ADDRESS_HELP}"),
    workers: int | None = typer.Option(None, help="wenet --backend ray: data-parallel workers; --batch-size is "
                                                  "per worker [2]."),
    gpus_per_worker: float | None = typer.Option(None, help="wenet --backend ray: GPUs per worker (nccl); 0 = "
                                                            "CPUs (gloo) [0]."),
    max_failures: int | None = typer.Option(None, help="wenet --backend ray: restarts from the last epoch's "
                                                       "checkpoint after a worker dies [2]."),
    sync_bn: bool | None = typer.Option(None, "--sync-bn/--no-sync-bn", help="wenet --backend ray: batch-norm "
                                        "statistics over all workers' batches (the one-process batch) [off]."),
) -> None:
    """Train a supernet of any family on real data and write a searchable checkpoint."""
    if family not in TRAIN_FAMILIES:
        fail(f"--family must be one of {', '.join(TRAIN_FAMILIES)}, got {family!r}")
    given = {name: value for name, value in locals().items() if value is not None}
    for owner, names in FAMILY_OPTIONS.items():
        stray = [f"--{n.replace('_', '-')}" for n in names if n in given and owner != family]
        if stray:
            fail(f"{', '.join(stray)} {'is an option' if len(stray) == 1 else 'are options'} of --family {owner}, "
                 f"not of --family {family}")
    if model is not None and (depth is not None or widths is not None):
        fail("--depth and --widths describe the built-in CIFAR ResNet; --model brings its own architecture")
    if weights is not None and model is None:
        fail("--weights needs --model (the built-in CIFAR ResNet starts from random weights)")
    if given.get("backend", "local") not in ("local", "ray"):
        fail(f"--backend must be local or ray, got {backend!r}")
    ray_only = [f"--{n.replace('_', '-')}" for n in ("address", "workers", "gpus_per_worker", "max_failures", "sync_bn")
                if n in given]
    if ray_only and given.get("backend", "local") != "ray":
        fail(f"{', '.join(ray_only)} {'applies' if len(ray_only) == 1 else 'apply'} to --backend ray")
    set_threads(threads)
    out = out or DEFAULT_OUT[family]
    check_output_folder(out)
    epochs = DEFAULT_EPOCHS[family] if epochs is None else epochs
    if normalize is None:  # pretrained torchvision weights were trained on ImageNet-normalized RGB
        pretrained = model is not None and model.startswith("torchvision:") and weights is not None
        normalize = "imagenet" if pretrained and channels != 1 else "data"
        if normalize == "imagenet":
            console.print("normalizing with ImageNet's channel statistics, as the torchvision weights were trained "
                          "(--normalize data to use this data set's own)")
    spec = data_spec(data, data_root, val_size, split_seed, image_size=image_size, channels=channels, hflip=hflip,
                     resize=resize, augment=augment, min_crop_scale=min_crop_scale, normalize=normalize)
    common = {"depth": 20 if depth is None else depth, "widths": widths or "16,32,64", "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "max_steps_per_epoch": max_steps_per_epoch, "seed": seed,
              "threads": threads}
    if family == "ddi":
        ddi = {k: given[k] for k in FAMILY_OPTIONS["ddi"] if k in given}
        train_ddi_family(out, spec, common, ddi)
    else:
        wenet = {k: given[k] for k in FAMILY_OPTIONS["wenet"] if k in given}
        train_grouped_or_lasso(family, out, spec, common, wenet)


def _splits_and_arch(spec: DataSpec, family_arch: dict[str, Any], depth: int, widths: str) -> tuple[Splits, dict]:
    try:
        splits = load_data(spec)
    except DataError as error:
        fail(str(error))
    in_channels, size, _ = splits.input_shape
    return splits, {**family_arch, "depth": depth, "widths": parse_widths(widths), "in_channels": in_channels,
                    "input_size": size, "num_classes": splits.num_classes}


def _bar(columns_text: str) -> Progress:
    columns = (TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), TextColumn(columns_text),
               TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=False)


def _model_supernet(wenet: dict, splits: Splits) -> tuple[WeNetSupernet, dict, str | None]:
    """`--model` (and `--weights`): the converted supernet, its arch and where its weights came from."""
    channels, height, width = splits.input_shape
    if height != width:
        fail(f"--model needs square images; {splits.name} has {height}x{width} (give --image-size)")
    notes: list[str] = []
    weights = wenet.get("weights")
    try:
        arch = model_arch(wenet["model"], num_classes=splits.num_classes, input_size=height, in_channels=channels,
                          group_choices=parse_widths(wenet.get("groups", "1,2,4,8,16")),
                          shuffle=wenet.get("shuffle", True), shuffle_rule=wenet.get("shuffle_rule", "max"))
        supernet = build_model_supernet(arch, weights, notes)
    except SubnetsearchError as error:
        fail(str(error))
    for note in notes:
        console.print(f"note: {note}")
    report = supernet.conversion.summary() if supernet.conversion else ""
    console.print(f"{wenet['model']}: {report}")
    init = f"{weights.name} sha256:{file_digest(weights)[:16]}" if weights is not None else None
    return supernet, arch, init


def train_grouped_or_lasso(family: str, out: Path, spec: DataSpec, common: dict, wenet: dict) -> None:
    """WeNet (Algorithm 1, or one fixed mode; built-in ResNet or --model; local or Ray Train) or the
    lasso family's full network, with a progress bar."""
    defaults = CIFAR_RESNET_DEFAULTS if family == "wenet" else LASSO_RESNET_DEFAULTS
    extra: dict[str, Any] = {}
    if family == "wenet":
        extra = {"group_choices": parse_widths(wenet.get("groups", "1,2,4,8,16")),
                 "shuffle": wenet.get("shuffle", True), "shuffle_rule": wenet.get("shuffle_rule", "balanced")}
    splits, arch = _splits_and_arch(spec, {**defaults, "family": f"{family}-cifar-resnet", **extra},
                                    common["depth"], common["widths"])
    accelerator = CPU  # the lasso family trains on the CPU
    if family == "wenet":
        try:
            accelerator = Accelerator.resolve(wenet.get("accelerator", "auto"), wenet.get("precision", "fp32"),
                                              wenet.get("channels_last", False))
        except AcceleratorError as error:
            fail(str(error))
    init = None
    with seeded(common["seed"]):  # the initial weights too: the same command gives the same checkpoint
        if "model" in wenet:
            supernet, arch, init = _model_supernet(wenet, splits)
        else:
            try:
                supernet = build_supernet_of(WeNetSupernet if family == "wenet" else LassoSupernet, arch)  # type: ignore[assignment]
            except ArchError as error:
                fail(str(error))
    settings = {k: common[k] for k in ("epochs", "batch_size", "lr", "max_steps_per_epoch", "seed")}
    try:
        if family == "wenet":
            fixed = wenet.get("fixed_mode")
            recipe: WeNetRecipe | LassoRecipe = WeNetRecipe(
                **settings, samples_per_step=wenet.get("samples_per_step", 4),
                sampling=wenet.get("sampling", "uniform-stats"), distill=wenet.get("distill", True),
                fixed_mode=parse_mode(supernet, fixed).to_json() if fixed else None,
                precision=accelerator.precision, channels_last=accelerator.channels_last,
                sync_bn=wenet.get("sync_bn", False), init=init)
        else:
            recipe = LassoRecipe(**settings)
    except ValueError as error:
        fail(str(error))
    if wenet.get("backend") == "ray":
        assert isinstance(recipe, WeNetRecipe)
        _train_on_ray(supernet, spec, recipe, out, wenet, common, init is not None)
        return
    what = arch.get("model") or arch.get("factory") or f"depth {common['depth']}"
    console.print(f"training {arch['family']} {what} "
                  f"on {splits.name} ({len(splits.train)} train / {len(splits.val)} val"
                  f"{'; ' + splits.roles if splits.roles else ''}) on {accelerator.describe()} -> {out}")
    metric = "loss_full" if family == "wenet" else "loss"
    with _bar("loss {task.fields[loss]:.3f}") as bar:
        task = bar.add_task("train", total=None, epoch=0, epochs=recipe.epochs, loss=0.0)

        def report(state: dict) -> None:
            # one task over all epochs: a task that completes stops its elapsed-time clock
            bar.update(task, completed=(state["epoch"] - 1) * state["steps"] + state["step"],
                       total=state["epochs"] * state["steps"], epoch=state["epoch"], loss=state[metric])

        def epoch_done(record: dict) -> None:
            bar.console.print(_epoch_line(record, recipe.epochs, metric))

        try:
            if isinstance(recipe, WeNetRecipe) and isinstance(supernet, WeNetSupernet):
                result = train_wenet(supernet, splits, recipe, out, spec.to_dict(), progress=report,
                                     on_epoch=epoch_done, accelerator=accelerator)
            elif isinstance(recipe, LassoRecipe) and isinstance(supernet, LassoSupernet):
                result = train_lasso(supernet, splits, recipe, out, spec.to_dict(), progress=report,
                                     on_epoch=epoch_done)
            else:  # the recipe is made for the family built above
                raise TypeError(f"no trainer for a {type(supernet).__name__} with a {type(recipe).__name__}")
        except SubnetsearchError as error:  # e.g. resuming a folder written with another recipe
            fail(str(error))
    _done(result, recipe, out, family)


def _epoch_line(record: dict, epochs: int, metric: str) -> str:
    accuracy = record.get("val_acc_active_mode", record.get("val_acc", {}).get("full"))
    return (f"epoch {record['epoch']}/{epochs}: train loss {record[f'train_{metric}']:.4f}, val acc {accuracy:.4f}, "
            f"{record['seconds']:.0f} s")


def _done(result: dict, recipe: WeNetRecipe | LassoRecipe, out: Path, family: str) -> None:
    last = result["history"][-1]
    accuracy = last.get("val_acc_active_mode", last.get("val_acc", {}).get("full"))
    console.print(f"done: val accuracy (stored BN) {accuracy:.4f}; checkpoint {out / 'supernet.pt'}; "
                  f"recipe {asdict(recipe)}")
    if family == "lasso":
        console.print(f"next: subnetsearch lasso search --base {out / 'supernet.pt'}")
    else:
        console.print(f"next: subnetsearch search --checkpoint {out / 'supernet.pt'}")


def _train_on_ray(supernet: WeNetSupernet, spec: DataSpec, recipe: WeNetRecipe, out: Path, wenet: dict, common: dict,
                  pretrained: bool) -> None:
    """`--backend ray`: Ray Train workers run the same training data parallel."""
    if wenet.get("accelerator") not in (None, "auto", "cpu") and not wenet.get("gpus_per_worker"):
        fail("--backend ray places workers by --gpus-per-worker; --accelerator does not apply to it")
    try:
        settings = RayTrainSettings(workers=wenet.get("workers", 2), gpus_per_worker=wenet.get("gpus_per_worker", 0.0),
                                    threads=common["threads"], max_failures=wenet.get("max_failures", 2),
                                    cpus_per_worker=float(common["threads"]))
        result = train_wenet_ray(supernet.arch, spec.to_dict(), recipe, out, settings, wenet.get("address"),
                                 initial=supernet.state_dict() if pretrained else None, on_status=console.print)
    except SubnetsearchError as error:
        fail(str(error))
    for record in result["history"]:
        console.print(_epoch_line(record, recipe.epochs, "loss_full"))
    console.print(f"Ray Train: {result['seconds']:.0f} s")
    _done(result, recipe, out, "wenet")


def load_backbone(path: Path) -> tuple[DDISupernet, Splits, Checkpoint]:
    """A plain DDI backbone (gating none), its data and its checkpoint, or a clear failure."""
    try:
        state = load_checkpoint(path)
        plain = state.build()
        splits = load_data(DataSpec.from_dict(state.data))
    except SubnetsearchError as error:
        fail(str(error))
    if not isinstance(plain, DDISupernet) or plain.arch["gating"] != "none":
        fail(f"{path} is not a plain DDI backbone (gating none) written by `subnetsearch train --family ddi`")
    return plain, splits, state


def train_ddi_family(out: Path, spec: DataSpec, common: dict, options: dict) -> None:
    """DDI's phases (`trainers.train_ddi`), one line per phase."""
    if not 0 <= options.get("skip_target", 0.5) < 1:
        fail(f"--skip-target must be in [0, 1), got {options['skip_target']}")
    if options.get("gating", "mgl2s") not in GATINGS:
        fail(f"--gating must be one of {', '.join(GATINGS)}, got {options['gating']!r}")
    base_path = options.pop("base", None)
    try:
        recipe = DDIRecipe(**options, backbone_epochs=common["epochs"], lr=common["lr"],
                           batch_size=common["batch_size"], max_steps_per_epoch=common["max_steps_per_epoch"],
                           seed=common["seed"])
    except ValueError as error:
        fail(str(error))
    if base_path is not None:
        plain, splits, state = load_backbone(base_path)
        arch, data = None, state.data
    else:
        plain = None
        splits, arch = _splits_and_arch(spec, {**DDI_RESNET_DEFAULTS, "family": "ddi-cifar-resnet"},
                                        common["depth"], common["widths"])
        data = spec.to_dict()

    def show(name: str, phase: DDIPhase, history: list[dict] | None) -> None:
        if history is None:
            target = "" if name == "backbone" else f", skip target {phase.target}"
            console.print(f"{name}: {phase.epochs} epoch(s) on {splits.name}{target}")
        elif name != "backbone":
            last = history[-1]
            console.print(f"  skip ratio {last['train_skip_ratio']:.3f}, cost {last['train_relative_macs']:.3f} "
                          "of the plain network")

    try:
        metrics = train_ddi(splits, recipe, out, data, arch=arch, base=plain, on_phase=show)
    except SubnetsearchError as error:
        fail(str(error))
    if base_path is None:
        console.print(f"  backbone: {out / 'backbone.pt'}")
    console.print(f"done: val accuracy {metrics['val_acc_full_mode']:.4f} (threshold 0.5, no budget); "
                  f"checkpoint {out / 'supernet.pt'}")
    console.print(f"next: subnetsearch search --checkpoint {out / 'supernet.pt'} --strategy optuna "
                  "--objectives accuracy,macs")
