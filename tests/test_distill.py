"""Distillation runs on a tiny teacher: learning, determinism, students, DAN, and bad configurations."""

import json

import numpy as np
import pytest
import torch
import yaml

from confkd.config import parse_params
from confkd.distill.losses import kl
from confkd.distill.methods import expand_phases
from confkd.distill.students import build_transformer_student, num_layers
from confkd.distill.trainer import distill
from confkd.errors import ParamsError
from confkd.training.teacher import load_logits

from .conftest import REPO_ROOT
from .conftest import distill_paths as _paths
from .conftest import tiny_params as _params


def test_kd_reduces_the_distillation_loss_of_a_random_student(trained_teacher, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    student_cfg = {"init": "random", "num_layers": 1, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32}
    params = _params(tiny_model_dir, {"kd": {"method": "kd_logits", "temperature": 2.0, "student": student_cfg}})
    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher / "models/teacher")
    tokenizer = AutoTokenizer.from_pretrained(trained_teacher / "models/teacher")
    torch.manual_seed(params.seed)
    initial = build_transformer_student(teacher, params.distill.resolve("kd").student)
    metrics = distill(params, "kd", _paths(trained_teacher, "kd", tmp_path))
    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "models/distill/kd")
    transfer = [json.loads(line)["text"] for line in (trained_teacher / "data/prepared/transfer.jsonl").read_text().splitlines()]
    t_logits = torch.as_tensor(load_logits(trained_teacher / "artifacts/teacher/logits/transfer.npz"))
    enc = tokenizer(transfer, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = kl(initial.eval()(**enc).logits, t_logits, 2.0).item()
        after = kl(trained.eval()(**enc).logits, t_logits, 2.0).item()
    assert after < 0.5 * before
    assert trained.config.num_hidden_layers == 1 and trained.config.hidden_size == 16
    for key in ("accuracy", "agreement", "sigma", "retention", "teacher_accuracy", "train_seconds", "parameters"):
        assert key in metrics
    saved = json.loads((tmp_path / "metrics/distill/kd.json").read_text())
    assert saved.pop("task") == "toy" and saved.pop("data_fingerprint")  # provenance of the data it was trained on
    assert saved == pytest.approx(metrics, nan_ok=True)
    assert load_logits(tmp_path / "artifacts/distill/kd/test.npz").shape == (4, 2)


def test_seeded_run_is_reproducible(trained_teacher, tiny_model_dir, tmp_path):
    params = _params(tiny_model_dir, {"kd": {"method": "kd_logits", "temperature": 2.0, "alpha": 0.5}})
    a = distill(params, "kd", _paths(trained_teacher, "kd", tmp_path / "a"))
    b = distill(params, "kd", _paths(trained_teacher, "kd", tmp_path / "b"))
    drop = {"train_seconds", "train_samples_per_second"}
    assert {k: v for k, v in a.items() if k not in drop} == pytest.approx({k: v for k, v in b.items() if k not in drop})
    la = load_logits(tmp_path / "a/artifacts/distill/kd/test.npz")
    lb = load_logits(tmp_path / "b/artifacts/distill/kd/test.npz")
    assert np.array_equal(la, lb)


def test_weight_averaging_and_layerwise_decay_reach_distillation(trained_teacher, tiny_model_dir, tmp_path):
    """EMA and LLRD are the teacher's and every distillation phase's alike (one trainer): each changes the run,
    and kept checkpoints stay when asked."""
    base = {"method": "kd_logits", "temperature": 2.0}
    params = _params(tiny_model_dir, {"plain": base, "ema": {**base, "ema_decay": 0.5},
                                      "llrd": {**base, "layerwise_lr_decay": 0.5, "keep_checkpoints": True}})
    logits = {}
    for name in ("plain", "ema", "llrd"):
        distill(params, name, _paths(trained_teacher, name, tmp_path))
        logits[name] = load_logits(tmp_path / f"artifacts/distill/{name}/test.npz")
    assert not np.allclose(logits["plain"], logits["ema"]) and not np.allclose(logits["plain"], logits["llrd"])
    assert (tmp_path / "checkpoints/distill/llrd").is_dir() and not (tmp_path / "checkpoints/distill/plain").exists()


def test_tinybert_with_narrower_student_uses_projections_and_drops_them(trained_teacher, tiny_model_dir, tmp_path):
    student_cfg = {"init": "random", "num_layers": 2, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32}
    cfg = {"method": "tinybert", "general_distillation": True, "student": student_cfg,
           "intermediate": {"scheme": "uniform", "embedding": {"loss": "embedding_mse"},
                            "attention": {"loss": "attention_mse"}, "hidden": {"loss": "hidden_cosine"}}}
    params = _params(tiny_model_dir, {"tb": cfg})
    assert [p.name for p in expand_phases(params.distill.resolve("tb"), 2)] == ["general", "intermediate", "prediction"]
    metrics = distill(params, "tb", _paths(trained_teacher, "tb", tmp_path))
    assert metrics["phases"] == 3
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "models/distill/tb/model.safetensors")
    assert not any("projection" in k for k in weights)  # training-only projections are not saved
    history = (tmp_path / "plots/distill/tb/history.csv").read_text()
    assert "dev_loss" in history and "general" in history


