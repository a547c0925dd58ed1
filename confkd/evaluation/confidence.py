"""Teacher-vs-student confidence metrics on the same examples, and the confidence-preservation property.

Shapes: ``teacher_probs`` and ``student_probs`` are ``[N, K]`` probability matrices for the SAME N
examples in the same order; logits are ``[N, K]``; ``labels`` are ``[N]`` integers in ``[0, K)``.

Source for the confidence-preservation property: Vengertsev & Sherman (2024), "Confidence Preservation
Property in Knowledge Distillation Abstractions", arXiv:2401.11365. Only the abstract and third-party
summaries of the paper could be retrieved (not its body), so the paper's own equation numbers could NOT be
checked; the labels (CP-1)..(CP-4) below are ours, and they follow the published summary:

* (CP-1) per input x, the pairwise confidence difference ``d(x) = conf_T(x) - conf_S(x)``;
* (CP-2) the set statistic ``sigma(X)``: the dispersion of d over X (standard deviation by default);
* (CP-3) the property ``phi_cnf``: ``sigma(X) <= kappa`` (the summary writes the definition with ``<=``
  and the TinyBERT special case with ``<``; we use ``<=``, so a model compared with itself, sigma = 0,
  satisfies the property for every kappa >= 0);
* (CP-4) the bound ``kappa <= gamma * sqrt(beta / (|X| (1 - alpha)))``, which with TinyBERT defaults
  (gamma = 1, alpha = 0) reads ``sigma(X) < sqrt(beta / |X|)``, beta being the distillation loss reached at
  the stopping criterion.

What the paper's "conf" is exactly (top-class probability of each model's own prediction is our default),
and how beta is aggregated over X, are OUR READING of that summary, not verified against the full text; the
``measure`` / ``statistic`` options exist so alternative readings can be reported side by side.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import log_softmax

from confkd.errors import DataError, ParamsError
from confkd.evaluation.calibration import check_labels, check_logits, check_probs

MEASURES: tuple[str, ...] = ("top_prob", "teacher_class", "margin")
STATISTICS: tuple[str, ...] = ("std", "mad", "rms")
PREDICTION_LOSSES: tuple[str, ...] = ("kl", "soft_ce")
EPS = 1e-12  # clamp inside logs of probabilities

__all__ = [
    "MEASURES", "STATISTICS", "PREDICTION_LOSSES", "confidence_pair", "confidence_difference", "dispersion",
    "kappa_bound", "phi_cnf", "prediction_loss_beta", "kl_rows_from_logits", "kl_to_teacher", "js_to_teacher",
    "confidence_correlations", "confidence_gap", "agreement",
]


# ---------------------------------------------------------------------------------------------
# checks


def _check_measure(measure: str) -> str:
    if measure not in MEASURES:
        raise ParamsError(f"measure must be one of {MEASURES}, got {measure!r}")
    return measure


def _check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise ParamsError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    return statistic


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise DataError(f"teacher and student {what} differ in shape: {a.shape} vs {b.shape} "
                        "(mismatched lengths or class counts)")


def _check_probs_pair(teacher_probs: Any, student_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    pt = check_probs(teacher_probs, "teacher_probs")
    ps = check_probs(student_probs, "student_probs")
    _same_shape(pt, ps, "probabilities")
    return pt, ps


def _check_logits_pair(teacher_logits: Any, student_logits: Any) -> tuple[np.ndarray, np.ndarray]:
    zt = check_logits(teacher_logits, "teacher_logits")
    zs = check_logits(student_logits, "student_logits")
    _same_shape(zt, zs, "logits")
    return zt, zs


# ---------------------------------------------------------------------------------------------
# per-example confidence and d(x)


def _margin(p: np.ndarray) -> np.ndarray:
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _confidences(pt: np.ndarray, ps: np.ndarray, measure: str) -> tuple[np.ndarray, np.ndarray]:
    if measure == "top_prob":
        return pt.max(axis=1), ps.max(axis=1)
    if measure == "teacher_class":
        rows, t = np.arange(len(pt)), pt.argmax(axis=1)
        return pt[rows, t], ps[rows, t]
    return _margin(pt), _margin(ps)


def confidence_pair(teacher_probs: Any, student_probs: Any, measure: str = "top_prob") -> tuple[np.ndarray, np.ndarray]:
    """Per-example confidences ``(conf_T [N], conf_S [N])`` under ``measure``:

    * ``"top_prob"``: each model's probability of its OWN predicted class, ``max_k p_k`` (default; our reading
      of the paper's "confidence");
    * ``"teacher_class"``: the probability each model gives to the TEACHER's predicted class;
    * ``"margin"``: top-1 minus top-2 probability of each model.
    """
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    return _confidences(pt, ps, _check_measure(measure))


def confidence_difference(teacher_probs: Any, student_probs: Any, measure: str = "top_prob") -> np.ndarray:
    """(CP-1) the pairwise, input-specific confidence difference ``d(x) = conf_T(x) - conf_S(x)``, ``[N]``."""
    ct, cs = confidence_pair(teacher_probs, student_probs, measure)
    return ct - cs


def _dispersion(d: np.ndarray, statistic: str, axis: int = -1) -> np.ndarray:
    if statistic == "std":
        return np.std(d, axis=axis)
    if statistic == "mad":
        return np.mean(np.abs(d - np.mean(d, axis=axis, keepdims=True)), axis=axis)
    return np.sqrt(np.mean(d * d, axis=axis))


def dispersion(d: Any, statistic: str = "std") -> float:
    """(CP-2) ``sigma(X)``, the dispersion of ``d [N]`` over the set:

    * ``"std"`` (default): population standard deviation ``sqrt(1/N sum (d - mean d)^2)`` (ddof = 0, as in
      ``metrics.teacher_student_metrics``);
    * ``"mad"``: mean absolute deviation ``1/N sum |d - mean d|``;
    * ``"rms"``: root mean square ``sqrt(1/N sum d^2)`` (not centred: also penalises a systematic shift).
    """
    a = np.asarray(d, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise DataError(f"d must be a non-empty 1-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError("d holds NaN/inf values")
    return float(_dispersion(a, _check_statistic(statistic)))


def kappa_bound(beta_sum: float, n: int, gamma: float = 1.0, alpha: float = 0.0) -> float:
    """(CP-4) the threshold ``kappa = gamma * sqrt(beta_sum / (n * (1 - alpha)))``.

    ``beta_sum``: the distillation (prediction-layer) loss at the stopping criterion, SUMMED over the ``n``
    examples of X (see :func:`prediction_loss_beta`); ``n = |X|``. With TinyBERT defaults (gamma = 1,
    alpha = 0) this is ``sqrt(beta_sum / n)``, the square root of the mean per-example loss. Example:
    ``kappa_bound(0.36, 4) = sqrt(0.09) = 0.3``. The roles of gamma and alpha follow the published summary
    of the paper (gamma a scale factor, alpha in [0, 1) the weight of the non-prediction part of the loss);
    that interpretation is our reading.
    """
    try:
        beta_sum, gamma, alpha = float(beta_sum), float(gamma), float(alpha)
    except (TypeError, ValueError):
        raise ParamsError("beta_sum, gamma and alpha must be numbers") from None
    if not np.isfinite(beta_sum) or beta_sum < 0:
        raise ParamsError(f"beta_sum must be a finite number >= 0, got {beta_sum}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParamsError(f"n must be a positive integer, got {n!r}")
    if not np.isfinite(gamma) or gamma <= 0:
        raise ParamsError(f"gamma must be a finite number > 0, got {gamma}")
    if not (0.0 <= alpha < 1.0):
        raise ParamsError(f"alpha must be in [0, 1), got {alpha}")
    return float(gamma * np.sqrt(beta_sum / (n * (1.0 - alpha))))


def _check_kappa(kappa: Any) -> float:
    try:
        k = float(kappa)
    except (TypeError, ValueError):
        raise ParamsError(f"kappa must be a number, got {kappa!r}") from None
    if not np.isfinite(k) or k < 0:
        raise ParamsError(f"kappa must be a finite number >= 0, got {kappa!r}")
    return k


def phi_cnf(teacher_probs: Any, student_probs: Any, kappa: float, measure: str = "top_prob",
            statistic: str = "std") -> dict[str, Any]:
    """(CP-3) the confidence-preservation property ``phi_cnf: sigma(X) <= kappa``.

    ``teacher_probs``, ``student_probs``: ``[N, K]``. ``sigma`` is :func:`dispersion` of
    :func:`confidence_difference` (CP-1, CP-2). Returns ``{"sigma": float, "kappa": float, "holds": bool}``.
    """
    k = _check_kappa(kappa)
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    ct, cs = _confidences(pt, ps, _check_measure(measure))
    sigma = float(_dispersion(ct - cs, _check_statistic(statistic)))
    return {"sigma": sigma, "kappa": k, "holds": bool(sigma <= k)}


# ---------------------------------------------------------------------------------------------
# distribution distances


def kl_rows_from_logits(teacher_logits: np.ndarray, student_logits: np.ndarray, temperature: float = 1.0,
                        loss: str = "kl") -> np.ndarray:
    """Per-example prediction-layer loss ``[N]`` from logits (no checks), scaled by ``T^2``:

    * ``"kl"``: ``T^2 * KL(p_T^T || p_S^T) = T^2 sum_k p_T,k (log p_T,k - log p_S,k)``;
    * ``"soft_ce"``: ``T^2 * (-sum_k p_T,k log p_S,k)`` (TinyBERT's prediction-layer loss L_pred, Jiao et
      al. 2020 Eq. 10, which has no ``T^2`` factor; TinyBERT uses T = 1 where the two coincide),
    with ``p^T = softmax(z / T)``; the same formulas as ``confkd.distill.losses.kl`` / ``soft_ce``.
    """
    logpt = log_softmax(teacher_logits / temperature, axis=1)
    logps = log_softmax(student_logits / temperature, axis=1)
    pt = np.exp(logpt)
    if loss == "kl":
        rows = np.maximum(np.sum(pt * (logpt - logps), axis=1), 0.0)
    else:
        rows = -np.sum(pt * logps, axis=1)
    return rows * temperature**2


def prediction_loss_beta(teacher_logits: Any, student_logits: Any, temperature: float = 1.0, loss: str = "kl") -> float:
    """beta of (CP-4) from saved logits: the prediction-layer distillation loss SUMMED over the examples.

    ``teacher_logits``, ``student_logits``: ``[N, K]``. Returns ``sum_x T^2 * KL(p_T^T(x) || p_S^T(x))``
    (``loss="kl"``, default) or ``sum_x T^2 * CE(p_T^T(x), p_S^T(x))`` (``loss="soft_ce"``), where
    ``p^T = softmax(z / T)``; the per-example terms are those of ``confkd.distill.losses.kl`` / ``soft_ce``
    (which average over a batch instead of summing).

    THIS IS A GUESS at the paper's beta. The published summary says only that beta is "the distillation loss
    at the stopping criterion" and that the bound reads ``sigma(X) < sqrt(beta / |X|)``; for the bound to be
    dimensionally sensible beta must grow with |X|, hence the sum. KL is the default because it is 0 when the
    student equals the teacher (soft cross-entropy adds the teacher's entropy, which cannot shrink with
    training); TinyBERT itself optimises the soft cross-entropy (use ``loss="soft_ce"`` for that reading).
    """
    from confkd.evaluation.temperature import _check_t

    t = _check_t(temperature)
    if loss not in PREDICTION_LOSSES:
        raise ParamsError(f"loss must be one of {PREDICTION_LOSSES}, got {loss!r}")
    zt, zs = _check_logits_pair(teacher_logits, student_logits)
    return float(np.sum(kl_rows_from_logits(zt, zs, t, loss)))


def _kl_rows(p: np.ndarray, q: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Per-row ``KL(p || q) = sum_k p_k (log p_k - log q_k)`` with both logs clamped at ``eps``."""
    return np.maximum(np.sum(p * (np.log(np.maximum(p, eps)) - np.log(np.maximum(q, eps))), axis=1), 0.0)


