"""Confidence preservation: one sigma everywhere, the authors' definition, and a kappa that can fail."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from confkd.config import parse_params
from confkd.errors import DataError, ParamsError
from confkd.evaluation.confidence import (
    PRESETS, ConfidenceSpec, kl_rows_from_logits, resolve_spec, masked_dispersion, pinsker_bound, sigma, sigma_from_logits,
    teacher_student_scores,
)
from confkd.evaluation.kappa import implied_by_maths, resolve_kappa
from confkd.evaluation.report import evaluate_split

# Hand example (2 classes). Teacher predicts 0 everywhere; student predicts 0, 1, 0 (tie -> 0), 1.
#   labels 0 0 0 1: teacher right on rows 0,1,2; student right on rows 0,2,3 -> both right: rows 0, 2.
T = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
S = np.array([[0.8, 0.2], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])
Y = np.array([0, 0, 0, 1])


@pytest.mark.parametrize("spec, expected", [
    # p(class 0): T .9 .8 .7 .6, S .8 .2 .5 .3 -> d = .1 .6 .2 .3
    (ConfidenceSpec("class_prob", "all", "std"), math.sqrt(0.035)),          # mean .3; devs -.2 .3 -.1 0
    (ConfidenceSpec("class_prob", "both_correct", "std"), 0.05),             # d = .1 .2
    (ConfidenceSpec("class_prob", "teacher_correct", "std"), math.sqrt(0.14 / 3)),  # d = .1 .6 .2
    (ConfidenceSpec("class_prob", "both_correct", "rms"), math.sqrt(0.025)),
    (ConfidenceSpec("class_prob", "teacher_correct", "mad"), 0.6 / 3),       # |devs| .2 .3 .1
    # teacher_class = class 0 here (the teacher always predicts 0)
    (ConfidenceSpec("teacher_class", "all", "std"), math.sqrt(0.035)),
    # own top probability: T .9 .8 .7 .6, S .8 .8 .5 .7 -> d = .1 0 .2 -.1
    (ConfidenceSpec("top_prob", "all", "std"), math.sqrt(0.0125)),
    (ConfidenceSpec("top_prob", "teacher_correct", "std"), math.sqrt(0.02 / 3)),  # d = .1 0 .2
    (ConfidenceSpec("top_prob", "both_correct", "mad"), 0.05),
    # margin: T .8 .6 .4 .2, S .6 .6 0 .4 -> d = .2 0 .4 -.2; both right: .2 .4
    (ConfidenceSpec("margin", "both_correct", "std"), 0.1),
    (ConfidenceSpec("margin", "all", "rms"), math.sqrt(0.06)),  # d^2 = .04 0 .16 .04
])
def test_sigma_hand_computed_for_each_measure_subset_statistic(spec, expected):
    assert sigma(T, S, Y, spec) == pytest.approx(expected, abs=1e-12)


def test_masked_dispersion_equals_dispersion_of_the_subset():
    rng = np.random.default_rng(0)
    d, mask = rng.normal(size=(5, 40)), rng.random((5, 40)) < 0.6
    for stat, fn in (("std", np.std), ("rms", lambda v: np.sqrt(np.mean(v * v))),
                     ("mad", lambda v: np.mean(np.abs(v - v.mean())))):
        got = masked_dispersion(d, mask, stat)
        np.testing.assert_allclose(got, [fn(d[i][mask[i]]) for i in range(5)], rtol=1e-12)


def test_paper_preset_is_the_authors_formula():
    """The authors' pairwise_conf_delta: np.std of p0_teacher - p0_student over rows where both are right."""
    rng = np.random.default_rng(1)
    zt, zs = rng.normal(0, 2, (200, 2)), rng.normal(0, 2, (200, 2))
    y = rng.integers(0, 2, 200)
    pt, ps = softmax(zt, 1), softmax(zs, 1)
    df = pd.DataFrame({"pred_baseline": pt.argmax(1), "p0_baseline": pt[:, 0], "label": y,
                       "pred_distill": ps.argmax(1), "p0_distill": ps[:, 0]})
    correct = df[(df.pred_baseline == df.label) & (df.pred_distill == df.label)]
    authors = np.std(correct.p0_baseline - correct.p0_distill)
    assert PRESETS["paper"] == ConfidenceSpec("class_prob", "both_correct", "std", 0)
    assert sigma(pt, ps, y, "paper") == pytest.approx(authors, rel=1e-12)
    assert sigma_from_logits(zt, zs, y, "paper") == pytest.approx(authors, rel=1e-12)


