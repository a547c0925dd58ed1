"""Teacher-vs-student confidence metrics and the confidence-preservation property: the ONE definition of
sigma used by evaluation, model selection, early stopping, the tuning objective and the report.

Shapes: ``teacher_probs`` and ``student_probs`` are ``[N, K]`` probability matrices for the SAME N
examples in the same order; logits are ``[N, K]``; ``labels`` are ``[N]`` integers in ``[0, K)``.

Source: Vengertsev & Sherman (2024), "Confidence Preservation Property in Knowledge Distillation
Abstractions", and the authors' public code (``TinyBERT/metrics.py``, ``pairwise_conf_delta``), which
computes sigma as the population standard deviation of ``p_T(class 0) - p_S(class 0)`` over the inputs
where BOTH the teacher and the student are correct (the ``paper`` preset below). Labels (CP-1)..(CP-4)
are ours:

* (CP-1) per input x, ``d(x) = conf_T(x) - conf_S(x)`` under a ``measure`` (:func:`confidence_pair`);
* (CP-2) ``sigma(X)``: the dispersion ``statistic`` of d over the ``subset`` of X (:func:`sigma`);
* (CP-3) ``phi_cnf``: ``sigma(X) <= kappa`` (``<=``: a model compared with itself, sigma = 0, holds for
  every kappa >= 0);
* (CP-4) the paper's bound ``kappa = gamma * sqrt(beta / (|X| (1 - alpha)))`` (:func:`kappa_bound`; our
  reading of the paper).

What the maths already implies (:func:`pinsker_bound`): for every measure except ``margin``,
``|d(x)| <= TV(p_T(x), p_S(x)) <= sqrt(KL(x) / 2)`` (Pinsker), and ``mad <= std <= rms``, so on any set
``sigma <= sqrt(mean KL / 2)`` (twice that for ``margin``). A kappa at or above that bound makes phi_cnf
hold whatever the student does: the verdict then says nothing, and the evaluation warns.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax

from confkd.errors import DataError, ParamsError
from confkd.evaluation.calibration import check_labels, check_logits, check_probs

MEASURES: tuple[str, ...] = ("top_prob", "teacher_class", "class_prob", "margin")
SUBSETS: tuple[str, ...] = ("all", "both_correct", "teacher_correct")
STATISTICS: tuple[str, ...] = ("std", "mad", "rms")
PREDICTION_LOSSES: tuple[str, ...] = ("kl", "soft_ce")
EPS = 1e-12  # clamp inside logs of probabilities

__all__ = [
    "MEASURES", "SUBSETS", "STATISTICS", "PREDICTION_LOSSES", "PRESETS", "ConfidenceSpec", "EmptySubsetError", "resolve_spec",
    "confidence_pair",
    "confidence_difference", "subset_mask", "dispersion", "masked_dispersion", "sigma", "sigma_from_logits",
    "teacher_student_scores", "pinsker_bound", "pinsker_from_kl", "kappa_bound", "phi_cnf", "prediction_loss_beta",
    "kl_rows_from_logits", "kl_to_teacher", "js_to_teacher", "confidence_correlations", "confidence_gap", "agreement",
]


# ---------------------------------------------------------------------------------------------
# the definition


@dataclass(frozen=True)
class ConfidenceSpec:
    """Which sigma: ``measure`` of confidence, ``subset`` of the examples, dispersion ``statistic``;
    ``class_index`` is the class whose probability ``class_prob`` compares.

    * measures: ``top_prob`` (each model's probability of its OWN predicted class), ``teacher_class``
      (the probability each model gives the TEACHER's predicted class), ``class_prob`` (the probability of
      class ``class_index``; the authors' choice, class 0, for binary tasks), ``margin`` (top-1 minus top-2);
    * subsets: ``all``, ``both_correct`` (teacher and student both right; the authors' choice),
      ``teacher_correct``;
    * statistics: ``std`` (population, ddof = 0; the authors' ``np.std``), ``mad`` (mean absolute
      deviation from the mean), ``rms`` (not centred: also penalises a systematic shift).
    """

    measure: str = "top_prob"
    subset: str = "all"
    statistic: str = "std"
    class_index: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (("measure", self.measure, MEASURES), ("subset", self.subset, SUBSETS),
                                     ("statistic", self.statistic, STATISTICS)):
            if value not in allowed:
                raise ParamsError(f"{name} must be one of {allowed}, got {value!r}")
        if isinstance(self.class_index, bool) or not isinstance(self.class_index, (int, np.integer)) \
                or self.class_index < 0:
            raise ParamsError(f"class_index must be an integer >= 0, got {self.class_index!r}")

    def describe(self) -> str:
        what = f"p(class {self.class_index})" if self.measure == "class_prob" else self.measure
        return f"{self.statistic} of teacher-minus-student {what} over {self.subset.replace('_', '-')} examples"


# The authors' choices (pairwise_conf_delta): p(class 0), both correct, population std.
PRESETS: dict[str, ConfidenceSpec] = {"paper": ConfidenceSpec("class_prob", "both_correct", "std", 0)}


def resolve_spec(settings: Any, labels: list[str] | None = None) -> ConfidenceSpec:
    """The :class:`ConfidenceSpec` that ``evaluate.confidence`` selects: the ``preset`` (or the defaults when
    it is null), overridden by any of ``measure``, ``subset``, ``statistic`` given; ``class_name`` is looked up
    in ``labels`` (the task's label names)."""
    base = PRESETS[settings.preset] if settings.preset else ConfidenceSpec()
    index = base.class_index
    if settings.class_name is not None:
        if labels is None or settings.class_name not in labels:
            raise ParamsError(f"evaluate.confidence.class_name: '{settings.class_name}' is not a label of the task "
                              f"(labels: {labels})")
        index = labels.index(settings.class_name)
    return ConfidenceSpec(measure=settings.measure or base.measure, subset=settings.subset or base.subset,
                          statistic=settings.statistic or base.statistic, class_index=index)


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


def _spec(spec: ConfidenceSpec | str | None) -> ConfidenceSpec:
    if spec is None:
        return ConfidenceSpec()
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ParamsError(f"unknown confidence preset {spec!r} (available: {sorted(PRESETS)})")
        return PRESETS[spec]
    return spec


# ---------------------------------------------------------------------------------------------
# per-example confidence and d(x)


def _margin(p: np.ndarray) -> np.ndarray:
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _confidences(pt: np.ndarray, ps: np.ndarray, spec: ConfidenceSpec) -> tuple[np.ndarray, np.ndarray]:
    if spec.measure == "top_prob":
        return pt.max(axis=1), ps.max(axis=1)
    if spec.measure == "teacher_class":
        rows, t = np.arange(len(pt)), pt.argmax(axis=1)
        return pt[rows, t], ps[rows, t]
    if spec.measure == "class_prob":
        if spec.class_index >= pt.shape[1]:
            raise DataError(f"class_prob: class index {spec.class_index} but the models have {pt.shape[1]} classes")
        return pt[:, spec.class_index], ps[:, spec.class_index]
    return _margin(pt), _margin(ps)


def confidence_pair(teacher_probs: Any, student_probs: Any,
                    spec: ConfidenceSpec | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-example confidences ``(conf_T [N], conf_S [N])`` under ``spec.measure`` (all examples)."""
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    return _confidences(pt, ps, _spec(spec))


def confidence_difference(teacher_probs: Any, student_probs: Any, spec: ConfidenceSpec | str | None = None) -> np.ndarray:
    """(CP-1) ``d(x) = conf_T(x) - conf_S(x)``, ``[N]``, on every example (the subset is not applied)."""
    ct, cs = confidence_pair(teacher_probs, student_probs, spec)
    return ct - cs


def subset_mask(pt: np.ndarray, ps: np.ndarray, labels: np.ndarray | None, subset: str) -> np.ndarray:
    """Boolean ``[N]``: the examples sigma is computed on. ``labels`` may be None only for ``all``."""
    if subset == "all":
        return np.ones(len(pt), dtype=bool)
    if labels is None:
        raise DataError(f"subset '{subset}' needs gold labels")
    teacher_right = pt.argmax(axis=1) == labels
    if subset == "teacher_correct":
        return teacher_right
    return teacher_right & (ps.argmax(axis=1) == labels)


def _dispersion(d: np.ndarray, statistic: str, axis: int = -1) -> np.ndarray:
    if statistic == "std":
        return np.std(d, axis=axis)
    if statistic == "mad":
        return np.mean(np.abs(d - np.mean(d, axis=axis, keepdims=True)), axis=axis)
    return np.sqrt(np.mean(d * d, axis=axis))


def masked_dispersion(d: np.ndarray, mask: np.ndarray, statistic: str) -> np.ndarray:
    """The dispersion of ``d`` over the entries where ``mask`` is True, along the last axis.

    ``d``, ``mask``: ``[..., N]`` (a batch of bootstrap resamples works). Equals :func:`dispersion` of
    ``d[mask]`` for one row; NaN where a row's mask is empty. No checks.
    """
    w = mask.astype(np.float64)
    count = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if statistic == "rms":
            return np.sqrt((w * d * d).sum(axis=-1) / count)
        mean = (w * d).sum(axis=-1, keepdims=True) / count[..., None]
        dev = d - mean
        if statistic == "std":
            return np.sqrt((w * dev * dev).sum(axis=-1) / count)
        return (w * np.abs(dev)).sum(axis=-1) / count


def dispersion(d: Any, statistic: str = "std") -> float:
    """(CP-2) the dispersion of ``d [N]``: ``std`` = ``sqrt(1/N sum (d - mean d)^2)`` (ddof = 0), ``mad`` =
    ``1/N sum |d - mean d|``, ``rms`` = ``sqrt(1/N sum d^2)``."""
    a = np.asarray(d, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise DataError(f"d must be a non-empty 1-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError("d holds NaN/inf values")
    if statistic not in STATISTICS:
        raise ParamsError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    return float(_dispersion(a, statistic))


class EmptySubsetError(DataError):
    """sigma's subset (e.g. both-correct) holds no example: sigma is undefined there."""


def _differences(pt: np.ndarray, ps: np.ndarray, labels: np.ndarray | None,
                 spec: ConfidenceSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(d [N], mask [N])``; raises :class:`EmptySubsetError` when the subset is empty (never a silent NaN)."""
    ct, cs = _confidences(pt, ps, spec)
    mask = subset_mask(pt, ps, labels, spec.subset)
    if not mask.any():
        raise EmptySubsetError(f"sigma: the '{spec.subset}' subset is empty ({len(pt)} examples, none qualifies); "
                        "sigma is undefined on it (choose evaluate.confidence.subset: all)")
    return ct - cs, mask


def sigma(teacher_probs: Any, student_probs: Any, labels: Any = None, spec: ConfidenceSpec | str | None = None) -> float:
    """(CP-2) sigma(X) under ``spec`` (a :class:`ConfidenceSpec`, a preset name, or None for the defaults).

    ``teacher_probs``, ``student_probs`` ``[N, K]``; ``labels`` ``[N]`` (needed by the subsets other than
    ``all``). Raises ``DataError`` when the subset is empty.
    """
    spec = _spec(spec)
    pt, ps = _check_probs_pair(teacher_probs, student_probs)
    y = None if labels is None else check_labels(labels, pt.shape[0], pt.shape[1])
    d, mask = _differences(pt, ps, y, spec)
    return float(masked_dispersion(d, mask, spec.statistic))


def sigma_from_logits(teacher_logits: Any, student_logits: Any, labels: Any = None,
                      spec: ConfidenceSpec | str | None = None) -> float:
    """:func:`sigma` of ``softmax(teacher_logits)`` and ``softmax(student_logits)`` (``[N, K]`` each)."""
    zt, zs = _check_logits_pair(teacher_logits, student_logits)
    return sigma(softmax(zt, axis=1), softmax(zs, axis=1), labels, spec)


def teacher_student_scores(teacher_logits: Any, student_logits: Any, labels: Any,
                           spec: ConfidenceSpec | str | None = None, prefix: str = "",
                           empty_subset: str = "raise") -> dict[str, float]:
    """The teacher-relative scores that model selection, early stopping and the tuning objective read:
    ``agreement`` (top-1), ``sigma`` (:func:`sigma` under ``spec``) and ``mean_abs_conf_gap`` (over the same
    subset), each key prefixed with ``prefix``. Logits ``[N, K]``, labels ``[N]``.

    ``empty_subset``: ``"raise"`` (:class:`EmptySubsetError`) or ``"inf"``: during training a student may
    not yet be right anywhere the teacher is; sigma is then recorded as +inf (the worst value, never
    selected on) rather than stopping the run.
    """
    spec = _spec(spec)
    zt, zs = _check_logits_pair(teacher_logits, student_logits)
    pt, ps = softmax(zt, axis=1), softmax(zs, axis=1)
    y = check_labels(labels, pt.shape[0], pt.shape[1])
    agreement_value = float(np.mean(pt.argmax(1) == ps.argmax(1)))
    try:
        d, mask = _differences(pt, ps, y, spec)
    except EmptySubsetError:
        if empty_subset != "inf":
            raise
        return {f"{prefix}agreement": agreement_value, f"{prefix}sigma": math.inf, f"{prefix}mean_abs_conf_gap": math.inf}
    return {
        f"{prefix}agreement": agreement_value,
        f"{prefix}sigma": float(masked_dispersion(d, mask, spec.statistic)),
        f"{prefix}mean_abs_conf_gap": float(np.mean(np.abs(d[mask]))),
    }


def pinsker_bound(teacher_logits: Any, student_logits: Any, labels: Any = None,
                  spec: ConfidenceSpec | str | None = None) -> float:
    """The largest sigma the maths allows given the KL: ``c * sqrt(mean_{x in subset} KL(p_T(x) || p_S(x)) / 2)``,
    with ``c = 2`` for ``margin`` and ``c = 1`` otherwise.

    Why: ``|d(x)| <= max_k |p_T,k - p_S,k| <= TV(x) <= sqrt(KL(x) / 2)`` (the top probability, the second
    one and any one class's probability move by at most TV; Pinsker's inequality), and
    ``mad <= std <= rms <= sqrt(mean d^2)``. A kappa at or above this value cannot fail.
    """
    spec = _spec(spec)
    zt, zs = _check_logits_pair(teacher_logits, student_logits)
    pt, ps = softmax(zt, axis=1), softmax(zs, axis=1)
    y = None if labels is None else check_labels(labels, pt.shape[0], pt.shape[1])
    _, mask = _differences(pt, ps, y, spec)
    return pinsker_from_kl(kl_rows_from_logits(zt[mask], zs[mask]), spec.measure)


def pinsker_from_kl(kl_rows: np.ndarray, measure: str) -> float:
    """``c * sqrt(mean(kl_rows) / 2)`` (``c = 2`` for ``margin``, else 1): see :func:`pinsker_bound`."""
    return float((2.0 if measure == "margin" else 1.0) * np.sqrt(np.mean(kl_rows) / 2.0))


def kappa_bound(beta_sum: float, n: int, gamma: float = 1.0, alpha: float = 0.0) -> float:
    """(CP-4) the paper's threshold ``kappa = gamma * sqrt(beta_sum / (n * (1 - alpha)))`` (our reading).

    ``beta_sum``: the distillation (prediction-layer) loss at the stopping criterion, SUMMED over the ``n``
    examples of X (see :func:`prediction_loss_beta`); ``n = |X|``. Example:
    ``kappa_bound(0.36, 4) = sqrt(0.09) = 0.3``. With beta the summed KL this is ``gamma * sqrt(mean KL)``,
    which is sqrt(2) times :func:`pinsker_bound` at gamma = 1: such a kappa cannot fail.
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


def phi_cnf(teacher_probs: Any, student_probs: Any, kappa: float, labels: Any = None,
            spec: ConfidenceSpec | str | None = None) -> dict[str, Any]:
    """(CP-3) ``phi_cnf: sigma(X) <= kappa``. Returns ``{"sigma", "kappa", "holds"}``."""
    k = _check_kappa(kappa)
    s = sigma(teacher_probs, student_probs, labels, spec)
    return {"sigma": s, "kappa": k, "holds": bool(s <= k)}


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


def confidence_correlations(teacher_probs: Any, student_probs: Any,
                            spec: ConfidenceSpec | str | None = None) -> dict[str, float]:
    """Pearson (linear) and Spearman (rank) correlation of per-example confidences conf_T vs conf_S.

    ``[N, K]`` each; the measure of ``spec`` as in :func:`confidence_pair` (every example). Uses ``scipy.stats.pearsonr`` /
    ``spearmanr``. Returns ``{"pearson": r, "spearman": rho}``; either is NaN (never an exception) when a
    confidence vector is constant or N < 2.
    """
    from scipy import stats  # here, not at import: scipy.stats costs every stage that imports this module ~1 s

    ct, cs = confidence_pair(teacher_probs, student_probs, spec)
    return {"pearson": _safe_corr(ct, cs, stats.pearsonr), "spearman": _safe_corr(ct, cs, stats.spearmanr)}


def confidence_gap(teacher_probs: Any, student_probs: Any, spec: ConfidenceSpec | str | None = None) -> dict[str, Any]:
    """Size of the confidence difference (CP-1): ``{"mean_abs_gap": mean |d|, "max_abs_gap": max |d|,
    "d": d [N]}`` with ``d(x) = conf_T(x) - conf_S(x)``."""
    d = confidence_difference(teacher_probs, student_probs, spec)
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
