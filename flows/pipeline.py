"""Prefect flow that runs the DVC pipeline stage by stage: one Prefect task per DVC stage.

DVC stays the source of truth. Every task asks DVC to reproduce its one stage, so DVC's cache
and dvc.lock decide what runs: an unchanged stage is skipped (task state "Skipped", a Completed
state) and a changed one reruns. The stage order comes from DVC's graph. What Prefect adds:
per-stage logs, retries, states and timings in the UI, metrics as artifacts, and deployments.

    python flows/pipeline.py                          # run every stage once (like `dvc repro`)
    python flows/pipeline.py --stages teacher         # prepare -> validate -> teacher
    python flows/pipeline.py --stages distill evaluate report --configs kd_logits tinybert
    python flows/pipeline.py --set teacher.max_steps=500 --task tweet_offensive   # edits params.yaml
    python flows/pipeline.py --serve                  # a deployment, triggered from the UI/CLI

See flows/README.md for the server, the deployment and what the UI shows.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # this checkout's confkd, also when run as a plain script
    sys.path.insert(0, str(PROJECT_ROOT))

from confkd.orchestration import apply_offline_env_defaults  # noqa: E402  (imports no Prefect)

apply_offline_env_defaults()  # before prefect is imported: its settings are read at import time

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.states import Completed, Failed  # noqa: E402

from confkd.errors import ConfkdError  # noqa: E402
from confkd.evaluation.summary import compact_rows  # noqa: E402
from confkd.orchestration import (  # noqa: E402
    FAILED, RESTORED, SKIPPED, UNTRACKED, StageFailed, apply_params_overrides, parse_override, plan_stages,
    read_metrics, reproduce_stage, run_outside_dvc,
)

FLOW_NAME = "confkd-pipeline"
DEPLOYMENT_NAME = "confkd-pipeline"
SUMMARY_STAGE = "report"  # its Markdown comparison table becomes the run's summary artifact
SUMMARY_FILE = "reports/summary.md"
SUMMARY_METRICS = "metrics/summary.json"


def artifact_key(prefix: str, path: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    stem = re.sub(r"\.json$", "", path.removeprefix("metrics/"))
    return f"{prefix}-" + re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")


def _retry_transient(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's retry_condition_fn signature
    """Retry a stage unless its failure cannot change on a rerun (bad params or data, failed
    validation, a broken dvc.yaml): those fail at once with their message, without waiting."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not getattr(exc, "permanent", False)


def _level(line: str) -> int:
    """Log level for one line of stage output: keep the stage's errors and warnings visible."""
    if " ERROR " in line or line.startswith(("ERROR", "Traceback")):
        return logging.ERROR
    if " WARNING " in line or line.startswith("WARNING"):
        return logging.WARNING
    return logging.INFO


def publish_metrics(repo_dir: str, stage: str, paths: list[str], status: str) -> list[str]:
    """One table artifact per metrics file the stage declares in dvc.yaml (flat JSON)."""
    logger = get_run_logger()
    published = []
    for path in paths:
        try:
            metrics = read_metrics(repo_dir, path)
        except (OSError, ValueError) as err:
            logger.warning("metrics file %s of stage %s not readable: %s", path, stage, err)
            continue
        key = artifact_key("metrics", path)
        create_table_artifact(
            key=key, table=[{"metric": k, "value": v} for k, v in metrics.items()],
            description=f"`{path}` from DVC stage `{stage}` ({status})",
        )
        published.append(key)
    return published


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=_retry_transient)
def run_stage(stage: str, repo_dir: str, metrics: list[str], force: bool = False, only: list[str] | None = None):
    """Reproduce one DVC stage, streaming its output into this task's log.

    Returns a Completed state named "Skipped" when DVC found the stage unchanged, a plain
    Completed state when it ran; raises :class:`StageFailed` (the task's Failed state carries
    the stage's error message) when it failed. With ``only`` (the report of a ``--configs`` run) the
    stage's command runs directly over those configurations, outside DVC: a subset report is not the
    pipeline's report, so dvc.lock does not record it.
    """
    logger = get_run_logger()
    on_line = lambda line: logger.log(_level(line), "%s", line)  # noqa: E731
    if only is not None:
        result = run_outside_dvc(repo_dir, stage, [f"stages/{stage}.py", "--only", *only], on_line=on_line)
    else:
        result = reproduce_stage(repo_dir, stage, force=force, on_line=on_line)
    if result.failed:
        raise StageFailed(result.error, permanent=result.permanent)
    # Metrics artifacts only for what changed: an unchanged stage's metrics are already published.
    published = [] if result.status == SKIPPED else publish_metrics(repo_dir, stage, metrics, result.status)
    data = {**result.as_dict(), "artifacts": published}
    if result.status == SKIPPED:
        message = f"stage '{stage}' unchanged: skipped by DVC (its metrics artifacts are from the run that made them)"
        logger.info(message)
        return Completed(name="Skipped", message=message, data=data)
    if result.status == UNTRACKED:
        message = f"stage '{stage}' ran over {', '.join(only or [])} only, outside DVC, in {result.seconds:.1f} s"
        logger.info(message)
        return Completed(message=message, data=data)
    how = "restored from DVC's run cache" if result.status == RESTORED else "ran"
    message = f"stage '{stage}' {how} in {result.seconds:.1f} s"
    logger.info(message)
    return Completed(message=message, data=data)


