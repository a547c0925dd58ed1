"""The Prefect pipeline flow (flows/pipeline.py) against a real Prefect server on loopback.

The flow runs in a subprocess (so PREFECT_API_URL applies cleanly) on tiny copies of the
repository; every check on the outcome goes through the Prefect API: flow and task run states,
retries, logs and artifacts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from confkd.errors import ConfkdError, ParamsError
from confkd.orchestration import apply_params_overrides, error_excerpt, plan_stages

from .conftest import REPO_ROOT, PrefectServer, child_env, copy_repo_tiny

FLOW_SCRIPT = REPO_ROOT / "flows" / "pipeline.py"
FLOW_NAME = "confkd-pipeline"


def _env(**extra: str) -> dict:
    return child_env(PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)


def _dvc(args, cwd) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def _init_dvc(root: Path) -> None:
    _dvc(["init", "--no-scm", "-q"], root)
    _dvc(["config", "core.analytics", "false"], root)


# ------------------------------------------------------------------ planning and params (no server)


@pytest.fixture(scope="module")
def pipeline_only(tmp_path_factory) -> Path:
    """dvc.yaml and params.yaml of this repository, without data: enough for DVC's graph."""
    root = tmp_path_factory.mktemp("plan")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    _init_dvc(root)
    return root


def test_plan_follows_dvcs_graph(pipeline_only):
    plan = plan_stages(pipeline_only)
    names = [p.name for p in plan]
    assert names[:3] == ["prepare", "validate", "teacher"]
    assert {"distill@kd_logits", "distill@tinybert", "evaluate@kd_logits", "report"} <= set(names)
    for i, step in enumerate(plan):  # every stage comes after the stages it depends on
        assert set(step.upstream) <= set(names[:i]), step
    assert dict((p.name, p.metrics) for p in plan)["teacher"] == ("metrics/teacher.json",)

    assert [p.name for p in plan_stages(pipeline_only, ["teacher"])] == ["prepare", "validate", "teacher"]
    # "evaluate" is the foreach group and the stages named after it (evaluate_teacher, ...); --configs keeps
    # kd_logits only, so tune (on kd_logits_2l) and what follows it are left out
    left_out = []
    assert {p.name for p in plan_stages(pipeline_only, ["evaluate"], configs=["kd_logits"], left_out=left_out)} == {
        "prepare", "validate", "teacher", "teacher_reference", "augment", "distill@kd_logits", "evaluate@kd_logits",
        "evaluate_teacher", "evaluate_teacher_reference"}
    assert {"tune", "distill_tuned", "evaluate_tuned"} <= set(left_out)
    # a whole run over two configurations: their stages, the report (over the subset); not tune, nor export
    # (it reads every student), nor the other configurations
    left_out = []
    names = [p.name for p in plan_stages(pipeline_only, configs=["kd_logits", "tinybert"], always=["report"],
                                         left_out=left_out)]
    assert {"distill@kd_logits", "distill@tinybert", "evaluate@tinybert", "report"} <= set(names)
    assert not {"tune", "distill_tuned", "export", "distill@internal_pid", "evaluate@internal_pid"} & set(names)
    assert {"tune", "export", "distill@internal_pid"} <= set(left_out)
    # the tune stage comes back with its base configuration
    names = [p.name for p in plan_stages(pipeline_only, configs=["kd_logits_2l"], always=["report"])]
    assert {"tune", "distill_tuned", "evaluate_tuned", "distill@kd_logits_2l", "report"} <= set(names)
    with pytest.raises(ConfkdError, match="unknown stage 'teachr'"):
        plan_stages(pipeline_only, ["teachr"])
    with pytest.raises(ConfkdError, match="unknown configuration"):
        plan_stages(pipeline_only, ["distill"], configs=["kd_logit"])


def test_params_overrides_are_validated_and_keep_comments(tmp_path, pipeline_only):
    shutil.copytree(pipeline_only, tmp_path / "repo")
    params = tmp_path / "repo" / "params.yaml"
    changes = apply_params_overrides(params.parent, {"task.name": "tweet_offensive", "teacher.max_steps": 5})
    assert changes == {"task.name": ("sst2", "tweet_offensive"), "teacher.max_steps": (None, 5)}
    text = params.read_text()
    assert "# Every knob of the pipeline." in text and "# packaged default" in text
    data = yaml.safe_load(text)
    assert data["task"]["name"] == "tweet_offensive" and data["teacher"]["max_steps"] == 5

    with pytest.raises(ParamsError, match="learning_rat"):
        apply_params_overrides(params.parent, {"teacher.learning_rat": 0.1})
    assert params.read_text() == text  # nothing written when validation fails


