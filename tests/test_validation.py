"""Tests of the validate stage: GX suites over the prepared splits (confkd/data/validation.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from confkd.config import ClassBalance, ValidateParams
from confkd.data.text import normalize_text
from confkd.data.validation import (
    build_validation_frames,
    flat_metrics,
    leak_flags,
    raise_on_critical,
    render_markdown,
    run_validation,
    validate_prepared,
)
from confkd.errors import ValidationFailed
from confkd.io import write_json, write_jsonl

LABELS = ["negative", "positive"]

TRAIN = [
    ("a gorgeous , witty film that never lets up", 1),
    ("the plot is thin and the jokes fall flat", 0),
    ("one of the most moving dramas of the year", 1),
    ("tedious , overlong and curiously lifeless", 0),
    ("the cast clearly had a wonderful time making it", 1),
    ("i wanted my two hours back by the end", 0),
    ("sharp writing and a terrific lead performance", 1),
    ("a muddled mess with nothing new to say", 0),
    ("funny , warm and surprisingly smart about families", 1),
    ("the dialogue sounds like it was written by committee", 0),
]
DEV = [
    ("an absorbing character study with real bite", 1),
    ("visually dull and dramatically inert from start to finish", 0),
    ("the kind of crowd pleaser that earns its cheers", 1),
    ("a lazy sequel that recycles every gag from the original", 0),
]
TEST = [
    ("it 's a charming and often affecting journey . ", 1),
    ("unflinchingly bleak and desperate ", 0),
    ("the film is strictly routine and never rises above its formula . ", 0),
    ("a smart , sassy comedy that hits every mark with style and grace . ", 1),
    ("effective but too-tepid biopic ", 1),
    ("this is a movie that sinks under the weight of its own ambition . ", 0),
]
UNLABELED = [
    "I saw this at a festival and the audience loved it.",
    "The soundtrack alone is worth the price of admission.",
    "My kids fell asleep halfway through the second act.",
    "A remake nobody asked for, but it is fine.",
    "The director's best work since his debut a decade ago.",
]


def _split(rows, prefix):
    return pd.DataFrame(
        {"id": [f"{prefix}-{i}" for i in range(len(rows))], "text": [t for t, _ in rows],
         "label": [y for _, y in rows], "group": range(len(rows))}
    )


def _transfer(train: pd.DataFrame, unlabeled: list[str]) -> pd.DataFrame:
    unl = pd.DataFrame({"id": [f"unl-{i}" for i in range(len(unlabeled))], "text": unlabeled, "label": -1,
                        "origin": "unlabeled"})
    return pd.concat([train.assign(origin="train")[["id", "text", "label", "origin"]], unl], ignore_index=True)


def clean_frames(unlabeled: list[str] | None = None) -> dict[str, pd.DataFrame]:
    train = _split(TRAIN, "train")
    return {"train": train, "dev": _split(DEV, "dev"), "test": _split(TEST, "test"),
            "transfer": _transfer(train, UNLABELED if unlabeled is None else unlabeled)}


def results(report, split, expectation, column, description=None):
    found = [r for r in report["splits"][split]["results"]
             if r["expectation"] == expectation and r["column"] == column
             and (description is None or description in r["description"])]
    assert len(found) == 1, f"expected one {split} {expectation}({column}) result, got {found}"
    return found[0]


def failed(report):
    return [(r["split"], r["expectation"], r["column"], r["severity"])
            for s in report["splits"].values() for r in s["results"] if not r["success"]]


def assert_fails_critically(report, split, expectation, column, unexpected_count, description=None):
    r = results(report, split, expectation, column, description)
    assert r["success"] is False
    assert r["severity"] == "critical"
    assert r["unexpected_count"] == unexpected_count
    assert report["success"] is False
    assert report["critical_failures"] >= 1
    with pytest.raises(ValidationFailed) as err:
        raise_on_critical(report)
    msg = str(err.value)
    assert msg.startswith("data validation failed:")
    assert f"  - {split}: {expectation}({column})" in msg
    return r


@pytest.fixture(scope="module")
def clean_report():
    return run_validation(clean_frames(), LABELS, ValidateParams())


# ---------------------------------------------------------------------------- clean data


def test_clean_frames_pass(clean_report):
    assert failed(clean_report) == []
    assert clean_report["success"] is True
    assert clean_report["critical_failures"] == 0 and clean_report["warnings"] == 0
    raise_on_critical(clean_report)  # does not raise
    assert {s: v["rows"] for s, v in clean_report["splits"].items()} == {"train": 10, "dev": 4, "test": 6, "transfer": 15}
    n = sum(len(v["results"]) for v in clean_report["splits"].values())
    assert clean_report["n_expectations"] == n > 40
    json.dumps(clean_report, allow_nan=False)  # JSON-able as written to reports/validation.json


def test_clean_report_fields_and_severities(clean_report):
    r = results(clean_report, "train", "expect_column_values_to_be_in_set", "label")
    assert r["element_count"] == 10 and r["unexpected_count"] == 0 and r["unexpected_percent"] == 0.0
    assert set(r) >= {"split", "expectation", "column", "description", "severity", "success", "element_count",
                      "unexpected_count", "unexpected_percent", "observed_value", "examples"}
    bal = results(clean_report, "train", "expect_column_mean_to_be_between", "is_label_1")
    assert bal["observed_value"] == pytest.approx(0.5)
    assert results(clean_report, "test", "expect_column_values_to_be_unique", "norm_text")["severity"] == "warning"
    assert results(clean_report, "test", "expect_column_mean_to_be_between", "is_label_0")["severity"] == "warning"
    assert results(clean_report, "dev", "expect_column_values_to_be_unique", "norm_text")["severity"] == "critical"
    # no class-balance expectation on the transfer set; leak checks look only at the 5 unlabeled rows
    assert not any(r["expectation"] == "expect_column_mean_to_be_between"
                   for r in clean_report["splits"]["transfer"]["results"])
    leak = results(clean_report, "transfer", "expect_column_values_to_be_in_set", "leak_shared_word_run")
    assert leak["element_count"] == 5 and leak["condition"] == "origin == 'unlabeled'"


def test_flat_metrics_and_markdown(clean_report):
    m = flat_metrics(clean_report)
    assert m["critical_failures"] == 0 and m["warnings"] == 0 and m["success"] == 1
    assert m["n_expectations"] == clean_report["n_expectations"]
    assert {m[f"{s}_failed"] for s in ("train", "dev", "test", "transfer")} == {0}
    assert all(isinstance(v, int) for v in m.values())
    md = render_markdown(clean_report)
    table_rows = [line for line in md.splitlines() if line.startswith("| train ")]
    assert len(table_rows) == len(clean_report["splits"]["train"]["results"])
    assert "| train | expect_column_values_to_not_be_in_set | norm_text |" in md
    assert "PASSED" in md


# ---------------------------------------------------------------------------- derived columns


def test_build_validation_frames_adds_derived_columns():
    frames = clean_frames(UNLABELED + ["so unflinchingly bleak and desperate it hurts"])
    vf = build_validation_frames(frames, LABELS, ValidateParams())
    assert vf["test"]["norm_text"][0] == "it s a charming and often affecting journey"
    assert list(vf["train"]["is_label_1"]) == [float(y) for _, y in TRAIN]
    t = vf["transfer"]
    assert t.loc[t["origin"] == "unlabeled", "is_label_0"].isna().all()
    assert t["leak_contains_eval"].tolist() == [False] * 15 + [True]
    assert "norm_text" not in frames["train"].columns  # inputs are not modified


def test_leak_flags_each_kind():
    evals = [normalize_text(t) for t, _ in TEST]
    lines = [
        "so unflinchingly bleak and desperate it hurts",  # contains a 4-word eval text
        "what a smart sassy comedy that hits every mark i thought",  # shares an 8-word run
        "never rises above its formula",  # 5 words inside an eval text
        "above its formula",  # only 3 words: too short to count
        "a smart sassy comedy that hits every",  # 7 words inside an eval text
        "the film is strictly routine and never rises above its formula",  # exact (all 11-word flags too)
        "unflinchingly bleakness and desperate",  # word boundaries respected
    ]
    f = leak_flags([normalize_text(x) for x in lines], evals, word_run=8)
    assert f["leak_contains_eval"].tolist() == [True, False, False, False, False, True, False]
    assert f["leak_shared_word_run"].tolist() == [False, True, False, False, False, True, False]
    assert f["leak_contained_in_eval"].tolist() == [False, False, True, False, True, False, False]


def test_leak_flags_agree_with_the_prepare_filter():
    """The independent re-implementation flags exactly the lines the prepare stage's filter drops."""
    from confkd.data.leakage import LeakIndex

    evals = [t for t, _ in DEV + TEST]
    words = " ".join(evals).split()
    # every window of 2..12 words of the eval texts, plus windows across text boundaries and clean lines
    lines = [" ".join(words[i : i + n]) for n in range(2, 13) for i in range(0, len(words) - n, 3)]
    lines += UNLABELED + [t for t, _ in TRAIN]
    index = LeakIndex(evals, word_run=8)
    expected = [index.reason(x) is not None for x in lines]
    norms = [normalize_text(x) for x in lines]
    f = leak_flags(norms, [normalize_text(e) for e in evals], word_run=8)
    eval_norms = {normalize_text(e) for e in evals}
    got = [bool(f["leak_contains_eval"][i] or f["leak_shared_word_run"][i] or f["leak_contained_in_eval"][i]
                or norms[i] in eval_norms) for i in range(len(lines))]
    assert got == expected
    assert 20 < sum(expected) < len(lines) - 20  # both kinds are well represented


