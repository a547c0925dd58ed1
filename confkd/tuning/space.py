"""Search spaces declared as data: dotted keys into a distillation configuration, one Optuna dimension each."""

from __future__ import annotations

from typing import Any

from confkd.config import SearchDim


def suggest(trial, space: dict[str, SearchDim]) -> dict[str, Any]:
    """Ask ``trial`` for one value per dimension; returns ``{dotted key: value}``."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "categorical":
            values[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.type == "int":
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return values


def nest(flat: dict[str, Any]) -> dict:
    """``{"intermediate.attention.weight": 2}`` -> ``{"intermediate": {"attention": {"weight": 2}}}``."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"search space key '{key}' conflicts with another key")
        node[leaf] = value
    return out


def grid(space: dict[str, SearchDim]) -> dict[str, list]:
    """The search space as ``GridSampler`` wants it (categorical dimensions only)."""
    return {key: list(dim.choices) for key, dim in space.items()}
