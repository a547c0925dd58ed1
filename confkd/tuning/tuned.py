"""The tuned configuration: built from the chosen trial, and read back by the stages that use it.

Kept apart from the study code so that the stages reading ``tune/best_params.yaml`` (distill, evaluate,
export) do not depend on Optuna or the trainer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from confkd.config import Params, _deep_merge
from confkd.errors import DataError
from confkd.layout import DEFAULT, TUNE
from confkd.tuning.space import nest

def tuned_config(params: Params, trial_params: dict) -> dict:
    """The base configuration as written in params.yaml, with the tuned values (full budget, not the trial budget)."""
    return _deep_merge(copy.deepcopy(params.distill.configs[params.tune.base] or {}), nest(trial_params))


def with_tuned_config(params: Params, path: Path = DEFAULT.best_params) -> Params:
    """``params`` with the tuned configuration (``tune.name``) added from the tune stage's output."""
    if not path.exists():
        raise DataError(f"{path}: not found (run the tune stage first: dvc repro {TUNE})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        config = data["distill"]["configs"][params.tune.name]
    except (KeyError, TypeError):
        raise DataError(f"{path}: no distill.configs.{params.tune.name} (written for another tune.name?)") from None
    return params.with_config(params.tune.name, config, source=str(path))
