"""`subnetsearch train --family F`: train a supernet of any registered family
(`subnetsearch.trainers.TRAINERS`). The options every family shares are declared here; each family's
own options come from its trainer's `options` (`--NAME`, refused for the other families), so a
family registered before the command line is built gets its options without touching this module."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from subnetsearch.cli._common import check_output_folder, console, data_spec, fail, parse_widths, set_threads
from subnetsearch.distributed import ADDRESS_HELP, RayTrainSettings, train_on_ray
from subnetsearch.errors import SubnetsearchError
from subnetsearch.trainers import TRAINERS, FamilyTrainer, TrainEvents, TrainJob, TrainOutcome, get_trainer

RAY_OPTIONS = ("address", "workers", "gpus_per_worker", "max_failures")


def _common(
    family: str = typer.Option("wenet", help="The family to train: wenet (group switching) | lasso (the full "
                                             "network non-uniform subnets are generated from) | ddi (layer/channel "
                                             "skipping, exits) | any registered one."),
    out: Path | None = typer.Option(None, help="Folder for the checkpoints and train_log.jsonl (default: the "
                                               "family's: runs/supernet, runs/lasso/base, runs/ddi)."),
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
    epochs: int | None = typer.Option(None, help="Epochs (ddi: of the plain backbone); default: the family's, 10 "
                                                 "(wenet), 5 (lasso), 3 (ddi)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2, help="torch intra-op threads."),
    backend: str = typer.Option("local", help="local (this process) | ray (Ray Train, data parallel over "
                                              "--workers; families that train data parallel: wenet)."),
    address: str | None = typer.Option(None, help=f"--backend ray: {ADDRESS_HELP}"),
    workers: int | None = typer.Option(None, help="--backend ray: data-parallel workers; --batch-size is per "
                                                  "worker [2]."),
    gpus_per_worker: float | None = typer.Option(None, help="--backend ray: GPUs per worker (nccl); 0 = CPUs "
                                                            "(gloo) [0]."),
    max_failures: int | None = typer.Option(None, help="--backend ray: restarts from the last epoch's checkpoint "
                                                       "after a worker dies [2]."),
) -> None:
    """(the options every family shares; `train_command` adds each family's own)"""


def _family_parameters() -> list[inspect.Parameter]:
    """One `--NAME` per option of the registered families (an option two families declare is one
    option, valid for both); None when not given, so a family's default applies."""
    owners = family_options()
    first: dict[str, Any] = {}
    for trainer in TRAINERS.values():
        for option in trainer.options:
            first.setdefault(option.name, option)
    parameters = []
    for name, option in first.items():
        kind = option.kind or str
        default = "" if option.default is None else f" [{option.default}]"
        help_text = f"{', '.join(owners[name])}: {option.help}{default}"
        flag = f"{option.flag}/--no-{option.flag[2:]}" if kind is bool else option.flag
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind | None,
                                            default=typer.Option(None, flag, help=help_text)))
    return parameters


def family_options() -> dict[str, list[str]]:
    """Each family option's name -> the families that take it."""
    owners: dict[str, list[str]] = {}
    for trainer in TRAINERS.values():
        for option in trainer.options:
            owners.setdefault(option.name, []).append(trainer.family)
    return owners


class TrainCommand:
    """Train a supernet of any family on real data and write a searchable checkpoint."""

    __name__ = "train"
    __annotations__ = {}  # noqa: RUF012 - typer reads the parameters' types from __signature__

    @property
    def __signature__(self) -> inspect.Signature:  # read when the command line is built: the registry now
        shared = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                  for p in inspect.signature(_common, eval_str=True).parameters.values()]
        taken = {p.name for p in shared}
        own = [p for p in _family_parameters() if p.name not in taken]
        return inspect.Signature([*shared, *own])

    def __call__(self, **values: Any) -> None:
        train_from_command_line(values)


train_command = TrainCommand()


def train_from_command_line(values: dict[str, Any]) -> None:
    """`train`'s options -> a TrainJob for the family's trainer, checked before any work."""
    try:
        trainer = get_trainer(values.pop("family"))
    except SubnetsearchError as error:
        fail(str(error))
    owners = family_options()
    given = {name: values.pop(name) for name in owners if values.get(name) is not None}
    for name in owners:
        values.pop(name, None)
    own = {option.name for option in trainer.options}
    for name in given:
        if name not in own:
            flag = f"--{name.replace('_', '-')}"
            fail(f"{flag} is an option of --family {' / '.join(owners[name])}, not of --family {trainer.family}")
    backend = values.pop("backend")
    if backend not in ("local", "ray"):
        fail(f"--backend must be local or ray, got {backend!r}")
    ray_given = {name: values.pop(name) for name in RAY_OPTIONS if values.get(name) is not None}
    if ray_given and backend != "ray":
        flags = [f"--{n.replace('_', '-')}" for n in ray_given]
        fail(f"{', '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} to --backend ray")
    if backend == "ray" and not trainer.data_parallel:
        fail(f"--backend ray trains families that train data parallel; the {trainer.family} family does not")
    if not trainer.uses_resnet and (values["depth"] is not None or values["widths"] is not None):
        fail(f"--depth and --widths describe the built-in CIFAR ResNet; the {trainer.family} family does not use it")
    set_threads(values["threads"])
    job = _job(trainer, values, given)
    check_output_folder(job.out)
    if backend == "ray":
        _train_on_ray(trainer, job, ray_given, values["threads"])
    else:
        run_training(trainer, job)


