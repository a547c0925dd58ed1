"""Prefect flow that runs the Optuna study of params.yaml's ``tune:`` section, one Prefect task per trial.

Every trial task adds one trial to ONE shared Optuna storage (``tune.storage`` by default: a
SQLite file, or PostgreSQL for many machines) through ``confkd.tuning.study.run_trials``, so
the study counts trials exactly as the DVC ``tune`` stage does: a killed trial is failed and
retried, and only complete or pruned trials count towards ``n_trials``. Trials run one at a
time in the flow's process by default, or in parallel on Dask workers:

    python flows/tune.py                                  # sequential, like `dvc repro tune`
    python flows/tune.py --workers 2                      # local Dask cluster, 2 trial processes
    python flows/tune.py --address tcp://10.0.0.5:8786 \\
        --storage postgresql+psycopg://confkd@db/optuna   # an existing Dask cluster, shared storage

After the trials, the study's outputs (tune/best_params.yaml, reports/tune/, metrics/tune.json) are
written once, by reproducing the DVC ``tune`` stage (which finds the trials already in the storage), so
``dvc.lock`` stays true after a flow run; the run publishes reports/tune/summary.md and the trials as
artifacts.
The Prefect-independent half is :mod:`confkd.tuning.parallel`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # this checkout's confkd, also when run as a plain script
    sys.path.insert(0, str(PROJECT_ROOT))

from confkd.tuning.parallel import apply_prefect_env_defaults  # noqa: E402  (imports no Prefect)

apply_prefect_env_defaults()  # before prefect is imported: its settings are read at import time

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from confkd.errors import ConfkdError  # noqa: E402
from confkd.tuning.parallel import (  # noqa: E402
    StudyState, default_threads, prepare_study, read_study_state, run_one_trial, shared_storage, trial_rows,
    tune_params,
)

FLOW_NAME = "confkd-tune"
SUMMARY_FILE = Path("reports/tune/summary.md")


@task(name="tune-trial", task_run_name="trial-slot-{slot}", cache_policy=NO_CACHE)
def trial_task(raw_params: dict, root: str, target: int, storage: str, slot: int, sampler_seed: int,
               deadline: float | None) -> dict:
    """One trial of the shared study (none if the study already has ``target`` finished trials)."""
    return {"slot": slot, **run_one_trial(raw_params, root, target, storage, sampler_seed, deadline)}


@task(name="tune-outputs", cache_policy=NO_CACHE)
def outputs_task(raw_params: dict, root: str, storage: str, wall_seconds: float, through_dvc: bool) -> dict:
    """The tuned configuration, tables, plots and metrics, written once after every trial.

    ``through_dvc``: by reproducing the DVC ``tune`` stage, which opens the same study (its trials are
    already there, so it adds none unless params.yaml asks for more) and writes the outputs, so that
    ``dvc.lock`` describes them afterwards. Otherwise (a workspace without DVC, or a storage other than
    params.yaml's) they are written directly and DVC does not know them.
    """
    import json
    import subprocess

    from confkd.config import parse_params
    from confkd.layout import Layout
    from confkd.tuning.study import write_study_outputs

    if through_dvc:
        env = dict(os.environ, DVC_NO_ANALYTICS="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "-s", "tune"], cwd=root, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfkdError(f"dvc repro -s tune failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return json.loads((Path(root) / "metrics" / "tune.json").read_text(encoding="utf-8"))
    get_run_logger().warning("outputs written directly (no DVC project at %s, or a storage other than "
                             "tune.storage): dvc.lock does not describe them", root)
    return write_study_outputs(parse_params(raw_params, source="tune run"), Layout(Path(root)), storage,
                               wall_seconds=wall_seconds)


def make_task_runner(dask_workers: int = 0, dask_address: str | None = None):
    """Where trial tasks run: a Dask cluster (an existing scheduler at ``dask_address``, or a
    local one with ``dask_workers`` single-threaded worker processes), else one thread here.

    Worker processes, not threads: torch's thread setting is per process, and a crashed trial
    then takes only its worker down.
    """
    if dask_address and dask_workers:
        raise ConfkdError("give either dask_address (an existing Dask scheduler) or dask_workers "
                          "(a local cluster), not both")
    if not dask_address and dask_workers <= 0:
        return ThreadPoolTaskRunner(max_workers=1)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfkdError("parallel trials need prefect-dask: pip install prefect-dask") from None
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": ":0"})  # any free port: runs may overlap


@contextmanager
def workers_report_here(dask: bool, dask_address: str | None):
    """Let Dask workers report their task runs to this flow's Prefect API.

    Without ``PREFECT_API_URL`` the flow runs against a temporary server of its own process that
    worker processes know nothing about: each would start another temporary server and the trial
    task runs would be lost to the flow run. The flow's API URL is therefore set for the workers
    (environment, inherited when the local cluster starts them, and the settings context Prefect
    ships with every task).
    """
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not dask or PREFECT_API_URL.value():
        yield
        return
    url = str(FlowRunContext.get().client.api_url).rstrip("/")
    if dask_address:
        get_run_logger().warning("no PREFECT_API_URL: workers of %s reach this flow's temporary server at %s only "
                                 "if they run on this machine; set PREFECT_API_URL to a server they can reach",
                                 dask_address, url)
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def masked(url: str) -> str:
    """The storage URL without its password, for logs and artifacts."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: it fails later with its own message
        return url


def _run_round(runner, raw: dict, root: Path, target: int, storage: str, seed: int, first_slot: int,
               count: int, deadline: float | None) -> tuple[list[dict], list[BaseException]]:
    """Submit ``count`` trial tasks and wait for them all; returns the results of the tasks that
    completed and the errors of those that failed."""
    futures = [runner.submit(trial_task, parameters=dict(
        raw_params=raw, root=str(root), target=target, storage=storage, slot=slot, sampler_seed=seed + slot,
        deadline=deadline)) for slot in range(first_slot, first_slot + count)]
    results, errors = [], []
    for future in futures:
        future.wait()
        outcome = future.state.result(raise_on_failure=False)
        if future.state.is_completed():
            results.append(outcome)
        else:
            errors.append(outcome if isinstance(outcome, BaseException) else RuntimeError(str(future.state.message)))
    return results, errors


def _run_trials(runner, params, root: Path, storage: str, state: StudyState,
                max_rounds: int) -> tuple[StudyState, list[dict]]:
    """Rounds of trial tasks until ``n_trials`` trials have finished: a trial that failed (a
    crash, a lost worker) is not counted, so the next round replaces it. An error a rerun cannot
    fix (bad params or data) stops the run at once."""
    logger = get_run_logger()
    raw = params.model_dump(by_alias=True, mode="json")
    target = params.tune.n_trials
    timeout = params.tune.timeout_minutes
    deadline = time.time() + timeout * 60 if timeout else None
    slot = sum(state.counts.values())  # every trial ever started: a resumed run gets fresh sampler seeds
    tasks: list[dict] = []
    for round_no in range(1, max_rounds + 1):
        todo = target - state.finished
        if todo <= 0 or (deadline is not None and time.time() > deadline):
            break
        logger.info("round %d: %d trial task(s), %d/%d trials finished", round_no, todo, state.finished, target)
        results, errors = _run_round(runner, raw, root, target, storage, params.seed, slot, todo, deadline)
        tasks += results
        slot += todo
        permanent = [e for e in errors if isinstance(e, ConfkdError)]
        if permanent:
            raise permanent[0]
        for err in errors:
            logger.warning("trial task failed (its trial is retried in the next round): %s", err)
        state = read_study_state(params, root, storage)
    return state, tasks


def _publish(root: Path, storage: str, params, state: StudyState, runner_name: str, wall: float) -> None:
    logger = get_run_logger()
    summary = root / SUMMARY_FILE
    header = (f"Run: {state.finished}/{params.tune.n_trials} trials finished ({_counts(state)}) on {runner_name}, "
              f"storage `{masked(storage)}`, {wall:.1f} s.\n\n")
    if summary.exists():
        create_markdown_artifact(key="tune-summary", markdown=header + summary.read_text(encoding="utf-8"),
                                 description=f"`{SUMMARY_FILE}` of study `{state.name}`")
    else:
        logger.warning("%s not written: no summary artifact", summary)
    rows = trial_rows(params, root, storage)
    if rows:
        create_table_artifact(key="tune-trials", table=rows, description=f"trials of study `{state.name}`")


def _counts(state: StudyState) -> str:
    return ", ".join(f"{k.lower()} {v}" for k, v in sorted(state.counts.items())) or "no trials"


@flow(name=FLOW_NAME, description="Optuna study of params.yaml's tune section, one Prefect task per trial.",
      task_runner=ThreadPoolTaskRunner(max_workers=1))
def tune_flow(
    params_file: str = "params.yaml",
    root: str | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    dask_workers: int = 0,
    dask_address: str | None = None,
    threads_per_trial: int | None = None,
    max_rounds: int = 3,
) -> dict[str, Any]:
    """Run (or resume) the study until ``n_trials`` trials have finished, then write its outputs.

    Args:
        params_file: params.yaml, relative to ``root``.
        root: the repository (inputs: data/prepared, models/teacher, ...; outputs: tune/,
            reports/tune/, metrics/tune.json). Default: this checkout.
        n_trials: finished trials to reach (default ``tune.n_trials``), counted over every run.
        storage: the shared Optuna storage URL (default ``tune.storage``). Parallel trials need
            a file-based SQLite URL on one machine, or PostgreSQL (``postgresql+psycopg://...``).
        dask_workers: run trials on a local Dask cluster of this many worker processes
            (0: one trial at a time in this process).
        dask_address: run trials on an existing Dask scheduler (``tcp://host:8786``) instead.
        threads_per_trial: torch threads per trial (``runtime.num_threads``); default with
            ``dask_workers``: the cores divided among the workers, else params.yaml's value.
        max_rounds: rounds of trial tasks; a round replaces the trials that failed in the last.
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    repo = Path(root).resolve() if root else PROJECT_ROOT
    if threads_per_trial is None and dask_workers > 0:
        threads_per_trial = default_threads(dask_workers)
    params = tune_params(repo / params_file, n_trials, threads_per_trial)
    url = shared_storage(storage or params.tune.storage, repo)
    state = prepare_study(params, repo, url)
    logger.info("study '%s' in %s: %d/%d trials finished; torch threads per trial: %d", state.name, masked(url),
                state.finished, params.tune.n_trials, params.runtime.num_threads)

    runner = make_task_runner(dask_workers, dask_address)
    runner_name = (f"Dask scheduler {dask_address}" if dask_address else
                   f"local Dask cluster ({dask_workers} workers)" if dask_workers > 0 else "one local thread")
    with workers_report_here(dask_workers > 0 or bool(dask_address), dask_address), runner:
        state, tasks = _run_trials(runner, params, repo, url, state, max_rounds)
    if state.finished < params.tune.n_trials:
        logger.warning("%d/%d trials finished (%s): timeout or failures; outputs cover the trials so far",
                       state.finished, params.tune.n_trials, _counts(state))

    raw = params.model_dump(by_alias=True, mode="json")
    through_dvc = ((repo / "dvc.yaml").exists() and (repo / ".dvc").is_dir()
                   and url == shared_storage(tune_params(repo / params_file).tune.storage, repo))
    metrics = outputs_task(raw, str(repo), url, wall_seconds=round(time.perf_counter() - t0, 2),
                           through_dvc=through_dvc)
    wall = time.perf_counter() - t0
    _publish(repo, url, params, state, runner_name, wall)
    logger.info("study '%s': %s in %.1f s", state.name, _counts(state), wall)
    return {"study": state.name, "target": params.tune.n_trials, "finished": state.finished,
            "counts": state.counts, "wall_seconds": round(wall, 2), "metrics": metrics, "tasks": tasks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    parser.add_argument("--root", default=None, help="repository root (default: this checkout)")
    parser.add_argument("--n-trials", type=int, default=None, help="finished trials to reach (default tune.n_trials)")
    parser.add_argument("--storage", default=None, help="shared Optuna storage URL (default tune.storage)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, help="local Dask cluster with this many worker processes")
    where.add_argument("--address", default=None, help="existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per trial")
    parser.add_argument("--max-rounds", type=int, default=3, help="rounds that replace failed trials")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        result = tune_flow(params_file=args.params, root=args.root, n_trials=args.n_trials, storage=args.storage,
                           dask_workers=args.workers, dask_address=args.address, threads_per_trial=args.threads,
                           max_rounds=args.max_rounds)
    except ConfkdError as err:
        logging.getLogger(FLOW_NAME).error("%s", err)
        return 1
    return 0 if result["finished"] >= result["target"] else 1


if __name__ == "__main__":
    sys.exit(main())
