"""``dvc repro`` of prepare -> validate -> teacher in a temporary copy of the repository (tiny config)."""

import json
import sys
import time

import pytest
import yaml

from .conftest import copy_repo_tiny, run_checked

pytestmark = pytest.mark.integration


def _dvc(args, cwd, check=True):
    return run_checked([sys.executable, "-m", "dvc", *args], cwd, check)


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory, tiny_model_dir):
    root = copy_repo_tiny(tmp_path_factory.mktemp("repo"), tiny_model_dir)
    _dvc(["init", "--no-scm", "-q"], root)
    _dvc(["config", "core.analytics", "false"], root)
    return root


def test_dvc_repro_runs_the_three_stages_then_nothing(repo_copy):
    _dvc(["repro", "teacher"], repo_copy)
    metrics = json.loads((repo_copy / "metrics" / "teacher.json").read_text())
    assert {"accuracy", "macro_f1", "nll", "ece", "train_seconds"} <= set(metrics)
    assert (repo_copy / "models" / "teacher" / "config.json").exists()
    assert sorted(p.name for p in (repo_copy / "artifacts" / "teacher" / "logits").iterdir()) == [
        "dev.npz", "test.npz", "train.npz", "transfer.npz"]
    validation = json.loads((repo_copy / "reports" / "validation.json").read_text())
    assert validation["success"] and validation["critical_failures"] == 0
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "validate", "teacher"}

    t0 = time.perf_counter()
    proc = _dvc(["repro", "teacher"], repo_copy)
    assert "didn't change, skipping" in proc.stdout
    assert "Running stage" not in proc.stdout
    assert time.perf_counter() - t0 < 30


def test_a_changed_schema_default_makes_dvc_status_name_the_stages(repo_copy):
    """Every stage depends on the code it imports (tests/test_dvc_deps.py): a default changed in the schema
    is a changed dependency of every stage that ran, not a silent "up to date"."""
    _dvc(["repro", "teacher"], repo_copy)  # a no-op after the test above; needed when run alone (or on another worker)
    schema = repo_copy / "confkd" / "config.py"
    original = schema.read_text()
    assert "dev_fraction: float = Field(0.1," in original
    schema.write_text(original.replace("dev_fraction: float = Field(0.1,", "dev_fraction: float = Field(0.15,"))
    try:
        status = _dvc(["status", "--json"], repo_copy).stdout
    finally:
        schema.write_text(original)
    changed = json.loads(status)
    assert {"prepare", "validate", "teacher"} <= set(changed)
    assert all("confkd/config.py" in json.dumps(changed[s]) for s in ("prepare", "validate", "teacher"))
    assert json.loads(_dvc(["status", "--json"], repo_copy).stdout).keys().isdisjoint({"prepare", "validate", "teacher"})


def test_dvc_repro_of_one_distillation_matrix_entry(repo_copy):
    proc = _dvc(["repro", "distill@kd_logits"], repo_copy)
    assert "Running stage 'distill@kd_logits'" in proc.stdout
    assert "distill@tinybert" not in proc.stdout  # only the requested entry runs
    metrics = json.loads((repo_copy / "metrics" / "distill" / "kd_logits.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "sigma" in metrics and "agreement" in metrics
    assert (repo_copy / "models" / "distill" / "kd_logits" / "config.json").exists()
    shown = _dvc(["metrics", "show", "--json"], repo_copy).stdout
    assert "metrics/distill/kd_logits.json" in shown


def test_critical_validation_failure_stops_the_pipeline(repo_copy):
    _dvc(["repro", "teacher"], repo_copy)  # the earlier result that must survive (a no-op after the tests above)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["validate"]["class_balance"]["min_fraction"] = 0.7  # impossible for a two-class task
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = (repo_copy / "metrics" / "teacher.json").read_text()
    proc = _dvc(["repro", "teacher"], repo_copy, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "data validation failed" in out and "expect_column_mean_to_be_between" in out
    assert "Running stage 'teacher'" not in out
    assert (repo_copy / "metrics" / "teacher.json").read_text() == before