def test_error_excerpt_finds_the_stages_own_message():
    lines = ["Running stage 'validate':", "> python stages/validate.py",
             "10:21:41 INFO confkd.data.validation: validation: 60 expectations, 4 critical failures",
             "10:21:41 ERROR confkd: data validation failed: 1 critical expectation(s)",
             "  - train: expect_column_mean_to_be_between(is_label_0): observed 0.43",
             "10:21:42 INFO other: unrelated"]
    assert error_excerpt(lines) == (
        "data validation failed: 1 critical expectation(s)\n  - train: expect_column_mean_to_be_between(is_label_0): observed 0.43",
        True)
    crash = ["> python boom.py", "Traceback (most recent call last):", '  File "boom.py", line 1', "RuntimeError: disk hiccup"]
    assert error_excerpt(crash) == ("RuntimeError: disk hiccup", False)


# ------------------------------------------------------------------ a real Prefect server


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    server = PrefectServer(home, _env(PREFECT_HOME=str(home)))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tiny_repo(prefect_server, tmp_path_factory, tiny_model_dir):
    """A copy of the repository with tiny params and the tiny BERT (as in test_pipeline_integration).
    It requests ``prefect_server`` first only so that the server's start-up (~20 s) overlaps the
    tiny model and the copy."""
    root = copy_repo_tiny(tmp_path_factory.mktemp("repo"), tiny_model_dir)
    _init_dvc(root)
    return root


@pytest.fixture(scope="module")
def api_url(prefect_server) -> str:
    prefect_server.wait_healthy()
    return prefect_server.api_url


def _client(api_url: str):
    """A synchronous Prefect client for ``api_url`` (imported lazily: prefect is slow to import)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self._settings = temporary_settings(updates={PREFECT_API_URL: api_url})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Client()


def _flow_run_ids(api_url: str) -> set:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with _client(api_url) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))
    return {run.id for run in runs}


def run_flow(api_url: str, home: Path, repo: Path, *args: str):
    """Run flows/pipeline.py once in a subprocess; returns (process, flow run, task runs in start order)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    before = _flow_run_ids(api_url)
    proc = subprocess.run([sys.executable, str(FLOW_SCRIPT), "--repo", str(repo), *args],
                          env=_env(PREFECT_API_URL=api_url, PREFECT_HOME=str(home)),
                          capture_output=True, text=True, timeout=300)
    new = _flow_run_ids(api_url) - before
    assert len(new) == 1, f"expected one new flow run, got {len(new)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run_id = new.pop()
    with _client(api_url) as client:
        flow_run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return proc, flow_run, sorted(tasks, key=lambda t: t.start_time or t.expected_start_time)


def artifacts_of(api_url: str, flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client(api_url) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def task_logs(api_url: str, task_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    with _client(api_url) as client:
        logs = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])), limit=200)
    return "\n".join(log.message for log in logs)


@pytest.mark.integration
def test_first_run_completes_every_stage_and_publishes_metrics(tiny_repo, api_url, tmp_path):
    proc, run, tasks = run_flow(api_url, tmp_path, tiny_repo, "--stages", "teacher")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run.state.is_completed()
    assert [t.name for t in tasks] == ["prepare", "validate", "teacher"]  # DVC's order
    for t in tasks:
        assert t.state.is_completed() and t.state.name == "Completed", (t.name, t.state)
        assert "ran in" in t.state.message
    assert "Running stage 'teacher'" in task_logs(api_url, tasks[2].id)  # the stage's output, streamed

    artifacts = artifacts_of(api_url, run.id)
    assert {"metrics-prepare", "metrics-validation", "metrics-teacher", "pipeline-stages"} <= set(artifacts)
    teacher = {row["metric"]: row["value"] for row in _table(artifacts["metrics-teacher"])}
    assert 0.0 <= teacher["accuracy"] <= 1.0 and teacher["steps"] == 8
    assert [row["status"] for row in _table(artifacts["pipeline-stages"])] == ["ran", "ran", "ran"]


@pytest.mark.integration
def test_second_run_reports_every_stage_skipped(tiny_repo, api_url, tmp_path):
    lock_before = (tiny_repo / "dvc.lock").read_text()
    proc, run, tasks = run_flow(api_url, tmp_path, tiny_repo, "--stages", "teacher")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run.state.is_completed()
    assert [t.name for t in tasks] == ["prepare", "validate", "teacher"]
    for t in tasks:
        assert t.state.is_completed() and t.state.name == "Skipped", (t.name, t.state)
        assert "unchanged" in t.state.message
    assert "didn't change, skipping" in task_logs(api_url, tasks[0].id)
    assert (tiny_repo / "dvc.lock").read_text() == lock_before
    # unchanged metrics are not republished as new artifact versions (the run that made them published them)
    assert "metrics-teacher" not in artifacts_of(api_url, run.id)


