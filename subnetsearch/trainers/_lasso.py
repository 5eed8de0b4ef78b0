"""Non-uniform subnets (Yang et al.): clipped group-Lasso subnet generation and fused subnet training.

- `clipped_group_lasso` is Eq. (3): lambda * sum_l sum_i min(||W_l,i||_2, delta_l) over the output
  channels i of every conv l, with delta_l = a * mean_i ||W_l,i||_2 detached from the graph (a clipped
  group gets no gradient from the penalty). `group_lasso` is Eq. (1), the baseline.
- `count_channels` reads a penalty-trained network's architecture: per channel slot, the output
  channels whose group norm is above a near-zero threshold, following the data flow (a block's output
  channel is alive if its conv2 filter or its shortcut filter is), giving counts and Eq. (4) masks.
- `train_lasso` is one loop for every training the family needs: the full network alone (optionally
  with a penalty: subnet generation), Algorithm 1 (every configuration's forward/backward per batch,
  gradients accumulated, one step; private BN per configuration), or one configuration alone (the
  "individually trained" baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.data import Splits, load_data
from subnetsearch.errors import InputError
from subnetsearch.seeding import seeded
from subnetsearch.supernets import (
    LASSO_RESNET_DEFAULTS,
    LassoSupernet,
    SlimBatchNorm2d,
    SlimConv2d,
    build_supernet_of,
    save_checkpoint,
)
from subnetsearch.trainers._evaluate import evaluate_accuracy
from subnetsearch.trainers._family import (
    FamilyTrainer,
    TrainEvents,
    TrainJob,
    TrainOutcome,
    last_accuracy,
)
from subnetsearch.trainers._loop import Callbacks, Saving, Schedule, fit, sgd, timeless

Penalty = Literal["none", "clipped", "group"]

# A channel is sparse when its filter's L2 norm is below NEAR_ZERO x the largest norm of its slot, or
# below FLOOR outright. Relative, because every conv is followed by BN: a filter's scale does not
# change the network's function, so the cross-entropy gradient on a filter grows as its norm shrinks
# and SGD never takes a penalized filter to exactly zero; penalized filters settle at a few percent
# of the surviving filters' norms (the bimodal distributions of the paper's Fig. 10). The absolute
# floor catches a slot whose every filter collapsed (then its largest one is kept, and said so).
NEAR_ZERO = 0.05
FLOOR = 1e-3


def group_norms(weight: torch.Tensor) -> torch.Tensor:
    """||W_l,i||_2 for every output channel i of a conv (or linear) weight."""
    return weight.flatten(1).norm(dim=1)


def group_lasso(weights: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
    """Eq. (1)'s penalty: lambda * sum_l sum_i ||W_l,i||_2."""
    return lam * torch.stack([group_norms(weight).sum() for weight in weights]).sum()


def clipped_group_lasso(weights: Sequence[torch.Tensor], lam: float, a: float) -> torch.Tensor:
    """Eq. (3)'s penalty: lambda * sum_l sum_i min(||W_l,i||_2, delta_l), delta_l = a * mean_i ||W_l,i||_2,
    delta_l detached (a constant in the backward pass)."""
    total = weights[0].new_zeros(())
    for weight in weights:
        norms = group_norms(weight)
        delta = a * norms.mean().detach()
        total = total + torch.minimum(norms, delta).sum()
    return lam * total


def penalized_weights(supernet: LassoSupernet) -> list[torch.Tensor]:
    """The full weight of every conv (stem, both convs of each block, the 1x1 shortcuts)."""
    return [module.weight for module in supernet.network.modules() if isinstance(module, SlimConv2d)]


@dataclass(frozen=True)
class ChannelCount:
    """A generated subnet: channel count and Eq. (4) mask (alive output channels) per slot, and what
    had to be forced (a slot whose every channel was sparse keeps its largest one)."""

    channels: list[int]
    masks: list[torch.Tensor]
    forced: list[str]


def count_channels(supernet: LassoSupernet, threshold: float = NEAR_ZERO, floor: float = FLOOR) -> ChannelCount:
    """Count the non-sparse output channels of every slot of the full network (configuration 0): a
    channel survives when its norm is at least `threshold` x the slot's largest norm and `floor`."""
    convs = dict(supernet.network.named_modules())
    producers: dict[int, list[str]] = {}
    for name, _, dst, _, _ in supernet.conv_specs():
        producers.setdefault(dst, []).append(name)
    channels, masks, forced = [], [], []
    with torch.no_grad():
        for slot, slot_name in enumerate(supernet.slots):
            norms = torch.stack([group_norms(convs[name].weight) for name in producers[slot]]).norm(dim=0)
            mask = (norms >= threshold * norms.max()) & (norms >= floor)
            if not bool(mask.any()):
                mask = torch.zeros_like(mask)
                mask[int(norms.argmax())] = True
                forced.append(f"{slot_name}: every channel's filter norm was below {floor:g} (largest "
                              f"{float(norms.max()):.3g}); kept its largest one")
            channels.append(int(mask.sum()))
            masks.append(mask)
    return ChannelCount(channels, masks, forced)


