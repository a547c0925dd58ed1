"""Selective classification: risk-coverage curve and AURC of the top-class confidence.

Shapes: ``probs`` ``[N, K]``, ``labels`` ``[N]``. A model "abstains" on its least confident examples; at
coverage ``k/N`` it answers only the ``k`` most confident ones.

Definitions (Geifman & El-Yaniv 2017, "Selective Classification for Deep Neural Networks";
Geifman, Uziel & El-Yaniv 2019, "Bias-Reduced Uncertainty Estimation for Deep Neural Classifiers", Sec. 3):

* order the examples by decreasing confidence (ties: input order, i.e. a stable sort);
* selective risk at ``k``: ``r_k = (1/k) sum_{j<=k} err_(j)``, coverage ``c_k = k/N``, ``k = 1..N``;
* ``AURC = (1/N) sum_{k=1..N} r_k`` (the area under the empirical risk-coverage curve);
* ``E-AURC = AURC - AURC*``, where ``AURC*`` is the AURC of an oracle ranking with the same errors (every
  correct example ranked before every error). We use the exact discrete ``AURC*``; Geifman et al. 2019 give
  its continuous approximation ``r + (1 - r) ln(1 - r)`` (r = overall error rate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from confkd.evaluation.calibration import check_labels, check_probs

__all__ = ["risk_coverage_curve", "aurc", "excess_aurc", "aurc_batched", "optimal_aurc"]


def _conf_err(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = check_probs(probs)
    y = check_labels(labels, p.shape[0], p.shape[1])
    return p.max(axis=1), (p.argmax(axis=1) != y).astype(np.float64)


def _risks(conf: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Selective risks ``r_k`` along the last axis (``conf``, ``err``: ``[..., N]``), no checks."""
    order = np.argsort(-conf, axis=-1, kind="stable")
    e = np.take_along_axis(err, order, axis=-1)
    k = np.arange(1, conf.shape[-1] + 1, dtype=np.float64)
    return np.cumsum(e, axis=-1) / k


def aurc_batched(conf: np.ndarray, err: np.ndarray) -> np.ndarray:
    """AURC of each row of ``conf``, ``err`` (``[B, N]``; ``err`` is 0/1) -> ``[B]``; no checks (bootstrap)."""
    return _risks(conf, err).mean(axis=-1)


def optimal_aurc(n_errors: int, n: int) -> float:
    """Exact discrete ``AURC*`` for ``n`` examples of which ``n_errors`` are wrong (oracle ranking):
    ``(1/n) sum_{k > n - e} (k - (n - e)) / k``."""
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(np.mean(np.maximum(k - (n - n_errors), 0.0) / k))


def risk_coverage_curve(probs: Any, labels: Any) -> dict[str, np.ndarray]:
    """Empirical risk-coverage curve (Geifman & El-Yaniv 2017).

    ``probs`` [N, K], ``labels`` [N]. Returns ``{"coverage": [N] = k/N, "risk": [N] = error rate among the
    k most confident examples, "threshold": [N] = confidence of the k-th example}``, ``k = 1..N``; ties in
    confidence are broken by input order (stable sort).
    """
    conf, err = _conf_err(probs, labels)
    n = len(conf)
    return {"coverage": np.arange(1, n + 1) / n, "risk": _risks(conf, err),
            "threshold": np.sort(conf, kind="stable")[::-1].copy()}


def aurc(probs: Any, labels: Any) -> float:
    """Area under the risk-coverage curve, ``AURC = (1/N) sum_{k=1..N} r_k`` (Geifman et al. 2019).

    ``probs`` [N, K], ``labels`` [N]. Lower is better; equals the error rate when confidence carries no
    ranking information on average, and ``AURC*`` (see :func:`excess_aurc`) for a perfect ranking.
    """
    conf, err = _conf_err(probs, labels)
    return float(_risks(conf, err).mean())


def excess_aurc(probs: Any, labels: Any) -> float:
    """``E-AURC = AURC - AURC*`` (Geifman et al. 2019): AURC minus that of an oracle that ranks all correct
    examples first, for the same errors. ``probs`` [N, K], ``labels`` [N]. >= 0; 0 for a perfect ranking."""
    conf, err = _conf_err(probs, labels)
    return float(_risks(conf, err).mean() - optimal_aurc(int(err.sum()), len(err)))
