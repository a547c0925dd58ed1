"""One flat dict of every metric for one model (the "student") on one split, relative to a teacher.

Evaluating the teacher itself: pass its logits as both ``teacher_logits`` and ``student_logits``; the
teacher-relative metrics then come out exactly as agreement 1, KL 0, JS 0, sigma 0 (and phi_cnf 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax
from scipy.stats import pearsonr, spearmanr

from confkd.errors import DataError, ParamsError
from confkd.evaluation import metrics as _metrics
from confkd.evaluation.bootstrap import bootstrap_ci
from confkd.evaluation.calibration import _check_bins, brier_raw, check_labels, check_logits, ece, ece_batched, \
    equal_width_bins, mce, nll_raw, top_label
from confkd.evaluation.confidence import ConfidenceSpec, _check_kappa, _confidences, _differences, _safe_corr, \
    js_rows, kl_rows_from_logits, masked_dispersion, pinsker_from_kl
from confkd.evaluation.selective import aurc_batched, optimal_aurc
from confkd.evaluation.temperature import _check_t

__all__ = ["evaluate_split", "CI_METRICS"]

CI_METRICS: tuple[str, ...] = ("accuracy", "ece", "nll", "agreement", "sigma", "aurc")
CI_ALPHA = 0.05  # 95% percentile intervals


def evaluate_split(teacher_logits: Any, student_logits: Any, labels: Any, *, kappa: float,
                   spec: ConfidenceSpec = ConfidenceSpec(), n_bins: int = 15, n_resamples: int = 1000, seed: int = 0,
                   temperature_dev: float | None = None) -> dict[str, float]:
    """Every metric of the student on one split, as ``{name: float}``.

    Inputs: ``teacher_logits``, ``student_logits`` ``[N, K]`` (same examples, same order), ``labels``
    ``[N]`` ints in ``[0, K)``; ``kappa`` the phi_cnf threshold for this split (see
    :mod:`confkd.evaluation.kappa`); ``spec`` which sigma (:class:`ConfidenceSpec`). Bad inputs (NaN/inf
    logits, shape or length mismatch, labels out of range, an empty sigma subset) raise ``DataError``;
    bad settings raise ``ParamsError``.

    Keys (all floats):

    * classification / calibration of the student: ``accuracy``, ``macro_f1``, ``nll``, ``brier``, ``ece``
      (equal-width, ``n_bins``), ``ece_adaptive`` (equal-mass), ``mce`` (equal-width) - see
      ``calibration.py``;
    * teacher-relative: ``agreement``, ``agreement_on_teacher_errors`` (NaN if the teacher makes no errors),
      ``kl_to_teacher`` (mean KL(p_T || p_S) from logits), ``js_to_teacher``, ``conf_pearson``,
      ``conf_spearman`` (every example), ``mean_abs_conf_gap``, ``max_abs_conf_gap`` (over the sigma subset);
    * confidence preservation (``confidence.py``): ``sigma`` (under ``spec``), ``sigma_n`` (examples in its
      subset), ``kappa``, ``phi_cnf`` (1.0 if ``sigma <= kappa``), ``pinsker_bound`` (the sigma the KL on the
      same subset already bounds; a kappa at or above it cannot fail, and a warning is logged);
    * selective prediction: ``aurc``, ``excess_aurc`` - see ``selective.py``;
    * ``n_examples``; ``majority_accuracy``, the accuracy of always answering the split's most frequent class
      (the best constant predictor: a model near it has learnt little);
    * for ``accuracy``, ``ece``, ``nll``, ``agreement``, ``sigma``, ``aurc``: ``<name>_ci_low`` /
      ``<name>_ci_high``, a 95% percentile bootstrap interval over examples (``n_resamples`` resamples,
      ``seed``; all six use the same resampled indices; sigma's subset is re-taken inside each resample).
      ``n_resamples=0`` skips the intervals;
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
    if not isinstance(spec, ConfidenceSpec):
        raise ParamsError(f"spec must be a ConfidenceSpec, got {type(spec).__name__}")
    kap = _check_kappa(kappa)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise ParamsError(f"n_resamples must be an integer >= 0, got {n_resamples!r}")

    pt, ps = softmax(zt, axis=1), softmax(zs, axis=1)
    rows = np.arange(n)
    conf_s, correct = top_label(ps, y)
    err = 1.0 - correct
    nll_rows = -log_softmax(zs, axis=1)[rows, y]
    agree = (pt.argmax(axis=1) == ps.argmax(axis=1)).astype(np.float64)
    t_wrong = pt.argmax(axis=1) != y
    kl_rows = kl_rows_from_logits(zt, zs, 1.0, "kl")
    ct, cs = _confidences(pt, ps, spec)
    d, mask = _differences(pt, ps, y, spec)
    sigma = float(masked_dispersion(d, mask, spec.statistic))
    pinsker = pinsker_from_kl(kl_rows[mask], spec.measure)

    out: dict[str, float] = {
        "n_examples": float(n),
        "accuracy": float(correct.mean()),
        "majority_accuracy": float(np.bincount(y, minlength=k).max() / n),
        "macro_f1": _metrics.macro_f1(ps, y),
        "nll": float(nll_rows.mean()),
        "brier": brier_raw(ps, y),
        "ece": ece(ps, y, n_bins, "equal_width"),
        "ece_adaptive": ece(ps, y, n_bins, "equal_mass"),
        "mce": mce(ps, y, n_bins, "equal_width"),
        "agreement": float(agree.mean()),
        "agreement_on_teacher_errors": float(agree[t_wrong].mean()) if t_wrong.any() else float("nan"),
        "kl_to_teacher": float(kl_rows.mean()),
        "js_to_teacher": float(js_rows(pt, ps).mean()),
        "conf_pearson": _safe_corr(ct, cs, pearsonr),
        "conf_spearman": _safe_corr(ct, cs, spearmanr),
        "mean_abs_conf_gap": float(np.abs(d[mask]).mean()),
        "max_abs_conf_gap": float(np.abs(d[mask]).max()),
        "sigma": sigma,
        "sigma_n": float(mask.sum()),
        "kappa": kap,
        "phi_cnf": 1.0 if sigma <= kap else 0.0,
        "pinsker_bound": pinsker,
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
            "sigma": (lambda v, m: masked_dispersion(v, m, spec.statistic), (d, mask)),
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
        d_t, mask_t = _differences(pt, ps_t, y, spec)
        ts_sigma = float(masked_dispersion(d_t, mask_t, spec.statistic))
        out.update({
            "temperature": t,
            "ts_nll": nll_raw(zs_t, y),
            "ts_ece": ece(ps_t, y, n_bins, "equal_width"),
            "ts_ece_adaptive": ece(ps_t, y, n_bins, "equal_mass"),
            "ts_brier": brier_raw(ps_t, y),
            "ts_sigma": ts_sigma,
            "ts_phi_cnf": 1.0 if ts_sigma <= kap else 0.0,
        })
    return out


def trust_flags(by_split: dict[str, dict], margin: float) -> dict[str, float]:
    """Warnings that a model's results may mean nothing, from :func:`evaluate_split`'s output per split.

    * ``near_baseline_<split>`` (1.0/0.0): accuracy within ``margin`` of ``majority_accuracy`` on that split
      (the model barely beats always answering the most frequent class);
    * ``dev_test_shift`` (when both splits have intervals): the 95% bootstrap intervals of dev and test
      accuracy are disjoint (dev no longer predicts test: a distribution shift between them).
    """
    if not 0 <= margin < 1:
        raise ParamsError(f"margin must be in [0, 1), got {margin}")
    out: dict[str, float] = {}
    for split, m in by_split.items():
        if isinstance(m, dict) and "accuracy" in m and "majority_accuracy" in m:
            out[f"near_baseline_{split}"] = float(m["accuracy"] - m["majority_accuracy"] <= margin)
    dev, test = by_split.get("dev"), by_split.get("test")
    keys = ("accuracy_ci_low", "accuracy_ci_high")
    if isinstance(dev, dict) and isinstance(test, dict) and all(dev.get(k) is not None and test.get(k) is not None
                                                                  for k in keys):
        out["dev_test_shift"] = float(dev["accuracy_ci_low"] > test["accuracy_ci_high"]
                                      or test["accuracy_ci_low"] > dev["accuracy_ci_high"])
    return out
