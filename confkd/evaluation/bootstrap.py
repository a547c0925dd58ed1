"""Nonparametric bootstrap confidence intervals over examples (Efron & Tibshirani 1993, percentile method).

Resampling unit: the example (row index along axis 0 of every array, the same indices for all arrays, so
paired quantities such as teacher/student outputs stay paired).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np

from confkd.errors import DataError, ParamsError

__all__ = ["bootstrap_indices", "bootstrap_ci"]

_MAX_ELEMENTS = 20_000_000  # cap on elements materialised per vectorised chunk


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Resampled example indices ``[n_resamples, n]``, drawn with replacement from ``range(n)`` by
    ``np.random.default_rng(seed).integers`` in one call (same seed, same n => same indices)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"need at least one example to bootstrap, got n={n!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ParamsError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    return np.random.default_rng(seed).integers(0, n, size=(int(n_resamples), int(n)))


def bootstrap_ci(metric_fn: Callable[..., Any], arrays: Sequence[np.ndarray] | np.ndarray, n_resamples: int = 1000,
                 seed: int = 0, alpha: float = 0.05, vectorized: bool = False) -> tuple[float, float, float]:
    """Percentile bootstrap interval: ``(point, low, high)``.

    * ``point = metric_fn(*arrays)`` on the full data;
    * resample b = 1..B: indices ``I_b`` (see :func:`bootstrap_indices`), statistic
      ``s_b = metric_fn(*(a[I_b] for a in arrays))``;
    * ``low, high`` = the ``100 * alpha/2`` and ``100 * (1 - alpha/2)`` percentiles of ``{s_b}`` (numpy's
      linear interpolation; NaN resample statistics are ignored, all-NaN gives NaN).

    ``arrays``: a tuple of arrays with equal length N along axis 0 (a single array is accepted too).
    ``vectorized=True``: ``metric_fn`` is called on stacked resamples (each array becomes
    ``[chunk, N, ...]``) and must return one value per resample (``[chunk]``), reducing over axis 1; the
    point estimate then uses a batch of one. Both modes use identical indices, so they give identical
    intervals. Deterministic for a fixed ``seed``.
    """
    if isinstance(arrays, np.ndarray):
        arrays = (arrays,)
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise DataError("bootstrap_ci needs at least one array")
    lengths = {a.shape[0] if a.ndim else -1 for a in arrays}
    if len(lengths) != 1 or -1 in lengths:
        raise DataError(f"bootstrap arrays must share their first dimension, got lengths "
                        f"{[a.shape[0] if a.ndim else None for a in arrays]}")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ParamsError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < alpha < 1.0):
        raise ParamsError(f"alpha must be in (0, 1), got {alpha}")
    n = lengths.pop()
    idx = bootstrap_indices(n, n_resamples, seed)

    if vectorized:
        point = float(np.asarray(metric_fn(*(a[None] for a in arrays))).reshape(-1)[0])
        row_elems = sum(int(np.prod(a.shape)) for a in arrays)
        chunk = max(1, _MAX_ELEMENTS // max(row_elems, 1))
        parts = [np.asarray(metric_fn(*(a[idx[s:s + chunk]] for a in arrays)), dtype=np.float64).reshape(-1)
                 for s in range(0, len(idx), chunk)]
        stats = np.concatenate(parts)
        if len(stats) != len(idx):
            raise ParamsError(f"vectorized metric_fn must return one value per resample, got {len(stats)} "
                              f"for {len(idx)}")
    else:
        point = float(metric_fn(*arrays))
        stats = np.fromiter((metric_fn(*(a[i] for a in arrays)) for i in idx), dtype=np.float64, count=len(idx))

    if np.isnan(stats).all():
        return point, float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(stats, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return point, float(low), float(high)
