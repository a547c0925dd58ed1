"""Classification and calibration metrics on logits.

All functions take ``logits`` or ``probs`` of shape ``[N, K]`` and integer ``labels`` of shape ``[N]``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.metrics import f1_score


def probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64), axis=1)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    k = probs.shape[1]
    return float(f1_score(labels, np.argmax(probs, axis=1), average="macro", labels=list(range(k)), zero_division=0))


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the gold label (natural log), computed stably from logits."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over examples of sum_k (p_k - y_k)^2."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, bins ``(i/n, (i+1)/n]`` on the top-class probability.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(total)


def confidence(probs: np.ndarray) -> np.ndarray:
    """Per-example confidence: the probability of the predicted (top) class."""
    return probs.max(axis=1)


def teacher_student_metrics(teacher_logits: np.ndarray, student_logits: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Agreement and confidence gap between two models on the same inputs.

    ``sigma`` is the standard deviation of d(x) = conf_T(x) - conf_S(x) over the set, the dispersion
    statistic of the confidence-preservation property (Vengertsev & Sherman 2024).
    """
    pt, ps = probabilities(teacher_logits), probabilities(student_logits)
    gap = confidence(pt) - confidence(ps)
    return {
        f"{prefix}agreement": float(np.mean(pt.argmax(1) == ps.argmax(1))),
        f"{prefix}sigma": float(np.std(gap)),
        f"{prefix}mean_abs_conf_gap": float(np.mean(np.abs(gap))),
    }


def classification_metrics(logits: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict[str, float]:
    probs = probabilities(logits)
    labels = np.asarray(labels)
    return {
        f"{prefix}accuracy": accuracy(probs, labels),
        f"{prefix}macro_f1": macro_f1(probs, labels),
        f"{prefix}nll": nll(logits, labels),
        f"{prefix}ece": ece(probs, labels),
        f"{prefix}brier": brier(probs, labels),
    }