def sort_channels(supernet: LassoSupernet) -> None:
    """Reorder every slot's channels by decreasing filter norm (conv2 and shortcut together for a
    block output), moving the consumers' input channels and the BNs along: the network computes the
    same function, and the first c channels of a slot are its c most important ones, which is what
    nested subnets keep. Only for a supernet with the full configuration alone."""
    if len(supernet.configs) != 1:
        raise InputError("sort_channels works on the full network alone (before subnets share its weights)")
    modules = dict(supernet.network.named_modules())
    specs = supernet.conv_specs()
    with torch.no_grad():
        order = []
        for slot in range(len(supernet.slots)):
            norms = torch.stack([group_norms(modules[name].weight) for name, _, dst, _, _ in specs if dst == slot])
            order.append(torch.argsort(norms.norm(dim=0), descending=True, stable=True))
        for name, src, dst, _, _ in specs:
            weight = modules[name].weight
            moved = weight[order[dst]]
            weight.copy_(moved if src is None else moved[:, order[src]])
        for module in supernet.network.modules():
            if isinstance(module, SlimBatchNorm2d):
                for tensor in _bn_tensors(module.norms[0]):
                    tensor.copy_(tensor[order[module.slot]])
        fc = supernet.network.fc
        fc.weight.copy_(fc.weight[:, order[-1]])


def _bn_tensors(norm: nn.Module) -> list[torch.Tensor]:
    """An affine BN's weight, bias, running mean and running variance (every private BN has all four)."""
    tensors = [getattr(norm, key) for key in ("weight", "bias", "running_mean", "running_var")]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise InputError(f"{norm} is not an affine BN with running statistics")
    return tensors


def init_from_full(supernet: LassoSupernet, full: LassoSupernet) -> None:
    """Start a supernet with subnets from a trained full network of the same widths: every conv and
    the classifier take its weights; each configuration's private BN takes the first c channels of
    the full network's BN."""
    source = dict(full.network.named_modules())
    with torch.no_grad():
        for name, module in supernet.network.named_modules():
            twin = source.get(name)
            if isinstance(module, SlimConv2d | nn.Linear):
                if twin is None or twin.weight.shape != module.weight.shape:
                    raise InputError(f"the full network does not fit: {name} differs")
                module.weight.copy_(twin.weight)
                if module.bias is not None and twin.bias is not None:
                    module.bias.copy_(twin.bias)
            elif isinstance(module, SlimBatchNorm2d):
                if not isinstance(twin, SlimBatchNorm2d):
                    raise InputError(f"the full network does not fit: {name} differs")
                reference = twin.norms[0]
                for norm in module.norms:
                    width = norm.num_features
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        getattr(norm, key).copy_(getattr(reference, key)[:width])


@dataclass(frozen=True)
class LassoRecipe:
    """Training settings, saved with every checkpoint.

    `configs`: which configurations train (None: all, Algorithm 1; [k]: configuration k alone).
    `penalty`/`lam`/`a`: the sparsity penalty on the full network's conv weights (subnet
    generation); it is added to configuration 0's loss only. Schedule: linear warm-up over 2% of the
    steps, then cosine decay to zero (the WeNet trainer's schedule and optimizer).
    """

    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    penalty: Penalty = "none"
    lam: float = 0.0
    a: float = 1.0
    configs: tuple[int, ...] | None = None
    augment: bool = True
    seed: int = 0
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.penalty not in ("none", "clipped", "group"):
            raise InputError(f"penalty must be none, clipped or group, got {self.penalty!r}")
        if self.penalty != "none" and not self.lam > 0:
            raise InputError(f"lambda must be > 0 for the {self.penalty} penalty, got {self.lam}")
        if self.penalty == "clipped" and not self.a > 0:
            raise InputError(f"a must be > 0, got {self.a}")
        self.schedule()  # epochs, batch size, steps and learning rate checked there
        if self.configs is not None:
            object.__setattr__(self, "configs", tuple(self.configs))


    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.batch_size, self.lr, self.seed, self.augment, self.max_steps_per_epoch)


def penalty_value(supernet: LassoSupernet, recipe: LassoRecipe) -> torch.Tensor | None:
    if recipe.penalty == "clipped":
        return clipped_group_lasso(penalized_weights(supernet), recipe.lam, recipe.a)
    if recipe.penalty == "group":
        return group_lasso(penalized_weights(supernet), recipe.lam)
    return None