@pytest.mark.integration
def test_a_failing_stage_fails_its_task_and_the_flow_with_its_message(tiny_repo, api_url, tmp_path):
    # A text-length bound every text breaks (only the data can tell), written by the flow's own override option.
    proc, run, tasks = run_flow(api_url, tmp_path, tiny_repo, "--stages", "teacher", "--retries", "2",
                                "--retry-delay", "0", "--set", "validate.max_chars=5")
    assert proc.returncode == 1
    assert yaml.safe_load((tiny_repo / "params.yaml").read_text())["validate"]["max_chars"] == 5
    assert run.state.is_failed()
    assert "data validation failed" in run.state.message and "expect_column_value_lengths_to_be_between" in run.state.message
    assert "not run: teacher" in run.state.message
    by_name = {t.name: t for t in tasks}
    assert set(by_name) == {"prepare", "validate"}  # teacher never started
    assert by_name["prepare"].state.name == "Skipped"
    validate = by_name["validate"]
    assert validate.state.is_failed() and "data validation failed" in validate.state.message
    assert validate.run_count == 1  # a data error is not retried


@pytest.mark.integration
def test_params_that_do_not_fit_the_data_fail_the_flow_before_any_stage(tiny_repo, api_url, tmp_path):
    # an impossible class-balance bound: confkd check-params sees it against the files, before any stage
    proc, run, tasks = run_flow(api_url, tmp_path, tiny_repo, "--stages", "teacher", "--retries", "0",
                                "--set", "validate.max_chars=5000", "--set", "validate.class_balance.min_fraction=0.7")
    assert proc.returncode == 1
    assert run.state.is_failed() and tasks == []
    assert "check-params failed before any stage ran" in run.state.message
    assert "validate.class_balance.min_fraction" in run.state.message


def _table(artifact) -> list[dict]:
    import json

    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


# ------------------------------------------------------------------ foreach entries and retries

TOY_DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    outs: [numbers.txt]
    metrics:
      - metrics/make.json:
          cache: false
  square:
    foreach: [a, b]
    do:
      cmd: python square.py ${item}
      deps: [square.py, numbers.txt]
      outs:
        - squares/${item}.txt
  flaky:
    cmd: python flaky.py
    deps: [flaky.py, squares/a.txt]
    outs: [flaky.txt]
"""
TOY_SCRIPTS = {
    "make.py": "import json, os\nos.makedirs('metrics', exist_ok=True)\nopen('numbers.txt', 'w').write('1 2 3')\n"
               "json.dump({'count': 3, 'total': 6}, open('metrics/make.json', 'w'))\n",
    "square.py": "import os, sys\nos.makedirs('squares', exist_ok=True)\n"
                 "nums = [int(x) ** 2 for x in open('numbers.txt').read().split()]\n"
                 "open(f'squares/{sys.argv[1]}.txt', 'w').write(str(nums))\n",
    # Fails on its first attempt only, like a transient crash.
    "flaky.py": "from pathlib import Path\nmarker = Path('attempts.txt')\n"
                "n = int(marker.read_text()) + 1 if marker.exists() else 1\nmarker.write_text(str(n))\n"
                "if n == 1:\n    raise RuntimeError('transient glitch')\nPath('flaky.txt').write_text('ok')\n",
}


@pytest.mark.integration
def test_foreach_entries_are_tasks_and_transient_failures_are_retried(api_url, tmp_path):
    repo = tmp_path / "toy"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(TOY_DVC_YAML)
    for name, code in TOY_SCRIPTS.items():
        (repo / name).write_text(code)
    _init_dvc(repo)
    proc, run, tasks = run_flow(api_url, tmp_path, repo, "--configs", "a", "--retries", "1", "--retry-delay", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run.state.is_completed()
    assert [t.name for t in tasks] == ["make", "square@a", "flaky"]  # square@b filtered out by --configs
    flaky = tasks[2]
    assert flaky.state.is_completed() and flaky.run_count == 2
    assert (repo / "attempts.txt").read_text() == "2"
    assert "RuntimeError: transient glitch" in task_logs(api_url, flaky.id)
    make = {row["metric"]: row["value"] for row in _table(artifacts_of(api_url, run.id)["metrics-make"])}
    assert make == {"count": 3, "total": 6}
