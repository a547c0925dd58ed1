"""Confidence-guided tuning: search space, pruning, study outputs, the tuned configuration, resume after a kill."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from confkd.config import SearchDim, parse_params
from confkd.errors import ParamsError
from confkd.layout import Layout
from confkd.tuning.pruning import Reporter, make_pruner
from confkd.tuning.space import nest, suggest

from .conftest import REPO_ROOT, tiny_params

optuna.logging.set_verbosity(optuna.logging.WARNING)

TUNE = {
    "base": "kd",
    "storage": "sqlite:///tune/optuna.db",
    "n_trials": 3,
    "n_startup_trials": 2,
    "timeout_minutes": 10,
    "heartbeat_seconds": 1,
    "budget": {"max_steps": 4, "eval_every_steps": 2},
    "space": {"temperature": {"type": "float", "low": 1.0, "high": 4.0, "log": True},
              "alpha": {"type": "float", "low": 0.0, "high": 0.5},
              "selection_metric": {"type": "categorical", "choices": ["accuracy", "sigma"]}},
    "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
}


def _params(tiny_model_dir, **tune):
    return tiny_params(tiny_model_dir, {"kd": {"method": "kd_logits", "temperature": 2.0}}, tune={**TUNE, **tune})


def _workspace(tmp_path: Path, trained_teacher: Path) -> Path:
    """A repository-like folder whose inputs are the tiny teacher's (linked, not copied)."""
    for rel in ("data/prepared", "models/teacher", "artifacts/teacher/logits", "artifacts/teacher_reference/logits"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).symlink_to(trained_teacher / rel, target_is_directory=True)
    return tmp_path


def test_nest_builds_nested_overrides():
    assert nest({"a": 1, "intermediate.attention.weight": 2.0, "intermediate.scheme": "skip"}) == {
        "a": 1, "intermediate": {"attention": {"weight": 2.0}, "scheme": "skip"}}
    with pytest.raises(ValueError, match="conflicts"):
        nest({"a": 1, "a.b": 2})


def test_suggest_respects_types_and_bounds():
    space = {"t": SearchDim(type="float", low=1, high=8, log=True), "n": SearchDim(type="int", low=2, high=4),
             "c": SearchDim(type="categorical", choices=["kl", "mse_logits"])}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = suggest(study.ask(), space)
        assert 1 <= values["t"] <= 8 and values["n"] in (2, 3, 4) and values["c"] in ("kl", "mse_logits")
        assert isinstance(values["n"], int)


@pytest.mark.parametrize("tune, message", [
    ({"base": "nope"}, "tune.base: no distill configuration named 'nope'"),
    ({"metrics": ["dev_accuracy"]}, "at least two metrics"),
    ({"pruner": {"kind": "hyperband"}}, "works only with objective 'single'"),
    ({"space": {"t": {"type": "float", "low": 2, "high": 1}}}, "low <= high"),
    ({"space": {"t": {"type": "categorical"}}}, "non-empty 'choices'"),
    ({"sampler": "grid"}, "categorical dimensions only"),
])
def test_bad_tune_params_fail_at_parse_time(tiny_model_dir, tune, message):
    with pytest.raises(ParamsError, match=message):
        _params(tiny_model_dir, **tune)


def test_space_key_that_does_not_fit_the_configuration_fails_before_training(trained_teacher, tiny_model_dir, tmp_path):
    from confkd.tuning.study import run_study

    params = _params(tiny_model_dir, space={"temprature": {"type": "float", "low": 1, "high": 2}})
    with pytest.raises(ParamsError, match="tune.space.temprature"):
        run_study(params, Layout(_workspace(tmp_path, trained_teacher)))
    with pytest.raises(ParamsError, match="already a distill configuration"):
        run_study(_params(tiny_model_dir, name="kd"), Layout(tmp_path))
    assert not (tmp_path / "metrics" / "tune.json").exists()


def _crafted_study(multi: bool, pruner_kind="median"):
    """Four finished trials whose guide metric climbs to 0.8; returns (study, pruner)."""
    p = parse_params({"tune": {"pruner": {"kind": pruner_kind, "n_startup_trials": 2, "n_warmup_steps": 0},
                               **({} if multi else {"objective": "single"})}}).tune.pruner
    pruner = make_pruner(p)
    study = optuna.create_study(directions=["maximize", "minimize"] if multi else ["maximize"],
                                pruner=None if multi else pruner)
    for _ in range(4):
        trial = study.ask()
        rep = Reporter(trial, pruner, "dev_accuracy", multi)
        for step, acc in ((10, 0.6), (20, 0.7), (30, 0.8)):
            rep(step, {"dev_accuracy": acc})
        study.tell(trial, (0.8, 0.1) if multi else 0.8)
    return study, pruner


@pytest.mark.parametrize("multi", [True, False])
def test_pruner_stops_a_trial_below_the_median_and_spares_a_good_one(multi):
    study, pruner = _crafted_study(multi)
    good = study.ask()
    rep = Reporter(good, pruner, "dev_accuracy", multi)
    rep(10, {"dev_accuracy": 0.65})
    rep(20, {"dev_accuracy": 0.75})  # above the median of the finished trials: continues
    bad = study.ask()
    rep = Reporter(bad, pruner, "dev_accuracy", multi)
    with pytest.raises(optuna.TrialPruned):
        rep(10, {"dev_accuracy": 0.3})
    assert bad.user_attrs["pruned_at_step"] == 10


def test_no_pruner_never_prunes():
    study, pruner = _crafted_study(True, "none")
    rep = Reporter(study.ask(), pruner, "dev_accuracy", True)
    rep(10, {"dev_accuracy": 0.0})


