"""The DAN's fast path: vectorised n-gram look-up and the numpy runtime against the PyTorch DAN."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from confkd.errors import DataError, ModelNotFound
from confkd.export.dan_runtime import (NgramTable, NumpyDANPredictor, bag_means, dan_flops, numba_available,
                                       read_dan_graph)
from confkd.models.dan import DEFAULT_TOKEN_PATTERN, DANConfig, DANStudent, NgramFeaturizer

TRAIN = ["a gorgeous witty film", "a dull dull mess", "not a gorgeous film at all", "witty and warm",
         "the film is a mess", "not bad at all", "gorgeous gorgeous gorgeous", "a film"] * 4
CHECK = TRAIN + ["", "unknown words only", "A GORGEOUS Witty film!", "mess", "not a film at all not a mess",
                 "gorgeous witty witty film a dull"]


def bags(rows, owner, n):
    return [Counter(rows[owner == i].tolist()) for i in range(n)]


def reference_bags(featurizer, texts):
    idx, off = featurizer.transform(texts)
    idx, off = idx.numpy(), list(off.numpy()) + [len(idx)]
    return [Counter(idx[off[i]:off[i + 1]].tolist()) for i in range(len(texts))]


@pytest.fixture(params=["walk", "vectorised"])
def path(request, monkeypatch):
    """Both look-up paths: the Python walk (small batches) and numpy (large ones) must give the same bags."""
    from confkd.export import dan_runtime

    monkeypatch.setattr(dan_runtime, "SMALL_BATCH_TOKENS", 10 ** 9 if request.param == "walk" else -1)
    return request.param


@pytest.mark.parametrize("binary", [False, True])
def test_lookup_gives_the_featurizers_bags(binary, path):
    featurizer = NgramFeaturizer(binary=binary).fit(TRAIN, max_features=40)
    assert featurizer.uses_prefix_pruning
    table = NgramTable(featurizer.vocabulary, featurizer.token_pattern, featurizer.lowercase, binary, featurizer.ngram_range)
    rows, owner = table.lookup(CHECK)
    assert bags(rows, owner, len(CHECK)) == reference_bags(featurizer, CHECK)


def test_lookup_by_hand(path):
    """Vocabulary [a, b, a b, a b c, c]: "a b c a b" holds a, b, a b, a b c, c, a, b, a b (c b is unknown)."""
    table = NgramTable(["a", "b", "a b", "a b c", "c"], DEFAULT_TOKEN_PATTERN)
    rows, owner = table.lookup(["a b c a b", "x", "c x c"])
    assert bags(rows, owner, 3) == [Counter({0: 2, 1: 2, 2: 2, 3: 1, 4: 1}), Counter(), Counter({4: 2})]
    padded = table.padded(["a b c a b", "x"])
    assert padded["ngram_ids"].shape == (2, 8) and padded["ngram_mask"].sum(1).tolist() == [8.0, 0.0]
    assert sorted(padded["ngram_ids"][0].tolist()) == [0, 0, 1, 1, 2, 2, 3, 4]


def test_an_n_gram_never_crosses_texts(path):
    table = NgramTable(["a", "b", "a b"], DEFAULT_TOKEN_PATTERN)
    rows, owner = table.lookup(["a", "b"])
    assert bags(rows, owner, 2) == [Counter({0: 1}), Counter({1: 1})]


def test_vocabularies_the_fast_path_cannot_serve_are_refused():
    with pytest.raises(ModelNotFound, match="not prefix-closed"):
        NgramTable(["a", "a b c"], DEFAULT_TOKEN_PATTERN)
    with pytest.raises(ModelNotFound, match="n-grams from 1"):
        NgramTable(["a b"], DEFAULT_TOKEN_PATTERN, ngram_range=(2, 3))
    with pytest.raises(ModelNotFound, match="space-free"):
        NgramTable(["a"], r"[^,]+")
    with pytest.raises(DataError, match="text #1 is int"):
        NgramTable(["a"], DEFAULT_TOKEN_PATTERN).lookup(["a", 3])


needs_numba = pytest.mark.skipif(not numba_available(), reason="the compiled kernel needs numba")


@needs_numba
@pytest.mark.parametrize("binary", [False, True])
def test_compiled_bags_by_hand(binary):
    """Vocabulary [a, b, a b, a b c, c]; "a b c a b" holds rows 0, 2, 3, 1, 4, 0, 2, 1 (8; binary: 0-4 once)."""
    emb = np.array([[1, 0], [0, 1], [2, 2], [4, 0], [0, 8]], dtype=np.float32)
    table = NgramTable(["a", "b", "a b", "a b c", "c"], DEFAULT_TOKEN_PATTERN, binary=binary)
    out = table.compiled_bag_means(emb, ["a b c a b", "x", "c x c", "b a"])
    first = [7 / 5, 11 / 5] if binary else [(2 + 0 + 4 + 4 + 0) / 8, (2 + 4 + 8) / 8]
    last = [0.5, 0.5]  # b, a: "b a" is not in the vocabulary
    np.testing.assert_allclose(out, [first, [0, 0], [0, 8], last], rtol=1e-7)
    assert out.dtype == np.float32


@needs_numba
def test_the_compiled_hash_table_finds_every_key_and_no_other():
    from confkd.export.dan_kernel import _find, build_hash

    keys = np.arange(0, 7 * 600, 7, dtype=np.int64)  # 600 keys in 2**11 slots: collisions are certain
    table = build_hash(keys, np.arange(len(keys), dtype=np.int64), 11)
    assert (table[:, 0] >= 0).sum() == len(keys)
    assert [_find(table, int(k), 2 ** 11 - 1) for k in keys] == list(range(len(keys)))
    assert all(_find(table, int(k) + 1, 2 ** 11 - 1) == -1 for k in keys[:100])


@needs_numba
@pytest.mark.parametrize("binary", [False, True])
def test_compiled_bags_equal_the_numpy_bags(binary, path):
    featurizer = NgramFeaturizer(binary=binary).fit(TRAIN, max_features=40)
    table = NgramTable.from_featurizer(featurizer)
    emb = np.random.default_rng(0).normal(size=(len(featurizer.vocabulary), 5)).astype(np.float32)
    rows, owner = table.lookup(CHECK)
    np.testing.assert_allclose(table.compiled_bag_means(emb, CHECK), bag_means(emb, rows, owner, len(CHECK)),
                               atol=1e-6, rtol=0)


def test_bag_means_by_hand():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]], dtype=np.float32)
    out = bag_means(emb, np.array([0, 1, 2, 1]), np.array([0, 0, 2, 2]), 3)
    np.testing.assert_allclose(out, [[0.5, 1.0], [0.0, 0.0], [2.0, 3.0]])
    np.testing.assert_allclose(bag_means(emb, np.array([2, 0]), np.array([0, 0]), 1), [[2.5, 2.0]])
    np.testing.assert_allclose(bag_means(emb, np.array([], dtype=int), np.array([], dtype=int), 1), [[0.0, 0.0]])
    assert dan_flops(10, 4, [(4, 8), (8, 2)], batch_size=3) == 3 * (40 + 2 * (32 + 16))


@pytest.fixture(scope="module")
def exported_dan(tmp_path_factory):
    from confkd.config import ExportParams
    from confkd.export.stage import export_saved_model

    source = tmp_path_factory.mktemp("dan-src")
    DANStudent.from_texts(TRAIN, ["negative", "positive"], DANConfig(max_features=60, embed_dim=8, hidden_dims=(16, 16)),
                          seed=0).save_pretrained(source)
    out = tmp_path_factory.mktemp("dan-export") / "dan"
    export_saved_model(source, out, ExportParams(max_length=32))
    return source, out


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_numba)])
def test_numpy_runtime_matches_the_pytorch_dan(exported_dan, path, compiled):
    """The faster path: probabilities within 1e-6 of the PyTorch DAN, the same labels, two hidden layers."""
    source, out = exported_dan
    reference = DANStudent.from_pretrained(source)
    fast = NumpyDANPredictor(out, compiled=compiled)
    assert fast.kernel == ("numba" if compiled else "numpy")
    texts = CHECK * 3
    assert len(fast.layers) == 3
    expected = reference.predict_logits(texts)
    np.testing.assert_allclose(fast.predict_logits(texts), expected, atol=1e-5)
    from confkd.evaluation.metrics import probabilities

    assert np.abs(fast.predict_proba(texts) - probabilities(expected)).max() <= 1e-6
    one = fast.predict_proba(texts[:1])  # batch 1, the latency path
    assert one.dtype == np.float32 and np.abs(one - probabilities(expected[:1])).max() <= 1e-6
    assert fast.predict(texts) == [reference.labels[i] for i in expected.argmax(1)]


def test_numpy_runtime_imports_no_pytorch(exported_dan):
    _, out = exported_dan
    code = ("import sys; from confkd.export.dan_runtime import NumpyDANPredictor; "
            f"p = NumpyDANPredictor({str(out)!r}); p.predict_proba(['a film']); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_broken_exports_are_named(exported_dan, tmp_path):
    import shutil

    _, out = exported_dan
    with pytest.raises(ModelNotFound, match="has no export.json"):
        NumpyDANPredictor(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "featurizer.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelNotFound, match="not an n-gram featurizer"):
        NumpyDANPredictor(broken)
    (broken / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelNotFound, match="could not be read"):
        read_dan_graph(broken / "model.onnx")


@needs_numba
def test_the_compiled_kernel_gives_the_numpy_paths_probabilities_on_a_real_test_split(tmp_path):
    """SST-2's validation texts (the embedded task's test split) through a DAN fitted on 3,000 SST-2 phrases:
    the compiled kernel's probabilities within 1e-6 of the numpy path's, every prediction the same."""
    import pandas as pd

    from confkd.config import ExportParams
    from confkd.export.stage import export_saved_model

    root = Path(__file__).resolve().parents[1]
    train = pd.read_csv(root / "data/sst2/train.tsv", sep="\t", nrows=3000)["sentence"].tolist()
    test = pd.read_csv(root / "data/sst2/validation.tsv", sep="\t")["sentence"].tolist()
    DANStudent.from_texts(train, ["negative", "positive"], DANConfig(max_features=4000, embed_dim=16, hidden_dims=(32, 32)),
                          seed=0).save_pretrained(tmp_path / "src")
    export_saved_model(tmp_path / "src", tmp_path / "dan", ExportParams(max_length=32))
    compiled, numpy_path = (NumpyDANPredictor(tmp_path / "dan", compiled=c) for c in (True, False))
    fast, reference = compiled.predict_proba(test), numpy_path.predict_proba(test)
    assert len(test) == 872 and np.abs(fast - reference).max() <= 1e-6
    assert (fast.argmax(1) == reference.argmax(1)).all()
    assert np.abs(compiled.predict_proba(test[:1]) - reference[:1]).max() <= 1e-6  # batch 1


def test_asking_for_the_compiled_kernel_without_numba_is_a_clear_error(exported_dan, monkeypatch):
    from confkd.export import dan_runtime

    _, out = exported_dan
    monkeypatch.setattr(dan_runtime, "numba_available", lambda: False)
    assert NumpyDANPredictor(out).kernel == "numpy"  # the default falls back
    with pytest.raises(ModelNotFound, match="needs numba"):
        NumpyDANPredictor(out, compiled=True)


def test_the_memory_probes_runtimes_name_the_dan_kernel(exported_dan):
    """``numpy_fp32`` serves with the compiled kernel where numba loads, ``numpy_fp32_uncompiled`` with the numpy
    look-up, both giving the same probabilities; an unknown runtime is refused by name."""
    from confkd.errors import ParamsError
    from confkd.export.memory import load_runtime

    _, out = exported_dan
    default, uncompiled = load_runtime(out, "numpy_fp32", 1), load_runtime(out, "numpy_fp32_uncompiled", 1)
    assert default.kernel == ("numba" if numba_available() else "numpy") and uncompiled.kernel == "numpy"
    assert np.abs(default.predict_proba(CHECK) - uncompiled.predict_proba(CHECK)).max() <= 1e-6
    with pytest.raises(ParamsError, match="unknown runtime 'numpy_fp64'"):
        load_runtime(out, "numpy_fp64", 1)


def test_the_mlp_leaves_its_input_alone_and_applies_relu_between_layers(exported_dan):
    _, out = exported_dan
    p = NumpyDANPredictor(out, compiled=False)
    x = np.random.default_rng(0).standard_normal((5, p.embedding.shape[1])).astype(np.float32)
    before = x.copy()
    h = x
    for i, (w, b) in enumerate(p.layers):  # by hand, in float64
        h = h.astype(np.float64) @ w + b
        h = np.maximum(h, 0.0) if i < len(p.layers) - 1 else h
    np.testing.assert_allclose(p.mlp(x), h, atol=1e-5)
    assert np.array_equal(x, before)


def test_the_memory_probe_names_the_kernel_that_served_and_refuses_another(exported_dan):
    """The child process reports which bag kernel served; a figure from a kernel other than the timed one is an
    error naming both, not a silent mislabel."""
    from confkd.errors import ConfkdError
    from confkd.export.memory import probe_memory, serving_kernel

    _, out = exported_dan
    probe = probe_memory(out, "numpy_fp32_uncompiled", CHECK, num_threads=1, expect_kernel="numpy")
    assert probe.kernel == "numpy" and probe.peak_rss_mb > 10
    default = NumpyDANPredictor(out)
    assert serving_kernel(default) == serving_kernel(default.predict_proba) == default.kernel  # predictor or backend
    with pytest.raises(ConfkdError, match="served with the 'numpy' kernel, but the timing used 'numba'"):
        probe_memory(out, "numpy_fp32_uncompiled", CHECK, num_threads=1, expect_kernel="numba")