# ---------------------------------------------------------------------------- bad inputs


def test_duplicate_text_in_train_differing_in_case_and_punctuation():
    frames = clean_frames()
    dup = pd.DataFrame({"id": ["train-dup"], "text": ["A gorgeous, witty film that never lets up!!"], "label": [1],
                        "group": [99]})
    frames["train"] = pd.concat([frames["train"], dup], ignore_index=True)
    report = run_validation(frames, LABELS, ValidateParams())
    r = assert_fails_critically(report, "train", "expect_column_values_to_be_unique", "norm_text", 2)
    assert sorted(r["examples"]) == sorted(["a gorgeous , witty film that never lets up",
                                            "A gorgeous, witty film that never lets up!!"])
    assert failed(report) == [("train", "expect_column_values_to_be_unique", "norm_text", "critical")]


@pytest.mark.parametrize("blank", ["", "   \t "])
def test_empty_or_whitespace_text(blank):
    frames = clean_frames()
    frames["dev"].loc[2, "text"] = blank
    report = run_validation(frames, LABELS, ValidateParams())
    r = assert_fails_critically(report, "dev", "expect_column_values_to_not_match_regex", "text", 1)
    assert r["examples"] == [blank]
    length = results(report, "dev", "expect_column_value_lengths_to_be_between", "text")
    assert length["success"] is (blank != "")


