"""Temperature scaling (Guo et al. 2017, Sec. 4.2): one scalar T > 0 that rescales logits, ``softmax(z / T)``.

Shapes: ``logits`` ``[N, K]``, ``labels`` ``[N]``. T is fitted on a held-out (dev) split by minimising the
NLL; it never changes the argmax, so accuracy and agreement are unaffected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from confkd.errors import ParamsError
from confkd.evaluation.calibration import check_labels, check_logits

__all__ = ["fit_temperature", "apply_temperature", "temperature_nll"]


def _check_t(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ParamsError(f"temperature must be a number, got {temperature!r}") from None
    if not np.isfinite(t) or t <= 0:
        raise ParamsError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    logp = log_softmax(z / t, axis=1)
    return float(-np.mean(logp[np.arange(len(y)), y]))


def temperature_nll(logits: Any, labels: Any, temperature: float) -> float:
    """Mean NLL of ``softmax(logits / T)`` at the gold labels: ``-1/N sum_i log softmax(z_i / T)[y_i]``."""
    z = check_logits(logits)
    return _nll(z, check_labels(labels, z.shape[0], z.shape[1]), _check_t(temperature))


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature ``T* = argmin_T NLL(softmax(logits / T), labels)`` within ``bounds`` (Guo et al. 2017).

    ``logits`` [N, K], ``labels`` [N]. Deterministic: bounded Brent search
    (``scipy.optimize.minimize_scalar(method="bounded")``) over ``log T`` in ``[log lo, log hi]``, ``xatol``
    1e-7. The NLL is convex in ``1/T``, hence unimodal in ``log T``, so the search finds the global minimum
    inside the bounds (a value at a bound means the optimum lies outside them). Returns T as a float.
    """
    z = check_logits(logits)
    y = check_labels(labels, z.shape[0], z.shape[1])
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ParamsError(f"bounds must be a pair (low, high), got {bounds!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ParamsError(f"bounds must satisfy 0 < low < high (finite), got {bounds!r}")
    res = minimize_scalar(lambda log_t: _nll(z, y, float(np.exp(log_t))), bounds=(np.log(lo), np.log(hi)),
                          method="bounded", options={"xatol": 1e-7})
    return float(np.clip(np.exp(res.x), lo, hi))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Scaled logits ``logits / T`` (``[N, K]``, float64); take ``softmax`` of the result for probabilities."""
    return check_logits(logits) / _check_t(temperature)
