"""Where a search session's evaluations run: this process (no backend) or a `Backend` (the Ray one:
DSE candidates on evaluation actors, Optuna trials as Ray Tune trials). The session owns the
evaluator (its cache lookups and counters); a backend only computes what the store does not hold
yet and says, for each result, whether it was computed now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from subnetsearch.spaces import Mode
from subnetsearch.storage import StoredEvaluation

if TYPE_CHECKING:
    import optuna

    from subnetsearch.search._optuna import Constraints
    from subnetsearch.search._session import SearchSession


class Backend(Protocol):
    description: str  # where the evaluations run, for the user
    failed_trials: int  # Optuna trials that failed after their retries, in the last `optuna_trials`

    def prepare(self, session: SearchSession) -> bool:
        """Attach to the session (connect, check storage reach); whether latency will be measured."""

    def require_device(self) -> None:
        """Fail before any work if latency is needed and nothing can measure it."""

    def evaluate_batch(self, modes: Sequence[Mode], fidelity: str = "full") -> list[tuple[StoredEvaluation, bool]]:
        """Evaluate modes the session did not find stored: (evaluation, computed now) per mode, in
        order (an evaluation another process stored meanwhile comes back with False); `fidelity`
        "low": the first looks of the session's `Fidelity`."""

    def optuna_trials(self, study: optuna.Study, sampler: optuna.samplers.BaseSampler, trials: int,
                      objectives: Sequence[str], constraints: Constraints) -> list[tuple[Mode, bool]]:
        """Run `trials` new Optuna trials of `study`; the completed trials' modes and whether each
        was computed now (their evaluations are in the store)."""

    def close(self) -> None:
        """Release what the backend holds (workers, actors)."""
