"""ONNX export: parity with PyTorch, int8, the inference API and CLI on exported folders, the stage."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from confkd.errors import DataError, ModelNotFound

from .conftest import NEGATIVE, POSITIVE, make_frame, tiny_params

LABELS = ["negative", "positive"]
# Mixed lengths (padding inside a batch), an empty text, unknown words only, and one text longer than
# max_length (truncation).
TEXTS = ["a great and moving film", "", "zzz qqq xxyyzz", "boring from start to finish , i hated the plot",
         " ".join(["wonderful acting throughout"] * 40), "flat", *POSITIVE[:3], *NEGATIVE[:3]]


def export_params(**overrides):
    from confkd.config import ExportParams

    return ExportParams(**{"max_length": 32, **overrides})


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tiny_model_dir):
    """The tiny random BERT with real label names (as the teacher stage saves them)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("hf")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    model.config.id2label, model.config.label2id = dict(enumerate(LABELS)), {n: i for i, n in enumerate(LABELS)}
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def dan_dir(tmp_path_factory):
    from confkd.models.dan import DANConfig, DANStudent

    out = tmp_path_factory.mktemp("dan")
    texts = [f"{t} {i}" for i, t in enumerate((POSITIVE + NEGATIVE) * 3)]
    DANStudent.from_texts(texts, LABELS, DANConfig(max_features=300, embed_dim=8, hidden_dims=(16,)), seed=0).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, hf_dir, dan_dir):
    """Both tiny models exported (fp32 + int8) with the stage's own export function."""
    from confkd.export.stage import export_saved_model

    root = tmp_path_factory.mktemp("export")
    calibration = [f"{t} {i}" for i, t in enumerate(POSITIVE + NEGATIVE)]
    for name, source in (("hf", hf_dir), ("dan", dan_dir)):
        export_saved_model(source, root / name, export_params(), name=name, calibration_texts=calibration)
    return root


def reference_logits(source, texts, max_length=32):
    from confkd.inference import load_predictor

    return load_predictor(source, max_length=max_length).predict_logits(texts)


# -- graphs and parity ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, source_fixture", [("hf", "hf_dir"), ("dan", "dan_dir")])
def test_onnx_fp32_matches_pytorch(exported, request, name, source_fixture):
    from confkd.export.predictor import OnnxPredictor

    source = request.getfixturevalue(source_fixture)
    expected = reference_logits(source, TEXTS)
    onnx = OnnxPredictor(exported / name, precision="fp32", num_threads=1)
    assert np.abs(onnx.predict_logits(TEXTS) - expected).max() <= 1e-4
    # Batch of one (no padding at all) and batches of other sizes than the traced one.
    for start, stop in ((0, 1), (3, 4), (0, 7)):
        assert np.abs(onnx.predict_logits(TEXTS[start:stop]) - expected[start:stop]).max() <= 1e-4
    assert float(np.abs(expected).max()) > 1e-3  # the comparison is not between two all-zero outputs


@pytest.mark.parametrize("prefix_closed", [True, False])
def test_dan_padded_bags_equal_embedding_bag_input(dan_dir, prefix_closed):
    """Each row of the padded id matrix holds its text's bag (the vectorised look-up may order it differently,
    the fallback for a vocabulary it cannot serve keeps transform's order); a text without known n-grams gets
    an empty row."""
    from confkd.export.dan_runtime import NgramTable
    from confkd.export.encoders import DANTextEncoder
    from confkd.models.dan import DANStudent, NgramFeaturizer

    featurizer = DANStudent.from_pretrained(dan_dir).featurizer
    if not prefix_closed:  # drop the prefix of some 2-gram: the vectorised look-up cannot serve it
        vocab = featurizer.vocabulary
        prefix = next(g.split(" ")[0] for g in vocab if " " in g)
        featurizer = NgramFeaturizer.from_dict({**featurizer.to_dict(), "vocabulary": [g for g in vocab if g != prefix],
                                                "vocab_size": len(vocab) - 1})
    texts = ["a great and moving film", "zzz qqq", "boring"]
    indices, offsets = featurizer.transform(texts)
    encoder = DANTextEncoder(featurizer)
    assert isinstance(encoder.featurizer, NgramTable) == prefix_closed
    feeds = encoder(texts)
    ids, mask = feeds["ngram_ids"], feeds["ngram_mask"].astype(bool)
    assert ids.dtype == np.int64 and feeds["ngram_mask"].dtype == np.float32
    bounds = np.append(offsets.numpy(), len(indices))
    for row in range(len(texts)):
        assert sorted(ids[row][mask[row]].tolist()) == sorted(indices[bounds[row]:bounds[row + 1]].tolist())
    assert mask.sum(1).tolist() == np.diff(bounds).tolist() and mask.sum() > 0
    assert mask[1].sum() == 0
    only_unknown = encoder(["zzz", "qqq"])
    assert only_unknown["ngram_ids"].shape == (2, 1) and only_unknown["ngram_mask"].sum() == 0


