"""Sharded, resumable teacher labelling."""

import numpy as np
import pytest

from confkd.training.labelling import label_in_shards


def _predict(calls):
    def predict(chunk):
        calls.append(len(chunk))
        return np.array([[len(t), -len(t)] for t in chunk], dtype=np.float32)
    return predict


TEXTS = [f"text number {'x' * i}" for i in range(10)]


def test_shards_cover_every_text_in_order_and_the_work_folder_is_removed(tmp_path):
    calls = []
    out = label_in_shards(TEXTS, _predict(calls), tmp_path / "work", "teacher-a", shard_size=3)
    assert calls == [3, 3, 3, 1]
    np.testing.assert_array_equal(out[:, 0], [len(t) for t in TEXTS])
    assert not (tmp_path / "work").exists()


def test_an_interrupted_run_relabels_only_the_missing_shards(tmp_path):
    work = tmp_path / "work"

    def crashing(chunk, calls=[]):
        calls.append(chunk)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return _predict([])(chunk)

    with pytest.raises(KeyboardInterrupt):
        label_in_shards(TEXTS, crashing, work, "teacher-a", shard_size=3)
    assert sorted(p.name for p in work.glob("shard-*")) == ["shard-00000.npy", "shard-00001.npy"]
    calls = []
    out = label_in_shards(TEXTS, _predict(calls), work, "teacher-a", shard_size=3)
    assert calls == [3, 1]  # shards 2 and 3 only
    np.testing.assert_array_equal(out[:, 0], [len(t) for t in TEXTS])


def test_shards_of_another_teacher_are_not_reused(tmp_path):
    work = tmp_path / "work"
    label_in_shards(TEXTS, _predict([]), work, "teacher-a", shard_size=3, keep=True)
    calls = []
    label_in_shards(TEXTS, _predict(calls), work, "teacher-b", shard_size=3)
    assert calls == [3, 3, 3, 1]


def test_bad_shard_size_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        label_in_shards(TEXTS, _predict([]), tmp_path, "k", shard_size=0)