def test_text_too_long():
    frames = clean_frames()
    frames["train"].loc[3, "text"] = "so very long " * 400  # 5200 chars
    report = run_validation(frames, LABELS, ValidateParams())
    r = assert_fails_critically(report, "train", "expect_column_value_lengths_to_be_between", "text", 1)
    assert r["examples"][0].startswith("so very long") and len(r["examples"][0]) <= 200  # shortened in the report
    short = run_validation(clean_frames(), LABELS, ValidateParams(max_chars=60))
    r = assert_fails_critically(short, "test", "expect_column_value_lengths_to_be_between", "text", 3)
    assert all(len(t) > 60 for t in r["examples"]) and len(r["examples"]) == 3
    assert failed(short) == [("test", "expect_column_value_lengths_to_be_between", "text", "critical")]


def test_label_outside_set():
    frames = clean_frames()
    frames["dev"].loc[0, "label"] = 2
    report = run_validation(frames, LABELS, ValidateParams())
    r = assert_fails_critically(report, "dev", "expect_column_values_to_be_in_set", "label", 1)
    assert r["examples"] == [2]
    frames = clean_frames()
    frames["transfer"].loc[12, "label"] = 5  # an unlabeled row
    report = run_validation(frames, LABELS, ValidateParams())
    assert_fails_critically(report, "transfer", "expect_column_values_to_be_in_set", "label", 1, "label in {-1, 0..1}")
    assert_fails_critically(report, "transfer", "expect_column_values_to_be_in_set", "label", 1, "unlabeled rows")


def test_train_text_also_in_test():
    frames = clean_frames()
    leak = pd.DataFrame({"id": ["train-leak"], "text": ["It's a charming and often affecting journey!"], "label": [1],
                         "group": [99]})
    frames["train"] = pd.concat([frames["train"], leak], ignore_index=True)
    report = run_validation(frames, LABELS, ValidateParams())
    r = assert_fails_critically(report, "train", "expect_column_values_to_not_be_in_set", "norm_text", 1)
    assert r["examples"] == ["It's a charming and often affecting journey!"]  # the text, not norm_text
    assert failed(report) == [("train", "expect_column_values_to_not_be_in_set", "norm_text", "critical")]
    assert "[no train text also in dev/test]: 1 of 11 rows" in _message(report)