@pytest.mark.parametrize("measure", ["top_prob", "teacher_class", "class_prob", "margin"])
@pytest.mark.parametrize("subset", ["all", "both_correct", "teacher_correct"])
@pytest.mark.parametrize("statistic", ["std", "mad", "rms"])
def test_sigma_never_exceeds_the_pinsker_bound(measure, subset, statistic):
    spec = ConfidenceSpec(measure, subset, statistic)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        k = 2 + seed % 3
        zt = rng.normal(0, 3, (300, k))
        zs = zt * rng.uniform(0.1, 1.5) + rng.normal(0, 1.5, (300, k))
        y = np.where(rng.random(300) < 0.8, zt.argmax(1), rng.integers(0, k, 300))
        s, bound = sigma_from_logits(zt, zs, y, spec), pinsker_bound(zt, zs, y, spec)
        assert s <= bound + 1e-12, (seed, s, bound)


def _teacher_reference_flattened(n=600, seed=3):
    """A confident teacher, a retrained teacher (small logit noise), and a student with the teacher's argmax
    but flattened confidences (logits scaled by 0.25)."""
    rng = np.random.default_rng(seed)
    zt = rng.normal(0, 4, (n, 2))
    ref = zt + rng.normal(0, 0.3, (n, 2))
    flat = zt * 0.25
    y = np.where(rng.random(n) < 0.9, zt.argmax(1), 1 - zt.argmax(1))
    return zt, ref, flat, y


@pytest.mark.parametrize("policy", ["reference", "fixed"])
def test_flattened_student_fails_and_a_copy_holds(policy):
    zt, ref, flat, y = _teacher_reference_flattened()
    assert (flat.argmax(1) == zt.argmax(1)).all()  # same decisions: accuracy cannot tell them apart
    spec = PRESETS["paper"]
    kappa = resolve_kappa(policy, spec, teacher_logits=zt, reference_logits=ref, labels=y, value=0.05)
    flat_r = evaluate_split(zt, flat, y, kappa=kappa, spec=spec, n_resamples=0)
    copy_r = evaluate_split(zt, zt.copy(), y, kappa=kappa, spec=spec, n_resamples=0)
    assert flat_r["phi_cnf"] == 0.0 and flat_r["sigma"] > kappa
    assert copy_r["phi_cnf"] == 1.0 and copy_r["sigma"] == 0.0
    # the verdict is not implied by the maths: kappa is below the Pinsker bound of the failing student
    assert not implied_by_maths(kappa, flat_r["pinsker_bound"])


def test_a_kappa_at_the_pinsker_bound_cannot_fail():
    """The old default, kappa = sqrt(KL) on the same set, is sqrt(2) x the Pinsker bound: implied."""
    zt, _, flat, y = _teacher_reference_flattened()
    spec = ConfidenceSpec()  # top_prob, all, std
    kl_sum = float(kl_rows_from_logits(zt, flat).sum())
    kappa = resolve_kappa("bound", spec, beta=kl_sum, n=len(y))
    r = evaluate_split(zt, flat, y, kappa=kappa, spec=spec, n_resamples=0)
    assert kappa == pytest.approx(math.sqrt(2) * r["pinsker_bound"])
    assert implied_by_maths(kappa, r["pinsker_bound"]) and r["phi_cnf"] == 1.0


