"""Sparse DAN student: featurizer exactness, sparse training, persistence."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer

from confkd.errors import DataError, ModelNotFound, ParamsError
from confkd.models.dan import (
    DEFAULT_TOKEN_PATTERN,
    DANClassifier,
    DANConfig,
    DANStudent,
    NgramFeaturizer,
    make_dan_optimizers,
)

CORPUS = [
    "The cat sat on the mat.",
    "the CAT sat -- on THE mat!!",
    "Héllo, WORLD! héllo world... HÉLLO?",
    "Straße, naïve café — ÇA VA? ça va.",
    "don't stop-believing: 3.14 is π (pi) & 2+2=4",
    "a b c d e a b c d e a b",
    "日本語 テキスト 日本語",
    "😀 good 😀 GOOD good",
    "İstanbul ΣΊΣΥΦΟΣ σίσυφος",
    "x",
    "",
    "?!...",
]
UNSEEN = ["The mat sat on the cat", "completely unknown words here", "", "   ", "a a a a a", "Good good GOOD 😀"]


def _cv(featurizer: NgramFeaturizer, binary: bool = False) -> CountVectorizer:
    return CountVectorizer(vocabulary=featurizer.vocabulary, ngram_range=featurizer.ngram_range,
                           token_pattern=DEFAULT_TOKEN_PATTERN, lowercase=True, binary=binary)


def _bags(indices: torch.Tensor, offsets: torch.Tensor) -> list[Counter]:
    bounds = offsets.tolist() + [indices.numel()]
    return [Counter(indices[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


def _assert_matches_countvectorizer(featurizer: NgramFeaturizer, texts: list[str], binary: bool = False) -> None:
    counts = _cv(featurizer, binary).transform(texts).tocsr()
    bags = _bags(*featurizer.transform(texts))
    assert len(bags) == len(texts)
    for row, bag in enumerate(bags):
        lo, hi = counts.indptr[row], counts.indptr[row + 1]
        expected = dict(zip(counts.indices[lo:hi].tolist(), counts.data[lo:hi].tolist()))
        assert dict(bag) == expected, texts[row]


# -- featurizer ------------------------------------------------------------------------------------


def test_ngrams_of_one_sentence_hand_checked():
    expected = ["the", "cat", "sat", "the cat", "cat sat", "the cat sat"]  # no 4-gram in 3 tokens
    featurizer = NgramFeaturizer().fit(["The cat sat"], max_features=100)
    assert featurizer.analyze("The cat sat") == expected
    assert CountVectorizer(ngram_range=(1, 4), token_pattern=DEFAULT_TOKEN_PATTERN).build_analyzer()("The cat sat") == expected
    assert sorted(featurizer.vocabulary) == sorted(expected)
    indices, offsets = featurizer.transform(["The cat sat", "the  CAT, sat!"])
    assert offsets.tolist() == [0, 6]
    assert sorted(featurizer.vocabulary[i] for i in indices[:6].tolist()) == sorted(expected)
    assert torch.equal(indices[:6].sort().values, indices[6:].sort().values)
    # 1-character tokens are kept (scikit-learn's default pattern would drop "a" and "i")
    assert NgramFeaturizer().fit(["i saw a cat"], 100).analyze("I saw a")[:3] == ["i", "saw", "a"]


@pytest.mark.parametrize("max_features", [10_000, 25])
def test_transform_equals_countvectorizer_counts(max_features):
    featurizer = NgramFeaturizer().fit(CORPUS, max_features=max_features)
    assert featurizer.uses_prefix_pruning
    _assert_matches_countvectorizer(featurizer, CORPUS + UNSEEN)


def test_binary_mode_equals_countvectorizer_binary():
    featurizer = NgramFeaturizer(binary=True).fit(CORPUS, max_features=10_000)
    _assert_matches_countvectorizer(featurizer, CORPUS + UNSEEN, binary=True)


def test_fallback_path_for_a_vocabulary_that_is_not_prefix_closed():
    full = NgramFeaturizer().fit(CORPUS, max_features=10_000)
    data = full.to_dict()
    data["vocabulary"] = [t for t in full.vocabulary if t.count(" ") >= 1]  # no unigrams at all
    data["vocab_size"] = len(data["vocabulary"])
    featurizer = NgramFeaturizer.from_dict(data)
    assert not featurizer.uses_prefix_pruning
    _assert_matches_countvectorizer(featurizer, CORPUS + UNSEEN)


def test_max_features_respected_and_ties_broken_by_string():
    texts = ["b a", "a b", "c"]  # counts: a 2, b 2, then "a b", "b a", c all 1
    featurizer = NgramFeaturizer().fit(texts, max_features=3)
    assert featurizer.vocabulary == ["a", "b", "a b"]
    assert NgramFeaturizer().fit(list(reversed(texts)), max_features=3).vocabulary == ["a", "b", "a b"]

    rng = random.Random(0)
    corpus = [" ".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) for _ in range(200)]
    first = NgramFeaturizer().fit(corpus, max_features=150)
    assert first.vocab_size == 150
    shuffled = corpus[:]
    rng.shuffle(shuffled)
    assert NgramFeaturizer().fit(shuffled, max_features=150).vocabulary == first.vocabulary
    assert first.uses_prefix_pruning
    # counts are non-increasing along the vocabulary, and the kept set agrees with scikit-learn's
    # own max_features choice when there is no tie at the cut
    totals = dict(zip(*[CountVectorizer(ngram_range=(1, 4), token_pattern=DEFAULT_TOKEN_PATTERN).fit(corpus).get_feature_names_out(),
                        np.asarray(CountVectorizer(ngram_range=(1, 4), token_pattern=DEFAULT_TOKEN_PATTERN).fit_transform(corpus).sum(0)).ravel()]))
    kept = [totals[t] for t in first.vocabulary]
    assert kept == sorted(kept, reverse=True)
    ordered = sorted(totals.values(), reverse=True)
    k = next(k for k in range(150, 10, -1) if ordered[k - 1] != ordered[k])
    sk = CountVectorizer(ngram_range=(1, 4), token_pattern=DEFAULT_TOKEN_PATTERN, max_features=k).fit(corpus)
    assert set(NgramFeaturizer().fit(corpus, max_features=k).vocabulary) == set(sk.vocabulary_)

    small = NgramFeaturizer().fit(["one two"], max_features=1000)
    assert small.vocab_size == 3  # fewer n-grams than max_features


def test_featurizer_round_trip(tmp_path):
    featurizer = NgramFeaturizer().fit(CORPUS, max_features=40, min_df=1)
    path = featurizer.save(tmp_path / "featurizer.json")
    loaded = NgramFeaturizer.load(path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["vocabulary"] == featurizer.vocabulary and stored["ngram_range"] == [1, 4]
    assert loaded.vocabulary == featurizer.vocabulary
    assert loaded.uses_prefix_pruning == featurizer.uses_prefix_pruning
    for texts in (CORPUS + UNSEEN, ["x"], []):
        a, b = featurizer.transform(texts), loaded.transform(texts)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    again = NgramFeaturizer.from_dict(featurizer.to_dict())
    assert again.to_dict() == featurizer.to_dict()

    with pytest.raises(ModelNotFound, match="does not exist"):
        NgramFeaturizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelNotFound, match="not valid JSON"):
        NgramFeaturizer.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(ModelNotFound, match="not an n-gram featurizer"):
        NgramFeaturizer.load(tmp_path / "other.json")


def test_featurizer_input_errors():
    featurizer = NgramFeaturizer().fit(CORPUS, max_features=40)
    with pytest.raises(DataError, match="not a single string"):
        featurizer.transform("the cat")
    with pytest.raises(DataError, match="text #1"):
        featurizer.transform(["ok", None])
    with pytest.raises(ParamsError):
        NgramFeaturizer().fit(CORPUS, max_features=0)
    with pytest.raises(ParamsError):
        NgramFeaturizer().fit(CORPUS, max_features=10, ngram_range=(3, 1))
    with pytest.raises(DataError, match="vocabulary"):
        NgramFeaturizer().fit(["", "?!"], max_features=10)
    with pytest.raises(RuntimeError, match="not fitted"):
        NgramFeaturizer().transform(["x"])


# -- model -----------------------------------------------------------------------------------------


def test_empty_and_unknown_texts_give_empty_bags_and_finite_logits():
    featurizer = NgramFeaturizer().fit(CORPUS, max_features=200)
    texts = ["", "the cat", "?!... --", "zzzz qqqq", "the mat", ""]
    indices, offsets = featurizer.transform(texts)
    bounds = offsets.tolist() + [indices.numel()]
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    assert sizes[0] == sizes[2] == sizes[3] == sizes[5] == 0 and sizes[1] > 0 and sizes[4] > 0
    assert offsets[-1].item() == indices.numel()  # last bag empty

    torch.manual_seed(0)
    model = DANClassifier(featurizer.vocab_size, 8, 3, hidden_dims=(8,)).eval()
    pooled = model.embedding(indices, offsets)
    assert torch.all(pooled[[0, 2, 3, 5]] == 0) and torch.all(pooled[[1, 4]].abs().sum(1) > 0)
    logits = model(indices, offsets)
    assert logits.shape == (6, 3) and torch.isfinite(logits).all()
    assert torch.allclose(logits[0], logits[2])  # every empty bag maps to the same output

    indices, offsets = featurizer.transform(["", "unknownword"])
    assert indices.numel() == 0 and offsets.tolist() == [0, 0]
    logits = model(indices, offsets)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_parameter_accounting_and_optimizer_split():
    model = DANClassifier(1000, 16, 2, hidden_dims=(32, 8), dropout=0.0)
    dense = sum(p.numel() for p in model.head.parameters())
    assert dense == 16 * 32 + 32 + 32 * 8 + 8 + 8 * 2 + 2
    assert model.num_parameters() == 1000 * 16 + dense
    assert model.active_parameters_per_example(10) == 10 * 16 + dense
    assert model.active_parameters_per_example(0) == dense
    assert model.active_parameters_per_example(10**9) == model.num_parameters()
    assert model.embedding.sparse and model.embedding.mode == "mean"

    sparse_opt, dense_opt = make_dan_optimizers(model, lr_sparse=1e-2, lr_dense=1e-3, weight_decay=0.01)
    assert isinstance(sparse_opt, torch.optim.SparseAdam) and isinstance(dense_opt, torch.optim.AdamW)
    sparse_ids = {id(p) for g in sparse_opt.param_groups for p in g["params"]}
    dense_ids = {id(p) for g in dense_opt.param_groups for p in g["params"]}
    assert sparse_ids == {id(model.embedding.weight)}
    assert not sparse_ids & dense_ids and sparse_ids | dense_ids == {id(p) for p in model.parameters()}
    with pytest.raises(ParamsError):
        make_dan_optimizers(model, lr_sparse=0, lr_dense=1e-3)
    with pytest.raises(ParamsError):
        DANClassifier(0, 16, 2)


def _toy_sentiment():
    fillers = ["the film", "this movie", "the plot", "that show", "the acting", "our trip", "the food",
               "my day", "the game", "his book"]
    pos = [f"{f} was good {i}" if i % 2 else f"good stuff , {f} {i}" for i, f in enumerate(fillers * 2)]
    neg = [f"{f} was bad {i}" if i % 2 else f"bad stuff , {f} {i}" for i, f in enumerate(fillers * 2)]
    return pos + neg, np.array([1] * len(pos) + [0] * len(neg))


def test_sparse_gradients_and_training_reaches_full_accuracy():
    texts, labels = _toy_sentiment()
    assert len(texts) == 40
    student = DANStudent.from_texts(texts, ["negative", "positive"],
                                    DANConfig(max_features=500, embed_dim=16, hidden_dims=(16,), dropout=0.0), seed=0)
    model, featurizer = student.model, student.featurizer
    indices, offsets = featurizer.transform(texts)
    target = torch.as_tensor(labels)
    unused = sorted(set(range(featurizer.vocab_size)) - set(featurizer.transform(texts[:30])[0].tolist()))
    assert unused  # rows the first batch never touches

    optimizers = make_dan_optimizers(model, lr_sparse=0.05, lr_dense=0.01)
    model.train()
    before = model.embedding.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(*featurizer.transform(texts[:30])), target[:30])
    loss.backward()
    grad = model.embedding.weight.grad
    assert grad is not None and grad.is_sparse
    assert all(not p.grad.is_sparse for p in model.dense_parameters())
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
    after = model.embedding.weight.detach()
    assert torch.equal(after[unused], before[unused])  # SparseAdam leaves untouched rows alone

    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(indices, offsets), target)
        for opt in optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in optimizers:
            opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert (student.predict(texts) == labels).all()
    assert list(student.predict(["a good day", "a bad day"])) == [1, 0]


# -- student persistence ---------------------------------------------------------------------------


@pytest.fixture
def student():
    texts, _ = _toy_sentiment()
    return DANStudent.from_texts(texts + CORPUS, ["negative", "positive"],
                                 DANConfig(max_features=300, embed_dim=8, hidden_dims=(8,)), seed=1)


def test_student_save_load_gives_identical_logits(student, tmp_path):
    texts = CORPUS + UNSEEN + _toy_sentiment()[0]
    logits = student.predict_logits(texts)
    assert logits.shape == (len(texts), 2) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert np.allclose(student.predict_logits(texts, batch_size=3), logits, atol=1e-6)
    assert student.predict_logits([]).shape == (0, 2)
    assert student.model.training  # predict_logits restores the mode

    out = tmp_path / "dan"
    student.save_pretrained(out)
    student.save_pretrained(out)  # overwriting an existing folder is fine
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "featurizer.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["negative", "positive"] and config["vocab_size"] == student.featurizer.vocab_size
    assert config["embed_dim"] == 8 and config["hidden_dims"] == [8]

    loaded = DANStudent.from_pretrained(out)
    assert loaded.labels == student.labels and not loaded.model.training
    assert np.array_equal(loaded.predict_logits(texts), logits)


def test_from_pretrained_errors(student, tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        DANStudent.from_pretrained(tmp_path / "nowhere")

    out = student.save_pretrained(tmp_path / "dan")
    (out / "config.json").write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(ModelNotFound, match="not valid JSON"):
        DANStudent.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({"format": "confkd-dan", "version": 1, "labels": ["a", "b"]}))
    with pytest.raises(ModelNotFound, match="lacks the key"):
        DANStudent.from_pretrained(out)

    out = student.save_pretrained(tmp_path / "dan")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 1}))
    with pytest.raises(ModelNotFound):
        DANStudent.from_pretrained(out)

    out = student.save_pretrained(tmp_path / "dan")
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelNotFound, match="could not be read"):
        DANStudent.from_pretrained(out)

    out = student.save_pretrained(tmp_path / "dan")
    (out / "featurizer.json").unlink()
    with pytest.raises(ModelNotFound, match="has no featurizer.json"):
        DANStudent.from_pretrained(out)