def test_dev_text_also_in_test():
    frames = clean_frames()
    frames["dev"].loc[1, "text"] = "Effective but too-tepid biopic"
    report = run_validation(frames, LABELS, ValidateParams())
    assert_fails_critically(report, "dev", "expect_column_values_to_not_be_in_set", "norm_text", 1)


def test_unlabeled_line_equal_to_test_text():
    report = run_validation(clean_frames(UNLABELED + ["UNFLINCHINGLY bleak, and desperate."]), LABELS, ValidateParams())
    r = assert_fails_critically(report, "transfer", "expect_column_values_to_not_be_in_set", "norm_text", 1)
    assert r["examples"] == ["UNFLINCHINGLY bleak, and desperate."]


def test_unlabeled_line_containing_a_test_sentence():
    line = "Honestly? Unflinchingly bleak and desperate -- but I could not look away."
    report = run_validation(clean_frames(UNLABELED + [line]), LABELS, ValidateParams())
    r = assert_fails_critically(report, "transfer", "expect_column_values_to_be_in_set", "leak_contains_eval", 1)
    assert r["examples"] == [line]
    # not an exact copy, and no 8-word run: only the containment check catches it
    assert failed(report) == [("transfer", "expect_column_values_to_be_in_set", "leak_contains_eval", "critical")]


def test_unlabeled_line_sharing_an_8_word_run():
    line = "What a smart, sassy comedy that hits every mark -- until the last reel."
    report = run_validation(clean_frames(UNLABELED + [line]), LABELS, ValidateParams())
    r = assert_fails_critically(report, "transfer", "expect_column_values_to_be_in_set", "leak_shared_word_run", 1)
    assert r["examples"] == [line]
    assert failed(report) == [("transfer", "expect_column_values_to_be_in_set", "leak_shared_word_run", "critical")]
    assert "leak_shared_word_run) [no unlabeled line shares a run of 8 words with a dev/test text]: " \
           "1 of 6 rows where origin == 'unlabeled'; examples: ['What a smart" in _message(report)
    # with a longer run required, the same line is clean
    assert run_validation(clean_frames(UNLABELED + [line]), LABELS, ValidateParams(leak_word_run=9))["success"]


def test_unlabeled_short_line_inside_a_dev_sentence():
    report = run_validation(clean_frames(UNLABELED + ["Every gag from the original!"]), LABELS, ValidateParams())
    assert_fails_critically(report, "transfer", "expect_column_values_to_be_in_set", "leak_contained_in_eval", 1)


def test_leak_checks_ignore_train_origin_rows():
    frames = clean_frames()
    # a train-origin transfer row that contains a test text: the leak flags only look at unlabeled rows
    frames["transfer"].loc[0, "text"] = "so unflinchingly bleak and desperate it hurts"
    report = run_validation(frames, LABELS, ValidateParams())
    assert results(report, "transfer", "expect_column_values_to_be_in_set", "leak_contains_eval")["success"]


def test_missing_column_is_reported_not_crashed():
    frames = clean_frames()
    frames["dev"] = frames["dev"].drop(columns=["label"])
    frames["transfer"] = frames["transfer"].drop(columns=["origin"])
    report = run_validation(frames, LABELS, ValidateParams())
    assert_fails_critically(report, "dev", "expect_column_to_exist", "label", None)
    assert_fails_critically(report, "transfer", "expect_column_to_exist", "origin", None)
    assert sorted(failed(report)) == [("dev", "expect_column_to_exist", "label", "critical"),
                                      ("transfer", "expect_column_to_exist", "origin", "critical")]
    dev_cols = {r["column"] for r in report["splits"]["dev"]["results"]}
    assert "label" in dev_cols and not any(c.startswith("is_label") for c in dev_cols)
    skipped = {(s["expectation"], s["column"]) for s in report["splits"]["dev"]["skipped"]}
    assert ("expect_column_values_to_be_in_set", "label") in skipped
    assert ("expect_column_mean_to_be_between", "is_label_0") in skipped
    transfer_skipped = {s["column"] for s in report["splits"]["transfer"]["skipped"]}
    assert {"leak_contains_eval", "leak_shared_word_run", "leak_contained_in_eval"} <= transfer_skipped
    assert "column missing" in _message(report)
    assert flat_metrics(report)["dev_skipped"] == len(report["splits"]["dev"]["skipped"]) > 0