def test_int8_export_is_smaller_and_agrees(exported):
    from confkd.export.predictor import OnnxPredictor

    texts = TEXTS * 3
    for name in ("hf", "dan"):
        folder = exported / name
        assert (folder / "model.int8.onnx").stat().st_size < 0.6 * (folder / "model.onnx").stat().st_size
        fp32 = OnnxPredictor(folder, precision="fp32", num_threads=1).predict_logits(texts)
        int8 = OnnxPredictor(folder, precision="int8", num_threads=1).predict_logits(texts)
        assert not np.array_equal(int8, fp32)  # really a different (quantised) graph
        assert np.abs(int8 - fp32).max() < 0.05 * max(1.0, np.abs(fp32).max())
        assert np.mean(int8.argmax(1) == fp32.argmax(1)) >= 0.9


def test_ffn_down_projections_stay_fp32(exported):
    import onnx

    from confkd.export.convert import ffn_down_projections

    names = ffn_down_projections(onnx.load(str(exported / "hf/model.onnx")))
    assert names == [f"/model/bert/encoder/layer.{i}/output/dense/MatMul" for i in range(2)]
    manifest = json.loads((exported / "hf/export.json").read_text())
    assert manifest["quantization"]["fp32_nodes"] == names
    int8_ops = {n.name: n.op_type for n in onnx.load(str(exported / "hf/model.int8.onnx")).graph.node}
    assert all(int8_ops[n] == "MatMul" for n in names)
    assert "MatMulInteger" in int8_ops.values()
    assert ffn_down_projections(onnx.load(str(exported / "dan/model.onnx"))) == []


def test_smoothing_keeps_the_fp32_function(exported):
    """Smoothing rescales LayerNorm-fed activations and the weights they feed: same fp32 outputs."""
    import onnx
    import onnxruntime as ort

    from confkd.export.convert import ffn_down_projections
    from confkd.export.encoders import HFTextEncoder
    from confkd.export.smoothing import smooth_activations, smoothing_targets

    model = onnx.load(str(exported / "hf/model.onnx"))
    encoder = HFTextEncoder.from_dir(exported / "hf", 32)
    skip = ffn_down_projections(model)
    targets = smoothing_targets(model, skip)
    assert len(targets) == 4  # per layer: the Q/K/V input and the FFN-up input
    assert sum(len(nodes) for nodes in targets.values()) == 2 * 4
    assert smooth_activations(model, [encoder(TEXTS[:6])], skip=skip) == 4
    onnx.checker.check_model(model)
    assert sum(node.name.endswith("/smooth") for node in model.graph.node) == 4
    feeds = encoder(TEXTS)
    original = ort.InferenceSession(str(exported / "hf/model.onnx")).run(None, feeds)[0]
    smoothed = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    assert np.abs(smoothed - original).max() <= 1e-4
    manifest = json.loads((exported / "hf/export.json").read_text())
    assert manifest["quantization"]["smoothing"]["activations"] == 4
    assert json.loads((exported / "dan/export.json").read_text())["quantization"]["smoothing"] is None


