"""WeNet training, Algorithm 1 of the paper: per iteration, accumulate the gradients of the full
network, the smallest sub-network and s-2 random sub-networks, then take one optimizer step."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.data import Splits, load_data
from subnetsearch.errors import InputError
from subnetsearch.files import file_digest
from subnetsearch.seeding import seeded
from subnetsearch.spaces import Mode
from subnetsearch.supernets import (
    CIFAR_RESNET_DEFAULTS,
    MODEL_HELP,
    BaseSupernet,
    WeNetSupernet,
    build_model_supernet,
    build_supernet_of,
    model_arch,
    save_checkpoint,
)
from subnetsearch.trainers._accelerate import CPU, PRECISIONS, Accelerator
from subnetsearch.trainers._evaluate import evaluate_accuracy
from subnetsearch.trainers._family import (
    FamilyTrainer,
    TrainEvents,
    TrainJob,
    TrainOption,
    TrainOutcome,
    last_accuracy,
)
from subnetsearch.trainers._loop import Callbacks, Saving, Schedule, Shard, fit, sgd, timeless
from subnetsearch.trainers._parallel import DataParallel, sync_batchnorm

Sampling = Literal["independent", "uniform-stats"]


def check_sampling(samples_per_step: int, sampling: str) -> None:
    if samples_per_step < 1:
        raise InputError(f"samples_per_step must be >= 1, got {samples_per_step}")
    if sampling not in ("independent", "uniform-stats"):
        raise InputError(f"sampling must be 'independent' or 'uniform-stats', got {sampling!r}")


@dataclass(frozen=True)
class WeNetRecipe:
    """Training settings, saved with every checkpoint.

    samples_per_step (s): 4 by default on CPU. Each sub-network costs a full forward/backward (grouped
    convolutions are no cheaper to train here), so s is the direct multiplier of training time; the
    paper's s=20 would make one Fashion-MNIST epoch take about half an hour on 2 cores. s=4 keeps the
    full and smallest networks (the sandwich rule) plus two random ones.

    sampling: "independent" is the paper's (s-2 patterns with per-layer group counts drawn
    independently, all updating BN running statistics). "uniform-stats" draws the first random
    pattern as a uniform one (every layer at the same, random group count) and lets only uniform
    patterns (full, smallest, that one) update running statistics: each S-BN key then holds the
    statistics of the uniform mode with that group count, exact out of the box, instead of a mix
    polluted by the other layers' random patterns. Mixed modes are BN-calibrated when evaluated.

    distill: in-place distillation (US-Nets): sub-networks learn from the full network's detached
    soft predictions instead of the labels.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    samples_per_step: int = 4
    sampling: Sampling = "uniform-stats"
    distill: bool = True
    augment: bool = True
    channels_last: bool = False  # measured slower for these narrow layers on this CPU
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast (fp16 with a gradient scaler)
    sync_bn: bool = False  # data parallel: batch statistics over all ranks' batches (the one-process batch)
    init: str | None = None  # the weights file training started from (name and sha256), None: random
    seed: int = 0
    fixed_mode: str | None = None  # canonical JSON of a mode: train only that sub-network (a "twin")
    max_steps_per_epoch: int | None = None  # for quick runs and tests

    def __post_init__(self) -> None:
        check_sampling(self.samples_per_step, self.sampling)
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.schedule()  # epochs, batch size, steps and learning rate checked there

    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.batch_size, self.lr, self.seed, self.augment, self.max_steps_per_epoch)


def sample_patterns(supernet: BaseSupernet, recipe: WeNetRecipe, generator: torch.Generator) -> list[tuple[Mode, bool]]:
    """The sub-networks of one iteration, each with whether it may update BN running statistics."""
    return _patterns(supernet, recipe.samples_per_step, recipe.sampling, recipe.fixed_mode, generator)


