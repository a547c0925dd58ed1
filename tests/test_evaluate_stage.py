"""The evaluate and report stages on a tiny teacher and students (saved logits only)."""

import json

import numpy as np
import pytest

from confkd.distill.trainer import distill
from confkd.errors import DataError
from confkd.evaluation.confidence import resolve_spec, sigma_from_logits
from confkd.evaluation.stage import evaluate_model
from confkd.training.teacher import load_logits
from confkd.evaluation.summary import build_summary, write_summary
from confkd.layout import Layout

from .conftest import distill_paths, tiny_params


@pytest.fixture(scope="module")
def evaluated(trained_teacher, tiny_model_dir):
    configs = {"kd": {"method": "kd_logits", "temperature": 2.0},
               "dan": {"method": "sparse_dan", "student": {"kind": "dan", "max_features": 300, "embed_dim": 8,
                                                           "hidden_dims": [8]}, "finetune_steps": 8}}
    params = tiny_params(tiny_model_dir, configs, evaluate={"n_resamples": 200})
    for name in configs:
        distill(params, name, distill_paths(trained_teacher, name))
    return params, trained_teacher


def test_evaluate_writes_metrics_predictions_and_plots(evaluated, monkeypatch):
    params, root = evaluated
    monkeypatch.chdir(root)
    result = evaluate_model(params, "kd", Layout(root))
    saved = json.loads((root / "metrics/eval/kd.json").read_text())
    assert set(saved) == {"test", "dev", "train", "confidence", "kappa_policy", "flags", "task", "data_fingerprint"}
    assert saved["kappa_policy"] == "reference"
    assert saved["task"] == "toy" and saved["data_fingerprint"] == json.loads(
        (root / "data/prepared/labels.json").read_text())["data_fingerprint"]
    assert set(saved["flags"]) == {"near_baseline_test", "near_baseline_dev", "near_baseline_train", "dev_test_shift"}
    test = saved["test"]
    for key in ("accuracy", "macro_f1", "agreement", "ece", "ece_adaptive", "mce", "brier", "nll", "kl_to_teacher",
                "js_to_teacher", "conf_pearson", "mean_abs_conf_gap", "max_abs_conf_gap", "sigma", "kappa", "phi_cnf",
                "pinsker_bound", "sigma_n", "aurc", "accuracy_ci_low", "accuracy_ci_high", "ts_ece", "temperature"):
        assert key in test, key
    assert test["accuracy_ci_low"] <= test["accuracy"] <= test["accuracy_ci_high"]
    distilled = json.loads((root / "metrics/distill/kd.json").read_text())
    # kappa policy 'reference': sigma of the reference teacher against the teacher, same split and definition
    ids = [json.loads(line)["id"] for line in (root / "data/prepared/test.jsonl").read_text().splitlines()]
    labels = [json.loads(line)["label"] for line in (root / "data/prepared/test.jsonl").read_text().splitlines()]
    teacher = load_logits(root / "artifacts/teacher/logits/test.npz", ids)
    reference = load_logits(root / "artifacts/teacher_reference/logits/test.npz", ids)
    spec = resolve_spec(params.evaluate.confidence)
    assert test["kappa"] == pytest.approx(sigma_from_logits(teacher, reference, labels, spec))
    assert test["phi_cnf"] == float(test["sigma"] <= test["kappa"])
    # one sigma: the distill stage's dev_sigma (model selection, tune objective) is the evaluate stage's
    assert saved["dev"]["sigma"] == pytest.approx(distilled["dev_sigma"], abs=1e-12)
    assert test["sigma"] == pytest.approx(distilled["sigma"], abs=1e-12)
    # sigma(X^train) on the train sample the distill stage saved
    assert saved["train"]["n_examples"] == distilled["train_sample_size"]
    assert saved["train"]["sigma"] >= 0
    assert test["accuracy"] == pytest.approx(distilled["accuracy"])  # same logits as the distill stage scored
    preds = (root / "predictions/kd/test.csv").read_text().splitlines()
    assert preds[0].startswith("id,label,teacher_pred,student_pred,teacher_conf,student_conf,conf_gap")
    assert len(preds) == 1 + 4
    for plot in ("reliability_test.csv", "confidence_test.csv", "risk_coverage_test.csv"):
        assert (root / "plots/eval/kd" / plot).exists()
    for fig in ("reliability_test.png", "confidence_test.png", "risk_coverage_test.png"):
        assert (root / "reports/figures/kd" / fig).read_bytes()[:4] == b"\x89PNG"