def test_progressive_and_stacked_schedules():
    params = parse_params({"distill": {"configs": {
        "pid": {"method": "internal_pid"}, "sid": {"method": "internal_sid"}}}})
    pid = expand_phases(params.distill.resolve("pid"), 3)
    sid = expand_phases(params.distill.resolve("sid"), 3)
    assert [p.student_layers for p in pid] == [[1], [2], [3], None]
    assert [p.student_layers for p in sid] == [[1], [1, 2], [1, 2, 3], None]
    assert pid[-1].prediction_weight == 1.0 and pid[0].intermediate_weight == 1.0 and not pid[0].select


def test_student_from_teacher_layers_copies_weights(trained_teacher):
    from transformers import AutoModelForSequenceClassification

    from confkd.config import StudentParams

    teacher = AutoModelForSequenceClassification.from_pretrained(trained_teacher / "models/teacher")
    student = build_transformer_student(teacher, StudentParams(num_layers=1, init_scheme="last"))
    assert num_layers(student) == 1 and num_layers(teacher) == 2
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    student.bert.encoder.layer[0].output.dense.weight.data.zero_()
    assert teacher.bert.encoder.layer[1].output.dense.weight.abs().sum() > 0  # the teacher is untouched


def test_sparse_dan_kd_then_finetune_saves_a_raw_text_model(trained_teacher, tiny_model_dir, tmp_path):
    from confkd.models.dan import DANStudent

    dan = {"kind": "dan", "max_features": 500, "embed_dim": 8, "hidden_dims": [16]}
    params = _params(tiny_model_dir, {"dan": {"method": "sparse_dan", "student": dan, "prediction_loss": "mse_logits",
                                              "finetune_steps": 8, "learning_rate": 1e-2}})
    metrics = distill(params, "dan", _paths(trained_teacher, "dan", tmp_path))
    assert metrics["phases"] == 2 and metrics["active_parameters_per_example"] < metrics["parameters"]
    student = DANStudent.from_pretrained(tmp_path / "models/distill/dan")
    test = ["a great film", "a dull film", "i loved it", "i hated it"]
    np.testing.assert_allclose(student.predict_logits(test), load_logits(tmp_path / "artifacts/distill/dan/test.npz"), atol=1e-6)