def _patterns(supernet: BaseSupernet, samples_per_step: int, sampling: str, fixed_mode: str | None,
              generator: torch.Generator) -> list[tuple[Mode, bool]]:
    if fixed_mode is not None:
        return [(Mode.from_json(fixed_mode), True)]
    patterns = [(supernet.full_mode(), True)]
    if samples_per_step >= 2:
        patterns.append((supernet.smallest_mode(), True))
    uniform_first = sampling == "uniform-stats"
    for index in range(samples_per_step - 2):
        uniform = supernet.uniform_modes() if uniform_first and index == 0 else []
        if uniform:
            patterns.append((uniform[int(torch.randint(len(uniform), (1,), generator=generator))], True))
        else:
            patterns.append((supernet.random_mode(generator), not uniform_first))
    return patterns


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradientReduce = Callable[[nn.Module], None]


class WeNetStep:
    """One iteration of Algorithm 1 on one batch, for any training loop: your own, `fit`'s, or a Ray
    Train worker's.

    Per call: sample the iteration's sub-networks (the full network, the smallest, then
    `samples_per_step - 2` random ones; the first random one uniform under "uniform-stats"), and for
    each set the mode, run the batch, and accumulate the gradient of `loss(logits, labels)` (the full
    network, and every sub-network without `distill`) or of the KL divergence to the full network's
    detached soft predictions (in-place distillation); switchable BN gives each group count its own
    statistics. Then one optimizer step. Returns the full network's loss and accuracy and the mean
    loss over the sub-networks.

    Sampling draws from `generator` (its own, seeded by `seed`, unless one is given): data-parallel
    ranks seeded alike sample the same sub-networks at every step, which `reduce_gradients` (called
    on the model once all gradients are in, before the optimizer step) relies on. Mixed precision
    comes from the `accelerator` (autocast; a gradient scaler for fp16)."""

    def __init__(self, supernet: BaseSupernet, optimizer: torch.optim.Optimizer, *, samples_per_step: int = 4,
                 sampling: Sampling = "uniform-stats", distill: bool = True, loss: Loss = F.cross_entropy,
                 seed: int = 0, generator: torch.Generator | None = None, accelerator: Accelerator = CPU,
                 fixed_mode: Mode | str | None = None, reduce_gradients: GradientReduce | None = None) -> None:
        check_sampling(samples_per_step, sampling)
        if not isinstance(supernet, BaseSupernet):
            raise TypeError(f"WeNetStep trains a supernet (a BaseSupernet), got {type(supernet).__name__}")
        self.supernet, self.optimizer, self.loss = supernet, optimizer, loss
        self.samples_per_step, self.sampling, self.distill = samples_per_step, sampling, distill
        self.fixed_mode = fixed_mode.to_json() if isinstance(fixed_mode, Mode) else fixed_mode
        if self.fixed_mode is not None:
            supernet.space.validate(Mode.from_json(self.fixed_mode))
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.accelerator, self.reduce_gradients = accelerator, reduce_gradients
        self.scaler = accelerator.scaler()

    def patterns(self) -> list[tuple[Mode, bool]]:
        """The next iteration's sub-networks, each with whether it may update BN running statistics."""
        return _patterns(self.supernet, self.samples_per_step, self.sampling, self.fixed_mode, self.generator)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One step on a batch from anywhere (moved to the accelerator's device first)."""
        return self.run_batch(*self.accelerator.batch(images, labels))

    def run_batch(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One step on a batch that is on the device already (what `fit` gives)."""
        return self.run(images, labels, self.patterns())

    def run(self, images: torch.Tensor, labels: torch.Tensor, patterns: list[tuple[Mode, bool]]) -> dict[str, float]:
        """Algorithm 1, lines 5-19, on these sub-networks: accumulate every pattern's gradient, step once."""
        supernet, scaler = self.supernet, self.scaler
        self.optimizer.zero_grad(set_to_none=True)
        soft_targets = None
        losses = []
        correct_full = 0.0
        try:
            for index, (mode, track_stats) in enumerate(patterns):
                supernet.set_mode(mode)
                supernet.set_bn_tracking(track_stats)
                with self.accelerator.autocast():
                    logits = supernet(images)
                    if index > 0 and self.distill and soft_targets is not None:
                        loss = F.kl_div(F.log_softmax(logits.float(), 1), soft_targets, reduction="batchmean")
                    else:
                        loss = self.loss(logits.float(), labels)
                if index == 0:
                    soft_targets = F.softmax(logits.detach().float(), 1)
                    correct_full = (logits.argmax(1) == labels).float().mean().item()
                scaler.scale(loss).backward()
                losses.append(loss.item())
        finally:
            supernet.set_bn_tracking(True)
        if self.reduce_gradients is not None:
            self.reduce_gradients(supernet)
        scaler.step(self.optimizer)
        scaler.update()
        return {"loss_full": losses[0], "loss_mean": sum(losses) / len(losses), "acc_full": correct_full}


def train_step(supernet: BaseSupernet, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, patterns: list[tuple[Mode, bool]], distill: bool) -> dict[str, float]:
    """One iteration of Algorithm 1 (lines 5-19) on given sub-networks, in fp32 on the batch's device."""
    return WeNetStep(supernet, optimizer, distill=distill).run(images, labels, patterns)


def train_wenet(supernet: BaseSupernet, splits: Splits, recipe: WeNetRecipe, out_dir: str | Path,
                data_spec: dict, progress: Callable[[dict], None] | None = None,
                resume: bool = True, on_epoch: Callable[[dict], None] | None = None,
                accelerator: Accelerator | None = None, parallel: DataParallel | None = None) -> dict:
    """Train with Algorithm 1 through the one training loop; writes `last.pt` (resumable) each
    epoch, `supernet.pt` at the end, and `train_log.jsonl` (one line of metrics per epoch) in
    `out_dir`. Returns the final metrics.

    On the `accelerator`'s device (default: the CPU, in the recipe's precision and layout), as one
    rank of `parallel` data-parallel training if given (every rank samples the same sub-networks;
    rank 0 writes). The supernet comes back on the CPU either way."""
    out_dir = Path(out_dir)
    accelerator = accelerator or Accelerator(precision=recipe.precision, channels_last=recipe.channels_last)
    if (accelerator.precision, accelerator.channels_last) != (recipe.precision, recipe.channels_last):
        raise InputError(f"the accelerator ({accelerator.describe()}) disagrees with the recipe's precision "
                         f"{recipe.precision} / channels_last {recipe.channels_last}")
    with seeded(recipe.seed):
        generator = torch.Generator().manual_seed(recipe.seed)
        accelerator.prepare(supernet)
        if parallel is not None and recipe.sync_bn:
            sync_batchnorm(supernet, True)
        optimizer = sgd(supernet, recipe.lr, recipe.momentum, recipe.weight_decay)
        schedule = recipe.schedule()
        active = supernet.full_mode() if recipe.fixed_mode is None else Mode.from_json(recipe.fixed_mode)
        step = WeNetStep(supernet, optimizer, samples_per_step=recipe.samples_per_step, sampling=recipe.sampling,
                         distill=recipe.distill, generator=generator, accelerator=accelerator,
                         fixed_mode=recipe.fixed_mode, reduce_gradients=parallel.reduce_gradients if parallel else None)

        def evaluate() -> dict[str, float]:
            supernet.set_mode(active)
            return {"val_acc_active_mode": round(evaluate_accuracy(supernet, splits, splits.val), 5)}

        writes = parallel is None or parallel.rank == 0
        try:
            shard = (Shard(parallel.rank, parallel.world, (recipe.seed + 1) * 7919 + parallel.rank)
                     if parallel else Shard())
            history = fit(supernet, splits, schedule, optimizer, step.run_batch, evaluate, generator=generator,
                          saving=Saving(out_dir, supernet, asdict(recipe), data_spec, resume),
                          callbacks=Callbacks(progress, on_epoch, parallel.on_saved if parallel else None),
                          accelerator=accelerator, shard=shard)
        finally:
            sync_batchnorm(supernet, False)
            supernet.to("cpu").to(memory_format=torch.contiguous_format)
        supernet.set_mode(active)
        final = {"epochs": recipe.epochs, "history": history}
        if writes:
            save_checkpoint(out_dir / "supernet.pt", supernet, asdict(recipe), data_spec,
                            {**final, "history": timeless(history)})
        return final


def _mode_from_text(supernet: BaseSupernet, text: str) -> Mode:
    """full | smallest | uniform:G | width:R, or a mode's JSON (its values, or layer -> groups) or a file of it."""
    try:
        named = supernet.mode_named(text)
    except ValueError as error:  # ModeError and InputError alike
        raise InputError(f"bad mode for --fixed-mode: {error}") from None
    if named is not None:
        return named
    if Path(text).is_file():
        text = Path(text).read_text()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(f"--fixed-mode must be full, smallest, uniform:G or a mode's JSON, got {text[:80]!r}") from None
    values = payload.get("values", payload) if isinstance(payload, dict) else None
    if not isinstance(values, dict):
        raise InputError(f"--fixed-mode must be full, smallest, uniform:G or a mode's JSON, got {text[:80]!r}")
    try:
        return supernet.make_mode(values)
    except ValueError as error:  # ModeError and InputError alike
        raise InputError(f"bad mode for --fixed-mode: {error}") from None


def _group_choices(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--groups must be comma-separated group counts, e.g. 1,2,4,8,16; got {text!r}") from None


def _width_ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ratios = []
    if not ratios or 1.0 not in ratios or any(not 0 < r <= 1 for r in ratios):
        raise InputError(f"--width-ratios must be comma-separated shares of a layer's channels in (0, 1], 1 among "
                         f"them, e.g. 1,.75,.5,.25 (1 alone: no width knobs); got {text!r}")
    return ratios


class WeNetTrainer(FamilyTrainer):
    """WeNet's Algorithm 1 (or one fixed mode), on the built-in CIFAR ResNet or your `--model`,
    locally (on a CPU or GPU) or as one rank of data-parallel training (Ray Train)."""

    family = "wenet"
    summary = "group switching (WeNet's Algorithm 1)"
    supernet_class: type[BaseSupernet] = WeNetSupernet
    default_out = "runs/supernet"
    default_epochs = 10
    metric = "loss_full"
    data_parallel = True
    options: ClassVar[tuple[TrainOption, ...]] = (
        TrainOption("groups", "1,2,4,8,16", "allowed group counts"),
        TrainOption("shuffle", True, "channel shuffle between the convolutions of a block"),
        TrainOption("shuffle_rule", None, "balanced | max (the paper's G = max groups) [balanced; --model: max]",
                    kind=str),
        TrainOption("samples_per_step", 4, "s of Algorithm 1, sub-networks per iteration"),
        TrainOption("sampling", "uniform-stats", "uniform-stats | independent (the paper's)"),
        TrainOption("distill", True, "in-place distillation from the full network"),
        TrainOption("fixed_mode", None, "train only this mode (full | smallest | uniform:G | width:R | JSON)", kind=str),
        TrainOption("model", None, f"your model instead of the CIFAR ResNet: {MODEL_HELP}", kind=str),
        TrainOption("width_ratios", "1,.75,.5,.25", "with --model: the shares of its output channels a layer that "
                    "feeds only dense layers (transformer MLPs, convolutions without BN) offers as a width knob "
                    "(1: none)"),
        TrainOption("weights", None, "with --model: start from this local state-dict file (nothing is downloaded; "
                                     "a classifier for another number of classes starts fresh); default: random "
                                     "initialization", kind=Path),
        TrainOption("accelerator", "auto", "auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N"),
        TrainOption("precision", "fp32", "fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler)"),
        TrainOption("channels_last", False, "channels-last memory format (faster on GPUs)"),
        TrainOption("sync_bn", False, "data parallel: batch-norm statistics over all workers' batches (the "
                                      "one-process batch)"),
    )

    def resolve(self, job: TrainJob) -> TrainJob:
        job = super().resolve(job)
        options = job.options
        # .get: a family built on this trainer (nested) may not take --model
        if options.get("model") is not None and (job.depth is not None or job.widths is not None):
            raise InputError("--depth and --widths describe the built-in CIFAR ResNet; --model brings its own "
                             "architecture")
        if options.get("weights") is not None and options.get("model") is None:
            raise InputError("--weights needs --model (the built-in CIFAR ResNet starts from random weights)")
        check_sampling(options["samples_per_step"], options["sampling"])
        if "width_ratios" in options:
            _width_ratios(options["width_ratios"])  # checked before any work
        Accelerator.resolve(options["accelerator"], options["precision"], options["channels_last"])  # checks them
        return job

    def normalization(self, options: Mapping[str, Any], channels: int | None) -> str:
        """Pretrained torchvision weights were trained on ImageNet-normalized RGB."""
        model = options.get("model") or ""
        return "imagenet" if model.startswith("torchvision:") and options.get("weights") and channels != 1 else "data"

    def build(self, job: TrainJob, splits: Splits, say: Callable[[str], None] = lambda line: None) -> BaseSupernet:
        job = self.resolve(job)
        options = job.options
        choices = _group_choices(options["groups"])
        with seeded(job.seed):  # the initial weights too: the same job gives the same checkpoint
            if options["model"] is None:
                arch = job.resnet(splits, **{**CIFAR_RESNET_DEFAULTS, "family": "wenet-cifar-resnet",
                                             "group_choices": choices, "shuffle": options["shuffle"],
                                             "shuffle_rule": options["shuffle_rule"] or "balanced"})
                return build_supernet_of(WeNetSupernet, arch)
            channels, height, width = splits.input_shape
            if height != width:
                raise InputError(f"--model needs square images; {splits.name} has {height}x{width} (give "
                                 "--image-size)")
            arch = model_arch(options["model"], num_classes=splits.num_classes, input_size=height,
                              in_channels=channels, group_choices=choices, shuffle=options["shuffle"],
                              shuffle_rule=options["shuffle_rule"] or "max",
                              width_ratios=_width_ratios(options["width_ratios"]))
            notes: list[str] = []
            supernet = build_model_supernet(arch, options["weights"], notes)
        for note in notes:
            say(f"note: {note}")
        if supernet.conversion:
            say(f"{options['model']}: {supernet.conversion.summary()}")
        return supernet

    def recipe(self, job: TrainJob, supernet: BaseSupernet) -> WeNetRecipe:
        options = job.options
        weights = options.get("weights")
        fixed = options["fixed_mode"]
        return WeNetRecipe(**job.settings(), samples_per_step=options["samples_per_step"],
                           sampling=options["sampling"], distill=options["distill"],
                           fixed_mode=_mode_from_text(supernet, fixed).to_json() if fixed else None,
                           precision=options["precision"], channels_last=options["channels_last"],
                           sync_bn=options["sync_bn"],
                           init=f"{Path(weights).name} sha256:{file_digest(Path(weights))[:16]}" if weights else None)

    def fit(self, supernet: BaseSupernet, splits: Splits, job: TrainJob, events: TrainEvents,
            parallel: DataParallel | None = None, device: torch.device | None = None) -> TrainOutcome:
        job = self.resolve(job)
        if not isinstance(supernet, self.supernet_class):
            raise InputError(f"the {self.family} trainer trains {self.supernet_class.__name__}s, not a "
                             f"{type(supernet).__name__}")
        recipe = self.recipe(job, supernet)
        options = job.options
        accelerator = (Accelerator(device, recipe.precision, recipe.channels_last) if device is not None else
                       Accelerator.resolve(options["accelerator"], recipe.precision, recipe.channels_last))
        if parallel is None:
            what = supernet.arch.get("model") or supernet.arch.get("factory") or f"depth {supernet.arch.get('depth')}"
            events.say(f"training {supernet.arch['family']} {what} on {splits.name} ({len(splits.train)} train / "
                       f"{len(splits.val)} val{'; ' + splits.roles if splits.roles else ''}) on "
                       f"{accelerator.describe()} -> {job.out}")
        result = train_wenet(supernet, splits, recipe, job.out, job.data.to_dict(), progress=events.progress,
                             on_epoch=events.epoch, accelerator=accelerator, parallel=parallel)
        checkpoint = Path(job.out) / "supernet.pt"
        return TrainOutcome(checkpoint, last_accuracy(result["history"]), result["history"], asdict(recipe),
                            self.next_command(checkpoint))

    def train(self, job: TrainJob, events: TrainEvents = TrainEvents()) -> TrainOutcome:
        job = self.resolve(job)
        splits = load_data(job.data)
        return self.fit(self.build(job, splits, events.say), splits, job, events)