def test_manifest_and_files(exported):
    hf = json.loads((exported / "hf/export.json").read_text())
    assert hf["kind"] == "hf" and hf["labels"] == LABELS and hf["max_length"] == 32
    assert hf["inputs"] == ["input_ids", "attention_mask"] and hf["output"] == "logits"
    assert hf["files"]["fp32"] == "model.onnx" and hf["files"]["int8"] == "model.int8.onnx"
    assert all((exported / "hf" / f).is_file() for f in hf["files"]["tokenizer"])
    dan = json.loads((exported / "dan/export.json").read_text())
    assert dan["kind"] == "dan" and dan["inputs"] == ["ngram_ids", "ngram_mask"]
    assert json.loads((exported / "dan/featurizer.json").read_text())["format"] == "confkd-ngram-featurizer"
    assert not (exported / "dan/model.safetensors").exists()  # the export runs without PyTorch weights


# -- inference API and CLI --------------------------------------------------------------------------


def test_load_predictor_on_exported_folder(exported, dan_dir):
    from confkd.export.predictor import OnnxPredictor
    from confkd.inference import load_predictor

    for name in ("hf", "dan"):
        predictor = load_predictor(exported / name, num_threads=1)
        assert isinstance(predictor, OnnxPredictor) and predictor.precision == "int8"  # auto: int8 when exported
        assert predictor.session.get_session_options().intra_op_num_threads == 1
        probs = predictor.predict_proba(["a great and moving film", "a dull and tedious mess", ""])
        assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert set(predictor.predict(["a great film", "awful"])) <= set(LABELS)
    fp32 = load_predictor(exported / "dan", precision="fp32")
    assert fp32.precision == "fp32"
    expected = load_predictor(dan_dir).predict_proba(TEXTS)
    assert np.abs(fp32.predict_proba(TEXTS) - expected).max() < 1e-5


