"""The student-kind registry: lookups per concern (loading, training, export), recognising saved models, unknown
kinds caught at parse time, and a new kind found by the loader without touching it."""

from __future__ import annotations

import json

import pytest

from confkd import student_kinds
from confkd.config import parse_params
from confkd.distill.kinds import trainer_of
from confkd.export.kinds import server_of, server_of_saved
from confkd.errors import ParamsError
from confkd.inference import load_predictor


def test_lookups_by_name_and_export_kind():
    assert student_kinds.get("transformer").export_kind == "hf"
    assert student_kinds.get("dan").export_kind == "dan"
    assert student_kinds.by_export_kind("hf") is student_kinds.get("transformer")
    assert server_of("dan").runtimes(quantize=True) == ["onnx_fp32", "onnx_int8", "numpy_fp32"]
    assert server_of("hf").runtimes(quantize=False) == ["onnx_fp32"]
    assert not trainer_of("dan").mixed_precision and not trainer_of("dan").data_parallel
    assert trainer_of("transformer").mixed_precision
    with pytest.raises(ParamsError, match="unknown student kind 'lstm'.*transformer"):
        student_kinds.get("lstm")
    with pytest.raises(ParamsError, match="unknown export kind"):
        student_kinds.by_export_kind("tflite")
    with pytest.raises(ParamsError, match="has no trainer"):
        trainer_of("lstm")
    with pytest.raises(ParamsError, match="student.kind: unknown kind 'lstm'"):  # caught when params are parsed
        parse_params({"distill": {"configs": {"x": {"method": "custom", "student": {"kind": "lstm"},
                                                     "phases": [{"name": "p", "hard_weight": 1.0}]}}}})


def test_saved_models_are_recognised_by_their_own_files(tmp_path, tiny_model_dir):
    from confkd.models.dan import MODEL_FORMAT

    assert server_of_saved(tiny_model_dir)[0].name == "transformer"
    dan = tmp_path / "dan"
    dan.mkdir()
    (dan / "config.json").write_text(json.dumps({"format": MODEL_FORMAT}))
    assert server_of_saved(dan)[0].name == "dan"
    (dan / "config.json").write_text("{not json")
    assert server_of_saved(dan)[0].name == "transformer"  # and the HF loader then names the corrupt file


def test_a_new_kind_is_found_by_the_loader(tmp_path, monkeypatch):
    from confkd.export import kinds

    class EchoServer(kinds.KindServer):
        def is_saved(self, path):
            return (path / "echo.txt").is_file()

        def load_predictor(self, path, device, max_length):
            return ("echo predictor", path)

    monkeypatch.setattr(student_kinds, "KINDS", dict(student_kinds.KINDS))
    student_kinds.register(student_kinds.StudentKind("echo", "echo"))
    monkeypatch.setattr(kinds, "SERVERS", {"echo": EchoServer(), **kinds.SERVERS})
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "echo.txt").write_text("hi")
    assert load_predictor(folder) == ("echo predictor", folder)
    assert parse_params({"distill": {"configs": {"x": {"method": "custom", "student": {"kind": "echo"},
                                                        "phases": [{"name": "p", "hard_weight": 1.0}]}}}})
    with pytest.raises(ValueError, match="name and an export_kind"):
        student_kinds.register(student_kinds.StudentKind("", ""))