def test_class_balance_violation():
    frames = clean_frames()
    frames["train"]["label"] = [1] * 9 + [0]
    report = run_validation(frames, LABELS, ValidateParams(class_balance=ClassBalance(min_fraction=0.2, max_fraction=0.8)))
    bound = "(validate.class_balance)"
    r0 = assert_fails_critically(report, "train", "expect_column_mean_to_be_between", "is_label_0", None, bound)
    r1 = assert_fails_critically(report, "train", "expect_column_mean_to_be_between", "is_label_1", None, bound)
    assert r0["observed_value"] == pytest.approx(0.1) and r1["observed_value"] == pytest.approx(0.9)
    assert "observed 0.9" in _message(report)
    # without hard bounds (the default) the same 10% class is not an error: imbalanced data runs
    frames["dev"]["label"] = [1] * (len(frames["dev"]) - 1) + [0]
    frames["test"]["label"] = [1] * (len(frames["test"]) - 1) + [0]
    report = run_validation(frames, LABELS, ValidateParams(class_balance=ClassBalance(warn_below=0.05)))
    assert report["success"] is True
    # a class under warn_below in train is reported as imbalanced (a warning)
    report = run_validation(frames, LABELS, ValidateParams(class_balance=ClassBalance(warn_below=0.15)))
    warn = results(report, "train", "expect_column_mean_to_be_between", "is_label_0", "else imbalanced")
    assert report["success"] is True and warn["success"] is False and warn["severity"] == "warning"
    # dev distributed unlike train fails (model selection on it would mislead); test only warns
    frames = clean_frames()
    frames["dev"]["label"] = [1] * len(frames["dev"])
    report = run_validation(frames, LABELS, ValidateParams())
    assert_fails_critically(report, "dev", "expect_column_mean_to_be_between", "is_label_1", None, "of its train share")
    frames = clean_frames()
    frames["test"]["label"] = [1] * 6
    report = run_validation(frames, LABELS, ValidateParams())
    assert report["success"] is True and report["warnings"] == 2
    assert results(report, "test", "expect_column_mean_to_be_between", "is_label_1")["success"] is False


def test_test_duplicate_only_warns():
    frames = clean_frames()
    dup = pd.DataFrame({"id": ["test-dup"], "text": ["Unflinchingly bleak and desperate."], "label": [0], "group": [99]})
    frames["test"] = pd.concat([frames["test"], dup], ignore_index=True)
    report = run_validation(frames, LABELS, ValidateParams())
    r = results(report, "test", "expect_column_values_to_be_unique", "norm_text")
    assert r["success"] is False and r["severity"] == "warning" and r["unexpected_count"] == 2
    assert report["success"] is True and report["critical_failures"] == 0 and report["warnings"] == 1
    raise_on_critical(report)  # does not raise
    assert flat_metrics(report)["test_failed"] == 1


def test_warn_only_demotes():
    frames = clean_frames()
    frames["train"].loc[0, "text"] = "Effective but too-tepid biopic."
    strict = run_validation(frames, LABELS, ValidateParams())
    assert_fails_critically(strict, "train", "expect_column_values_to_not_be_in_set", "norm_text", 1)
    lenient = run_validation(frames, LABELS, ValidateParams(warn_only=["expect_column_values_to_not_be_in_set"]))
    r = results(lenient, "train", "expect_column_values_to_not_be_in_set", "norm_text")
    assert r["success"] is False and r["severity"] == "warning"
    assert lenient["success"] is True and lenient["warnings"] == 1
    raise_on_critical(lenient)


def test_validate_prepared_reads_files(tmp_path):
    frames = clean_frames()
    for split, df in frames.items():
        write_jsonl(tmp_path / f"{split}.jsonl", df)
    write_json(tmp_path / "labels.json", {"labels": LABELS})
    report = validate_prepared(tmp_path, ValidateParams())
    assert report["success"] is True and failed(report) == []
    assert report["splits"]["transfer"]["rows"] == 15

    bad = frames["test"].copy()
    bad.loc[0, "label"] = 7
    write_jsonl(tmp_path / "test.jsonl", bad)
    report = validate_prepared(tmp_path, ValidateParams())
    assert_fails_critically(report, "test", "expect_column_values_to_be_in_set", "label", 1)


def _message(report) -> str:
    with pytest.raises(ValidationFailed) as err:
        raise_on_critical(report)
    return str(err.value)
