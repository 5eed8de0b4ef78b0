"""Training for dual dynamic inference (Wang et al., section IV-A):

1. the backbone alone (gating "none"), or any pre-trained backbone copied into a gated network;
2. IADI step 1: backbone frozen, only the gates train, toward a zero skip ratio;
3. IADI step 2: everything trains jointly toward the target skip ratio, with the resource-aware loss
   of Eq. (5) and the sign of alpha flipped each batch (positive while the batch skips less than
   the target, negative while it skips more);
4. RADI: exit classifiers added and trained with the summed losses of Eq. (4), gates and backbone
   tuned end to end (the alpha rule still holds the skip ratio, its alpha multiplied by the number of
   classifiers whose losses are summed, so the cost keeps the weight it had against one loss).

Schedules are CPU-sized: cosine decay over each phase, SGD with momentum 0.9 and weight decay 1e-4
(the paper's), learning rate 0.05.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.data import ArraySplit, DataSpec, Splits, load_data
from subnetsearch.errors import InputError
from subnetsearch.seeding import seeded
from subnetsearch.supernets import (
    DDI_RESNET_DEFAULTS,
    GATINGS,
    RESOURCES,
    Checkpoint,
    DDIResNet,
    DDISupernet,
    build_supernet,
    load_checkpoint,
    module_device,
    resource_loss,
    save_checkpoint,
    signed_alpha,
)
from subnetsearch.trainers._evaluate import evaluate_accuracy
from subnetsearch.trainers._family import FamilyTrainer, TrainEvents, TrainJob, TrainOption, TrainOutcome
from subnetsearch.trainers._loop import Callbacks, Saving, Schedule, fit, timeless

PHASES = "phases"  # under the output folder: each phase's resumable checkpoint and log
GATE_PREFIXES = ("layer_proj", "channel_conv", "channel_fc", "lstm", "layer_out")


def gate_parameters(net: DDIResNet) -> list[nn.Parameter]:
    return [p for name, p in net.named_parameters() if any(part in name.split(".") for part in GATE_PREFIXES)]


def head_parameters(net: DDIResNet) -> list[nn.Parameter]:
    return [p for name, p in net.named_parameters() if name.startswith("heads.")]


@dataclass(frozen=True)
class DDIPhase:
    """One training phase: which parameters train, toward which skip ratio, with which losses."""

    epochs: int = 1
    lr: float = 0.05
    target: float | None = None  # skip-ratio target of the alpha rule (None: no resource loss)
    alpha: float = 0.5  # |alpha| of Eq. (5), on the cost relative to the plain network
    gate_lr_scale: float = 10.0  # gates learn faster than the backbone: CPU-sized runs are short
    resource: str = "macs"  # the cost E of Eq. (5): macs | energy (Eq. 6)
    train: str = "all"  # all | gates (backbone frozen)
    exits: bool = False  # Eq. (4): sum the losses of every exit
    batch_size: int = 128
    max_steps_per_epoch: int | None = None
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resource not in RESOURCES:
            raise InputError(f"the resource must be one of {RESOURCES}, got {self.resource!r}")
        if self.train not in ("all", "gates"):
            raise InputError(f"train must be all or gates, got {self.train!r}")
        if self.target is not None and not 0 <= self.target < 1:
            raise InputError(f"the skip-ratio target must be in [0, 1), got {self.target}")
        self.schedule()  # epochs, batch size, steps and learning rate checked there

    def schedule(self) -> Schedule:
        """Cosine decay over the phase, no warm-up (the gates start from a trained backbone)."""
        return Schedule(self.epochs, self.batch_size, self.lr, self.seed, self.augment, self.max_steps_per_epoch,
                        warmup=0.0)


def _parameters(net: DDIResNet, phase: DDIPhase) -> Iterable[nn.Parameter]:
    if phase.train == "gates":
        gates = gate_parameters(net)
        if not gates:
            raise InputError(f"a {net.gating!r} network has no gates to train")
        return gates
    return list(net.parameters())


def train_phase(net: DDIResNet, splits: Splits, phase: DDIPhase,
                progress: Callable[[dict], None] | None = None, saving: Saving | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one phase through the one training loop; returns per-epoch records (train_loss,
    train_skip_ratio, train_relative_macs: means over the epoch's batches). With `saving` (its
    checkpoint: the supernet `net` belongs to), the phase writes a resumable `last.pt` each epoch and
    continues from one it finds (a finished phase only restores its weights)."""
    if phase.exits and not net.heads:
        raise InputError("this network has no exits to train (build it with exits=True)")
    with seeded(phase.seed):
        trainable = list(_parameters(net, phase))
        trainable_ids = {id(p) for p in trainable}
        frozen = [p for p in net.parameters() if id(p) not in trainable_ids]
        gate_ids = {id(p) for p in gate_parameters(net)}
        groups = [{"params": [p for p in trainable if id(p) in gate_ids], "scale": phase.gate_lr_scale},
                  {"params": [p for p in trainable if id(p) not in gate_ids], "scale": 1.0}]
        optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=phase.lr, momentum=0.9, weight_decay=1e-4)
        full_macs = net.static_macs()

        def train_mode() -> None:
            net.train()
            if phase.train == "gates":  # frozen backbone: its BN statistics stay those it was trained with
                for module in net.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eval()

        def step(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
            decisions = net.forward_with_decisions(images)
            if phase.exits:
                loss = torch.stack([F.cross_entropy(logits, labels) for logits in decisions.exits]).sum()
            else:
                loss = F.cross_entropy(decisions.exits[-1], labels)
            ratio = float(decisions.skip_ratio.detach().mean())
            cost = resource_loss(decisions, net, phase.resource)
            if phase.target is not None:
                # Eq. (4) sums one loss per classifier: alpha weighs the cost against each of them, as it
                # did against the one loss of the joint phase (unscaled, the summed losses outweighed it
                # and reopened the gates: a network trained with exits skipped nothing at evaluation)
                summed = len(decisions.exits) if phase.exits else 1
                loss = loss + signed_alpha(phase.alpha, ratio, phase.target) * summed * cost
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            metrics = {"loss": float(loss.detach()), "skip_ratio": ratio,
                       "relative_macs": float(decisions.macs.detach().mean()) / full_macs}
            if phase.resource == "energy":
                metrics["relative_energy"] = float(cost.detach())
            return metrics

        for p in frozen:
            p.requires_grad_(False)
        try:
            history = fit(net, splits, phase.schedule(), optimizer, step, dict, train_mode=train_mode, saving=saving,
                          callbacks=Callbacks(progress=progress, on_epoch=on_epoch))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        net.eval()
        return history


def evaluate_skipping(net: DDIResNet, splits: Splits, split: ArraySplit, batch_size: int = 500) -> dict[str, float]:
    """What the gates decide at evaluation (eval mode, hard decisions), over `split`: the mean skip
    ratio (share of gated blocks' work skipped) and the mean cost relative to the plain network
    (final classifier, no early exit). Training reports the straight-through gates' ratio, which
    can differ from what the deployed network does."""
    was_training = net.training
    net.eval()
    ratios, macs = [], []
    with torch.inference_mode():
        for images, _ in splits.batches(split, batch_size, device=module_device(net)):
            decisions = net.forward_with_decisions(images)
            ratios.append(decisions.skip_ratio.cpu())
            macs.append(decisions.macs.cpu())
    net.train(was_training)
    if not ratios:
        raise InputError("cannot measure skipping on an empty split")
    return {"skip_ratio": round(float(torch.cat(ratios).mean()), 5),
            "relative_macs": round(float(torch.cat(macs).double().mean()) / net.static_macs(), 5)}


def copy_backbone(source: DDIResNet, target: DDIResNet) -> None:
    """Start a gated (or exit-carrying) network from another one's weights: every parameter and
    buffer the two share by name and shape is copied; gates and exits the source lacks keep their
    initialization (gates start open: nothing skipped)."""
    own = target.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    own.update(shared)
    target.load_state_dict(own)


@dataclass(frozen=True)
class DDIRecipe:
    """The paper's phases (section IV-A), each `*_epochs` long: the plain backbone, IADI step 1 (gates
    alone toward zero skipping, backbone frozen; not for gating "none"), IADI step 2 (everything
    toward `skip_target`), then, with `exits`, RADI (exit classifiers with the summed losses of
    Eq. 4). `alpha` and `resource` set Eq. (5)'s resource-aware loss."""

    skip_target: float = 0.5
    gating: str = "mgl2s"
    exits: bool = True
    backbone_epochs: int = 3
    gate_epochs: int = 1
    joint_epochs: int = 2
    exit_epochs: int = 1
    alpha: float = 0.5
    resource: str = "macs"
    lr: float = 0.05
    batch_size: int = 128
    max_steps_per_epoch: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.skip_target < 1:
            raise InputError(f"the skip target must be in [0, 1), got {self.skip_target}")
        if self.gating not in GATINGS:
            raise InputError(f"gating must be one of {GATINGS}, got {self.gating!r}")
        self.backbone_phase()
        self.phases()  # every phase's settings checked there

    def _phase(self, epochs: int, **settings: object) -> DDIPhase:
        return DDIPhase(epochs=epochs, lr=self.lr, alpha=self.alpha, resource=self.resource,
                        batch_size=self.batch_size, max_steps_per_epoch=self.max_steps_per_epoch, seed=self.seed,
                        **settings)  # type: ignore[arg-type]

    def backbone_phase(self) -> DDIPhase:
        return self._phase(self.backbone_epochs)

    def phases(self, target: float | None = None) -> list[tuple[str, DDIPhase]]:
        """The gated network's phases, by name, toward `target` (default: the recipe's skip target)."""
        target = self.skip_target if target is None else target
        phases = [] if self.gating == "none" else [("gates", self._phase(self.gate_epochs, train="gates", target=0.0))]
        phases.append(("joint", self._phase(self.joint_epochs, target=target)))
        if self.exits:
            phases.append(("exits", self._phase(self.exit_epochs, target=target, exits=True)))
        return phases


def backbone_arch(plain: DDISupernet) -> dict:
    """The backbone's architecture without what a gated network sets itself."""
    return {k: v for k, v in plain.arch.items() if k not in ("gating", "exits", "skip_target")}


def train_gated(plain: DDISupernet, splits: Splits, recipe: DDIRecipe, target: float | None = None,
                on_phase: Callable[[str, DDIPhase, list[dict] | None], None] | None = None,
                phases_dir: Path | None = None, data_spec: dict | None = None,
                events: PhaseEvents | None = None) -> tuple[DDISupernet, dict[str, list[dict]]]:
    """A gated network (the recipe's gating and exits) started from the trained plain backbone
    `plain` and trained through the recipe's phases toward `target`; with each phase's history.
    `on_phase(name, phase, None)` is called before a phase and `on_phase(name, phase, history)` after.
    With `phases_dir`, each phase checkpoints in `phases_dir/NAME` (resumable; see `train_phase`)."""
    target = recipe.skip_target if target is None else target
    with seeded(recipe.seed + 1):  # the gates' and exits' initial weights: the same recipe, the same network
        supernet = build_supernet({**backbone_arch(plain), "gating": recipe.gating, "exits": recipe.exits,
                                   "skip_target": round(target, 4)})
    if not isinstance(supernet, DDISupernet):  # the backbone's family builds DDI networks only
        raise TypeError(f"{plain.arch.get('family')!r} built a {type(supernet).__name__}, not a DDI network")
    copy_backbone(plain.network, supernet.network)
    histories = {}
    for name, phase in recipe.phases(target):
        if on_phase:
            on_phase(name, phase, None)
        histories[name] = train_phase(supernet.network, splits, phase, **_phase_saving(
            phases_dir, name, supernet, phase, data_spec, events))
        if on_phase:
            on_phase(name, phase, histories[name])
    supernet.set_mode(supernet.full_mode())
    return supernet, histories


@dataclass(frozen=True)
class PhaseEvents:
    """Progress of DDI's phases, for a progress bar: the loop's state and each epoch's record."""

    progress: Callable[[dict], None] | None = None
    on_epoch: Callable[[dict], None] | None = None


def _phase_saving(phases_dir: Path | None, name: str, supernet: DDISupernet, phase: DDIPhase,
                  data_spec: dict | None, events: PhaseEvents | None) -> dict:
    found: dict = {"progress": events.progress, "on_epoch": events.on_epoch} if events else {}
    if phases_dir is not None:
        found["saving"] = Saving(phases_dir / name, supernet, {"phase": name, **asdict(phase)}, data_spec or {})
    return found


def train_ddi(splits: Splits, recipe: DDIRecipe, out_dir: str | Path, data_spec: dict, arch: dict | None = None,
              base: DDISupernet | None = None, on_phase: Callable[[str, DDIPhase, list[dict] | None], None] | None = None,
              events: PhaseEvents | None = None) -> dict:
    """The whole DDI training: the plain backbone of `arch` (written to `backbone.pt`; skipped when a
    trained plain `base` is given), then the gated network's phases (`train_gated`), written to
    `supernet.pt` in `out_dir`. Every phase checkpoints in `out_dir/phases/NAME`, so an interrupted
    run continues where it stopped (finished phases are restored, not retrained). Returns the final
    metrics."""
    out_dir = Path(out_dir)
    if base is None:
        if arch is None:
            raise InputError("train_ddi needs the backbone's architecture or a trained plain backbone (base)")
        with seeded(recipe.seed):  # the initial weights too: the same recipe gives the same checkpoint
            plain = build_supernet({**arch, "gating": "none", "exits": False})
            if not isinstance(plain, DDISupernet):
                raise InputError(f"architecture family {arch.get('family')!r} is not a DDI one")
            phase = recipe.backbone_phase()
            if on_phase:
                on_phase("backbone", phase, None)
            history = train_phase(plain.network, splits, phase, **_phase_saving(
                out_dir / PHASES, "backbone", plain, phase, data_spec, events))
            if on_phase:
                on_phase("backbone", phase, history)
            plain.set_mode(plain.full_mode())
            save_checkpoint(out_dir / "backbone.pt", plain, {"phase": "backbone", "epochs": recipe.backbone_epochs},
                            data_spec, {"history": timeless(history),
                                        "val_acc": round(evaluate_accuracy(plain, splits, splits.val), 5)})
    else:
        if base.arch.get("gating") != "none":
            raise InputError("the base must be a plain DDI backbone (gating none)")
        plain = base
    supernet, histories = train_gated(plain, splits, recipe, on_phase=on_phase, phases_dir=out_dir / PHASES,
                                      data_spec=data_spec, events=events)
    accuracy = evaluate_accuracy(supernet, splits, splits.val)
    metrics = {"history": {name: timeless(h) for name, h in histories.items()}, "val_acc_full_mode": accuracy}
    if recipe.gating != "none":
        metrics["val_skipping"] = evaluate_skipping(supernet.network, splits, splits.val)
    save_checkpoint(out_dir / "supernet.pt", supernet, asdict(recipe), data_spec, metrics)
    return metrics


def load_backbone(path: str | Path) -> tuple[DDISupernet, Splits, Checkpoint]:
    """A plain DDI backbone (gating none, `backbone.pt` of a DDI training), its data and checkpoint."""
    state = load_checkpoint(path)
    plain = state.build()
    if not isinstance(plain, DDISupernet) or plain.arch["gating"] != "none":
        raise InputError(f"{path} is not a plain DDI backbone (gating none) written by "
                         "`subnetsearch train --family ddi`")
    return plain, load_data(DataSpec.from_dict(state.data)), state


class DDITrainer(FamilyTrainer):
    """DDI's phases: the plain backbone (or `base`), the gates alone, gates and backbone toward the
    skip target, then the exits; each phase resumable."""

    family = "ddi"
    summary = "layer/channel skipping and early exits (Dual Dynamic Inference)"
    default_out = "runs/ddi"
    default_epochs = 3  # of the plain backbone
    options = (
        TrainOption("skip_target", 0.5, "skip ratio the gates are trained toward"),
        TrainOption("gating", "mgl2s", "mgl2s (layer + channel) | layer (SkipNet-style) | channel | none"),
        TrainOption("exits", True, "add early-exit classifiers (RADI) and train them last"),
        TrainOption("base", None, "a trained plain backbone (backbone.pt of an earlier run): skips the backbone "
                                  "phase, and its data is used", kind=Path),
        TrainOption("gate_epochs", 1, "IADI step 1, gates alone toward zero skipping"),
        TrainOption("joint_epochs", 2, "IADI step 2, gates and backbone toward the skip target"),
        TrainOption("exit_epochs", 1, "exits with the summed losses (Eq. 4)"),
        TrainOption("alpha", 0.5, "|alpha| of Eq. (5) on the cost relative to the plain network"),
        TrainOption("resource", "macs", "the cost E of Eq. (5): macs, or energy (Eq. 6, the devices module's "
                                        "model, gates included)"),
    )

    def recipe(self, job: TrainJob) -> DDIRecipe:
        options = {k: v for k, v in job.options.items() if k != "base"}
        epochs = self.default_epochs if job.epochs is None else job.epochs
        return DDIRecipe(**options, backbone_epochs=epochs, lr=job.lr, batch_size=job.batch_size,
                         max_steps_per_epoch=job.max_steps_per_epoch, seed=job.seed)

    def resolve(self, job: TrainJob) -> TrainJob:
        job = super().resolve(job)
        self.recipe(job)  # checks the skip target, gating and phases
        return job

    def train(self, job: TrainJob, events: TrainEvents = TrainEvents()) -> TrainOutcome:
        job = self.resolve(job)
        recipe = self.recipe(job)
        base = job.options["base"]
        if base is not None:
            plain, splits, state = load_backbone(base)
            arch, data = None, state.data
        else:
            plain, splits = None, load_data(job.data)
            arch, data = job.resnet(splits, **{**DDI_RESNET_DEFAULTS, "family": "ddi-cifar-resnet"}), job.data.to_dict()

        def show(name: str, phase: DDIPhase, history: list[dict] | None) -> None:
            if history is None:
                target = "" if name == "backbone" else f", skip target {phase.target}"
                events.say(f"{name}: {phase.epochs} epoch(s) on {splits.name}{target}")
            elif name != "backbone":
                last = history[-1]
                events.say(f"  skip ratio {last['train_skip_ratio']:.3f}, cost {last['train_relative_macs']:.3f} "
                           "of the plain network (training's gates)")

        metrics = train_ddi(splits, recipe, job.out, data, arch=arch, base=plain, on_phase=show,
                            events=PhaseEvents(events.progress, events.epoch))
        if base is None:
            events.say(f"  backbone: {Path(job.out) / 'backbone.pt'}")
        skipping = metrics.get("val_skipping")
        if skipping is not None:
            events.say(f"at evaluation (validation images, hard gates): skip ratio {skipping['skip_ratio']:.3f}, "
                       f"cost {skipping['relative_macs']:.3f} of the plain network (target {recipe.skip_target})")
        checkpoint = Path(job.out) / "supernet.pt"
        history = [{"phase": name, **record} for name, records in metrics["history"].items() for record in records]
        return TrainOutcome(checkpoint, float(metrics["val_acc_full_mode"]), history, asdict(recipe),
                            self.next_command(checkpoint))

    def next_command(self, checkpoint: Path) -> str:
        return f"subnetsearch search --checkpoint {checkpoint} --strategy optuna --objectives accuracy,macs"
