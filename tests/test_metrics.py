import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from confkd.evaluation.calibration import brier, ece, nll
from confkd.evaluation.metrics import accuracy, classification_metrics, macro_f1, probabilities


def test_ece_hand_computed():
    # 4 examples, 2 classes; confidences 0.9, 0.9 (one right, one wrong), 0.6, 0.6 (both right).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    # bin (0.8667, 0.9333]: acc 0.5, conf 0.9 -> |0.4| * 2/4 = 0.2
    # bin (0.6, 0.6667] holds 0.6? edges are i/15: 0.6 = 9/15 exactly, falls in (8/15, 9/15]: acc 1, conf 0.6 -> 0.4 * 2/4 = 0.2
    assert ece(probs, labels) == pytest.approx(0.4)


def test_ece_of_perfectly_calibrated_model_is_near_zero():
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf
    labels = np.where(correct, 0, 1)
    probs = np.stack([conf, 1 - conf], axis=1)
    assert ece(probs, labels) < 0.01


def test_ece_overconfident_model():
    # Always 0.99 confident, right 70% of the time: ECE = 0.29 exactly.
    probs = np.tile([0.99, 0.01], (100, 1))
    labels = np.array([0] * 70 + [1] * 30)
    assert ece(probs, labels) == pytest.approx(0.29)


def test_nll_brier_accuracy_match_references():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 3)) * 2
    labels = rng.integers(0, 3, 50)
    probs = probabilities(logits)
    assert np.allclose(probs.sum(1), 1)
    assert nll(logits, labels) == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]))
    assert accuracy(probs, labels) == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert macro_f1(probs, labels) == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    onehot = np.eye(3)[labels]
    assert brier(probs, labels) == pytest.approx(np.mean(((probs - onehot) ** 2).sum(1)))


def test_nll_hand_computed_and_stable_for_large_logits():
    logits = np.array([[0.0, 0.0], [1000.0, 0.0]])
    labels = np.array([1, 0])
    # first: -log(0.5); second: -log(1) = 0
    assert nll(logits, labels) == pytest.approx(np.log(2) / 2)


def test_classification_metrics_prefix():
    m = classification_metrics(np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 1]), prefix="dev_")
    assert set(m) == {"dev_accuracy", "dev_macro_f1", "dev_nll", "dev_ece", "dev_brier"}
    assert m["dev_accuracy"] == 1.0


def test_macro_f1_by_hand_and_equal_to_scikit_learn_to_the_bit():
    # 3 classes, class 2 never true nor predicted. Class 0: TP 2, 3 true, 3 predicted -> 2*2/(3+3);
    # class 1: TP 1, 2 true, 2 predicted -> 2*1/(2+2); class 2: 0. Macro: (4/6 + 1/2 + 0) / 3
    probs = np.eye(3)[[0, 0, 1, 1, 0]]  # predictions 0 0 1 1 0
    labels = np.array([0, 0, 0, 1, 1])
    assert macro_f1(probs, labels) == pytest.approx((4 / 6 + 1 / 2) / 3)
    rng = np.random.default_rng(0)
    for k in (2, 3, 4, 6):
        for n in (1, 7, 100, 1013):
            probs = rng.dirichlet(np.ones(k), size=n)
            labels = rng.integers(0, k - (n % 2), size=n)  # odd n: the last class never true
            ref = f1_score(labels, probs.argmax(1), average="macro", labels=list(range(k)), zero_division=0)
            assert macro_f1(probs, labels) == float(ref), (k, n)
