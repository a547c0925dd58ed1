"""One flat dict of every metric for one model (the "student") on one split, relative to a teacher.

Evaluating the teacher itself: pass its logits as both ``teacher_logits`` and ``student_logits``; the
teacher-relative metrics then come out exactly as agreement 1, KL 0, JS 0, sigma 0 (and phi_cnf 1).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from scipy.special import log_softmax, softmax
from scipy.stats import pearsonr, spearmanr

from confkd.errors import DataError, ParamsError
from confkd.evaluation import metrics as _metrics
from confkd.evaluation.bootstrap import bootstrap_ci
from confkd.evaluation.calibration import _check_bins, check_labels, check_logits, ece, ece_batched, \
    equal_width_bins, mce, top_label
from confkd.evaluation.confidence import _check_kappa, _check_measure, _check_statistic, _confidences, \
    _dispersion, _safe_corr, js_rows, kappa_bound, kl_rows_from_logits
from confkd.evaluation.selective import aurc_batched, optimal_aurc
from confkd.evaluation.temperature import _check_t

__all__ = ["evaluate_split", "CI_METRICS"]

CI_METRICS: tuple[str, ...] = ("accuracy", "ece", "nll", "agreement", "sigma", "aurc")
CI_ALPHA = 0.05  # 95% percentile intervals


def _teacher_relative(pt: np.ndarray, ps: np.ndarray, measure: str, statistic: str) -> tuple[np.ndarray, float]:
    ct, cs = _confidences(pt, ps, measure)
    d = ct - cs
    return d, float(_dispersion(d, statistic))


def evaluate_split(teacher_logits: Any, student_logits: Any, labels: Any, *, n_bins: int = 15,
                   n_resamples: int = 1000, seed: int = 0, kappa: Optional[float] = None,
                   beta_sum: Optional[float] = None, measure: str = "top_prob", statistic: str = "std",
                   temperature_dev: Optional[float] = None) -> dict[str, float]:
    """Every metric of the student on one split, as ``{name: float}``.

    Inputs: ``teacher_logits``, ``student_logits`` ``[N, K]`` (same examples, same order), ``labels``
    ``[N]`` ints in ``[0, K)``. Bad inputs (NaN/inf logits, shape or length mismatch, labels out of range)
    raise ``DataError``; bad settings raise ``ParamsError``.

    Keys (all floats):

    * classification / calibration of the student: ``accuracy``, ``macro_f1``, ``nll``, ``brier``, ``ece``
      (equal-width, ``n_bins``), ``ece_adaptive`` (equal-mass), ``mce`` (equal-width) - see
      ``calibration.py``;
    * teacher-relative: ``agreement``, ``agreement_on_teacher_errors`` (NaN if the teacher makes no errors),
      ``kl_to_teacher`` (mean KL(p_T || p_S) computed from logits), ``js_to_teacher``, ``conf_pearson``,
      ``conf_spearman``, ``mean_abs_conf_gap``, ``max_abs_conf_gap`` - see ``confidence.py``;
    * confidence preservation (Vengertsev & Sherman 2024, labels (CP-1)..(CP-4) of ``confidence.py``):
      ``sigma`` (dispersion ``statistic`` of d(x) under ``measure``), ``kappa``, ``phi_cnf`` (1.0 if
      ``sigma <= kappa`` else 0.0) and ``beta_sum`` (the beta used for kappa; NaN when ``kappa`` is given).
      kappa comes from, in order: ``kappa`` if given; else ``kappa_bound(beta_sum, N)`` with ``beta_sum``
      the prediction loss SUMMED OVER THIS SPLIT's N examples; else the bound evaluated on this split itself,
      ``beta_sum = prediction_loss_beta(teacher_logits, student_logits)`` (KL, T = 1), i.e.
      ``kappa = sqrt(kl_to_teacher)``. For the paper's training-set bound pass
      ``kappa=kappa_bound(beta_train_sum, n_train)``. Giving both ``kappa`` and ``beta_sum`` is an error;
    * selective prediction: ``aurc``, ``excess_aurc`` - see ``selective.py``;
    * ``n_examples``;
    * for ``accuracy``, ``ece``, ``nll``, ``agreement``, ``sigma``, ``aurc``: ``<name>_ci_low`` /
      ``<name>_ci_high``, a 95% percentile bootstrap interval over examples (``n_resamples`` resamples,
      ``seed``; all six use the same resampled indices). ``n_resamples=0`` skips the intervals;
    * if ``temperature_dev`` (a temperature fitted on dev, see ``temperature.fit_temperature``) is given:
      ``temperature`` and, for the student's logits divided by it, ``ts_nll``, ``ts_ece``,
      ``ts_ece_adaptive``, ``ts_brier``, ``ts_sigma``, ``ts_phi_cnf`` (the teacher stays unscaled; the same
      kappa is used).
    """
    zt = check_logits(teacher_logits, "teacher_logits")
    zs = check_logits(student_logits, "student_logits")
    if zt.shape != zs.shape:
        raise DataError(f"teacher_logits {zt.shape} and student_logits {zs.shape} differ in shape "
                        "(mismatched lengths or class counts)")
    n, k = zs.shape
    y = check_labels(labels, n, k)
    n_bins = _check_bins(n_bins)
    measure, statistic = _check_measure(measure), _check_statistic(statistic)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise ParamsError(f"n_resamples must be an integer >= 0, got {n_resamples!r}")
    if kappa is not None and beta_sum is not None:
        raise ParamsError("give either kappa or beta_sum, not both")

    pt, ps = softmax(zt, axis=1), softmax(zs, axis=1)
    rows = np.arange(n)
    conf_s, correct = top_label(ps, y)
    err = 1.0 - correct
    nll_rows = -log_softmax(zs, axis=1)[rows, y]
    agree = (pt.argmax(axis=1) == ps.argmax(axis=1)).astype(np.float64)
    t_wrong = pt.argmax(axis=1) != y
    kl_rows = kl_rows_from_logits(zt, zs, 1.0, "kl")
    ct, cs = _confidences(pt, ps, measure)
    d = ct - cs
    sigma = float(_dispersion(d, statistic))

    if kappa is not None:
        kap, beta_used = _check_kappa(kappa), float("nan")
    else:
        beta_used = float(kl_rows.sum()) if beta_sum is None else beta_sum
        kap = kappa_bound(beta_used, n)
        beta_used = float(beta_used)

    out: dict[str, float] = {
        "n_examples": float(n),
        "accuracy": float(correct.mean()),
        "macro_f1": _metrics.macro_f1(ps, y),
        "nll": float(nll_rows.mean()),
        "brier": _metrics.brier(ps, y),
        "ece": ece(ps, y, n_bins, "equal_width"),
        "ece_adaptive": ece(ps, y, n_bins, "equal_mass"),
        "mce": mce(ps, y, n_bins, "equal_width"),
        "agreement": float(agree.mean()),
        "agreement_on_teacher_errors": float(agree[t_wrong].mean()) if t_wrong.any() else float("nan"),
        "kl_to_teacher": float(kl_rows.mean()),
        "js_to_teacher": float(js_rows(pt, ps).mean()),
        "conf_pearson": _safe_corr(ct, cs, pearsonr),
        "conf_spearman": _safe_corr(ct, cs, spearmanr),
        "mean_abs_conf_gap": float(np.abs(d).mean()),
        "max_abs_conf_gap": float(np.abs(d).max()),
        "sigma": sigma,
        "kappa": kap,
        "phi_cnf": 1.0 if sigma <= kap else 0.0,
        "beta_sum": beta_used,
        "aurc": float(aurc_batched(conf_s[None], err[None])[0]),
    }
    out["excess_aurc"] = out["aurc"] - optimal_aurc(int(err.sum()), n)

    if n_resamples > 0:
        bins = equal_width_bins(conf_s, n_bins)
        jobs = {
            "accuracy": (lambda c: c.mean(axis=-1), (correct,)),
            "ece": (lambda b, c, r: ece_batched(b, c, r, n_bins), (bins, conf_s, correct)),
            "nll": (lambda v: v.mean(axis=-1), (nll_rows,)),
            "agreement": (lambda a: a.mean(axis=-1), (agree,)),
            "sigma": (lambda v: _dispersion(v, statistic, axis=-1), (d,)),
            "aurc": (aurc_batched, (conf_s, err)),
        }
        for name, (fn, arrays) in jobs.items():
            _, low, high = bootstrap_ci(fn, arrays, n_resamples=n_resamples, seed=seed, alpha=CI_ALPHA,
                                        vectorized=True)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high

    if temperature_dev is not None:
        t = _check_t(temperature_dev)
        zs_t = zs / t
        ps_t = softmax(zs_t, axis=1)
        ts_d_sigma = float(_dispersion(np.subtract(*_confidences(pt, ps_t, measure)), statistic))
        out.update({
            "temperature": t,
            "ts_nll": _metrics.nll(zs_t, y),
            "ts_ece": ece(ps_t, y, n_bins, "equal_width"),
            "ts_ece_adaptive": ece(ps_t, y, n_bins, "equal_mass"),
            "ts_brier": _metrics.brier(ps_t, y),
            "ts_sigma": ts_d_sigma,
            "ts_phi_cnf": 1.0 if ts_d_sigma <= kap else 0.0,
        })
    return out