def _overrides(task_name: str | None, params_overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = dict(params_overrides or {})
    if task_name:
        overrides["task.name"] = task_name
    return overrides


def _publish_run_summary(repo_dir: Path, rows: list[dict], report_done: bool) -> None:
    """A table of every planned stage's outcome and, when the report stage completed, its
    Markdown comparison table."""
    create_table_artifact(key="pipeline-stages", table=rows, description="DVC stages of this run, in order")
    summary = repo_dir / SUMMARY_FILE
    if report_done and summary.exists():
        create_markdown_artifact(key="pipeline-summary", markdown=summary.read_text(encoding="utf-8"),
                                 description=f"`{SUMMARY_FILE}` from the `{SUMMARY_STAGE}` stage")
        try:
            flat = read_metrics(str(repo_dir), SUMMARY_METRICS)
        except (OSError, ValueError):
            return
        create_table_artifact(key="pipeline-results", table=compact_rows(flat),
                              description="headline results (test split): the full table is `pipeline-summary`")


@flow(name=FLOW_NAME, description="Run the confkd DVC pipeline, one Prefect task per DVC stage.")
def pipeline_flow(
    stages: list[str] | None = None,
    configs: list[str] | None = None,
    force: bool = False,
    task: str | None = None,
    params_overrides: dict[str, Any] | None = None,
    retries: int = 1,
    retry_delay_seconds: float = 30.0,
    repo_dir: str | None = None,
):
    """Reproduce DVC stages in DVC's order, each as a Prefect task.

    Args:
        stages: stage names or foreach groups to reproduce, with their upstream stages, as
            ``dvc repro <stages>`` (default: every stage in dvc.yaml).
        configs: limit the run to these distillation configurations (default: all): stages working on
            others (their foreach entries, ``tune`` on another base) and stages downstream of those
            (``distill_tuned``, ``export``) are left out, and the report covers these configurations
            only, run outside DVC, saying which it leaves out.
        force: rerun the planned stages even if DVC finds them unchanged (``dvc repro --force``).
        task: dataset to run on; sets ``task.name`` in params.yaml (e.g. ``tweet_offensive``).
        params_overrides: ``{"dotted.key": value}`` written into params.yaml before the run,
            validated first (a bad key fails before anything changes). These edits stay in the
            workspace, like any params.yaml edit, and dvc.lock records them.
        retries, retry_delay_seconds: retries of a stage that failed for a reason a rerun may fix
            (a crash, a killed process); bad params or data fail at once.
        repo_dir: the DVC repository (default: this checkout).
    """
    logger = get_run_logger()
    root = Path(repo_dir) if repo_dir else PROJECT_ROOT
    overrides = _overrides(task, params_overrides)
    if overrides:
        changed = apply_params_overrides(root, overrides)
        for key, (old, new) in changed.items():
            logger.info("params.yaml: %s: %r -> %r", key, old, new)
    checked = run_outside_dvc(root, "check-params", ["-m", "confkd.cli", "check-params"],
                              on_line=lambda line: logger.info("%s", line)) if (root / "params.yaml").exists() else None
    if checked is not None and checked.failed:  # bad params or a task that does not match its files: nothing runs
        logger.error("%s", checked.error)
        return Failed(message=f"confkd check-params failed before any stage ran:\n{checked.error}")
    left_out: list[str] = []
    plan = plan_stages(root, stages, configs, always=[SUMMARY_STAGE], left_out=left_out)
    logger.info("%d stage(s) in DVC's order: %s", len(plan), " -> ".join(p.name for p in plan))
    if left_out:
        logger.info("left out (they work on configurations outside --configs): %s", ", ".join(left_out))

    runner = run_stage.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    rows, outcomes, failure = [], {}, None
    rows += [{"stage": name, "status": "left out", "seconds": None, "message": "outside --configs"} for name in left_out]
    for step in plan:
        if failure is not None:
            rows.append({"stage": step.name, "status": "not run", "seconds": None, "message": f"after {failure[0]} failed"})
            continue
        only = list(configs) if configs is not None and step.name == SUMMARY_STAGE else None
        state = runner(step.name, str(root), list(step.metrics), force, only, return_state=True)
        if state.is_failed():
            error = state.result(raise_on_failure=False)
            failure = (step.name, str(error))
            outcomes[step.name] = FAILED
            rows.append({"stage": step.name, "status": FAILED, "seconds": None, "message": str(error)[:500]})
            continue
        result = state.result()
        outcomes[step.name] = result["status"]
        rows.append({"stage": step.name, "status": result["status"], "seconds": result["seconds"], "message": state.message})

    _publish_run_summary(root, rows, report_done=outcomes.get(SUMMARY_STAGE) not in (None, FAILED))
    ran = sum(s != SKIPPED for s in outcomes.values() if s != FAILED)
    logger.info("%d stage(s) ran, %d unchanged (skipped)", ran, sum(s == SKIPPED for s in outcomes.values()))
    if failure is not None:
        not_run = [r["stage"] for r in rows if r["status"] == "not run"]
        message = failure[1] + (f"\nnot run: {', '.join(not_run)}" if not_run else "")
        return Failed(message=message, data=outcomes)
    return outcomes


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", help="stages or foreach groups to reproduce (default: all)")
    parser.add_argument("--configs", nargs="+", help="distillation configurations to keep (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun planned stages even if unchanged")
    parser.add_argument("--task", help="dataset: sets task.name in params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="write a params.yaml value before running (repeatable; VALUE is YAML)")
    parser.add_argument("--retries", type=int, default=1, help="retries of a transiently failing stage")
    parser.add_argument("--retry-delay", type=float, default=30.0, help="seconds between retries")
    parser.add_argument("--repo", help="DVC repository (default: this checkout)")
    parser.add_argument("--serve", action="store_true",
                        help="serve a deployment (manual trigger) instead of running once; needs PREFECT_API_URL")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name for --serve")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        overrides = dict(parse_override(o) for o in args.overrides) or None
    except ConfkdError as err:
        logging.getLogger(FLOW_NAME).error("%s", err)
        return 2
    parameters = {
        "stages": args.stages, "configs": args.configs, "force": args.force, "task": args.task,
        "params_overrides": overrides,
        "retries": args.retries, "retry_delay_seconds": args.retry_delay, "repo_dir": args.repo,
    }
    if args.serve:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            logging.getLogger(FLOW_NAME).warning(
                "PREFECT_API_URL is not set: the deployment lives on a temporary server that ends with this "
                "process; start `prefect server start` and export PREFECT_API_URL to trigger it from the UI or CLI")
        # No schedule: runs start when triggered (`prefect deployment run`, or "Run" in the UI).
        pipeline_flow.serve(name=args.name, cron=None, parameters={k: v for k, v in parameters.items() if v is not None},
                            tags=["confkd", "dvc"], description="confkd DVC pipeline, one task per stage")
        return 0
    state = pipeline_flow(**parameters, return_state=True)
    if not state.is_completed():
        logging.getLogger(FLOW_NAME).error("pipeline %s: %s", state.name.lower(), state.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
