"""The ``tune`` stage: an Optuna study over one distillation configuration, guided by confidence preservation.

Each trial trains configuration ``tune.base`` with the trial's hyperparameters (``tune.space``, dotted
keys into the configuration) at the reduced budget ``tune.budget``, and returns dev metrics only (the
test split is never used to choose). The study lives in ``tune.storage`` (SQLite by default, any
SQLAlchemy URL for shared studies); trials send heartbeats, so a trial whose process was killed is
marked failed and re-queued with the same parameters, and only complete or pruned trials count
towards ``tune.n_trials``: an interrupted study resumes without losing or double-counting a trial.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from confkd.config import Params, TuneParams, _deep_merge
from confkd.errors import ParamsError
from confkd.layout import DEFAULT, TEACHER, DistillPaths, Layout
from confkd.tuning.pruning import Reporter, finished, make_pruner, objectives
from confkd.tuning.space import grid, nest, suggest

log = logging.getLogger(__name__)

RECORDED = ("train_seconds", "steps", "train_kl_to_teacher")  # besides every dev_* metric


def with_kappa(params: Params, layout: Layout = DEFAULT) -> Params:
    """``params`` with ``tune.kappa`` (and a null ``single.constraint_max``) resolved to a number.

    A null ``tune.kappa`` takes the evaluate stage's kappa on dev: the reference teacher's dev sigma under
    ``evaluate.confidence`` (policy ``reference``) or ``evaluate.kappa.value`` (``fixed``), so the tuned
    trial is chosen against the same sigma and threshold the report judges it by.
    """
    tp = params.tune
    kappa = tp.kappa
    if kappa is None:
        from confkd.evaluation.saved import dev_kappa

        kappa = dev_kappa(params, layout)
        log.info("tune.kappa: %.4f (evaluate.kappa policy '%s' on dev)", kappa, params.evaluate.kappa.policy)
    single = tp.single
    if single.constraint_max is None:
        single = single.model_copy(update={"constraint_max": kappa})
    return params.model_copy(update={"tune": tp.model_copy(update={"kappa": kappa, "single": single})})


def default_study_name(params: Params, layout: Layout = DEFAULT) -> str:
    """Base name + a hash of everything that defines the study, so a changed setup starts a new study: the
    base configuration, seed, objectives, space, budget and pruner, the sigma definition and kappa the trials
    are judged by, the task, and the content of the data and teacher logits the trials train on (a study is
    never reused across data)."""
    from confkd.io import fingerprint

    tp = params.tune
    spec = {"base": params.distill.resolve(tp.base).model_dump(mode="json"), "seed": params.seed,
            **tp.model_dump(mode="json", include={"objective", "metrics", "single", "sampler", "budget", "space",
                                                  "pruner", "n_startup_trials", "kappa"}),
            "confidence": params.evaluate.confidence.model_dump(mode="json"),
            "task": params.task.model_dump(mode="json")}
    data = [p for p in (layout.prepared_dir, layout.logits_dir(TEACHER)) if p.exists()]
    digest = hashlib.sha256((json.dumps(spec, sort_keys=True) + fingerprint(*data)).encode()).hexdigest()[:10]
    return f"{tp.base}-{tp.objective}-{digest}"


def storage_url(url: str, root: Path) -> str:
    """Relative SQLite paths are taken from ``root`` (the repository), and their folder is created."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        path = root / url[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def open_study(params: Params, layout: Layout = DEFAULT, storage: str | None = None,
               study_name: str | None = None, sampler_seed: int | None = None) -> optuna.Study:
    """Create or load the study. ``sampler_seed`` (default: ``params.seed``) seeds this process's
    sampler: workers sharing one study need distinct seeds, or every fresh sampler proposes the
    same random start-up trials."""
    tp = params.tune
    url = storage_url(storage or tp.storage, layout.root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in practice
            rdb = RDBStorage(url, heartbeat_interval=tp.heartbeat_seconds, grace_period=2 * tp.heartbeat_seconds,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as err:  # sqlalchemy raises many kinds for bad URLs / unreachable servers
        raise ParamsError(f"tune.storage: cannot open '{url}': {err}") from None
    directions = [d for _, d in objectives(tp)]
    return optuna.create_study(study_name=study_name or tp.study_name or default_study_name(params, layout), storage=rdb,
                               sampler=_sampler(tp, params.seed if sampler_seed is None else sampler_seed),
                               directions=directions, load_if_exists=True)


def _sampler(tp: TuneParams, seed: int) -> optuna.samplers.BaseSampler:
    constraints = None
    if tp.objective == "single" and tp.single.constraint_metric and tp.single.constraint_max is not None:
        constraints = _constraint_values
    if tp.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tp.n_startup_trials, multivariate=True,
                                          constraints_func=constraints)
    if tp.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if tp.sampler == "grid":
        return optuna.samplers.GridSampler(grid(tp.space), seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [trial.user_attrs.get("constraint", 0.0)]


def trial_params(params: Params, name: str, values: dict) -> Params:
    """``params`` with configuration ``name`` = base configuration + budget + the trial's values."""
    tp = params.tune
    config = _deep_merge(_deep_merge(copy.deepcopy(params.distill.configs[tp.base] or {}), tp.budget), nest(values))
    return params.with_config(name, config, source="tune")


def _check_space(params: Params) -> None:
    """Fail before any training when a dimension does not fit the configuration (e.g. a typo in a key)."""
    tp = params.tune
    if tp.base is None:
        raise ParamsError("tune.base: name the distill configuration to tune")
    if tp.name in params.distill.configs:
        raise ParamsError(f"tune.name: '{tp.name}' is already a distill configuration; pick another name")
    if not tp.space:
        raise ParamsError("tune.space: empty search space")
    for key, dim in tp.space.items():
        for value in (dim.choices if dim.type == "categorical" else [dim.low, dim.high]):
            value = int(value) if dim.type == "int" else value
            try:
                trial_params(params, "_check", {key: value})
            except ParamsError as err:
                raise ParamsError(f"tune.space.{key} = {value!r} does not fit configuration '{tp.base}':\n{err}") from None


def make_objective(params: Params, study: optuna.Study, paths: Layout):
    """The trial function: train the base configuration with the trial's values, return dev objectives."""
    from confkd.distill.trainer import distill

    tp = params.tune
    names = [m for m, _ in objectives(tp)]
    multi = tp.objective == "multi"
    pruner = make_pruner(tp.pruner)
    if not multi:
        study.pruner = pruner  # Trial.should_prune asks the study's pruner

    def objective(trial: optuna.Trial):
        values = suggest(trial, tp.space)
        name = f"trial{trial.number:04d}"
        reporter = Reporter(trial, pruner, tp.pruner.metric, multi)
        t0 = time.perf_counter()
        try:
            metrics = distill(trial_params(params, name, values), name,
                              DistillPaths.of(name, paths, root=paths.tune_work / name), on_evaluate=reporter)
        finally:
            shutil.rmtree(paths.tune_work / name, ignore_errors=True)
            trial.set_user_attr("wall_seconds", round(time.perf_counter() - t0, 2))
            trial.set_user_attr("steps_run", reporter.last_step)
        for key, value in metrics.items():
            if key.startswith("dev_") or key in RECORDED:
                trial.set_user_attr(key, value)
        missing = [m for m in names if m not in metrics]
        if missing:
            raise ParamsError(f"tune objective metric(s) {missing} not produced (available: "
                              f"{sorted(k for k in metrics if k.startswith('dev_'))})")
        if not multi and tp.single.constraint_metric and tp.single.constraint_max is not None:
            trial.set_user_attr("constraint", float(metrics[tp.single.constraint_metric] - tp.single.constraint_max))
        log.info("trial %d: %s -> %s", trial.number, values, {m: round(metrics[m], 4) for m in names})
        return tuple(metrics[m] for m in names) if multi else metrics[names[0]]

    return objective


def run_trials(params: Params, paths: Layout = DEFAULT, n_trials: int | None = None,
               storage: str | None = None, max_new: int | None = None, sampler_seed: int | None = None) -> int:
    """Add trials to the shared study until ``n_trials`` have finished (counted across every worker),
    the timeout passes, or this call has started ``max_new`` trials. Returns the number finished.

    Any number of processes or machines may call this at once on one storage (a PostgreSQL URL for
    real parallelism): Optuna hands each its own trials, and ``MaxTrialsCallback`` stops them all at
    the target. Give each concurrent caller its own ``sampler_seed`` (see :func:`open_study`).
    """
    params = with_kappa(params, paths)
    tp = params.tune
    _check_space(params)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(params, paths, storage, sampler_seed=sampler_seed)
    if sampler_seed is None and study.trials:
        # A resumed study: a sampler seeded as in the first run would propose its first trials again.
        study.sampler = _sampler(tp, params.seed + len(study.trials))
    target = n_trials or tp.n_trials
    done = len(finished(study))
    log.info("study '%s' in %s: %d/%d trials finished", study.study_name, storage or tp.storage, done, target)
    if done < target:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        todo = target - done if max_new is None else min(max_new, target - done)
        study.optimize(make_objective(params, study, paths), n_trials=todo,
                       timeout=tp.timeout_minutes * 60 if tp.timeout_minutes else None,
                       callbacks=[MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED))],
                       catch=(FloatingPointError,))
    return len(finished(study))


def write_study_outputs(params: Params, paths: Layout = DEFAULT, storage: str | None = None,
                        wall_seconds: float = 0.0) -> dict:
    """The tuned configuration, trials table, Pareto front, plots and metrics of the study as it stands."""
    from confkd.tuning.results import write_outputs

    params = with_kappa(params, paths)
    return write_outputs(open_study(params, paths, storage), params, paths, wall_seconds=wall_seconds)


def run_study(params: Params, paths: Layout = DEFAULT, n_trials: int | None = None,
              storage: str | None = None) -> dict:
    """The ``tune`` stage: run (or resume) the study until ``n_trials`` trials have finished or the
    timeout, then write its outputs."""
    t0 = time.perf_counter()
    run_trials(params, paths, n_trials, storage)
    return write_study_outputs(params, paths, storage, wall_seconds=time.perf_counter() - t0)
