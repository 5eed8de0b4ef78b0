"""The main job as a library: a supernet on a host device, its named modes evaluated, a short search
with registered strategies on accuracy and measured latency, the front's graphs measured in more
windows, the stored noise-aware front and a budget worth asking `best` about. `subnetsearch run`
prints each step; `MainJob.run()` does them all for a Python caller."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from subnetsearch.data import DataSpec
from subnetsearch.devices import Device, NoiseProfile
from subnetsearch.errors import InputError
from subnetsearch.search._cache import CachedEvaluator
from subnetsearch.search._dse import check_dse_inputs
from subnetsearch.search._evaluator import EvaluationSettings
from subnetsearch.search._noise import record_device_noise, refine_front
from subnetsearch.search._session import SearchSession
from subnetsearch.search._strategy import Outcome, StrategyOptions, get_strategy
from subnetsearch.spaces import Mode
from subnetsearch.storage import StoredEvaluation
from subnetsearch.supernets import DEFAULT_EPOCHS, DEFAULT_FAMILY, DEFAULT_LR, DEFAULT_WIDTHS, NESTED_CHECKPOINT

OBJECTIVES = ("accuracy", "latency")
TRIALS = {"optuna": 20, "predictor": 60}  # dse+tpe and predictor evaluate about as many distinct modes
FRONT_WINDOWS = 4  # more windows per front graph: 5 in all, an interval over 5 window medians (93.75 %)


@dataclass(frozen=True)
class MainJobPlan:
    """What the main job searches with: registered strategies joined by '+' (`tpe`: Optuna's TPE
    sampler), the DSE's iterations and delta, a trial budget (None: each strategy's main-job default,
    0: skip the strategies that take one), the random modes shown beside the named ones, the seed."""

    strategy: str = "dse+tpe"
    dse_iterations: int = 0  # the DSE off by default: see `subnetsearch run --help`
    delta: float = 0.90
    trials: int | None = None
    random_modes: int = 2
    seed: int = 0
    front_windows: int = FRONT_WINDOWS

    def __post_init__(self) -> None:
        for name, low in (("random_modes", 0), ("dse_iterations", 0), ("front_windows", 0)):
            if getattr(self, name) < low:
                raise InputError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.trials is not None and self.trials < 0:
            raise InputError(f"trials must be >= 0, got {self.trials}")
        check_dse_inputs(self.delta, "latency")
        self.searches()  # unknown strategies and bad options refused before any work

    def searches(self) -> list[tuple[str, dict[str, object], StrategyOptions]]:
        """Each strategy's name, the main job's values for it (only options its Options take) and
        its checked options, in order."""
        plan = []
        for part in self.strategy.split("+"):
            name = "optuna" if part == "tpe" else part
            strategy = get_strategy(name)
            fields = {f.name for f in dataclasses.fields(strategy.Options)}
            values: dict[str, object] = {"sampler": "tpe"} if part == "tpe" else {}
            values["objectives"] = OBJECTIVES
            budget = TRIALS.get(name, 20) if self.trials is None else self.trials
            if "trials" in fields:
                if budget == 0:
                    continue
                values["trials"] = budget
            if "max_iterations" in fields:
                if self.dse_iterations == 0:
                    continue
                values.update(max_iterations=self.dse_iterations, delta=self.delta)
            if "seed" in fields:
                values["seed"] = self.seed
            plan.append((name, values, strategy.options(values)))
        return plan


@dataclass(frozen=True)
class ModeRow:
    """A mode of the main job's table: its evaluation, and its accuracy with the trained BN statistics."""

    name: str
    mode: Mode
    evaluation: StoredEvaluation
    stored_bn_accuracy: float | None  # None where the family's stored statistics are no mode's own


@dataclass
class MainJobResult:
    noise: NoiseProfile
    modes: list[ModeRow]
    outcomes: list[tuple[str, Outcome]]
    refined: int
    front: list[StoredEvaluation]
    budget_ms: float
    evaluated: int
    reused: int
    lines: list[str] = field(default_factory=list)


def main_job_device(device: Device) -> Device:
    """The main job measures latency here: a device elsewhere is refused, saying what to do instead."""
    if device.location != "host":
        raise InputError(f"device {device.name!r} is at location {device.location!r}: the main job measures latency "
                         "on this host; search it with `subnetsearch search --device NAME --latency predicted`")
    return device


