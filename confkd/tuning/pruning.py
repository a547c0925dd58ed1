"""Pruning from intermediate dev metrics, for single- and multi-objective studies.

Optuna's ``Trial.report`` is not available in multi-objective studies, so there the intermediate
values of one guide metric (``tune.pruner.metric``) are kept in a user attribute and Optuna's own
pruner is asked through a view of the study in which that metric is the single objective. The
pruning rule is therefore exactly Optuna's (median / percentile / threshold) in both modes.
"""

from __future__ import annotations

import copy
import logging
import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from confkd.config import PrunerParams, TuneParams
from confkd.training.loop import LOWER_IS_BETTER

log = logging.getLogger(__name__)

INTERMEDIATE_ATTR = "intermediate"  # user attribute: {step: guide metric value}


def direction_of(metric: str) -> str:
    return "minimize" if any(metric.endswith(k) for k in LOWER_IS_BETTER) else "maximize"


def objectives(tp: TuneParams) -> list[tuple[str, str]]:
    """(metric, direction) per objective."""
    names = tp.metrics if tp.objective == "multi" else [tp.single.metric]
    return [(m, direction_of(m)) for m in names]


def make_pruner(p: PrunerParams) -> optuna.pruners.BasePruner:
    if p.kind == "none":
        return optuna.pruners.NopPruner()
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.kind == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, n_startup_trials=p.n_startup_trials,
                                               n_warmup_steps=p.n_warmup_steps)
    if p.kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=p.lower, upper=p.upper, n_warmup_steps=p.n_warmup_steps)
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.HyperbandPruner()


class _GuideView:
    """The study as a pruner sees it when ``metric`` (kept per step in a user attribute) is the objective."""

    def __init__(self, study: optuna.Study, direction: str):
        self._study = study
        self.direction = StudyDirection.MINIMIZE if direction == "minimize" else StudyDirection.MAXIMIZE

    def get_trials(self, deepcopy: bool = False, states=None):
        return [with_intermediate(t) for t in self._study.get_trials(deepcopy=False, states=states)]


def with_intermediate(trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    view = copy.copy(trial)
    view.intermediate_values = {int(k): float(v) for k, v in trial.user_attrs.get(INTERMEDIATE_ATTR, {}).items()}
    return view


class Reporter:
    """``on_evaluate`` for the trainer: reports the guide metric and raises ``TrialPruned`` when told to."""

    def __init__(self, trial: optuna.Trial, pruner: optuna.pruners.BasePruner, metric: str, multi: bool):
        self.trial, self.pruner, self.metric, self.multi = trial, pruner, metric, multi
        self.values: dict[str, float] = {}
        self.last_step = 0

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise KeyError(f"tune.pruner.metric '{self.metric}' is not a dev metric (have: {sorted(metrics)})")
        value = float(metrics[self.metric])
        self.last_step = step
        self.values[str(step)] = value if math.isfinite(value) else float("nan")
        self.trial.set_user_attr(INTERMEDIATE_ATTR, self.values)
        if self.multi:
            study = self.trial.study
            frozen = study._storage.get_trial(self.trial._trial_id)
            prune = self.pruner.prune(_GuideView(study, direction_of(self.metric)), with_intermediate(frozen))
        else:
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if prune:
            self.trial.set_user_attr("pruned_at_step", step)
            log.info("trial %d pruned at step %d: %s=%.4f", self.trial.number, step, self.metric, value)
            raise optuna.TrialPruned(f"{self.metric}={value:.4f} at step {step}")


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards ``n_trials``: complete or pruned (failed ones are retried, not counted)."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
