"""One search of one supernet on one device: the evaluator, the store and the Optuna study wired
together, so that every strategy records every evaluation the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import Device
from subnetsearch.search._cache import CachedEvaluator
from subnetsearch.search._dse import DSEResult, DSEStep, greedy_dse
from subnetsearch.search._evaluator import EvaluationSettings
from subnetsearch.search._optuna import Constraints, make_sampler, open_study, optuna_search, record_trial
from subnetsearch.spaces import Mode
from subnetsearch.storage import Store, StoredEvaluation
from subnetsearch.supernets._checkpoint import load_checkpoint


@dataclass
class SearchSession:
    """Holds the loaded supernet, its validation data and a cached evaluator for one device."""

    store: Store
    storage_url: str
    device: Device
    checkpoint_path: Path
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)

    def __post_init__(self) -> None:
        self.checkpoint = load_checkpoint(self.checkpoint_path)
        self.supernet = self.checkpoint.build()
        self.splits = load_data(DataSpec(**self.checkpoint.data))
        self.store.register_supernet(self.checkpoint, self.checkpoint_path.resolve())
        self.evaluator = CachedEvaluator(self.supernet, self.checkpoint.hash, self.splits, self.device, self.store,
                                         self.settings, measure=self.device.location == "host")

    def study_name(self, strategy: str) -> str:
        return f"{self.checkpoint.arch['family']}-{self.checkpoint.hash[:8]}@{self.device.name}:{strategy}"

    def attributes(self, strategy: str) -> dict[str, object]:
        return {"supernet_hash": self.checkpoint.hash, "supernet_family": self.checkpoint.arch["family"],
                "device": self.device.name, "strategy": strategy, "data": self.splits.name, "split": self.settings.split}

    def evaluate_batch(self, modes: Sequence[Mode]) -> list[StoredEvaluation]:
        """The batch interface a distributed backend replaces (candidates are independent)."""
        return [self.evaluator.evaluate(mode) for mode in modes]

    def dse(self, delta: float, cost: str, objectives: Sequence[str], max_iterations: int | None = None,
            on_step: Callable[[DSEStep], None] | None = None) -> tuple[DSEResult, optuna.Study]:
        strategy = f"dse-{cost}"
        study = open_study(self.storage_url, self.study_name(strategy), objectives, make_sampler("random", 0),
                           self.attributes(strategy))
        space = self.supernet.space

        def evaluate_and_record(modes: Sequence[Mode]) -> list[StoredEvaluation]:
            results = self.evaluate_batch(modes)
            for mode, result in zip(modes, results, strict=True):
                record_trial(study, space, mode, result, objectives, Constraints(min_accuracy=delta), {"strategy": strategy})
            return results

        result = greedy_dse(space, self.supernet.full_mode(), evaluate_and_record, delta, cost, max_iterations, on_step)
        return result, study

    def optuna(self, sampler: str, trials: int, objectives: Sequence[str], constraints: Constraints,
               seed: int = 0) -> tuple[list[StoredEvaluation], optuna.Study]:
        strategy = f"optuna-{sampler}"
        study = open_study(self.storage_url, self.study_name(strategy), objectives, make_sampler(sampler, seed),
                           self.attributes(strategy))
        return optuna_search(study, self.supernet.space, self.evaluator.evaluate, trials, objectives, constraints), study