def test_teacher_against_itself_and_summary(evaluated, monkeypatch):
    params, root = evaluated
    monkeypatch.chdir(root)
    for model in ("teacher", "kd", "dan"):
        evaluate_model(params, model, Layout(root))
    teacher = json.loads((root / "metrics/eval/teacher.json").read_text())["test"]
    assert teacher["agreement"] == 1.0 and teacher["sigma"] == 0.0 and teacher["phi_cnf"] == 1.0
    flat, md, _ = build_summary(params)
    assert flat["teacher.retention"] == 1.0
    assert "| dan |" in md and "| kd |" in md and "| teacher |" in md
    assert flat["dan.active_parameters"] < flat["dan.parameters"]
    assert not [k for k in flat if "_ms" in k or "p50" in k]  # no absolute time in compared metrics
    write_summary(params)
    assert json.loads((root / "metrics/summary.json").read_text()) == flat


def test_missing_student_predictions_are_a_clear_error(evaluated, monkeypatch, tiny_model_dir):
    params, root = evaluated
    monkeypatch.chdir(root)
    more = tiny_params(tiny_model_dir, {"never_ran": {"method": "kd_logits"}})
    with pytest.raises(DataError, match="model 'never_ran' has no .* logits.*dvc repro distill@never_ran"):
        evaluate_model(more, "never_ran", Layout(root))
    with pytest.raises(DataError, match="neither 'teacher'.* nor a configuration"):
        evaluate_model(params, "nope", Layout(root))
    assert not (root / "metrics/eval/never_ran.json").exists()


def test_missing_reference_teacher_names_the_stage_to_run(evaluated, monkeypatch):
    params, root = evaluated
    monkeypatch.chdir(root)
    ref = root / "artifacts/teacher_reference"
    ref.rename(root / "artifacts/moved_reference")
    try:
        with pytest.raises(DataError, match=r"teacher_reference.*run `dvc repro teacher_reference`"):
            evaluate_model(params, "kd", Layout(root))
    finally:
        (root / "artifacts/moved_reference").rename(ref)
    # the other policies do not need it
    fixed = params.model_copy(deep=True)
    fixed.evaluate.kappa = type(params.evaluate.kappa)(policy="fixed", value=0.05)
    ref.rename(root / "artifacts/moved_reference")
    try:
        result = evaluate_model(fixed, "kd", Layout(root))
    finally:
        (root / "artifacts/moved_reference").rename(ref)
    assert result["test"]["kappa"] == 0.05 and result["dev"]["kappa"] == 0.05


def test_reference_teacher_row_is_kappa(evaluated, monkeypatch):
    params, root = evaluated
    monkeypatch.chdir(root)
    result = evaluate_model(params, "teacher_reference", Layout(root))
    for split in ("test", "dev", "train"):
        assert result[split]["sigma"] == pytest.approx(result[split]["kappa"])  # its own sigma is the yardstick


def test_corrupted_student_logits_are_rejected(evaluated, monkeypatch, tmp_path):
    params, root = evaluated
    monkeypatch.chdir(root)
    path = root / "artifacts/distill/kd/test.npz"
    original = path.read_bytes()
    try:
        with np.load(path) as d:
            ids, logits = d["ids"], d["logits"].copy()
        logits[0, 0] = np.nan
        with open(path, "wb") as fh:
            np.savez(fh, ids=ids, logits=logits)
        before = (root / "metrics/eval/kd.json").read_text()
        with pytest.raises(DataError, match="(?i)nan|finite"):
            evaluate_model(params, "kd", Layout(root))
        assert (root / "metrics/eval/kd.json").read_text() == before  # the earlier result is kept
    finally:
        path.write_bytes(original)


def test_extra_eval_set_runs_the_saved_models(evaluated, monkeypatch, tmp_path, tiny_model_dir):
    params, root = evaluated
    monkeypatch.chdir(root)
    extra = tmp_path / "extra.tsv"
    extra.write_text("text\tlabel\nwhat a great film\t1\nboring and dull\t0\nloved it\tpositive\n")
    more = tiny_params(tiny_model_dir, params.distill.configs,
                       evaluate={"n_resamples": 50, "extra_sets": {"reviews": {"path": str(extra)}}})
    result = evaluate_model(more, "dan", Layout(root))
    assert result["reviews"]["n_examples"] == 3
    saved = json.loads((root / "metrics/eval/dan.json").read_text())
    assert set(saved) == {"test", "dev", "train", "reviews", "confidence", "kappa_policy", "flags", "task",
                          "data_fingerprint"}
    assert 0.0 <= saved["reviews"]["accuracy"] <= 1.0
    assert len((root / "predictions/dan/reviews.csv").read_text().splitlines()) == 4


def test_inference_api_on_raw_text(evaluated):
    from confkd.errors import ModelNotFound
    from confkd.inference import load_predictor

    _, root = evaluated
    for path in (root / "models/teacher", root / "models/distill/dan", root / "models/distill/kd"):
        predictor = load_predictor(path)
        probs = predictor.predict_proba(["a great film", "a dull film", ""])
        assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert predictor.predict(["a great film"])[0] in ("negative", "positive")
        with pytest.raises(DataError, match="not a single string"):
            predictor.predict_proba("a great film")
        with pytest.raises(DataError, match="must be strings"):
            predictor.predict_proba(["ok", 3])
    with pytest.raises(ModelNotFound, match="config.json missing"):
        load_predictor(root / "models/nothing-here")