def fused_step(supernet: LassoSupernet, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, configs: Sequence[int], recipe: LassoRecipe) -> dict[str, float]:
    """Algorithm 1, lines 2-6: each configuration's forward and backward (gradients accumulate, each
    through its own private BNs), then one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for index in configs:
        supernet.state.select(index)
        loss = F.cross_entropy(supernet(images), labels)
        penalty = penalty_value(supernet, recipe) if index == 0 else None
        if penalty is not None:
            loss = loss + penalty
        loss.backward()
        losses.append(loss.item())
    optimizer.step()
    return {"loss": sum(losses) / len(losses), "loss_first": losses[0]}


def config_accuracies(supernet: LassoSupernet, splits: Splits, configs: Sequence[int],
                      max_batches: int | None = None) -> dict[str, float]:
    """Validation accuracy of each configuration with its own BN statistics."""
    previous = supernet.state.index
    try:
        result = {}
        for index in configs:
            supernet.state.select(index)
            result[supernet.names[index]] = round(evaluate_accuracy(supernet, splits, splits.val,
                                                                    max_batches=max_batches), 5)
        return result
    finally:
        supernet.state.select(previous)


def train_lasso(supernet: LassoSupernet, splits: Splits, recipe: LassoRecipe, out_dir: str | Path | None,
                data_spec: dict, progress: Callable[[dict], None] | None = None,
                eval_batches: int | None = None, resume: bool = True,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `recipe.configs` of `supernet` (all by default) with Algorithm 1 through the one training
    loop; with an out_dir, write `train_log.jsonl` and a resumable `last.pt` each epoch and
    `supernet.pt` at the end. Returns the final metrics (per-epoch history with each configuration's
    validation accuracy)."""
    configs = list(recipe.configs) if recipe.configs is not None else list(range(len(supernet.configs)))
    bad = [k for k in configs if not 0 <= k < len(supernet.configs)]
    if bad:
        raise InputError(f"configurations {bad} do not exist; this supernet has 0..{len(supernet.configs) - 1}")
    if recipe.penalty != "none" and 0 not in configs:
        raise InputError("a sparsity penalty acts on the full network: configs must include 0")
    with seeded(recipe.seed):
        optimizer = sgd(supernet, recipe.lr, recipe.momentum, recipe.weight_decay)
        saved = {**asdict(recipe), "knob": LassoSupernet.knob}

        def step(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
            return fused_step(supernet, optimizer, images, labels, configs, recipe)

        def evaluate() -> dict:
            return {"val_acc": config_accuracies(supernet, splits, configs, eval_batches)}

        saving = Saving(Path(out_dir), supernet, saved, data_spec, resume) if out_dir is not None else None
        history = fit(supernet, splits, recipe.schedule(), optimizer, step, evaluate, saving=saving,
                      callbacks=Callbacks(progress=progress, on_epoch=on_epoch))
        supernet.state.select(configs[0])
        supernet.eval()
        final = {"epochs": recipe.epochs, "history": history}
        if out_dir is not None:
            save_checkpoint(Path(out_dir) / "supernet.pt", supernet, saved, data_spec,
                            {**final, "history": timeless(history)})
        return final


class LassoTrainer(FamilyTrainer):
    """The lasso family's full network with 1x1-conv shortcuts (Fig. 5b): what non-uniform subnets are
    generated from (`subnetsearch lasso generate`/`search`), on the CPU."""

    family = "lasso"
    summary = "the full network non-uniform subnets are generated from (clipped group-Lasso)"
    default_out = "runs/lasso/base"
    default_epochs = 5

    def train(self, job: TrainJob, events: TrainEvents = TrainEvents()) -> TrainOutcome:
        job = self.resolve(job)
        splits = load_data(job.data)
        recipe = LassoRecipe(**job.settings())
        with seeded(job.seed):  # the initial weights too: the same job gives the same checkpoint
            supernet = build_supernet_of(LassoSupernet, job.resnet(splits, **{**LASSO_RESNET_DEFAULTS,
                                                                      "family": "lasso-cifar-resnet"}))
        events.say(f"training {supernet.arch['family']} depth {supernet.arch['depth']} on {splits.name} "
                   f"({len(splits.train)} train / {len(splits.val)} val"
                   f"{'; ' + splits.roles if splits.roles else ''}) on the CPU -> {job.out}")
        result = train_lasso(supernet, splits, recipe, job.out, job.data.to_dict(), progress=events.progress,
                             on_epoch=events.epoch)
        checkpoint = Path(job.out) / "supernet.pt"
        return TrainOutcome(checkpoint, last_accuracy(result["history"]), result["history"], asdict(recipe),
                            self.next_command(checkpoint))

    def next_command(self, checkpoint: Path) -> str:
        return f"subnetsearch lasso search --base {checkpoint}"
