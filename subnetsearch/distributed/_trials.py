"""Training-time searches' trials on a Ray cluster (`RayTrials`, a `subnetsearch.search.TrialRunner`).
Ray Tune is imported when the trials run, not with this module."""

from __future__ import annotations

from pathlib import Path

import optuna

from subnetsearch.distributed._cluster import cluster_cpus, connect, shared_storage_url
from subnetsearch.search import TrainingSearch


class RayTrials:
    """Runs a training-time search's trials as Ray Tune trials on the cluster at `address` (see
    `subnetsearch.search.run_training_search`): as many at a time as the cluster has slots of
    `threads` CPUs, each retried `max_failures` times if its process or node dies; files a trial
    writes land under the search's output folder on this machine."""

    def __init__(self, address: str | None, threads: int, max_failures: int = 3) -> None:
        self.address, self.threads, self.max_failures = address, threads, max_failures
        self.description = "Ray Tune (not connected yet)"
        self.slots = 1

    def shared_url(self, url: str) -> str:
        """Connect (before anything is written), size the trial slots and return the storage URL as
        the workers see it."""
        where = connect(self.address)
        shared = shared_storage_url(url)
        self.slots = max(1, cluster_cpus() // self.threads)
        self.description = f"Ray Tune trials on {where}: {self.slots} at a time, {self.threads} thread(s) each"
        return shared

    def run(self, search: TrainingSearch, study: optuna.Study, url: str, sampler: optuna.samplers.BaseSampler,
            trials: int, out: Path | None) -> list[str]:
        from subnetsearch.distributed._tune import tune_training

        return tune_training(search, study, url, sampler, trials, out, self.slots, self.threads, self.max_failures)