def test_cli_predict_on_exported_folder(exported, capsys):
    from confkd.cli import main

    assert main(["predict", "--model", str(exported / "hf"), "--precision", "fp32", "--threads", "1",
                 "a great film", "a dull film"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a great film", "a dull film"]
    assert all(line["label"] in LABELS and sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4)
               for line in lines)
    assert main(["predict", "--model", str(exported / "nothing-here"), "text"]) == 1


# -- bad input --------------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(exported, hf_dir, dan_dir, tmp_path):
    from confkd.inference import load_predictor

    predictors = [load_predictor(exported / "hf"), load_predictor(exported / "dan"), load_predictor(hf_dir),
                  load_predictor(dan_dir)]
    for predictor in predictors:
        with pytest.raises(DataError, match="empty"):
            predictor.predict_proba([])
        with pytest.raises(DataError, match="must be strings"):
            predictor.predict_proba(["ok", None])
        with pytest.raises(DataError, match="not a single string"):
            predictor.predict_proba("a great film")
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_predictor(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(exported / "dan", broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelNotFound, match=r"model\.onnx.*could not be loaded"):
        load_predictor(broken, precision="fp32")
    (broken / "model.int8.onnx").unlink()
    with pytest.raises(ModelNotFound, match=r"model\.int8\.onnx.*does not exist"):
        load_predictor(broken, precision="int8")
    (broken / "featurizer.json").unlink()
    with pytest.raises(ModelNotFound, match="featurizer"):
        load_predictor(broken)
    with pytest.raises(Exception, match="precision"):
        load_predictor(exported / "dan", precision="fp16")


# -- the stage --------------------------------------------------------------------------------------


@pytest.fixture
def stage_root(tmp_path, monkeypatch, hf_dir, dan_dir):
    """A scratch repository: prepared data, a 'teacher' (the tiny BERT) and a DAN student 'dan'."""
    from confkd.io import write_jsonl

    prepared = tmp_path / "data/prepared"
    prepared.mkdir(parents=True)
    (prepared / "labels.json").write_text(json.dumps({"labels": LABELS}))
    texts = POSITIVE + NEGATIVE
    labels = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    for split in ("train", "dev", "test", "transfer"):
        write_jsonl(prepared / f"{split}.jsonl", make_frame(texts, labels, split))
    shutil.copytree(hf_dir, tmp_path / "models/teacher")
    shutil.copytree(dan_dir, tmp_path / "models/distill/dan")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stage_params(tiny_model_dir, **export):
    configs = {"dan": {"method": "sparse_dan", "student": {"kind": "dan", "max_features": 300, "embed_dim": 8}}}
    return tiny_params(tiny_model_dir, configs, export={
        "models": ["teacher", "dan"], "max_length": 32,
        "latency": {"batch_sizes": [1, 4], "warmup": 1, "repeats": 3, "num_threads": 1}, **export})


def test_export_stage_end_to_end(stage_root, tiny_model_dir):
    from confkd.pipeline import run_export

    run_export(stage_params(tiny_model_dir))
    metrics = json.loads((stage_root / "metrics/export.json").read_text())
    for model in ("teacher", "dan"):
        assert (stage_root / f"models/export/{model}/model.onnx").is_file()
        assert (stage_root / f"models/export/{model}/model.int8.onnx").is_file()
        assert metrics[f"{model}.passed"] == 1
        assert metrics[f"{model}.onnx_fp32.max_abs_diff"] <= 1e-4
        assert 0.99 <= metrics[f"{model}.onnx_int8.agreement"] <= 1
        assert metrics[f"{model}.torch.accuracy"] == metrics[f"{model}.onnx_fp32.accuracy"]
        for backend in ("torch", "onnx_fp32", "onnx_int8"):
            assert metrics[f"{model}.{backend}.size_mb"] > 0
            assert 0 <= metrics[f"{model}.{backend}.accuracy"] <= 1
        for b in (1, 4):
            assert metrics[f"{model}.speedup_vs_best_teacher_b{b}"] > 0
            assert metrics[f"{model}.speedup_vs_best_teacher_b{b}_spread"] >= 0
            assert metrics[f"{model}.speedup_vs_torch_teacher_b{b}"] >= metrics[f"{model}.speedup_vs_best_teacher_b{b}"]
        assert metrics[f"{model}.samples_per_second_b4"] > 0 and metrics[f"{model}.peak_rss_mb"] > 10
    assert metrics["teacher.speedup_vs_best_teacher_b4"] == 1.0 and metrics["teacher.speedup_vs_best_teacher_b4_spread"] == 0
    # the DAN's numpy runtime is held to the same parity as the fp32 graph
    assert metrics["dan.numpy_fp32.max_abs_diff"] <= 1e-4
    assert metrics["dan.numpy_fp32.accuracy"] == metrics["dan.torch.accuracy"]
    assert "teacher.numpy_fp32.accuracy" not in metrics
    # no absolute time enters the metrics a pull request compares; the plot file has them
    assert not [k for k in metrics if "_ms" in k or k.endswith("p50") or "p95" in k]
    rows = json.loads((stage_root / "plots/export/latency.json").read_text())
    timed = {(r["model"], r["backend"], r["batch_size"]) for r in rows}
    assert ("dan", "numpy_fp32", 4) in timed and ("teacher", "onnx_int8", 1) in timed and len(timed) == 2 * 7
    assert all(r["median_ms"] > 0 for r in rows)
    assert sum(r["fastest"] for r in rows if r["model"] == "dan" and r["batch_size"] == 4) == 1
    assert metrics["parity_examples"] == 16 and metrics["num_threads"] == 1
    report = (stage_root / "reports/export.md").read_text()
    for model, backend in (("dan", "ONNX int8"), ("dan", "numpy fp32"), ("teacher", "PyTorch fp32")):
        assert re.search(rf"\| {model} \| (\*\*)?{backend}(\*\*)? \|", report), (model, backend)
    assert re.search(r"\| dan \| [\d.]+x \(spread \d+%\) \|", report) and "## Parity" in report
    # the peak RSS cell names the runtime and the kernel that served in the fresh process
    assert re.search(r"\| dan \| .* \d+ MiB \((ONNX (int8|fp32), CPUExecutionProvider|numpy fp32, (numba|numpy))\) \|", report)
    # a repeat of the speed run on the same exports (the benchmarks' stability passes): every backend again
    from confkd.export.stage import retime_exports

    again = retime_exports(stage_params(tiny_model_dir))
    assert {(r["model"], r["backend"], r["batch_size"]) for r in rows} == {
        (m, b, size) for size, timed_backends in again.seconds.items() for (m, b) in timed_backends}
    assert all(len(v) == 3 for per in again.seconds.values() for v in per.values())  # `repeats` rounds each


def test_failed_check_writes_metrics_then_fails_and_keeps_previous_export(stage_root, tiny_model_dir, monkeypatch):
    from confkd.export import stage
    from confkd.export.parity import ExportCheckFailed

    previous = stage_root / "models/export/dan"
    previous.mkdir(parents=True)
    (previous / "marker").write_text("previous export")
    real = stage.onnx_logits

    def off_by_a_bit(folder, precision, texts, num_threads):  # an fp32 graph that drifts from PyTorch
        logits = real(folder, precision, texts, num_threads)
        return logits + 1e-3 if precision == "fp32" and "dan" in folder.name else logits

    monkeypatch.setattr(stage, "onnx_logits", off_by_a_bit)
    with pytest.raises(ExportCheckFailed, match=r"dan: ONNX fp32 max \|logit - PyTorch logit\| = 0\.001 > export\.max_abs_diff = 0\.0001"):
        stage.export_models(stage_params(tiny_model_dir))
    assert (previous / "marker").read_text() == "previous export" and not (previous / "model.onnx").exists()
    metrics = json.loads((stage_root / "metrics/export.json").read_text())
    assert metrics["dan.passed"] == 0 and metrics["teacher.passed"] == 1
    assert metrics["dan.onnx_fp32.max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert "dan.peak_rss_mb" not in metrics  # only PyTorch was timed: nothing exported to serve
    assert metrics["dan.speedup_vs_best_teacher_b1"] > 0
    rows = json.loads((stage_root / "plots/export/latency.json").read_text())
    assert {r["backend"] for r in rows if r["model"] == "dan"} == {"torch"}
    assert "**failed**" in (stage_root / "reports/export.md").read_text()


def test_missing_source_names_path_and_stage(stage_root, tiny_model_dir):
    from confkd.export.stage import export_models

    shutil.rmtree(stage_root / "models/distill/dan")
    with pytest.raises(ModelNotFound, match=r"models/distill/dan.*distill@dan"):
        export_models(stage_params(tiny_model_dir))
    assert not (stage_root / "metrics/export.json").exists()


def test_teacher_not_exported_is_still_the_baseline(stage_root, tiny_model_dir):
    from confkd.export.stage import export_models

    metrics = export_models(stage_params(tiny_model_dir, models=["dan"], quantize=False))
    assert not (stage_root / "models/export/teacher").exists()
    assert "teacher.passed" not in metrics and metrics["teacher.speedup_vs_best_teacher_b1"] == 1.0
    assert "teacher.speedup_vs_torch_teacher_b1" in metrics  # the fastest teacher is its PyTorch model here
    assert metrics["dan.speedup_vs_best_teacher_b1"] == metrics["dan.speedup_vs_torch_teacher_b1"] > 0
    rows = json.loads((stage_root / "plots/export/latency.json").read_text())
    assert {r["backend"] for r in rows if r["model"] == "dan"} == {"torch", "onnx_fp32", "numpy_fp32"}
    assert not (stage_root / "models/export/dan/model.int8.onnx").exists()


def test_numpy_runtime_that_drifts_fails_the_export(stage_root, tiny_model_dir, monkeypatch):
    """The DAN's numpy runtime is a deployable path, so it is gated like the fp32 graph."""
    from confkd.export import dan_runtime, stage
    from confkd.export.parity import ExportCheckFailed

    class Drifting(dan_runtime.NumpyDANPredictor):
        def predict_logits(self, texts):
            return super().predict_logits(texts) + 2e-3

    monkeypatch.setattr(dan_runtime, "NumpyDANPredictor", Drifting)
    with pytest.raises(ExportCheckFailed, match=r"dan: numpy fp32 runtime max \|logit - PyTorch logit\| = 0\.002"):
        stage.export_models(stage_params(tiny_model_dir))
    metrics = json.loads((stage_root / "metrics/export.json").read_text())
    assert metrics["dan.passed"] == 0 and not (stage_root / "models/export/dan").exists()