def test_kappa_policies_hand_values():
    zt, ref, _, y = _teacher_reference_flattened()
    spec = PRESETS["paper"]
    assert resolve_kappa("reference", spec, teacher_logits=zt, reference_logits=ref, labels=y) == \
        pytest.approx(sigma_from_logits(zt, ref, y, spec))
    assert resolve_kappa("fixed", spec, value=0.07) == 0.07
    # gamma * sqrt(beta / (n (1 - alpha))) = 2 * sqrt(9 / (100 * 0.25)) = 1.2
    assert resolve_kappa("bound", spec, beta=9.0, n=100, gamma=2.0, alpha=0.75) == pytest.approx(1.2)
    assert resolve_kappa("bound", spec, measured_beta_sum=4.0, measured_n=100) == pytest.approx(0.2)
    with pytest.raises(DataError, match="reference teacher"):
        resolve_kappa("reference", spec, teacher_logits=zt, labels=y)
    with pytest.raises(ParamsError, match="unknown kappa policy"):
        resolve_kappa("loose", spec)


def test_empty_both_correct_subset_is_an_explicit_error():
    zt = np.array([[3.0, 0.0], [2.0, 0.0]])  # teacher predicts 0; the labels say 1: nobody is right
    y = np.array([1, 1])
    with pytest.raises(DataError, match="'both_correct' subset is empty"):
        sigma_from_logits(zt, zt, y, "paper")
    with pytest.raises(DataError, match="subset is empty"):
        evaluate_split(zt, zt, y, kappa=0.1, spec=PRESETS["paper"], n_resamples=10)
    with pytest.raises(DataError, match="subset is empty"):
        teacher_student_scores(zt, zt, y, "paper")


def test_selection_tuning_and_evaluation_read_the_same_sigma():
    """dev_scores is what early stopping / model selection and the tune objective (dev_sigma of the distill
    metrics) read; evaluate_split is what the evaluate stage and the report read."""
    from confkd.distill.trainer import dev_scores

    rng = np.random.default_rng(7)
    zt = rng.normal(0, 3, (250, 3))
    zs = zt + rng.normal(0, 1, (250, 3))
    y = np.where(rng.random(250) < 0.85, zt.argmax(1), rng.integers(0, 3, 250))
    params = parse_params({"evaluate": {"confidence": {"preset": "paper", "class_name": "c"}},
                           "task": {"labels": ["a", "b", "c"]}})
    spec = resolve_spec(params.evaluate.confidence, ["a", "b", "c"])
    assert spec.class_index == 2
    selection = dev_scores(zt, zs, y, spec)["dev_sigma"]
    evaluation = evaluate_split(zt, zs, y, kappa=0.1, spec=spec, n_resamples=0)["sigma"]
    assert selection == evaluation == pytest.approx(sigma_from_logits(zt, zs, y, spec))


def test_params_confidence_and_kappa_are_checked_at_parse_time():
    assert resolve_spec(parse_params({}).evaluate.confidence) == PRESETS["paper"]
    custom = resolve_spec(parse_params({"evaluate": {"confidence": {"measure": "margin"}}}).evaluate.confidence)
    assert custom == ConfidenceSpec("margin", "both_correct", "std")  # explicit keys override the preset
    assert resolve_spec(parse_params({"evaluate": {"confidence": {"preset": None}}}).evaluate.confidence) == ConfidenceSpec()
    for bad, key in (({"kappa": {"policy": "loose"}}, "evaluate.kappa.policy"),
                     ({"confidence": {"measure": "entropy"}}, "evaluate.confidence.measure"),
                     ({"confidence": {"subset": "some"}}, "evaluate.confidence.subset"),
                     ({"kappa": {"policy": "fixed"}}, "evaluate.kappa"),
                     ({"kappa": {"value": 0.1}}, "evaluate.kappa")):
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            parse_params({"evaluate": bad})
    with pytest.raises(ParamsError, match="tune.kappa"):
        parse_params({"evaluate": {"kappa": {"policy": "bound"}}})
    with pytest.raises(ParamsError, match="class_name"):
        parse_params({"task": {"labels": ["neg", "pos"]}, "evaluate": {"confidence": {"class_name": "neutral"}}})
