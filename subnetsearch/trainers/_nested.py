"""Training the nested-width family: the sandwich rule with in-place distillation (the widest
network, the narrowest, a uniform width, then random per-layer widths each step) through the same
step and loop as WeNet's Algorithm 1 (`WeNetStep`, `train_wenet`), so it trains on a CPU or a GPU,
resumes, and runs data parallel on Ray Train alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from subnetsearch.data import Splits
from subnetsearch.errors import InputError
from subnetsearch.files import file_digest
from subnetsearch.seeding import seeded
from subnetsearch.supernets import (
    NESTED_RESNET_DEFAULTS,
    BaseSupernet,
    NestedSupernet,
    build_supernet_of,
    load_checkpoint,
)
from subnetsearch.trainers._family import TrainJob, TrainOption
from subnetsearch.trainers._wenet import WeNetRecipe, WeNetTrainer


def _group_counts(text: str) -> list[int]:
    try:
        groups = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        groups = []
    if not groups or groups[0] != 1:
        raise InputError(f"--groups must be comma-separated group counts, 1 among them, e.g. 1,2,4; got {text!r}")
    return groups


def _ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--ratios must be comma-separated shares of the channels, e.g. 1,0.75,0.5,0.25; "
                         f"got {text!r}") from None
    if not ratios or 1.0 not in ratios or any(not 0 < r <= 1 for r in ratios):
        raise InputError(f"--ratios must be shares in (0, 1], 1 among them; got {text!r}")
    return ratios


def _trained_alone(recipe: Mapping[str, Any]) -> bool:
    """Whether a checkpoint of this recipe holds one sub-network trained alone (`--fixed-mode`),
    whose channels are in no nesting order yet; a supernet trained by the sandwich rule has one,
    which sorting would scramble (its narrow widths are its first channels, not its largest)."""
    return recipe.get("fixed_mode") is not None


class NestedTrainer(WeNetTrainer):
    """`train --family nested`: a CIFAR ResNet of nested per-layer widths (see `NestedSupernet`)."""

    family = "nested"
    summary = "nested per-layer widths (slimmable; the sandwich rule with in-place distillation)"
    default_out = "runs/nested"
    default_epochs = 10
    supernet_class = NestedSupernet
    options: ClassVar[tuple[TrainOption, ...]] = (
        TrainOption("ratios", "1,0.75,0.5,0.25", "the widths each layer offers, as shares of its channels"),
        TrainOption("groups", "1", "the group counts each block's two 3x3 convolutions offer beside their widths, "
                                   "e.g. 1,2,4 (a mode can be narrower and grouped in one layer; each count must "
                                   "divide every width; 1: widths only); with --start, added to its knobs"),
        TrainOption("start", None, "a trained nested checkpoint to start from (--ratios and the architecture come "
                                   "from it): its full network alone (--fixed-mode full), whose channels are "
                                   "sorted by importance first, or a nested supernet, trained on in the nesting "
                                   "order it has (a second, fine-tuning schedule); with --widths wider than its "
                                   "own it is grown first (its weights the prefix, the added channels read by "
                                   "zero weights: the wider full network starts as the trained one)", kind=Path),
        *(option for option in WeNetTrainer.options
          if option.name in ("samples_per_step", "sampling", "distill", "fixed_mode", "accelerator", "precision",
                             "channels_last", "sync_bn")),
    )

    def resolve(self, job: TrainJob) -> TrainJob:
        if job.options.get("start") is not None and ("ratios" in job.options or job.depth):
            raise InputError("--start brings its own architecture: --ratios and --depth do not apply (--widths "
                             "grows it)")
        job = super().resolve(job)  # WeNet's checks: sampling, accelerator
        options = dict(job.options)
        if options["start"] is not None:
            del options["ratios"]  # the start checkpoint's (resolving the job again finds none given)
        else:
            _ratios(options["ratios"])
        _group_counts(options["groups"])
        return replace(job, options=options)

    def recipe(self, job: TrainJob, supernet: BaseSupernet) -> WeNetRecipe:
        recipe = super().recipe(job, supernet)
        start = job.options.get("start")
        if start is None:
            return recipe
        checkpoint = load_checkpoint(start)
        how = "channels sorted" if _trained_alone(checkpoint.recipe) else "nesting order kept"
        was = [int(w) for w in checkpoint.arch["widths"]]
        if job.widths is not None and list(job.widths) != was:
            how += f"; grown from widths {'-'.join(map(str, was))}"
        return replace(recipe, init=f"{Path(start).name} sha256:{file_digest(Path(start))[:16]} ({how})")

    def normalization(self, options: Mapping[str, Any], channels: int | None) -> str:
        return "data"

    def build(self, job: TrainJob, splits: Splits, say: Callable[[str], None] = lambda line: None) -> BaseSupernet:
        job = self.resolve(job)
        start = job.options["start"]
        if start is not None:
            checkpoint = load_checkpoint(start)
            supernet = checkpoint.build()
            if not isinstance(supernet, NestedSupernet):
                raise InputError(f"--start must be a nested checkpoint (train --family nested), not a "
                                 f"{supernet.arch.get('family')!r} one: {start}")
            if supernet.input_shape != splits.input_shape or supernet.num_classes != splits.num_classes:
                raise InputError(f"{start} was trained on {supernet.input_shape} images of {supernet.num_classes} "
                                 f"classes; this data has {splits.input_shape} and {splits.num_classes}")
            if _trained_alone(checkpoint.recipe):
                supernet.sort_channels()
                say(f"started from {start}, its channels sorted by importance")
            else:
                say(f"started from {start}, a nested supernet: training on in its nesting order")
            groups = _group_counts(job.options["groups"])
            if len(groups) > 1 and groups != [int(g) for g in supernet.arch.get("group_choices", [1])]:
                with_groups = NestedSupernet({**supernet.arch, "group_choices": groups})
                with_groups.load_state_dict(supernet.state_dict())  # group knobs add no weights
                supernet = with_groups
                say(f"group counts {','.join(map(str, groups))} added to every block's convolutions")
            if job.widths is not None and list(job.widths) != [int(w) for w in supernet.arch["widths"]]:
                was = "-".join(str(w) for w in supernet.arch["widths"])
                with seeded(job.seed):  # the added channels' initial weights: the same job, the same checkpoint
                    supernet = supernet.grown(job.widths)
                say(f"grown from widths {was} to {'-'.join(map(str, job.widths))} (the trained network is the "
                    f"prefix; the added channels start read by zero weights)")
            return supernet
        groups = _group_counts(job.options["groups"])
        arch = job.resnet(splits, **{**NESTED_RESNET_DEFAULTS, "family": "nested-cifar-resnet",
                                     "ratios": _ratios(job.options["ratios"]),
                                     **({"group_choices": groups} if len(groups) > 1 else {})})
        with seeded(job.seed):  # the initial weights too: the same job gives the same checkpoint
            return build_supernet_of(NestedSupernet, arch)
