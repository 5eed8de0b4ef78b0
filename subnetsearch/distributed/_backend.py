"""The Ray backend of a search session: where a local search evaluates modes one by one in its own
process, this one fans them out to Ray actors (DSE candidates) or Ray Tune trials (Optuna)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from subnetsearch.distributed._cluster import (
    ClusterError,
    cluster_cpus,
    connect,
    has_device_node,
    missing_device_message,
    shared_storage_url,
)
from subnetsearch.errors import InputError
from subnetsearch.spaces import Mode
from subnetsearch.storage import StoredEvaluation

if TYPE_CHECKING:
    import optuna

    from subnetsearch.search import Constraints, SearchSession


class RayBackend:
    """Evaluations of one search session on a Ray cluster.

    `workers`: evaluation actors for DSE fan-out (default: the cluster's CPUs / `threads`), each
    holding the supernet and data once; `threads`: torch threads per worker or trial (one on small
    hosts); `max_failures`: Tune retries of a trial whose process or node died.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1,
                 max_failures: int = 3) -> None:
        if workers is not None and workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.address, self.requested_workers, self.threads, self.max_failures = address, workers, threads, max_failures
        self.description = ""
        self.failed_trials = 0
        self._meter: Any = None
        self._workers: list[Any] = []
        self._session: SearchSession | None = None
        self._checkpoint_ref: Any = None

    @property
    def session(self) -> SearchSession:
        """The session `prepare` attached (the backend serves one session)."""
        if self._session is None:
            raise RuntimeError("RayBackend.prepare(session) has not been called")
        return self._session

    # ---- set-up --------------------------------------------------------------------------------
    def prepare(self, session: SearchSession) -> bool:
        """Connect (the local instance is this host's device node for a host device), check the
        storage URL reaches every worker, and say whether latency will be measured: yes if some node
        advertises the device's resource and no lookup table predicts it."""
        device = session.device
        self.description = connect(self.address, [device.ray_resource] if device.location == "host" else [])
        self.storage_url = shared_storage_url(session.storage_url)
        self._session = session
        if session.latency_table is not None:
            return device.location == "host"  # predicted: the same key as a local predicted search
        return device.location != "imported" and has_device_node(device)

    def require_device(self) -> None:
        """Fail fast (before any trial starts) when latency is needed and no node can measure it."""
        if not has_device_node(self.session.device):
            raise ClusterError(missing_device_message(self.session.device))

    def worker_spec(self, threads: int | None = None):
        from subnetsearch.distributed._workers import WorkerSpec

        session = self.session
        table = session.latency_table.to_dict() if session.latency_table is not None else None
        plan = session.plan_table.to_dict() if session.plan_table is not None else None
        return WorkerSpec(self.storage_url, session.device.to_dict(), session.settings, session.evaluator.measure,
                          table, threads or self.threads, plan, session.fidelity)

    def _meter_handle(self) -> Any:
        session = self.session
        if self._meter is None and session.evaluator.measure and session.latency_table is None:
            from subnetsearch.distributed._workers import DeviceMeter

            meter = cast(Any, DeviceMeter)  # a Ray actor class: .options and .remote come from @ray.remote
            self._meter = meter.options(resources={session.device.ray_resource: 1}).remote(session.device.protocol)
        return self._meter

    def _checkpoint(self) -> Any:
        import ray

        if self._checkpoint_ref is None:  # weights only: no optimizer state
            self._checkpoint_ref = ray.put(replace(self.session.checkpoint, extra={}))
        return self._checkpoint_ref

    def worker_count(self) -> int:
        return self.requested_workers or max(1, cluster_cpus() // self.threads)

    def _pool(self) -> list[Any]:
        if not self._workers:
            from subnetsearch.distributed._workers import EvaluationWorker

            spec = self.worker_spec()
            worker = cast(Any, EvaluationWorker)  # a Ray actor class
            self._workers = [worker.options(num_cpus=self.threads).remote(spec) for _ in range(self.worker_count())]
        return self._workers

    def release_workers(self) -> None:
        """Free the workers' CPUs (Tune trials need them)."""
        import ray

        for worker in self._workers:
            ray.kill(worker, no_restart=True)
        self._workers = []

    def close(self) -> None:
        import ray

        self.release_workers()
        if self._meter is not None:
            ray.kill(self._meter, no_restart=True)
            self._meter = None

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate_batch(self, modes: Sequence[Mode], fidelity: str = "full") -> list[tuple[StoredEvaluation, bool]]:
        """The modes on the workers, at most one per worker at a time (ActorPool), results in the
        order of `modes` with whether each was computed now; `fidelity` "low": the session's first
        looks (its `Fidelity`)."""
        import ray
        from ray.util import ActorPool

        if not modes:
            return []
        pool = ActorPool(self._pool())
        try:
            context = [self._checkpoint(), self._meter_handle()]
            return list(pool.map(lambda actor, text: actor.evaluate.remote(context, text, fidelity),
                                 [mode.to_json() for mode in modes]))
        except ray.exceptions.RayTaskError as error:  # the evaluation itself failed: raise its own error
            raise error.as_instanceof_cause() from None

    def optuna_trials(self, study: optuna.Study, sampler: optuna.samplers.BaseSampler, trials: int,
                      objectives: Sequence[str], constraints: Constraints) -> list[tuple[Mode, bool]]:
        """`trials` Ray Tune trials (OptunaSearch on `study`). Returns the completed trials' modes
        and whether each was computed now."""
        from subnetsearch.distributed._tune import tune_search

        self.release_workers()
        session = self.session
        slots = max(1, cluster_cpus() // self.threads)
        completed, errors = tune_search(
            study, self.storage_url, sampler, session.supernet.space, replace(session.checkpoint, extra={}),
            self.worker_spec(), self._meter_handle(), trials, objectives, constraints, slots, self.threads,
            self.max_failures)
        results = [(Mode.from_json(result["mode_json"]), bool(result.get("fresh"))) for result in completed]
        if errors and not results:
            raise ClusterError(f"all {len(errors)} Ray Tune trials failed; the first error: {errors[0][:500]}")
        self.failed_trials = len(errors)
        return results
