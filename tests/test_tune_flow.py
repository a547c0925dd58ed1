"""The tuning flow (flows/tune.py): trials as Prefect tasks on a local Dask cluster, one shared study.

The flow runs in this process against a temporary Prefect server (``prefect_test_harness``) on
the tiny workspace; the checks read the Optuna storage with plain SQL and the artifacts through
the Prefect API.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from confkd.errors import ParamsError
from confkd.tuning.parallel import PREFECT_ENV_DEFAULTS, shared_storage

from .conftest import REPO_ROOT
from .test_tuning import _params, _workspace

N_TRIALS = 4


@pytest.fixture(scope="module")
def flow_module(tmp_path_factory):
    """flows/tune.py imported as ``flows.tune``: Dask workers unpickle its tasks by that name, so
    the repository root must be importable there too (workers inherit the environment)."""
    mp = pytest.MonkeyPatch()
    for key, value in PREFECT_ENV_DEFAULTS.items():  # undone afterwards, unlike apply_prefect_env_defaults()
        if key not in os.environ:
            mp.setenv(key, value)
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    mp.syspath_prepend(str(REPO_ROOT))
    import flows.tune as module

    yield module
    mp.undo()


@pytest.fixture(scope="module")
def prefect_server(flow_module):
    """One temporary Prefect server for the module's flow runs (starting one takes seconds of CPU)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _trials(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def _temperatures(db: Path) -> list[float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        return [v for (v,) in con.execute("SELECT param_value FROM trial_params WHERE param_name = 'temperature'")]


def _recorded(flow_run_id) -> tuple[set[str], list[tuple[str, str]]]:
    """The artifact keys and the (task name, state) of the task runs the Prefect API holds for a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key for a in artifacts}, [(t.name, t.state.type.value) for t in task_runs]


def test_parallel_trials_on_dask_land_exactly_once_and_resume_locally(flow_module, prefect_server, trained_teacher,
                                                                      tiny_model_dir, tmp_path):
    root = _workspace(tmp_path, trained_teacher)
    params = _params(tiny_model_dir, n_trials=N_TRIALS, n_startup_trials=2,
                     budget={"max_steps": 6, "eval_every_steps": 2},
                     pruner={"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(by_alias=True, mode="json"), sort_keys=False))
    db = root / "tune" / "parallel.db"

    state = flow_module.tune_flow(root=str(root), storage="sqlite:///tune/parallel.db", dask_workers=2,
                                  threads_per_trial=1, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    artifacts, task_runs = _recorded(state.state_details.flow_run_id)
    # The same study resumed with the default runner (one trial at a time, in this process).
    more = flow_module.tune_flow(root=str(root), storage="sqlite:///tune/parallel.db", n_trials=N_TRIALS + 2)

    trials = _trials(db)
    numbers = [n for n, _ in trials]
    assert len(numbers) == len(set(numbers)), f"duplicated trial numbers: {trials}"
    assert sum(s in ("COMPLETE", "PRUNED") for _, s in trials) == N_TRIALS + 2, trials
    assert not [t for t in trials if t[1] in ("RUNNING", "WAITING")], trials
    assert result["finished"] == N_TRIALS and result["target"] == N_TRIALS
    assert more["study"] == result["study"] and more["finished"] == N_TRIALS + 2

    # Each trial task had its own sampler seed, also after the resume: no two trials tried the same parameters.
    assert len(set(_temperatures(db))) == len(trials)
    # The parallel trials ran in two Dask worker processes, the resumed ones in this process.
    workers = {t["worker"] for t in result["tasks"] if t["ran"]}
    assert len(workers) == 2 and not any(w.endswith(f":{os.getpid()}") for w in workers), workers
    assert [t["worker"].endswith(f":{os.getpid()}") for t in more["tasks"]] == [True, True]

    best = yaml.safe_load((root / "tune" / "best_params.yaml").read_text())
    assert best["tune"]["study_name"] == result["study"]
    assert set(best["best_params"]) == {"temperature", "alpha", "selection_metric"}
    assert (root / "reports" / "tune" / "summary.md").exists() and (root / "metrics" / "tune.json").exists()
    assert {"tune-summary", "tune-trials"} <= artifacts
    # The trial task runs on the Dask workers were recorded by the flow's own Prefect server.
    trial_runs = [st for name, st in task_runs if name.startswith("trial-slot-")]
    assert trial_runs == ["COMPLETED"] * N_TRIALS, task_runs


def test_shared_storage_resolves_sqlite_and_refuses_in_memory(tmp_path):
    url = shared_storage("sqlite:///tune/optuna.db", tmp_path)
    assert url == f"sqlite:///{tmp_path}/tune/optuna.db?timeout=60"
    own_timeout = f"sqlite:///{tmp_path}/a/b.db?timeout=5"
    assert shared_storage(own_timeout, tmp_path) == own_timeout
    assert (tmp_path / "tune").is_dir() and (tmp_path / "a").is_dir()
    assert shared_storage("postgresql+psycopg://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"
    with pytest.raises(ParamsError, match="in-memory"):
        shared_storage("sqlite:///:memory:", tmp_path)


def test_task_runner_choice(flow_module):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from confkd.errors import ConfkdError

    local = flow_module.make_task_runner()
    assert isinstance(local, ThreadPoolTaskRunner) and local._max_workers == 1
    dask = flow_module.make_task_runner(dask_workers=3)
    assert isinstance(dask, DaskTaskRunner) and dask.cluster_kwargs["n_workers"] == 3
    assert dask.cluster_kwargs["threads_per_worker"] == 1
    assert flow_module.make_task_runner(dask_address="tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    with pytest.raises(ConfkdError, match="not both"):
        flow_module.make_task_runner(dask_workers=2, dask_address="tcp://127.0.0.1:8786")
    assert flow_module.masked("postgresql+psycopg://confkd:secret@db/optuna") == \
        "postgresql+psycopg://confkd:***@db/optuna"


@pytest.mark.integration
def test_the_flow_goes_through_dvc_and_leaves_dvc_status_clean(flow_module, prefect_server, tiny_model_dir, tmp_path):
    """In a DVC project the flow's outputs come from `dvc repro -s tune`: dvc.lock describes them afterwards."""
    import json
    import subprocess
    import sys

    from .conftest import copy_repo_tiny

    root = copy_repo_tiny(tmp_path / "repo", tiny_model_dir)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["distill"]["configs"] = {"kd_logits": raw["distill"]["configs"]["kd_logits"]}
    raw["tune"].update(base="kd_logits", n_trials=2, n_startup_trials=1, budget={"max_steps": 3, "eval_every_steps": 3})
    raw["export"]["models"] = ["teacher"]
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def dvc(*args):
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    dvc("init", "--no-scm", "-q")
    dvc("repro", "augment", "teacher_reference")  # the tune stage's inputs
    result = flow_module.tune_flow(root=str(root), threads_per_trial=1)
    assert result["finished"] == 2
    status = json.loads(dvc("status", "tune", "--json") or "{}")
    assert "tune" not in status, status  # dvc.lock describes the outputs the flow produced
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert "tune" in lock["stages"] and (root / "tune" / "best_params.yaml").exists()
