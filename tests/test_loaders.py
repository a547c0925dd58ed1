from pathlib import Path

import pandas as pd
import pytest

from confkd.config import LocalFiles, TaskParams
from confkd.data.loaders import load_task, read_label_names, read_table
from confkd.errors import DataError

from .conftest import REPO_ROOT

DATA = REPO_ROOT / "data"


def test_embedded_sst2_matches_published_counts():
    data = load_task(TaskParams(name="sst2"), data_root=DATA)
    assert data.labels == ["negative", "positive"]
    assert len(data.train) == 67_349 and len(data.test) == 872 and data.dev is None
    assert data.train["label"].value_counts().to_dict() == {1: 37_569, 0: 29_780}
    assert data.test["label"].value_counts().to_dict() == {1: 444, 0: 428}
    assert list(data.unlabeled) == ["movie_reviews"] and len(data.unlabeled["movie_reviews"]) == 12_752


def test_embedded_tweet_offensive_has_official_dev_and_label_names():
    data = load_task(TaskParams(name="tweet_offensive"), data_root=DATA)
    assert (len(data.train), len(data.dev), len(data.test)) == (11_916, 1_324, 860)
    assert data.labels == read_label_names(DATA / "tweet_offensive" / "labels.txt") == ["not-offensive", "offensive"]
    assert set(data.train["label"]) == {0, 1}


def test_unknown_embedded_task():
    with pytest.raises(DataError, match="unknown embedded task 'sst5'"):
        load_task(TaskParams(name="sst5"), data_root=DATA)


def _local(tmp_path, train: str, test: str, suffix: str = "tsv", **kw) -> TaskParams:
    (tmp_path / f"train.{suffix}").write_text(train, encoding="utf-8")
    (tmp_path / f"test.{suffix}").write_text(test, encoding="utf-8")
    files = LocalFiles(train=str(tmp_path / f"train.{suffix}"), test=str(tmp_path / f"test.{suffix}"))
    return TaskParams(name="mine", source="local", files=files, **kw)


def test_local_csv_with_named_columns_and_label_names(tmp_path):
    task = _local(tmp_path, 'review,stars\n"good, really",pos\nbad,neg\n', "review,stars\nfine,pos\n", "csv",
                  text_column="review", label_column="stars", labels=["neg", "pos"])
    data = load_task(task)
    assert data.train["text"].tolist() == ["good, really", "bad"]
    assert data.train["label"].tolist() == [1, 0]
    assert data.test["label"].tolist() == [1]


def test_local_jsonl_and_inferred_integer_labels(tmp_path):
    task = _local(tmp_path, '{"text": "a", "label": 2}\n{"text": "b", "label": 0}\n', '{"text": "c", "label": 1}\n', "jsonl")
    data = load_task(task)
    assert data.labels == ["0", "1", "2"]
    assert data.train["label"].tolist() == [2, 0]


def test_malformed_tsv_names_the_file(tmp_path):
    task = _local(tmp_path, "text\tlabel\ngood\t1\nbad\t0\textra\n", "text\tlabel\nok\t1\n")
    with pytest.raises(DataError, match=r"train\.tsv: malformed TSV"):
        load_task(task)


def test_missing_column_lists_found_columns(tmp_path):
    task = _local(tmp_path, "sentence\tlabel\ngood\t1\n", "sentence\tlabel\nok\t1\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]; found columns \['sentence', 'label'\]"):
        load_task(task)


def test_label_outside_declared_set(tmp_path):
    task = _local(tmp_path, "text\tlabel\ngood\t1\nbad\t7\n", "text\tlabel\nok\t1\n", labels=["neg", "pos"])
    with pytest.raises(DataError, match=r"1 row\(s\) with labels outside the declared set.*values \['7'\].*data rows \[2\]"):
        load_task(task)


def test_empty_text_errors_or_drops(tmp_path):
    task = _local(tmp_path, "text\tlabel\ngood\t1\n   \t0\nbad\t0\n", "text\tlabel\nok\t1\n", labels=["neg", "pos"])
    with pytest.raises(DataError, match=r"empty or whitespace-only text \(data rows \[2\]\)"):
        load_task(task)
    data = load_task(task, on_empty_text="drop")
    assert data.train["text"].tolist() == ["good", "bad"]
    assert data.train["id"].tolist() == ["train-000000", "train-000002"]  # ids keep file positions


def test_undecodable_bytes(tmp_path):
    task = _local(tmp_path, "text\tlabel\ngood\t1\n", "text\tlabel\nok\t1\n")
    Path(task.files.train).write_bytes(b"text\tlabel\ngo\xffod\t1\n")
    with pytest.raises(DataError, match=r"train\.tsv: undecodable bytes at byte 13 \(line 2\)"):
        load_task(task)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "none.tsv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(DataError, match="unsupported format 'xlsx'"):
        read_table(tmp_path / "x.xlsx")


def test_hf_loader_on_a_local_dataset_folder(tmp_path):
    """The real ``datasets.load_dataset`` path, pointed at a local folder (no network)."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    pd.DataFrame({"sentence": ["good film", "bad film"], "label": [1, 0]}).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"sentence": ["fine film"], "label": [1]}).to_csv(folder / "validation.csv", index=False)
    task = TaskParams(name="mine", source="hf", hf_id=str(folder), labels=["negative", "positive"])
    data = load_task(task)
    assert data.train["text"].tolist() == ["good film", "bad film"]
    assert data.test["label"].tolist() == [1]


def test_hf_loader_reports_unloadable_dataset(tmp_path):
    task = TaskParams(name="x", source="hf", hf_id=str(tmp_path / "does-not-exist"))
    with pytest.raises(DataError, match="could not load HF dataset"):
        load_task(task)