def _job(trainer: FamilyTrainer, values: dict[str, Any], given: dict[str, Any]) -> TrainJob:
    normalize = values["normalize"]
    if normalize is None:
        normalize = trainer.normalization(given, values["channels"])
        if normalize == "imagenet":
            console.print("normalizing with ImageNet's channel statistics, as the torchvision weights were trained "
                          "(--normalize data to use this data set's own)")
    spec = data_spec(values["data"], values["data_root"], values["val_size"], values["split_seed"],
                     image_size=values["image_size"], channels=values["channels"], hflip=values["hflip"],
                     resize=values["resize"], augment=values["augment"], min_crop_scale=values["min_crop_scale"],
                     normalize=normalize)
    widths = tuple(parse_widths(values["widths"])) if values["widths"] is not None else None
    job = TrainJob(spec, values["out"] or Path(trainer.default_out), values["epochs"], values["batch_size"],
                   values["lr"], values["max_steps_per_epoch"], values["seed"], values["depth"], widths, given)
    try:
        return trainer.resolve(job)
    except SubnetsearchError as error:
        fail(str(error))


def _bar() -> Progress:
    columns = (TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=False)


def epoch_line(record: dict, metric: str) -> str:
    """One epoch's record as a line: its training loss, the validation accuracy where it has one."""
    parts = [f"epoch {record['epoch']}"]
    loss = record.get(f"train_{metric}", record.get("train_loss"))
    if loss is not None:
        parts.append(f"train loss {loss:.4f}")
    accuracy = record.get("val_acc_active_mode", record.get("val_acc"))
    if isinstance(accuracy, dict):
        accuracy = next(iter(accuracy.values()), None)
    if accuracy is not None:
        parts.append(f"val acc {accuracy:.4f}")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.0f} s")
    return ": ".join(parts[:1]) + ": " + ", ".join(parts[1:])


def train_family(family: str, job: TrainJob) -> TrainOutcome:
    """Check `job` for the family's trainer, then train it here (the `ddi train` and `lasso base`
    shorthands)."""
    trainer = get_trainer(family)
    try:
        job = trainer.resolve(job)
    except SubnetsearchError as error:
        fail(str(error))
    check_output_folder(job.out)
    return run_training(trainer, job)


def run_training(trainer: FamilyTrainer, job: TrainJob) -> TrainOutcome:
    """Train `job` in this process with a progress bar, one line per epoch, then what to do next."""
    with _bar() as bar:
        task = bar.add_task("train", total=None, epoch=0, epochs=job.epochs, loss=0.0)

        def progress(state: dict) -> None:
            # one task over all epochs: a task that completes stops its elapsed-time clock
            bar.update(task, completed=(state["epoch"] - 1) * state["steps"] + state["step"],
                       total=state["epochs"] * state["steps"], epoch=state["epoch"], epochs=state["epochs"],
                       loss=state.get(trainer.metric, state.get("loss", 0.0)))

        def epoch(record: dict) -> None:
            bar.console.print(epoch_line(record, trainer.metric))

        try:
            outcome = trainer.train(job, TrainEvents(bar.console.print, progress, epoch))
        except SubnetsearchError as error:  # e.g. resuming a folder written with another recipe
            fail(str(error))
    _done(outcome)
    return outcome


def _done(outcome: TrainOutcome) -> None:
    console.print(f"done: val accuracy {outcome.accuracy:.4f}; checkpoint {outcome.checkpoint}; "
                  f"recipe {outcome.recipe}")
    console.print(f"next: {outcome.next_command}")


def _train_on_ray(trainer: FamilyTrainer, job: TrainJob, given: dict[str, Any], threads: int) -> None:
    """`--backend ray`: Ray Train workers run the same training data parallel."""
    try:
        settings = RayTrainSettings(workers=given.get("workers", 2), gpus_per_worker=given.get("gpus_per_worker", 0.0),
                                    threads=threads, max_failures=given.get("max_failures", 2),
                                    cpus_per_worker=float(threads))
        outcome = train_on_ray(trainer, job, settings, given.get("address"), on_status=console.print)
    except SubnetsearchError as error:
        fail(str(error))
    for record in outcome.history:
        console.print(epoch_line(record, trainer.metric))
    _done(outcome)