def train_default_supernet(checkpoint: Path, epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> Path:
    """Train the default supernet (`supernets.DEFAULT_FAMILY`, `DEFAULT_WIDTHS`: a ResNet-20 of
    nested widths on Fashion-MNIST, grown from the shipped `NESTED_CHECKPOINT` and trained on, as
    `supernets.DEFAULT_TRAIN_COMMAND` does) into `checkpoint`'s folder, resuming where an interrupted
    run stopped; returns the checkpoint path."""
    from subnetsearch.trainers import TrainEvents, TrainJob, get_trainer

    trainer = get_trainer(DEFAULT_FAMILY)
    job = TrainJob(DataSpec(), checkpoint.parent, epochs=epochs, lr=DEFAULT_LR, seed=seed, widths=DEFAULT_WIDTHS,
                   options={"start": NESTED_CHECKPOINT})
    return trainer.train(trainer.resolve(job), TrainEvents()).checkpoint


class MainJob:
    """The main job's steps on one `SearchSession` (a host device). Each step is a method, so a
    caller can show each result as it comes (`subnetsearch run` does); `run()` does them all."""

    def __init__(self, session: SearchSession, plan: MainJobPlan = MainJobPlan()) -> None:
        main_job_device(session.device)
        self.session, self.plan = session, plan
        self.searches = plan.searches()

    def noise(self) -> NoiseProfile:
        """The device's noise profile, measured once per device (how far apart two modes must be
        for this host to tell them apart)."""
        store, device = self.session.store, self.session.device
        return store.get_device_noise(device.name) or record_device_noise(store, device, self.session.supernet)

    def mode_rows(self) -> list[ModeRow]:
        """Full, the family's named modes, smallest and `random_modes` random mixes: each evaluated
        (BN recalibrated, latency measured here) and, where the family's stored BN statistics are
        each mode's own (`stored_bn_per_mode`), scored with them too."""
        session = self.session
        supernet = session.supernet
        generator = torch.Generator().manual_seed(self.plan.seed)
        modes = list(supernet.named_modes().items())
        if len(supernet.space) > 1:  # random mixes where modes combine several knobs
            modes += [(f"random {i + 1}", supernet.random_mode(generator)) for i in range(self.plan.random_modes)]
        stored_bn = None
        if supernet.stored_bn_per_mode:  # else the stored statistics are a mix of modes: nothing to score
            trained_bn = EvaluationSettings(calibration_batches=0, max_eval_batches=session.settings.max_eval_batches)
            stored_bn = CachedEvaluator(supernet, session.checkpoint.hash, session.splits, session.device,
                                        session.store, trained_bn, measure=False)
        unique: dict[str, tuple[str, Mode]] = {}
        for name, mode in modes:  # one row per mode, named by all its names (e.g. "width:0.25 = smallest")
            unique[mode.id] = (f"{unique[mode.id][0]} = {name}", mode) if mode.id in unique else (name, mode)
        return [ModeRow(name, mode, session.evaluator.evaluate(mode),
                        None if stored_bn is None else stored_bn.evaluate(mode).accuracy)
                for name, mode in unique.values()]

    def search(self, announce: Callable[[str, dict[str, object]], None] = lambda name, values: None,
               say: Callable[[str], None] = lambda line: None,
               done: Callable[[str, Outcome], None] = lambda name, outcome: None) -> list[tuple[str, Outcome]]:
        """The plan's strategies in turn (each resumes by its default name when run again): `announce`
        before each, `say` its progress lines, `done` its outcome as soon as it has one."""
        outcomes = []
        for name, values, options in self.searches:
            announce(name, values)
            outcome = get_strategy(name).run(self.session, options, say)
            done(name, outcome)
            outcomes.append((name, outcome))
        return outcomes

    def refine(self) -> int:
        """The front's graphs measured in `front_windows` more paired windows each; how many."""
        return refine_front(self.session.evaluator, self.session.store, self.plan.front_windows)

    def front(self) -> list[StoredEvaluation]:
        """The stored noise-aware front (accuracy, latency) of this supernet on the device."""
        session = self.session
        return session.store.get_front(session.device.name, ",".join(OBJECTIVES), session.checkpoint.hash)

    def run(self, say: Callable[[str], None] = lambda line: None) -> MainJobResult:
        noise = self.noise()
        rows = self.mode_rows()
        outcomes = self.search(say=say)
        refined = self.refine()
        front = self.front()
        evaluator = self.session.evaluator
        return MainJobResult(noise, rows, outcomes, refined, front, suggested_budget(front), evaluator.misses,
                             evaluator.hits)


def suggested_budget(front: Sequence[StoredEvaluation]) -> float:
    """A latency budget that makes the next `best` query interesting: the middle of the front, on the
    upper ends of the latency intervals (what `best` compares a budget with), rounded up to 1 us."""
    if not front:
        return 1.0
    latencies = sorted(((e.latency or {}).get("interval_ms") or [e.latency_ms, e.latency_ms])[1] for e in front)
    return math.ceil(latencies[len(latencies) // 2] * 1000) / 1000
