"""Classification metrics on logits, for training-time evaluation (dev selection) and stage summaries.

All functions take ``logits`` or ``probs`` of shape ``[N, K]`` and integer ``labels`` of shape ``[N]``.
Calibration (ECE, NLL, Brier) lives in :mod:`confkd.evaluation.calibration` and teacher-relative scores
(agreement, sigma) in :mod:`confkd.evaluation.confidence`: one implementation of each.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from confkd.evaluation.calibration import brier_raw, ece, nll_raw


def probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64), axis=1)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean over all K classes of F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k), 0 for a class that is neither
    true nor predicted. ``probs [N, K]``, ``labels [N]``. The same arithmetic as scikit-learn's
    ``f1_score(average="macro", labels=range(K), zero_division=0)`` (equal to the bit, tested), without importing
    scikit-learn in every stage."""
    k = probs.shape[1]
    labels = np.asarray(labels).astype(np.int64)
    pred = np.argmax(probs, axis=1)
    tp = np.bincount(labels[pred == labels], minlength=k).astype(np.float64)
    denom = np.bincount(labels, minlength=k).astype(np.float64) + np.bincount(pred, minlength=k)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(np.mean(f1))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict[str, float]:
    """``accuracy``, ``macro_f1``, ``nll``, ``ece`` (equal-width, 15 bins) and ``brier``, each prefixed."""
    probs = probabilities(logits)
    labels = np.asarray(labels)
    return {
        f"{prefix}accuracy": accuracy(probs, labels),
        f"{prefix}macro_f1": macro_f1(probs, labels),
        f"{prefix}nll": nll_raw(logits, labels),
        f"{prefix}ece": ece(probs, labels),
        f"{prefix}brier": brier_raw(probs, labels),
    }
