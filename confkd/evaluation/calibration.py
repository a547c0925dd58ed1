"""Calibration metrics on probabilities: ECE (equal-width and equal-mass bins), MCE, reliability curves.

Shapes: ``probs`` is ``[N, K]`` (rows are probability vectors, K >= 2), ``labels`` is ``[N]`` integers in
``[0, K)``. Every public function returns plain Python floats (or a dict of numpy arrays for plots).

The input checks used by the whole evaluation library (``check_probs``, ``check_logits``,
``check_labels``) live here too; they raise :class:`confkd.errors.DataError` with a message meant for the
user.

Definitions (Guo et al. 2017, "On Calibration of Modern Neural Networks", Eq. 3 (ECE) and Eq. 5 (MCE);
Naeini et al. 2015 for the binned estimators; Nixon et al. 2019 "Measuring Calibration in Deep Learning"
for the adaptive / equal-mass binning):

* per example: ``conf_i = max_k p_ik`` and ``correct_i = [argmax_k p_ik == y_i]``;
* ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``;
* ``MCE = max_b |acc(B_b) - conf(B_b)|`` over non-empty bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax

from confkd.errors import DataError, ParamsError

SCHEMES: tuple[str, ...] = ("equal_width", "equal_mass")
PROB_TOL = 1e-4  # rows of a probability matrix must sum to 1 within this

__all__ = [
    "SCHEMES", "PROB_TOL", "check_probs", "check_logits", "check_labels", "top_label", "ece", "mce",
    "reliability_curve", "nll", "brier", "nll_raw", "brier_raw",
]


# ---------------------------------------------------------------------------------------------
# input checks


def _as_float_matrix(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric array: {exc}") from None
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [N, K], got shape {a.shape}")
    n, k = a.shape
    if n == 0:
        raise DataError(f"{name} is empty (0 examples)")
    if k < 2:
        raise DataError(f"{name} must have at least 2 classes (columns), got {k}")
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(f"{name} holds {int(bad.sum())} NaN/inf value(s) (first in row {row})")
    return a


def check_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """Validate logits ``[N, K]``: 2-D, numeric, N >= 1, K >= 2, all finite. Returns a float64 array."""
    return _as_float_matrix(logits, name)


def check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    """Validate probabilities ``[N, K]``: finite, in ``[0, 1]``, each row summing to 1 within ``1e-4``.

    Returns a float64 array. Raises ``DataError`` (e.g. when logits are passed where probabilities are
    expected).
    """
    p = _as_float_matrix(probs, name)
    if (p < -PROB_TOL).any() or (p > 1.0 + PROB_TOL).any():
        raise DataError(f"{name} has entries outside [0, 1] (min {p.min():.4g}, max {p.max():.4g}); "
                        "pass probabilities, not logits")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_TOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(f"{name}: {int(off.sum())} row(s) do not sum to 1 within {PROB_TOL:g} "
                        f"(row {i} sums to {sums[i]:.6g}); pass probabilities, not logits")
    return p


def check_labels(labels: Any, n: int, k: int, name: str = "labels") -> np.ndarray:
    """Validate gold labels ``[N]``: 1-D, length ``n``, integer-valued, each in ``[0, k)``. Returns int64."""
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as exc:  # pragma: no cover - exotic inputs
        raise DataError(f"{name} must be an array of integers: {exc}") from None
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D [N], got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{name} has {len(y)} entries but there are {n} examples (mismatched lengths)")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{name} must hold integer class ids (found NaN/inf or non-integer values)")
    y = y.astype(np.int64)
    out = (y < 0) | (y >= k)
    if out.any():
        raise DataError(f"{name}: {int(out.sum())} value(s) out of range [0, {k}) (e.g. {int(y[out][0])})")
    return y


def _check_pair(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = check_probs(probs)
    return p, check_labels(labels, p.shape[0], p.shape[1])


def _check_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ParamsError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ParamsError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


# ---------------------------------------------------------------------------------------------
# binning


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example top-class confidence ``conf [N]`` and correctness ``correct [N]`` (float 0/1).

    No checks (internal helper); argmax ties go to the lowest class index, as in ``metrics.py``.
    """
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)


