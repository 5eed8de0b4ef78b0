"""Reading the Optuna studies a store holds beside its own tables (every search's study)."""

from __future__ import annotations

import optuna


def distinct_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's complete trials in order, each mode once (its first trial): the order in which a
    search evaluated its distinct modes."""
    seen, trials = set(), []
    for trial in sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                        key=lambda t: t.number):
        mode_id = trial.user_attrs.get("mode_id")
        if mode_id is not None and mode_id not in seen:
            seen.add(mode_id)
            trials.append(trial)
    return trials