def kl_to_teacher(teacher_probs: Any, student_probs: Any) -> float:
    """Mean ``KL(p_T || p_S)`` over the examples (natural log; Kullback & Leibler 1951).

    ``[N, K]`` each; probabilities clamped at ``1e-12`` inside the logs. 0 iff the student equals the teacher.
    """
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    return float(np.mean(_kl_rows(pt, ps)))


def js_rows(pt: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """Per-row Jensen-Shannon divergence ``1/2 KL(p_T || m) + 1/2 KL(p_S || m)``, ``m = (p_T + p_S) / 2``
    (Lin 1991), natural log, so each value lies in ``[0, ln 2]``. No checks."""
    m = 0.5 * (pt + ps)
    return np.minimum(0.5 * _kl_rows(pt, m) + 0.5 * _kl_rows(ps, m), np.log(2.0))


def js_to_teacher(teacher_probs: Any, student_probs: Any) -> float:
    """Mean Jensen-Shannon divergence between teacher and student (see :func:`js_rows`), in ``[0, ln 2]``.

    Equals the mean of ``scipy.spatial.distance.jensenshannon(p_T, p_S) ** 2`` (scipy returns the square root).
    """
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    return float(np.mean(js_rows(pt, ps)))


# ---------------------------------------------------------------------------------------------
# confidence relations


def _safe_corr(a: np.ndarray, b: np.ndarray, fn) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = fn(a, b)[0]
        except (ValueError, FloatingPointError):  # pragma: no cover - defensive
            return float("nan")
    return float(r)


def confidence_correlations(teacher_probs: Any, student_probs: Any, measure: str = "top_prob") -> dict[str, float]:
    """Pearson (linear) and Spearman (rank) correlation of per-example confidences conf_T vs conf_S.

    ``[N, K]`` each; ``measure`` as in :func:`confidence_pair`. Uses ``scipy.stats.pearsonr`` /
    ``spearmanr``. Returns ``{"pearson": r, "spearman": rho}``; either is NaN (never an exception) when a
    confidence vector is constant or N < 2.
    """
    ct, cs = confidence_pair(teacher_probs, student_probs, measure)
    return {"pearson": _safe_corr(ct, cs, stats.pearsonr), "spearman": _safe_corr(ct, cs, stats.spearmanr)}


def confidence_gap(teacher_probs: Any, student_probs: Any, measure: str = "top_prob") -> dict[str, Any]:
    """Size of the confidence difference (CP-1): ``{"mean_abs_gap": mean |d|, "max_abs_gap": max |d|,
    "d": d [N]}`` with ``d(x) = conf_T(x) - conf_S(x)``."""
    d = confidence_difference(teacher_probs, student_probs, measure)
    return {"mean_abs_gap": float(np.mean(np.abs(d))), "max_abs_gap": float(np.max(np.abs(d))), "d": d}


def agreement(teacher_probs: Any, student_probs: Any, labels: Any) -> dict[str, float]:
    """Top-1 agreement between teacher and student (fidelity, Stanton et al. 2021).

    ``[N, K]``, ``[N, K]``, ``labels [N]``. Returns ``{"agreement": mean[argmax p_T == argmax p_S],
    "agreement_on_teacher_errors": the same mean over the examples the teacher gets wrong}`` (NaN when the
    teacher makes no errors).
    """
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    y = check_labels(labels, pt.shape[0], pt.shape[1])
    t_pred, s_pred = pt.argmax(axis=1), ps.argmax(axis=1)
    agree = t_pred == s_pred
    wrong = t_pred != y
    on_err = float(np.mean(agree[wrong])) if wrong.any() else float("nan")
    return {"agreement": float(np.mean(agree)), "agreement_on_teacher_errors": on_err}