def equal_width_bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index in ``[0, n_bins)`` of each confidence, bins ``(i/n, (i+1)/n]`` (0 goes to the first bin).

    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def equal_mass_bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence for equal-mass (adaptive) bins.

    Examples are sorted by confidence (stable sort, so ties keep their input order) and the sorted order is
    cut into ``n_bins`` nearly equal-count groups with ``np.array_split`` (the first ``N mod n_bins`` groups
    get one extra example; with ``N < n_bins`` the trailing groups are empty). Tied confidences may land in
    different bins (split by input order), so with many ties the equal-mass ECE depends on that order.
    """
    order = np.argsort(conf, kind="stable")
    sizes = [len(g) for g in np.array_split(order, n_bins)]
    bins = np.empty(len(conf), dtype=np.int64)
    bins[order] = np.repeat(np.arange(n_bins), sizes)
    return bins


def _bin_table(conf: np.ndarray, correct: np.ndarray, n_bins: int, scheme: str):
    bins = equal_width_bins(conf, n_bins) if scheme == "equal_width" else equal_mass_bins(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    sum_correct = np.bincount(bins, weights=correct, minlength=n_bins)
    return bins, count, sum_conf, sum_correct


def _ece_from_table(count, sum_conf, sum_correct, n: int) -> float:
    nz = count > 0
    gap = np.abs(sum_correct[nz] / count[nz] - sum_conf[nz] / count[nz])
    return float(np.sum(count[nz] / n * gap))


def ece_batched(bins: np.ndarray, conf: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of many resamples at once (used by the bootstrap), no checks.

    ``bins``, ``conf``, ``correct``: ``[B, N]`` (bin index, confidence, 0/1 correctness of each resampled
    example; bin indices computed on the full set, which is valid for equal-width bins because they depend
    on the confidence value only). Returns ``[B]``: ``sum_b |sum_correct_b - sum_conf_b| / N`` per row,
    which is the same quantity as Guo et al. Eq. 3.
    """
    b, n = conf.shape
    flat = (bins + n_bins * np.arange(b)[:, None]).ravel()
    s_conf = np.bincount(flat, weights=conf.ravel(), minlength=b * n_bins).reshape(b, n_bins)
    s_corr = np.bincount(flat, weights=correct.ravel(), minlength=b * n_bins).reshape(b, n_bins)
    return np.abs(s_corr - s_conf).sum(axis=1) / n


# ---------------------------------------------------------------------------------------------
# metrics


def ece(probs: Any, labels: Any, n_bins: int = 15, scheme: str = "equal_width") -> float:
    """Expected calibration error of the top-class probability (Guo et al. 2017, Eq. 3).

    ``probs`` [N, K], ``labels`` [N]. ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` over non-empty bins.

    * ``scheme="equal_width"``: bins ``(i/n_bins, (i+1)/n_bins]`` on the confidence.
    * ``scheme="equal_mass"``: adaptive bins of nearly equal count (sorted confidences split with
      ``np.array_split``; Nixon et al. 2019's "adaptive calibration error" binning, top label only).
    """
    p, y = _check_pair(probs, labels)
    n_bins, scheme = _check_bins(n_bins), _check_scheme(scheme)
    conf, correct = top_label(p, y)
    _, count, s_conf, s_corr = _bin_table(conf, correct, n_bins, scheme)
    return _ece_from_table(count, s_conf, s_corr, len(y))


def mce(probs: Any, labels: Any, n_bins: int = 15, scheme: str = "equal_width") -> float:
    """Maximum calibration error (Guo et al. 2017, Eq. 5): ``max_b |acc(B_b) - conf(B_b)|`` over non-empty
    bins. ``probs`` [N, K], ``labels`` [N]; binning as in :func:`ece`."""
    p, y = _check_pair(probs, labels)
    n_bins, scheme = _check_bins(n_bins), _check_scheme(scheme)
    conf, correct = top_label(p, y)
    _, count, s_conf, s_corr = _bin_table(conf, correct, n_bins, scheme)
    nz = count > 0
    return float(np.max(np.abs(s_corr[nz] - s_conf[nz]) / count[nz]))


def reliability_curve(probs: Any, labels: Any, n_bins: int = 15, scheme: str = "equal_width") -> dict[str, np.ndarray]:
    """Per-bin statistics for a reliability diagram (Guo et al. 2017, Fig. 1; DeGroot & Fienberg 1983).

    ``probs`` [N, K], ``labels`` [N]. Returns a dict of ``[n_bins]`` arrays:

    * ``bin_lower`` / ``bin_upper``: bin edges (equal-width: ``i/n``, ``(i+1)/n``; equal-mass: the smallest /
      largest confidence inside the bin, NaN for an empty bin);
    * ``confidence``: mean top-class probability in the bin (NaN if empty);
    * ``accuracy``: fraction correct in the bin (NaN if empty);
    * ``count``: number of examples (int).
    """
    p, y = _check_pair(probs, labels)
    n_bins, scheme = _check_bins(n_bins), _check_scheme(scheme)
    conf, correct = top_label(p, y)
    bins, count, s_conf, s_corr = _bin_table(conf, correct, n_bins, scheme)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, s_conf / count, np.nan)
        acc = np.where(count > 0, s_corr / count, np.nan)
    if scheme == "equal_width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lower, upper = edges[:-1].copy(), edges[1:].copy()
    else:
        lower = np.full(n_bins, np.nan)
        upper = np.full(n_bins, np.nan)
        for b in np.unique(bins):
            lower[b], upper[b] = conf[bins == b].min(), conf[bins == b].max()
    return {"bin_lower": lower, "bin_upper": upper, "confidence": mean_conf, "accuracy": acc,
            "count": count.astype(np.int64)}


def nll_raw(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the gold label (natural log), stably from logits; no checks."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def brier_raw(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score ``1/N sum_i sum_k (p_ik - y_ik)^2``; no checks."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def nll(logits: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the gold label from LOGITS ``[N, K]`` (natural log), validated:
    ``-1/N sum_i log softmax(z_i)[y_i]``."""
    z = check_logits(logits)
    return nll_raw(z, check_labels(labels, z.shape[0], z.shape[1]))


def brier(probs: Any, labels: Any) -> float:
    """Multi-class Brier score (Brier 1950) from probabilities ``[N, K]``, validated:
    ``1/N sum_i sum_k (p_ik - y_ik)^2``."""
    p, y = _check_pair(probs, labels)
    return brier_raw(p, y)
