"""Tests of the confidence-preservation evaluation library (calibration, confidence, selective,
temperature, bootstrap, report). Values are hand-computed (arithmetic in comments) or come from an
independent implementation (scipy, brute-force loops, torch losses)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy, pearsonr, spearmanr

from confkd.errors import DataError, ParamsError
from confkd.evaluation import metrics
from confkd.evaluation.bootstrap import bootstrap_ci
from confkd.evaluation.calibration import brier, ece, mce, nll, reliability_curve
from confkd.evaluation.confidence import (
    agreement, confidence_correlations, confidence_difference, confidence_gap, dispersion, js_to_teacher,
    kappa_bound, kl_to_teacher, phi_cnf, prediction_loss_beta, ConfidenceSpec,
)
from confkd.evaluation.report import evaluate_split
from confkd.evaluation.selective import aurc, excess_aurc, risk_coverage_curve
from confkd.evaluation.temperature import apply_temperature, fit_temperature

# Hand example shared by the calibration tests (2 classes):
#   row  probs        label  conf  correct
#   0    [0.90,0.10]  0      0.90  1
#   1    [0.85,0.15]  1      0.85  0
#   2    [0.30,0.70]  1      0.70  1
#   3    [0.55,0.45]  1      0.55  0
HAND_P = np.array([[0.90, 0.10], [0.85, 0.15], [0.30, 0.70], [0.55, 0.45]])
HAND_Y = np.array([0, 1, 1, 1])


def _random_probs(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n)


# ---------------------------------------------------------------------------------------------
# calibration


def test_ece_equal_width_hand_example():
    # 5 equal-width bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]:
    #   (.8,1]:  rows 0,1  acc 1/2 = .5, conf (.90+.85)/2 = .875  -> 2/4 * |.5 - .875| = .1875
    #   (.6,.8]: row 2     acc 1,       conf .70                  -> 1/4 * |1 - .70|   = .075
    #   (.4,.6]: row 3     acc 0,       conf .55                  -> 1/4 * |0 - .55|   = .1375
    #   ECE = .1875 + .075 + .1375 = .4
    assert ece(HAND_P, HAND_Y, n_bins=5) == pytest.approx(0.4, abs=1e-12)


def test_ece_equal_mass_hand_example():
    # sorted confidences: .55(wrong) .70(right) | .85(wrong) .90(right); 2 equal-mass bins of 2:
    #   bin 1: acc .5, conf (.55+.70)/2 = .625 -> 2/4 * .125 = .0625
    #   bin 2: acc .5, conf (.85+.90)/2 = .875 -> 2/4 * .375 = .1875
    #   ECE = .25
    assert ece(HAND_P, HAND_Y, n_bins=2, scheme="equal_mass") == pytest.approx(0.25, abs=1e-12)
    # 3 bins: np.array_split gives sizes 2,1,1: {.55,.70} -> 2/4*.125; {.85} -> 1/4*.85; {.90} -> 1/4*.10
    #   ECE = .0625 + .2125 + .025 = .3
    assert ece(HAND_P, HAND_Y, n_bins=3, scheme="equal_mass") == pytest.approx(0.3, abs=1e-12)


def test_mce_hand_example():
    # equal-width, 5 bins: gaps .375, .30, .55 -> max .55; equal-mass, 2 bins: gaps .125, .375 -> .375
    assert mce(HAND_P, HAND_Y, n_bins=5) == pytest.approx(0.55, abs=1e-12)
    assert mce(HAND_P, HAND_Y, n_bins=2, scheme="equal_mass") == pytest.approx(0.375, abs=1e-12)


def test_reliability_curve_hand_example():
    rc = reliability_curve(HAND_P, HAND_Y, n_bins=5)
    np.testing.assert_array_equal(rc["count"], [0, 0, 1, 1, 2])
    np.testing.assert_allclose(rc["confidence"][2:], [0.55, 0.70, 0.875])
    np.testing.assert_allclose(rc["accuracy"][2:], [0.0, 1.0, 0.5])
    assert np.isnan(rc["confidence"][:2]).all() and np.isnan(rc["accuracy"][:2]).all()
    np.testing.assert_allclose(rc["bin_lower"], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(rc["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0])


def test_perfectly_calibrated_model_has_near_zero_ece():
    rng = np.random.default_rng(2)
    n = 200_000
    c = rng.uniform(0.5, 1.0, n)
    p = np.stack([c, 1 - c], axis=1)
    y = np.where(rng.random(n) < c, 0, 1)  # P(label = predicted class) = confidence
    assert ece(p, y) < 0.01
    assert ece(p, y, scheme="equal_mass") < 0.01


def test_overconfident_model_ece():
    # always 0.99 confident, exactly 70% right: one bin, |0.70 - 0.99| = 0.29
    n = 1000
    p = np.tile([0.99, 0.01], (n, 1))
    y = np.zeros(n, dtype=int)
    y[700:] = 1
    assert ece(p, y) == pytest.approx(0.29, abs=1e-12)
    # (equal-mass bins split tied confidences by input order, so they are not used on this all-tied case)
    assert mce(p, y) == pytest.approx(0.29, abs=1e-12)


def test_nll_and_brier_wrappers():
    z = np.log(HAND_P)
    assert nll(z, HAND_Y) == pytest.approx(-np.mean(np.log([0.90, 0.15, 0.70, 0.45])))
    # brier row 0: (.1)^2*2 = .02; row 1: .85^2*2 = 1.445; row 2: .3^2*2 = .18; row 3: .55^2*2 = .605
    assert brier(HAND_P, HAND_Y) == pytest.approx((0.02 + 1.445 + 0.18 + 0.605) / 4)


# ---------------------------------------------------------------------------------------------
# teacher vs student


def test_kl_and_js_match_scipy():
    rng = np.random.default_rng(3)
    pt, ps = _random_probs(rng, 200, 4), _random_probs(rng, 200, 4)
    kl_ref = np.mean([entropy(a, b) for a, b in zip(pt, ps)])
    js_ref = np.mean([jensenshannon(a, b) ** 2 for a, b in zip(pt, ps)])
    assert kl_to_teacher(pt, ps) == pytest.approx(kl_ref, rel=1e-9)
    assert js_to_teacher(pt, ps) == pytest.approx(js_ref, rel=1e-9)
    # JS bounded by ln 2 (disjoint supports reach it)
    assert js_to_teacher(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(math.log(2))


def test_confidence_correlations_match_scipy_and_are_nan_safe():
    rng = np.random.default_rng(4)
    pt, ps = _random_probs(rng, 300, 3), _random_probs(rng, 300, 3)
    r = confidence_correlations(pt, ps)
    ct, cs = pt.max(1), ps.max(1)
    assert r["pearson"] == pytest.approx(pearsonr(ct, cs)[0])
    assert r["spearman"] == pytest.approx(spearmanr(ct, cs)[0])
    const = np.tile([0.7, 0.3], (10, 1))
    r = confidence_correlations(const, _random_probs(rng, 10, 2))
    assert np.isnan(r["pearson"]) and np.isnan(r["spearman"])


# Hand example for sigma / phi_cnf (2 classes):
#   teacher [.9,.1] [.8,.2] [.7,.3] [.6,.4]  -> top probs .9 .8 .7 .6
#   student [.8,.2] [.2,.8] [.5,.5] [.3,.7]  -> top probs .8 .8 .5 .7
#   d = [.1, 0, .2, -.1], mean .05, deviations [.05, -.05, .15, -.15]
#   std = sqrt((.0025+.0025+.0225+.0225)/4) = sqrt(.0125) = .111803...
#   mad = (.05+.05+.15+.15)/4 = .1 ;  rms = sqrt((.01+0+.04+.01)/4) = sqrt(.015)
SIG_T = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
SIG_S = np.array([[0.8, 0.2], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])


def test_sigma_phi_cnf_kappa_hand_example():
    d = confidence_difference(SIG_T, SIG_S)
    np.testing.assert_allclose(d, [0.1, 0.0, 0.2, -0.1], atol=1e-12)
    assert dispersion(d, "std") == pytest.approx(math.sqrt(0.0125))
    assert dispersion(d, "mad") == pytest.approx(0.1)
    assert dispersion(d, "rms") == pytest.approx(math.sqrt(0.015))
    kappa = kappa_bound(0.36, 4)  # sqrt(.36 / 4) = sqrt(.09) = .3
    assert kappa == pytest.approx(0.3)
    assert kappa_bound(0.36, 4, gamma=2.0, alpha=0.75) == pytest.approx(2 * math.sqrt(0.36 / (4 * 0.25)))
    res = phi_cnf(SIG_T, SIG_S, kappa)
    assert res["sigma"] == pytest.approx(math.sqrt(0.0125)) and res["kappa"] == pytest.approx(0.3)
    assert res["holds"] is True
    assert phi_cnf(SIG_T, SIG_S, 0.1)["holds"] is False
    # teacher_class: student's prob of class 0 = .8 .2 .5 .3 -> d = [.1, .6, .2, .3]
    np.testing.assert_allclose(confidence_difference(SIG_T, SIG_S, ConfidenceSpec("teacher_class")), [0.1, 0.6, 0.2, 0.3])
    # margin: teacher .8 .6 .4 .2, student .6 .6 0 .4 -> d = [.2, 0, .4, -.2]
    np.testing.assert_allclose(confidence_difference(SIG_T, SIG_S, ConfidenceSpec("margin")), [0.2, 0.0, 0.4, -0.2],
                               atol=1e-12)
    gap = confidence_gap(SIG_T, SIG_S)
    assert gap["mean_abs_gap"] == pytest.approx(0.1) and gap["max_abs_gap"] == pytest.approx(0.2)


def test_agreement_hand_example():
    # teacher predicts 0,0,0,0; student 0,1,0(tie->0),1; labels 0,1,1,1 -> teacher wrong on rows 1,2,3
    a = agreement(SIG_T, SIG_S, np.array([0, 1, 1, 1]))
    assert a["agreement"] == pytest.approx(0.5)  # rows 0, 2
    assert a["agreement_on_teacher_errors"] == pytest.approx(1 / 3)  # row 2 of rows 1,2,3
    assert np.isnan(agreement(SIG_T, SIG_S, np.zeros(4, dtype=int))["agreement_on_teacher_errors"])


def test_prediction_loss_beta_matches_distillation_losses():
    from confkd.distill.losses import kl as kl_loss, soft_ce

    rng = np.random.default_rng(5)
    zt, zs = rng.normal(0, 2, (50, 3)), rng.normal(0, 2, (50, 3))
    for t in (1.0, 2.0):
        ref_kl = kl_loss(torch.tensor(zs), torch.tensor(zt), t).item() * 50
        ref_ce = soft_ce(torch.tensor(zs), torch.tensor(zt), t).item() * 50
        assert prediction_loss_beta(zt, zs, t) == pytest.approx(ref_kl, rel=1e-5)
        assert prediction_loss_beta(zt, zs, t, loss="soft_ce") == pytest.approx(ref_ce, rel=1e-5)
    assert prediction_loss_beta(zt, zt) == 0.0


# ---------------------------------------------------------------------------------------------
# selective prediction


def _brute_aurc(conf, err):
    order = sorted(range(len(conf)), key=lambda i: (-conf[i], i))  # stable tie-break: input order
    risks = [sum(err[j] for j in order[:k]) / k for k in range(1, len(conf) + 1)]
    return risks, sum(risks) / len(risks)


def test_aurc_matches_brute_force():
    rng = np.random.default_rng(6)
    p = _random_probs(rng, 120, 3)
    p = np.round(p, 1)  # create confidence ties
    p = p / p.sum(1, keepdims=True)
    y = rng.integers(0, 3, 120)
    conf, err = p.max(1), (p.argmax(1) != y).astype(float)
    risks, ref = _brute_aurc(conf, err)
    curve = risk_coverage_curve(p, y)
    np.testing.assert_allclose(curve["risk"], risks, atol=1e-12)
    np.testing.assert_allclose(curve["coverage"], np.arange(1, 121) / 120)
    assert aurc(p, y) == pytest.approx(ref, abs=1e-12)
    # oracle: correct examples first
    oracle_risks, oracle = _brute_aurc(1.0 - err, err)
    assert excess_aurc(p, y) == pytest.approx(ref - oracle, abs=1e-12)
    assert excess_aurc(p, y) >= 0


def test_excess_aurc_zero_for_perfect_ranking():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    y = np.array([0, 0, 1, 1])  # the two least confident are the errors
    # risks: 0, 0, 1/3, 2/4 -> AURC = (0 + 0 + 1/3 + 1/2) / 4
    assert aurc(p, y) == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert excess_aurc(p, y) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# temperature scaling and bootstrap


def test_temperature_recovery():
    rng = np.random.default_rng(7)
    true_logits = rng.normal(0, 2, (20_000, 3))
    p = softmax(true_logits, axis=1)
    labels = (rng.random(20_000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)  # sample from softmax(true)
    t = fit_temperature(3.0 * true_logits, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    np.testing.assert_allclose(apply_temperature(3.0 * true_logits, 3.0), true_logits)


def test_bootstrap_deterministic_contains_point_and_fast():
    rng = np.random.default_rng(8)
    p = _random_probs(rng, 900, 2)
    y = rng.integers(0, 2, 900)

    def acc(probs, labels):
        return float(np.mean(probs.argmax(1) == labels))

    start = time.perf_counter()
    a = bootstrap_ci(acc, (p, y), n_resamples=1000, seed=0)
    assert time.perf_counter() - start < 1.0
    assert a == bootstrap_ci(acc, (p, y), n_resamples=1000, seed=0)
    assert a != bootstrap_ci(acc, (p, y), n_resamples=1000, seed=1)
    point, low, high = a
    assert point == acc(p, y) and low <= point <= high
    # the vectorised path uses the same indices -> identical interval
    vec = bootstrap_ci(lambda pp, yy: np.mean(pp.argmax(-1) == yy, axis=-1), (p, y), 1000, 0, vectorized=True)
    assert vec == pytest.approx(a, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# report


def _split(seed=9, n=300, k=3):
    rng = np.random.default_rng(seed)
    zt = rng.normal(0, 3, (n, k))
    zs = zt + rng.normal(0, 1, (n, k))
    y = np.where(rng.random(n) < 0.8, zt.argmax(1), rng.integers(0, k, n))
    return zt, zs, y


def test_evaluate_split_keys_and_consistency():
    zt, zs, y = _split()
    r = evaluate_split(zt, zs, y, kappa=0.2, n_resamples=200, temperature_dev=1.5)
    pt, ps = softmax(zt, 1), softmax(zs, 1)
    assert r["accuracy"] == pytest.approx(metrics.accuracy(ps, y))
    assert r["ece"] == pytest.approx(ece(ps, y))
    assert r["nll"] == pytest.approx(nll(zs, y))
    assert r["kl_to_teacher"] == pytest.approx(kl_to_teacher(pt, ps))
    assert r["sigma"] == pytest.approx(np.std(pt.max(1) - ps.max(1)))  # default spec: top_prob, all, std
    assert r["kappa"] == 0.2 and r["phi_cnf"] == float(r["sigma"] <= 0.2)
    assert r["pinsker_bound"] == pytest.approx(math.sqrt(r["kl_to_teacher"] / 2))
    assert r["aurc"] == pytest.approx(aurc(ps, y))
    for name in ("accuracy", "ece", "nll", "agreement", "sigma", "aurc"):
        assert r[f"{name}_ci_low"] <= r[name] <= r[f"{name}_ci_high"]
    for name in ("ts_nll", "ts_ece", "ts_ece_adaptive", "ts_brier", "ts_sigma", "ts_phi_cnf", "temperature"):
        assert name in r
    assert r["ts_nll"] == pytest.approx(nll(zs / 1.5, y))
    assert all(isinstance(v, float) for v in r.values())
    assert evaluate_split(zt, zs, y, n_resamples=50, kappa=0.0)["phi_cnf"] == 0.0


def test_teacher_vs_itself():
    zt, _, y = _split()
    r = evaluate_split(zt, zt.copy(), y, kappa=0.0, n_resamples=50)
    assert r["agreement"] == 1.0 and r["kl_to_teacher"] == 0.0 and r["js_to_teacher"] == 0.0
    assert r["sigma"] == 0.0 and r["mean_abs_conf_gap"] == 0.0 and r["phi_cnf"] == 1.0
    assert r["conf_pearson"] == pytest.approx(1.0)
    assert r["agreement_ci_low"] == 1.0 and r["sigma_ci_high"] == 0.0


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_data_error():
    zt, zs, y = _split(n=20)
    bad = zs.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        evaluate_split(zt, bad, y, kappa=0.1, n_resamples=0)
    bad[3, 1] = np.inf
    with pytest.raises(DataError, match="NaN/inf"):
        evaluate_split(bad, zs, y, kappa=0.1, n_resamples=0)
    with pytest.raises(DataError, match="mismatched"):
        evaluate_split(zt, zs, y[:-1], kappa=0.1, n_resamples=0)
    with pytest.raises(DataError, match="mismatched"):
        evaluate_split(zt[:-1], zs, y, kappa=0.1, n_resamples=0)
    with pytest.raises(DataError, match="out of range"):
        evaluate_split(zt, zs, np.full(20, 3), kappa=0.1, n_resamples=0)
    with pytest.raises(DataError, match="out of range"):
        evaluate_split(zt, zs, np.full(20, -1), kappa=0.1, n_resamples=0)
    with pytest.raises(DataError, match="sum to 1"):
        ece(np.array([[0.6, 0.6], [0.5, 0.5]]), np.array([0, 1]))
    with pytest.raises(DataError, match="not logits"):
        kl_to_teacher(zt, zs)  # logits where probabilities are expected
    with pytest.raises(DataError):
        fit_temperature(zs[:, :1], y)  # one class
    with pytest.raises(DataError):
        bootstrap_ci(np.mean, (np.zeros(5), np.zeros(4)))


def test_bad_settings_raise_params_error():
    with pytest.raises(ParamsError):
        ece(HAND_P, HAND_Y, scheme="quantile")
    with pytest.raises(ParamsError):
        confidence_difference(SIG_T, SIG_S, ConfidenceSpec(measure="entropy"))
    with pytest.raises(ParamsError):
        phi_cnf(SIG_T, SIG_S, -0.1)
    with pytest.raises(ParamsError):
        kappa_bound(0.36, 4, alpha=1.0)
    with pytest.raises(ParamsError):
        evaluate_split(np.log(SIG_T), np.log(SIG_S), HAND_Y, kappa=-0.1)
