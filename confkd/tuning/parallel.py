"""Parallel tuning: the orchestrator-independent half of the tuning flow (``flows/tune.py``).

Many workers (threads, Dask worker processes, machines) share one Optuna study through one
storage and each runs one trial at a time through :func:`confkd.tuning.study.run_trials`. This
module holds what every orchestrator needs around that call:

- :func:`tune_params`: params.yaml with the run's trial count and per-trial torch threads;
- :func:`shared_storage`: a storage URL that every worker process can open (absolute SQLite
  path with a generous lock timeout; in-memory SQLite refused);
- :func:`prepare_study`: creates the study and its tables once, before workers start, so
  concurrent workers never race to create them;
- :func:`run_one_trial`: what one worker task runs, with a sampler seed of its own;
- :func:`trial_rows`: the trials as plain rows for a table artifact.

It does not import Prefect or Dask, so it runs in any worker process.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from confkd.config import Params, load_params, parse_params, replaced
from confkd.errors import ParamsError
from confkd.layout import Layout
from confkd.orchestration import OFFLINE_ENV_DEFAULTS

log = logging.getLogger(__name__)

# Settings Prefect reads at import time: keep its ephemeral server offline and patient on a busy
# machine, and forward confkd's own log records (trial results, pruning) to the task run logs.
PREFECT_ENV_DEFAULTS = {**OFFLINE_ENV_DEFAULTS, "PREFECT_LOGGING_EXTRA_LOGGERS": "confkd"}

SQLITE_TIMEOUT_SECONDS = 60  # concurrent writers wait this long for SQLite's lock instead of failing
FINISHED_STATES = ("COMPLETE", "PRUNED")


def apply_prefect_env_defaults() -> None:
    """Set :data:`PREFECT_ENV_DEFAULTS` where the environment does not choose a value already.

    Must run before ``prefect`` is imported; Dask worker processes inherit the environment.
    """
    for key, value in PREFECT_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def default_threads(workers: int) -> int:
    """Torch threads per trial so that ``workers`` concurrent trials share the cores without
    oversubscription (which slows every trial down more than the parallelism gains)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def tune_params(params_file: str | Path, n_trials: int | None = None, threads: int | None = None) -> Params:
    """params.yaml with ``tune.n_trials`` and ``runtime.num_threads`` overridden when given.

    Neither value enters the study name (see ``default_study_name``), so changing them continues
    the same study.
    """
    params = load_params(params_file)
    if n_trials is None and threads is None:
        return params
    source = f"{params_file} (tune run overrides)"
    update = {}
    if n_trials is not None:
        update["tune"] = replaced(params.tune, source, n_trials=n_trials)
    if threads is not None:
        update["runtime"] = replaced(params.runtime, source, num_threads=threads)
    return params.model_copy(update=update)


def shared_storage(url: str, root: Path) -> str:
    """The storage URL as every worker must see it.

    Relative SQLite paths are resolved against ``root`` (workers may run with another working
    directory); a file-based SQLite URL gets a lock timeout of :data:`SQLITE_TIMEOUT_SECONDS`
    unless it sets one, since concurrent trials write heartbeats and results to one file. An
    in-memory SQLite database belongs to one connection pool, so each trial task would see an
    empty study of its own: it is refused.
    """
    from confkd.tuning.study import storage_url

    if url.startswith("sqlite:") and (":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite://")):
        raise ParamsError(f"tune storage '{url}' is in-memory: trial tasks cannot share it; use a file-based "
                          "SQLite URL (sqlite:///tune/optuna.db) or PostgreSQL (postgresql+psycopg://...)")
    resolved = storage_url(url, root)
    if not resolved.startswith("sqlite:///"):
        return resolved
    base, _, query = resolved.partition("?")
    Path(base[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    options = dict(parse_qsl(query))
    options.setdefault("timeout", str(SQLITE_TIMEOUT_SECONDS))
    return f"{base}?{urlencode(options)}"


@dataclass(frozen=True)
class StudyState:
    """How far the shared study is: its name and trial counts by state."""

    name: str
    counts: dict[str, int]

    @property
    def finished(self) -> int:
        """Trials that count towards ``n_trials`` (failed ones are retried, not counted)."""
        return sum(self.counts.get(s, 0) for s in FINISHED_STATES)


def prepare_study(params: Params, root: Path, storage: str) -> StudyState:
    """Create the study (and the storage's tables) once, before any worker starts.

    Workers that open a fresh database at the same moment would otherwise race to create the
    same tables, which PostgreSQL reports as an error in one of them.
    """
    import optuna

    from confkd.tuning.study import _check_space, open_study, with_kappa

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as in run_trials: confkd logs the study's progress
    params = with_kappa(params, Layout(Path(root)))  # the resolved kappa is part of the study's identity, as in run_trials
    _check_space(params)  # a bad search space fails here, before any worker is started
    return study_state(open_study(params, Layout(Path(root)), storage))


def study_state(study) -> StudyState:
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return StudyState(study.study_name, dict(counts))


def read_study_state(params: Params, root: Path, storage: str) -> StudyState:
    from confkd.tuning.study import open_study, with_kappa

    layout = Layout(Path(root))
    return study_state(open_study(with_kappa(params, layout), layout, storage))


def run_one_trial(raw_params: dict, root: str, target: int, storage: str, sampler_seed: int,
                  deadline: float | None = None) -> dict:
    """One worker task: add at most one trial to the shared study (none once ``target`` trials
    have finished, or after ``deadline``, a ``time.time()`` value standing for ``tune.timeout_minutes``
    across the whole run). Returns where it ran (host:pid), whether it ran and the study's finished count.

    ``raw_params`` is params as plain data so that it travels to worker processes unchanged;
    ``sampler_seed`` must differ between tasks, or every task samples the same start-up trial.
    """
    from confkd.tuning.study import run_trials

    worker = f"{socket.gethostname()}:{os.getpid()}"
    if deadline is not None and time.time() > deadline:
        log.info("tune timeout passed: trial slot with seed %d not started", sampler_seed)
        return {"worker": worker, "ran": False, "finished": None, "seconds": 0.0}
    params = parse_params(raw_params, source="tune run")
    _log_level(params.runtime.log_level)
    t0 = time.perf_counter()
    finished = run_trials(params, Layout(Path(root)), n_trials=target, storage=storage, max_new=1,
                          sampler_seed=sampler_seed)
    return {"worker": worker, "ran": True, "finished": finished, "seconds": round(time.perf_counter() - t0, 2)}


def _log_level(level: str) -> None:
    """A worker process has no logging set up: without a level, confkd's trial results and
    pruning decisions (INFO) would be dropped there. An explicit level set earlier is kept."""
    logger = logging.getLogger("confkd")
    if logger.level == logging.NOTSET:
        logger.setLevel(level)


def trial_rows(params: Params, root: Path, storage: str) -> list[dict]:
    """Every trial of the study as one flat row (number, state, objectives, parameters, time),
    with non-finite numbers as ``None`` so the rows serialise as JSON."""
    from confkd.tuning.results import trials_frame
    from confkd.tuning.study import objectives, open_study, with_kappa

    names = [m for m, _ in objectives(params.tune)]
    layout = Layout(Path(root))
    frame = trials_frame(open_study(with_kappa(params, layout), layout, storage), names)
    keep = ["number", "state", *names, *[c for c in frame.columns if c.startswith("param.")],
            "pruned_at_step", "steps_run", "duration_s"]
    rows = frame[[c for c in keep if c in frame.columns]].to_dict(orient="records") if len(frame) else []
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value