def test_reporter_names_a_missing_metric():
    study, pruner = _crafted_study(True)
    with pytest.raises(KeyError, match="dev_acuracy"):
        Reporter(study.ask(), pruner, "dev_acuracy", True)(10, {"dev_accuracy": 0.5})


def test_study_writes_outputs_and_the_tuned_configuration_trains(trained_teacher, tiny_model_dir, tmp_path, monkeypatch):
    from confkd.tuning.tuned import with_tuned_config
    from confkd.tuning.study import run_study

    root = _workspace(tmp_path, trained_teacher)
    params = _params(tiny_model_dir)
    metrics = run_study(params, Layout(root))
    assert metrics["trials_complete"] + metrics["trials_pruned"] == 3
    assert metrics["trials_complete"] >= 1 and metrics["pareto_size"] >= 1
    assert {"best.dev_accuracy", "best.dev_sigma", "steps_saved_by_pruning", "best.within_kappa"} <= set(metrics)

    best = yaml.safe_load((root / "tune" / "best_params.yaml").read_text())
    tuned = best["distill"]["configs"]["tuned"]
    assert tuned["method"] == "kd_logits"
    assert set(best["best_params"]) == {"temperature", "alpha", "selection_metric"}
    assert tuned["temperature"] == best["best_params"]["temperature"]
    assert "max_steps" not in tuned  # the reduced trial budget is not carried into the tuned configuration
    trials = (root / "reports" / "tune" / "trials.csv").read_text().splitlines()
    assert len(trials) == 4 and "dev_sigma" in trials[0]
    assert (root / "reports" / "tune" / "pareto.png").stat().st_size > 1000
    assert (root / "plots" / "tune" / "trials.csv").exists()
    assert not any((root / "tune" / "work").iterdir())  # trial scratch folders are removed

    # The distill stage picks the tuned configuration up by name.
    monkeypatch.chdir(root)
    from confkd.pipeline import run_distill

    run_distill(params, "tuned")
    assert (root / "metrics" / "distill" / "tuned.json").exists()
    assert with_tuned_config(params).distill.resolve("tuned").temperature == tuned["temperature"]

    # A second run of the finished study trains nothing more and keeps every trial.
    again = run_study(params, Layout(root))
    assert again["trials"] == metrics["trials"]


def test_tuned_configuration_missing_gives_a_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    from confkd.errors import DataError
    from confkd.pipeline import run_distill

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="run the tune stage first"):
        run_distill(_params(tiny_model_dir), "tuned")


def _count(db: Path) -> dict[str, int]:
    """Trial states read with plain SQL, so polling never races the stage creating its tables."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}


def test_study_resumes_after_the_process_is_killed(trained_teacher, tiny_model_dir, tmp_path):
    """SIGKILL the tune stage in the middle of a trial; the rerun finishes the study without losing or
    double-counting trials, and the killed trial is failed and retried."""
    root = _workspace(tmp_path, trained_teacher)
    params = _params(tiny_model_dir, n_trials=4, budget={"max_steps": 40, "eval_every_steps": 10},
                     pruner={"kind": "none"})
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(by_alias=True, mode="json"), sort_keys=False))
    db = root / "tune" / "optuna.db"
    storage = f"sqlite:///{db}"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "confkd.cli", "tune"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait for one finished trial and one running
            counts = _count(db)
            if counts.get("COMPLETE", 0) >= 1 and counts.get("RUNNING", 0) == 1:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("the study did not reach a running second trial in time")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = optuna.load_study(study_name=optuna.study.get_all_study_names(storage)[0], storage=storage)
    completed_before = {t.number: t.values for t in before.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    completed_before_params = [t.params for t in before.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert _count(db).get("RUNNING") == 1

    time.sleep(2.5)  # past the heartbeat grace period: the killed trial is stale
    rerun = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = _count(db)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 4  # exactly n_trials, none counted twice
    assert counts.get("FAIL") == 1 and "RUNNING" not in counts
    after = optuna.load_study(study_name=before.study_name, storage=storage)
    for number, values in completed_before.items():  # nothing finished before the kill was lost
        assert after.trials[number].values == values
    failed = next(t for t in after.trials if t.state == optuna.trial.TrialState.FAIL)
    retried = [t for t in after.trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].params == failed.params
    fresh = [t.params for t in after.trials if t.number not in completed_before and t.state.name == "COMPLETE"
             and t.system_attrs.get("failed_trial") is None]
    assert all(p not in completed_before_params for p in fresh)  # the resumed sampler proposes new points
    assert yaml.safe_load((root / "tune" / "best_params.yaml").read_text())["distill"]["configs"]["tuned"]


def test_study_identity_includes_task_data_and_sigma_definition(tmp_path):
    """A study is never reused across data, tasks or sigma definitions (its trials would be scored on another)."""
    from confkd.config import parse_params
    from confkd.tuning.study import default_study_name

    raw = {"distill": {"configs": {"kd": {"method": "kd_logits"}}}, "tune": {"base": "kd", "kappa": 0.1}}
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/train.jsonl").write_text('{"id": "a", "text": "x", "label": 0}\n')
    name = default_study_name(parse_params(raw), Layout(tmp_path))
    assert name == default_study_name(parse_params(raw), Layout(tmp_path))
    (tmp_path / "data/prepared/train.jsonl").write_text('{"id": "a", "text": "y", "label": 0}\n')
    changed_data = default_study_name(parse_params(raw), Layout(tmp_path))
    assert changed_data != name
    other_task = default_study_name(parse_params({**raw, "task": {"name": "tweet_offensive"}}), Layout(tmp_path))
    other_sigma = default_study_name(parse_params({**raw, "evaluate": {"confidence": {"subset": "all"}}}), Layout(tmp_path))
    assert len({changed_data, other_task, other_sigma}) == 3