def test_predict_cli(evaluated, capsys, tmp_path):
    from confkd.cli import main

    _, root = evaluated
    assert main(["predict", "--model", str(root / "models/distill/dan"), "a great film", "a dull film"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a great film", "a dull film"]
    assert abs(sum(lines[0]["probabilities"].values()) - 1) < 1e-4
    assert main(["predict", "--model", str(tmp_path / "missing")]) == 1
    assert main(["predict", "--model", str(root / "models/teacher")]) == 1  # no texts


def test_summary_quotes_the_export_stages_ratios_and_no_milliseconds(tmp_path):
    """One figure, one source: the summary copies metrics/export.json's interleaved ratios as they are."""
    import json

    from confkd.evaluation.summary import _add_latency, accuracy_latency_rows, plot_accuracy_latency

    path = tmp_path / "export.json"
    path.write_text(json.dumps({"teacher.speedup_vs_best_teacher_b32": 1.0, "teacher.speedup_vs_torch_teacher_b32": 3.8,
                                "dan.speedup_vs_best_teacher_b32": 150.0, "dan.speedup_vs_best_teacher_b32_spread": 0.08,
                                "dan.speedup_vs_torch_teacher_b32": 570.0, "dan.onnx_fp32.accuracy": 0.8}))
    rows = {"teacher": {"sigma": 0.0}, "dan": {"sigma": 0.12}, "other": {}}
    _add_latency(rows, path)
    assert rows["dan"] == {"sigma": 0.12, "speedup_vs_best_teacher_b32": 150.0,
                           "speedup_vs_best_teacher_b32_spread": 0.08, "speedup_vs_torch_teacher_b32": 570.0}
    assert rows["teacher"]["speedup_vs_torch_teacher_b32"] == 3.8 and rows["other"] == {}
    latency = [{"model": "teacher", "backend": "onnx_int8", "batch_size": 32, "median_ms": 80.0, "accuracy": 0.88,
                "fastest": True},
               {"model": "dan", "backend": "numpy_fp32", "batch_size": 32, "median_ms": 0.5, "accuracy": 0.82,
                "fastest": True},
               {"model": "dan", "backend": "numpy_fp32", "batch_size": 1, "median_ms": 0.1, "accuracy": 0.82,
                "fastest": True}]
    points = accuracy_latency_rows(rows, latency)
    assert [(p["point"], p["latency_ms"], p["batch_size"], p["sigma"]) for p in points] == [
        ("teacher (ONNX int8)", 80.0, 32, 0.0), ("dan (numpy fp32)", 0.5, 32, 0.12)]
    assert [p["batch_size"] for p in accuracy_latency_rows(rows, latency[2:])] == [1]  # 32 not timed: the largest
    assert plot_accuracy_latency(points, tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_accuracy_latency([], tmp_path / "none.png").read_bytes()[:4] == b"\x89PNG"  # says nothing was timed


def test_reference_teacher_keeps_logits_for_the_examples_kappa_is_measured_on(trained_teacher, tiny_model_dir,
                                                                              tmp_path, monkeypatch):
    """The reference stage saves dev, test and the evaluate stage's train sample (drawn with the pipeline's seed, not
    the reference's), and no transfer set; kappa from it equals kappa from a reference with every logit saved."""
    import shutil

    from confkd.data.splitting import sample_index
    from confkd.pipeline import run_teacher_reference

    root = tmp_path / "root"
    shutil.copytree(trained_teacher, root)
    params = tiny_params(tiny_model_dir, {}, evaluate={"train_sample": 20, "n_resamples": 50})
    monkeypatch.chdir(root)
    run_teacher_reference(params)
    saved = root / "artifacts/teacher_reference/logits"
    assert sorted(p.name for p in saved.iterdir()) == ["dev.npz", "test.npz", "train.npz"]
    train = [json.loads(line)["id"] for line in (root / "data/prepared/train.jsonl").read_text().splitlines()]
    sample = [train[i] for i in sample_index(len(train), 20, params.seed)]
    with np.load(saved / "train.npz") as data:
        assert [str(i) for i in data["ids"]] == sample
    sampled = evaluate_model(params, "teacher_reference", Layout(root))
    shutil.copytree(trained_teacher, tmp_path / "full")  # the fixture's reference: every logit saved
    monkeypatch.chdir(tmp_path / "full")
    full = evaluate_model(params, "teacher_reference", Layout(tmp_path / "full"))
    for split in ("test", "dev", "train"):
        assert sampled[split]["kappa"] == pytest.approx(full[split]["kappa"], abs=1e-6)
        assert sampled[split]["n_examples"] == full[split]["n_examples"]