@pytest.mark.parametrize("config, message", [
    ({"method": "tinybert", "intermediate": {"scheme": "custom", "custom": [5]}}, "5"),
    ({"method": "tinybert", "intermediate": {"matches": [
        {"teacher_layer": 9, "student_layer": 1, "feature": "hidden", "loss": "hidden_mse"}]}}, "teacher"),
    ({"method": "kd_logits", "student": {"num_layers": 3, "init_scheme": "first"}}, "3"),
])
def test_bad_configurations_fail_before_training(trained_teacher, tiny_model_dir, tmp_path, config, message):
    params = _params(tiny_model_dir, {"bad": config})
    with pytest.raises(ParamsError, match=message):
        distill(params, "bad", _paths(trained_teacher, "bad", tmp_path))
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("config, message", [
    ({"method": "kd_logits", "prediction_loss": "kl_div"}, "unknown loss 'kl_div'"),
    ({"method": "tinybert", "intermediate": {"attention": {"loss": "hidden_mse"}}}, "cannot be used for feature 'attention'"),
    ({"method": "sparse_dan"}, "needs student.kind 'dan'"),
    ({"method": "kd_logits", "temperature": 0}, "temperature"),
    # a narrow student's hidden features reach the teacher's width only through a projection
    ({"method": "tinybert", "student": {"init": "random", "num_layers": 2, "hidden_size": 16, "num_heads": 2},
      "intermediate": {"matches": [{"teacher_layer": 1, "student_layer": 1, "feature": "hidden",
                                    "loss": "hidden_mse", "projection": False}]}}, "needs projection: true"),
    ({"method": "sparse_dan", "student": {"kind": "dan"}, "layerwise_lr_decay": 0.9}, "applies to transformer"),
])
def test_bad_configurations_fail_at_parse_time(config, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"distill": {"configs": {"bad": config}}})


def test_repository_configurations_cover_every_kind_and_the_claims_configurations_parse():
    """The default run has a student of every family; the research configurations that ``confkd claims`` adds
    (ft_only aside, every other method among them) are valid configurations of this params.yaml."""
    from confkd.claims import EXTRA_CONFIGS, flatten

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    parsed = parse_params(params)
    methods = {parsed.distill.resolve(n).method for n in parsed.distill.configs}
    assert {"kd_logits", "tinybert", "internal_pid", "sparse_dan", "sparse_dan_no_kd"} <= methods
    for name, definition in EXTRA_CONFIGS.items():
        config: dict = {}
        for dotted, value in flatten(definition).items():  # dotted keys back to nested, as Hydra's ++ does
            *parents, leaf = dotted.split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        params["distill"]["configs"][name] = config
    parsed = parse_params(params)
    assert {parsed.distill.resolve(n).method for n in EXTRA_CONFIGS} == {"internal_sid", "kd_logits", "tinybert"}
    assert parsed.distill.resolve("tinybert_grid").intermediate.hidden.weight == 4.0


def test_interrupted_distillation_resumes_to_the_same_result(trained_teacher, tiny_model_dir, tmp_path, monkeypatch):
    """A crash in the second phase; the rerun skips the finished phase and ends with identical logits."""
    from confkd.distill import trainer

    cfg = {"tb": {"method": "tinybert", "intermediate": {"scheme": "uniform"}, "checkpoint_every_steps": 4}}
    params = _params(tiny_model_dir, cfg)
    reference = distill(params, "tb", _paths(trained_teacher, "tb", tmp_path / "ref"))

    original = trainer.PhaseLoss.__call__
    calls = {"n": 0}

    def crashing(self, model, data, idx):
        if self.phase.name == "prediction" and model.training:
            calls["n"] += 1
            if calls["n"] == 11:
                raise KeyboardInterrupt("simulated crash")
        return original(self, model, data, idx)

    monkeypatch.setattr(trainer.PhaseLoss, "__call__", crashing)
    with pytest.raises(KeyboardInterrupt):
        distill(params, "tb", _paths(trained_teacher, "tb", tmp_path / "run"))
    assert (tmp_path / "run/checkpoints/distill/tb/phase1/last.pt").exists()
    monkeypatch.setattr(trainer.PhaseLoss, "__call__", original)
    resumed = distill(params, "tb", _paths(trained_teacher, "tb", tmp_path / "run"))
    np.testing.assert_array_equal(load_logits(tmp_path / "ref/artifacts/distill/tb/test.npz"),
                                  load_logits(tmp_path / "run/artifacts/distill/tb/test.npz"))
    assert resumed["accuracy"] == reference["accuracy"] and resumed["steps"] == reference["steps"]
    assert not (tmp_path / "run/checkpoints/distill/tb").exists()  # removed after success
