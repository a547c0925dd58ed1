"""What a study leaves behind: the tuned configuration, the trials table, the Pareto front, plots, metrics."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from confkd.config import Params
from confkd.errors import DataError
from confkd.io import atomic_path, provenance, write_json, write_text
from confkd.tuning.pruning import INTERMEDIATE_ATTR, objectives
from confkd.tuning.tuned import tuned_config

log = logging.getLogger(__name__)



def trials_frame(study: optuna.Study, names: list[str]) -> pd.DataFrame:
    """One row per trial: number, state, parameters, objective values and the recorded dev metrics."""
    pareto = {t.number for t in _pareto(study)}
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, "pareto": t.number in pareto,
               **{f"param.{k}": v for k, v in t.params.items()}}
        for i, name in enumerate(names):
            row[name] = t.values[i] if t.values else t.user_attrs.get(name)
        row.update({k: v for k, v in t.user_attrs.items() if k != INTERMEDIATE_ATTR and k not in row})
        row["duration_s"] = round(t.duration.total_seconds(), 1) if t.duration else None
        rows.append(row)
    return pd.DataFrame(rows)


def _pareto(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]


def select_trial(study: optuna.Study, params: Params) -> tuple[optuna.trial.FrozenTrial | None, str]:
    """The trial that becomes the tuned configuration, and why it was chosen.

    Multi-objective: among Pareto trials whose second objective (the confidence gap) is within
    ``tune.kappa``, the best on the first (accuracy); if none is, the best on the second.
    Single-objective: the best feasible trial (constraint met); if none is, the least infeasible.
    """
    tp = params.tune
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None, "no trial completed"
    sign = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    if tp.objective == "multi":
        front = study.best_trials
        ok = [t for t in front if t.values[1] * -sign[1] <= tp.kappa * -sign[1]]
        if ok:
            return max(ok, key=lambda t: sign[0] * t.values[0]), (
                f"best {tp.metrics[0]} among Pareto trials with {tp.metrics[1]} <= kappa {tp.kappa}")
        return max(front, key=lambda t: sign[1] * t.values[1]), (
            f"no Pareto trial has {tp.metrics[1]} <= kappa {tp.kappa}: best {tp.metrics[1]}")
    feasible = [t for t in complete if t.user_attrs.get("constraint", 0.0) <= 0]
    if feasible:
        return max(feasible, key=lambda t: sign[0] * t.value), f"best {tp.single.metric} with constraint met"
    return min(complete, key=lambda t: t.user_attrs.get("constraint", math.inf)), "no trial met the constraint: least infeasible"


def _write_yaml(path: Path, data: dict, header: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def write_outputs(study: optuna.Study, params: Params, paths, wall_seconds: float) -> dict:
    tp = params.tune
    names = [m for m, _ in objectives(tp)]
    frame = trials_frame(study, names)
    paths.tune_reports.mkdir(parents=True, exist_ok=True)
    write_text(paths.tune_reports / "trials.csv", frame.to_csv(index=False))
    front = frame[frame["pareto"]] if len(frame) else frame
    write_text(paths.tune_reports / "pareto.csv", front.to_csv(index=False))
    plot_cols = ["number", "state", *names, "pareto"]
    write_text(paths.tune_plot, frame[[c for c in plot_cols if c in frame]].to_csv(index=False) if len(frame) else "")

    chosen, why = select_trial(study, params)
    if chosen is None:
        raise DataError(f"study '{study.study_name}': no trial completed, nothing to tune from "
                        f"(see {paths.tune_reports / 'trials.csv'})")
    config = tuned_config(params, chosen.params)
    values = {n: float(v) for n, v in zip(names, chosen.values)}
    _write_yaml(paths.best_params, {
        "tune": {"study_name": study.study_name, "trial": chosen.number, "selected_by": why, "dev": values,
                 "base": tp.base},
        "best_params": dict(chosen.params),
        "distill": {"configs": {tp.name: config}},
    }, "# Written by the tune stage (confkd.tuning); the distill/evaluate stages read distill.configs from here.\n")

    metrics = _flat_metrics(frame, names, chosen, values, tp, wall_seconds)
    write_json(paths.tune_metrics, {**provenance(paths.prepared_dir), **metrics})
    write_text(paths.tune_reports / "summary.md", _markdown(study, frame, names, chosen, why, metrics, params))
    _figures(study, names, paths.tune_reports)
    log.info("tuned trial %d (%s): %s", chosen.number, why, values)
    return metrics


def _flat_metrics(frame: pd.DataFrame, names, chosen, values, tp, wall_seconds: float) -> dict:
    state = frame["state"]
    complete, pruned = frame[state == "COMPLETE"], frame[state == "PRUNED"]
    planned = float(complete["steps_run"].max()) if len(complete) and "steps_run" in complete else 0.0
    saved = float((planned - pruned["steps_run"]).clip(lower=0).sum()) if len(pruned) and planned else 0.0
    run = float(frame.loc[state.isin(["COMPLETE", "PRUNED"]), "steps_run"].sum()) if "steps_run" in frame else 0.0
    out = {
        "trials": int(len(frame)), "trials_complete": int(len(complete)), "trials_pruned": int(len(pruned)),
        "trials_failed": int((state == "FAIL").sum()), "pareto_size": int(frame["pareto"].sum()) if len(frame) else 0,
        "best_trial": int(chosen.number), "steps_run": run, "steps_saved_by_pruning": saved,
        "compute_saved_fraction": round(saved / (run + saved), 4) if run + saved else 0.0,
        "wall_seconds": round(wall_seconds, 1),
        "kappa": tp.kappa,
    }
    out.update({f"best.{k}": v for k, v in values.items()})
    if tp.objective == "multi":
        out["best.within_kappa"] = bool(values[names[1]] <= tp.kappa)
    return out


def _markdown(study, frame, names, chosen, why, metrics, params: Params) -> str:
    tp = params.tune
    lines = [f"# Tuning `{tp.base}` -> `{tp.name}` (study `{study.study_name}`)", "",
             f"Objectives: {', '.join(f'{n} ({d.name.lower()})' for n, d in zip(names, study.directions))}; "
             f"sampler {tp.sampler}; pruner {tp.pruner.kind} on {tp.pruner.metric}; budget {tp.budget}.", "",
             f"Trials: {metrics['trials_complete']} complete, {metrics['trials_pruned']} pruned, "
             f"{metrics['trials_failed']} failed; pruning skipped {metrics['steps_saved_by_pruning']:.0f} training steps "
             f"({metrics['compute_saved_fraction']:.0%} of the steps the finished trials would have run).", "",
             f"Chosen: trial {chosen.number} ({why}): "
             + ", ".join(f"{k}={_fmt(v)}" for k, v in chosen.params.items()), "",
             "| trial | state | " + " | ".join(names) + " | " + " | ".join(tp.space) + " | Pareto |",
             "|---|---|" + "---|" * (len(names) + len(tp.space) + 1)]
    for _, r in frame.iterrows():
        cells = [_fmt(r.get(n)) for n in names] + [_fmt(r.get(f"param.{k}")) for k in tp.space]
        lines.append(f"| {r['number']} | {r['state'].lower()} | " + " | ".join(cells) + f" | {'*' if r['pareto'] else ''} |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _figures(study: optuna.Study, names: list[str], folder: Path) -> None:
    """Optuna's Pareto-front and optimisation-history plots (matplotlib backend) as PNG files."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        plots = {"history.png": lambda: ovm.plot_optimization_history(
            study, target=(lambda t: t.values[0]) if len(names) > 1 else None, target_name=names[0])}
        if len(names) > 1:
            plots["pareto.png"] = lambda: ovm.plot_pareto_front(study, target_names=names)
        for fname, make in plots.items():
            try:
                ax = make()
                fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
                with atomic_path(folder / fname) as tmp:
                    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
                plt.close(fig)
            except Exception as err:  # a plot is a nicety; never fail the study over it
                log.warning("could not draw %s: %s", fname, err)
