"""Results that say when they mean nothing: majority baseline, dev/test shift, and no mixing of tasks or data."""


import numpy as np
import pytest

from confkd.config import parse_params
from confkd.errors import DataError, ParamsError
from confkd.evaluation.report import evaluate_split, trust_flags
from confkd.evaluation.summary import build_summary, stale_reason
from confkd.io import provenance, write_json


def test_majority_accuracy_is_the_best_constant_predictor():
    labels = np.array([0, 0, 0, 1, 2, 2])
    logits = np.eye(3)[labels] * 3.0
    m = evaluate_split(logits, logits, labels, kappa=0.1, n_resamples=0)
    assert m["majority_accuracy"] == pytest.approx(3 / 6)
    assert m["accuracy"] == 1.0


def test_trust_flags_by_hand():
    by_split = {
        "test": {"accuracy": 0.504, "majority_accuracy": 0.72, "accuracy_ci_low": 0.47, "accuracy_ci_high": 0.54},
        "dev": {"accuracy": 0.789, "majority_accuracy": 0.67, "accuracy_ci_low": 0.76, "accuracy_ci_high": 0.81},
        "train": {"accuracy": 0.90, "majority_accuracy": 0.86},
        "confidence": {"measure": "top_prob"},
    }
    flags = trust_flags(by_split, margin=0.05)
    assert flags == {"near_baseline_test": 1.0, "near_baseline_dev": 0.0, "near_baseline_train": 1.0,
                     "dev_test_shift": 1.0}
    by_split["dev"].update(accuracy_ci_low=0.50)  # overlapping intervals: no shift
    assert trust_flags(by_split, 0.05)["dev_test_shift"] == 0.0
    with pytest.raises(ParamsError):
        trust_flags(by_split, 1.5)


def test_stale_reason_names_task_and_data():
    current = {"task": "tweet_hate", "data_fingerprint": "aaaa"}
    assert stale_reason({"task": "tweet_hate", "data_fingerprint": "aaaa"}, current) is None
    assert "task 'sst2'" in stale_reason({"task": "sst2", "data_fingerprint": "aaaa"}, current)
    assert "other data" in stale_reason({"task": "tweet_hate", "data_fingerprint": "bbbb"}, current)
    assert "before results recorded" in stale_reason({"test": {}}, current)
    assert stale_reason({"task": "x"}, {}) is None  # nothing to compare with


def _eval(stamp, accuracy, majority=0.5, flags=None):
    split = {"accuracy": accuracy, "majority_accuracy": majority, "agreement": 1.0, "sigma": 0.05, "kappa": 0.08,
             "phi_cnf": 1.0, "pinsker_bound": 0.2}
    return {**stamp, "test": split, "dev": dict(split), "flags": flags or {}}


def test_the_report_keeps_other_tasks_results_out_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = {"task": "tweet_hate", "data_fingerprint": "f00d"}
    write_json(tmp_path / "data/prepared/labels.json", {"labels": ["no", "yes"], **here})
    assert provenance(tmp_path / "data/prepared") == here
    write_json(tmp_path / "metrics/teacher.json", {"parameters": 100})
    write_json(tmp_path / "metrics/eval/teacher.json",
               _eval(here, 0.504, majority=0.72, flags={"near_baseline_test": 1.0, "dev_test_shift": 1.0}))
    write_json(tmp_path / "metrics/distill/ft.json", {"parameters": 50})
    write_json(tmp_path / "metrics/eval/ft.json", _eval(here, 0.5165))
    write_json(tmp_path / "metrics/distill/kd.json", {"parameters": 50})
    write_json(tmp_path / "metrics/eval/kd.json", _eval({"task": "sst2", "data_fingerprint": "beef"}, 0.8727))
    params = parse_params({"distill": {"configs": {"ft": {"method": "ft_only"}, "kd": {"method": "kd_logits"},
                                                   "new": {"method": "kd_logits"}}}})
    flat, md, rows = build_summary(params)
    assert set(rows) == {"teacher", "ft"}
    assert "kd (computed on task 'sst2', not 'tweet_hate')" in md
    assert "new (not run on this task yet)" in md
    assert "Warning: the teacher is within reach of the majority-class baseline" in md
    assert "Warning: dev and test disagree" in md
    assert "Majority-class baseline on test: 0.7200" in md
    assert not any(k.startswith("kd.") for k in flat)
    # a subset report covers only the configurations asked for, and says which it leaves out
    _, md, rows = build_summary(params, only=["ft"])
    assert set(rows) == {"teacher", "ft"} and "kd (outside this run's configurations)" in md
    with pytest.raises(ParamsError, match="unknown configuration"):
        build_summary(params, only=["nope"])
    # a teacher evaluated on other data stops the report
    write_json(tmp_path / "metrics/eval/teacher.json", _eval({"task": "sst2", "data_fingerprint": "beef"}, 0.88))
    with pytest.raises(DataError, match="teacher.json: computed on task 'sst2'"):
        build_summary(params)


def test_compact_rows_keep_the_headline_columns_only():
    from confkd.evaluation.summary import compact_rows

    flat = {"task": "sst2", "teacher.accuracy": 0.88071, "teacher.phi_cnf": 1.0, "teacher.ece": 0.05,
            "kd.accuracy": 0.86239, "kd.retention": 0.97916, "kd.sigma": 0.07141, "kd.kappa": 0.0799, "kd.phi_cnf": 0.0,
            "kd.speedup_vs_best_teacher_b32": 2.14, "kd.speedup_vs_best_teacher_b32_spread": 0.5}
    rows = compact_rows(flat)
    assert rows == [
        {"model": "teacher", "accuracy": 0.8807, "retention": None, "sigma": None, "kappa": None, "phi_cnf": "holds",
         "speed-up b32": None},
        {"model": "kd", "accuracy": 0.8624, "retention": 0.979, "sigma": 0.0714, "kappa": 0.0799, "phi_cnf": "fails",
         "speed-up b32": 2.1}]


def test_the_report_states_an_imbalance():
    from confkd.evaluation.summary import warnings

    lines = warnings({}, {}, "test", {}, {}, {"not-hate": 960, "hate": 40}, 0.05)
    assert lines[0] == ("Classes in train: not-hate 96.0%, hate 4.0% — **imbalanced** (hate below 5%): accuracy says "
                        "little, read macro-F1 and the baseline.")
    assert warnings({}, {}, "test", {}, {}, {"a": 50, "b": 50}, 0.05)[0] == "Classes in train: a 50.0%, b 50.0%."
