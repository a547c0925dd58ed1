import json

import pandas as pd
import pytest

from confkd.config import Params, parse_params
from confkd.data.loaders import TaskData, load_task
from confkd.data.prepare import dedupe, _DropLog, flat_metrics, prepare, write_prepared
from confkd.data.text import normalize_text
from confkd.io import read_jsonl

from .conftest import REPO_ROOT, make_frame


def _params(**prepare) -> Params:
    return parse_params({"seed": 7, "prepare": {"dev_fraction": 0.25, "transfer": {"unlabeled_size": 10}, **prepare}})


def test_dedupe_keeps_first_and_drops_conflicts():
    df = make_frame(["Good film!", "good film", "Bad.", "bad", "meh"], [1, 1, 0, 1, 0])
    drops = _DropLog()
    out = dedupe(df, drops)
    assert out["text"].tolist() == ["Good film!", "meh"]
    assert drops.counts == {"duplicate": 1, "conflicting_label_duplicate": 2}


def test_prepare_toy_task_splits_filters_and_reports(toy_task):
    toy_task.train.loc[0, "text"] = "Truly a great and moving film about love"  # a test sentence in train
    prepared = prepare(_params(), toy_task)
    frames, report = prepared.frames, prepared.report
    eval_norms = set(frames["test"]["text"].map(normalize_text)) | set(frames["dev"]["text"].map(normalize_text))
    assert not set(frames["train"]["text"].map(normalize_text)) & eval_norms
    assert report["train_dropped"]["overlaps_eval_split"]["count"] == 1
    # the unlabeled line containing a test sentence is filtered, the other three are kept
    unl = frames["transfer"][frames["transfer"]["origin"] == "unlabeled"]
    assert sorted(unl["text"]) == sorted(["the popcorn was fine", "nothing about this was memorable at all",
                                          "a movie i would recommend to friends"])
    assert (unl["label"] == -1).all()
    assert report["transfer_dropped"]["leak_shared_word_run"]["count"] == 1
    assert report["output"] == {k: len(v) for k, v in frames.items()}
    assert len(frames["transfer"]) == len(frames["train"]) + 3
    assert set(frames["train"]["id"]).isdisjoint(frames["dev"]["id"])


def test_prepare_is_deterministic_and_seed_dependent(toy_task):
    a = prepare(_params(), toy_task).frames
    b = prepare(_params(), toy_task).frames
    for split in a:
        pd.testing.assert_frame_equal(a[split], b[split])
    c = prepare(parse_params({"seed": 8, "prepare": {"dev_fraction": 0.25}}), toy_task).frames
    assert set(c["dev"]["id"]) != set(a["dev"]["id"])


def test_transfer_size_extends_a_smaller_one(toy_task):
    small = prepare(_params(transfer={"unlabeled_size": 1}), toy_task).frames["transfer"]
    large = prepare(_params(transfer={"unlabeled_size": 3}), toy_task).frames["transfer"]
    small_unl = small[small.origin == "unlabeled"]["id"].tolist()
    assert small_unl == large[large.origin == "unlabeled"]["id"].tolist()[:1]


def test_official_dev_is_used_when_present(toy_task):
    dev = make_frame(["an uneven but watchable film", "dreadful"], [1, 0], "dev")
    task = TaskData("toy", toy_task.labels, toy_task.train, toy_task.test, dev, toy_task.unlabeled)
    prepared = prepare(_params(), task)
    assert prepared.frames["dev"]["text"].tolist() == dev["text"].tolist()
    assert prepared.report["dev_split"] == {"source": "official"}
    assert len(prepared.frames["train"]) == len(toy_task.train)


def test_write_prepared_round_trip(tmp_path, toy_task):
    prepared = prepare(_params(), toy_task)
    write_prepared(prepared, tmp_path / "prepared", tmp_path / "report.json", tmp_path / "metrics.json")
    back = read_jsonl(tmp_path / "prepared" / "transfer.jsonl")
    pd.testing.assert_frame_equal(back, prepared.frames["transfer"], check_dtype=False)
    meta = json.loads((tmp_path / "prepared" / "labels.json").read_text())
    assert meta["labels"] == ["negative", "positive"] and meta["task"] == "toy" and len(meta["data_fingerprint"]) == 16
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics.pop("task") == "toy" and metrics.pop("data_fingerprint") == meta["data_fingerprint"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # the rest: numbers, as dvc metrics compares
    assert metrics["transfer_dropped_leak_shared_word_run"] == 1


def test_real_sst2_leaks_are_resolved():
    """The measured quirks of the shipped data: hundreds of test sentences hide in the review pool."""
    params = parse_params({"prepare": {"transfer": {"unlabeled_size": 20000}}})
    data = load_task(params.task, data_root=REPO_ROOT / "data")
    prepared = prepare(params, data)
    frames, report = prepared.frames, prepared.report
    leaks = sum(v["count"] for k, v in report["transfer_dropped"].items() if k.startswith("leak_"))
    assert leaks > 1000  # exact + containment + shared word runs with dev/test
    assert report["transfer_dropped"]["leak_exact"]["count"] > 600
    assert report["train_dropped"]["overlaps_eval_split"]["count"] == 2
    eval_texts = [normalize_text(t) for t in pd.concat([frames["dev"], frames["test"]])["text"]]
    unl = frames["transfer"][frames["transfer"]["origin"] == "unlabeled"]["text"].map(normalize_text)
    padded = [f" {u} " for u in unl]
    long_evals = [f" {e} " for e in eval_texts if len(e.split()) >= 4]
    assert not any(e in u for u in padded for e in long_evals[:200])
    # Dev is grouped by parent sentence. A phrase shared by two different sentences can still sit in train
    # while being part of a dev sentence; that stays rare (measured: 4 of 668 at >= 6 words, none at >= 10).
    dev = [f" {normalize_text(t)} " for t in frames["dev"]["text"]]
    joined = "\n".join(dev)

    def dev_sentences_containing_train_phrases(min_words: int) -> int:
        phrases = [f" {t} " for t in frames["train"]["text"].map(normalize_text) if len(t.split()) >= min_words]
        return len({i for p in phrases if p in joined for i, d in enumerate(dev) if p in d})

    assert dev_sentences_containing_train_phrases(10) == 0
    assert dev_sentences_containing_train_phrases(6) <= 0.01 * len(dev)


def test_an_official_dev_split_loses_duplicates_and_test_texts_like_train(toy_task):
    test_text = toy_task.test["text"].iloc[0]
    dev = make_frame(["an uneven but watchable film", "An uneven but watchable film", "dreadful", "dreadful",
                      test_text.upper(), "a fine film"], [1, 1, 0, 1, 1, 1], "dev")
    task = TaskData("toy", toy_task.labels, toy_task.train, toy_task.test, dev, toy_task.unlabeled)
    prepared = prepare(_params(), task)
    assert prepared.frames["dev"]["text"].tolist() == ["an uneven but watchable film", "a fine film"]
    dropped = prepared.report["dev_dropped"]
    assert dropped["duplicate"]["count"] == 1 and dropped["conflicting_label_duplicate"]["count"] == 2
    assert dropped["overlaps_test"]["count"] == 1
    metrics = flat_metrics(prepared.report)
    assert metrics["dev_dropped_overlaps_test"] == 1 and metrics["dev_dropped_duplicate"] == 1
