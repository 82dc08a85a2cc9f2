"""Optuna search for `ray-t2t sweep` (imported only when a config asks for it)."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from ray_t2t.errors import UserError


class ValidationOptunaSearch(OptunaSearch):
    """Optuna's searcher, fed only the reports that carry the validation metric: a training run also
    reports at checkpoints between evaluations, which Ray's OptunaSearch would fail on."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(self.metric) is not None:
            super().on_trial_result(trial_id, result)


def check_optuna() -> None:
    """UserError (exit 2) when tune.search: optuna cannot run: optuna is an optional dependency."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise UserError("tune.search: optuna needs the optuna package: pip install 'ray-t2t[optuna]' (or optuna)")


def optuna_searcher(metric: str, mode: str, seed: int) -> ValidationOptunaSearch:
    check_optuna()
    import optuna

    return ValidationOptunaSearch(metric=metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=seed))
