import numpy as np
import pandas as pd

from confkd.data.leakage import LeakIndex
from confkd.data.splitting import grouped_dev_split, parent_groups
from confkd.data.text import normalize_text, word_tokens


def test_normalize_text_folds_case_punctuation_and_tokenisation():
    assert normalize_text("It 's  a GREAT film !") == "it s a great film"
    assert normalize_text("It's a great film!") == "it s a great film"
    assert normalize_text("  ...  ") == ""
    assert word_tokens("Don't stop") == ("don", "t", "stop")


def test_leak_reasons():
    test_sentence = "the film is a quiet triumph of acting and heart"  # 10 words
    short_eval = "a quiet little gem"  # 4 words
    index = LeakIndex([test_sentence, short_eval], word_run=8, min_words=4)
    assert index.reason("The film is a quiet triumph of acting and heart!") == "exact"
    assert index.reason("i think that the film is a quiet triumph of acting and heart overall") == "shared_word_run"
    assert index.reason("what a quiet little gem this was") == "contains_eval"
    assert index.reason("quiet triumph of acting") == "contained_in_eval"  # 4 words inside an eval text
    # clean lines: a 7-word overlap is below the run length, a 3-word line is below min_words
    assert index.reason("so the film is a quiet triumph but dull") is None
    assert index.reason("acting and heart") is None
    assert index.reason("a loud and clumsy comedy") is None


def test_parent_groups_hand_example():
    texts = [
        "the movie is a gorgeous , witty , seductive movie .",  # root A
        "gorgeous , witty",                                     # in A
        "a gorgeous , witty , seductive movie",                 # in A
        "an uneven , dull mess",                                # root B
        "dull mess",                                            # in B
        "witty",                                                # in A (first root containing it)
        "something else entirely",                              # root C
    ]
    group, is_root = parent_groups(texts)
    assert list(is_root) == [True, False, False, True, False, False, True]
    assert group[1] == group[2] == group[5] == 0
    assert group[4] == 3
    assert group[6] == 6


def _phrase_frame():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts, labels = [], []
    for s in range(60):
        sent = list(rng.choice(words, 12, replace=False))
        texts.append(" ".join(sent))
        labels.append(s % 2)
        for start in (0, 3, 6):  # phrases of the sentence
            texts.append(" ".join(sent[start : start + 5]))
            labels.append(s % 2)
    return pd.DataFrame({"id": [f"train-{i}" for i in range(len(texts))], "text": texts, "label": labels})


def test_grouped_split_keeps_groups_on_one_side_and_is_deterministic():
    df = _phrase_frame()
    train, dev, info = grouped_dev_split(df, 0.2, seed=3, keep="all")
    assert set(train["group"]).isdisjoint(set(dev["group"]))
    assert len(train) + len(dev) == len(df)
    # no dev text is contained in (or contains) a train text of another group
    for d in dev["text"]:
        assert not any(d in t for t in train["text"])
    train2, dev2, _ = grouped_dev_split(df, 0.2, seed=3, keep="all")
    pd.testing.assert_frame_equal(dev, dev2)
    _, dev3, _ = grouped_dev_split(df, 0.2, seed=4, keep="all")
    assert set(dev3["id"]) != set(dev["id"])
    assert 0.15 <= len(dev) / len(df) <= 0.3


def test_grouped_split_roots_only_drops_dev_phrases_everywhere():
    df = _phrase_frame()
    train, dev, info = grouped_dev_split(df, 0.2, seed=1, keep="roots")
    assert all(len(t.split()) == 12 for t in dev["text"])  # only full sentences
    assert info["dropped_dev_group_non_roots"] == 3 * info["dev_groups"]
    assert len(train) + len(dev) + info["dropped_dev_group_non_roots"] == len(df)
    for d in dev["text"]:
        assert not any(t in d for t in train["text"])
