"""Parallel tuning trials: the tuning flow (flows/tune.py) with 1 vs 2 Dask worker processes.

Runs the same trials twice on the real pipeline's ``tune.base`` configuration at a small fixed
budget, in a scratch copy of the repository (the checkout's prepared data, teacher and logits,
linked; its tune outputs untouched): once on a local Dask cluster of 1 worker, once of 2, each
trial with 1 torch thread, each run with its own fresh SQLite study.

- **Same trials.** The same seed, no pruning, and ``n_startup_trials`` >= the trial count, so
  every trial's parameters come from its task's sampler seed: both runs train exactly the same
  configurations (checked) for the same number of steps.
- **Times.** Flow wall time (Dask cluster start-up, trials, the study's outputs and artifacts)
  and the trial span (first trial start to last trial end, from the study). A temporary Prefect
  server is started once, before either run, and not timed.

    python benchmarks/bench_dask_tune.py                     # 4 trials x 60 steps
    python benchmarks/bench_dask_tune.py --trials 6 --steps 100

Writes benchmarks/results/dask_tune.json and dask_tune.md. Needs `dvc repro teacher` (and
`augment`, if ``tune.base`` trains on augmented data) in the checkout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml
from _common import ROOT, machine, write_results

from confkd.config import load_params
from confkd.tuning.parallel import apply_prefect_env_defaults

log = logging.getLogger("bench_dask_tune")
INPUTS = ("data/prepared", "models/teacher", "artifacts/teacher/logits", "artifacts/teacher_reference/logits",
          "data/augmented", "artifacts/augment")


def scratch_repo(scratch: Path, trials: int, steps: int) -> dict:
    """Link the checkout's inputs into ``scratch`` and write its params.yaml; returns the tune section."""
    if not (ROOT / "models/teacher").exists():
        raise SystemExit("models/teacher not found: run `dvc repro teacher` first")
    for rel in INPUTS:
        if (ROOT / rel).exists():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch / rel).symlink_to(ROOT / rel, target_is_directory=True)
    raw = load_params(ROOT / "params.yaml").model_dump(by_alias=True, mode="json")
    raw["tune"].update(n_trials=trials, n_startup_trials=trials, timeout_minutes=None, study_name=None,
                       pruner={"kind": "none"},
                       budget={"max_steps": steps, "eval_every_steps": max(1, steps // 2),
                               "early_stopping_patience": 3})
    (scratch / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return raw["tune"]


def _trials(db: Path) -> list[dict]:
    """Every trial's number, state, start, end and parameters, read with plain SQL."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        rows = con.execute("SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials").fetchall()
        params = con.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
    values: dict[int, dict] = {}
    for trial_id, name, value in params:
        values.setdefault(trial_id, {})[name] = round(value, 10)
    return [{"number": n, "state": s, "start": datetime.fromisoformat(a),
             "end": datetime.fromisoformat(b) if b else None, "params": values.get(i, {})} for i, n, s, a, b in rows]


def run(flow, scratch: Path, workers: int) -> dict:
    db = scratch / "tune" / f"bench-{workers}w.db"
    t0 = time.perf_counter()
    result = flow(root=str(scratch), storage=f"sqlite:///{db}", dask_workers=workers, threads_per_trial=1)
    wall = time.perf_counter() - t0
    trials = _trials(db)
    ends = [t["end"] for t in trials if t["end"]]
    span = (max(ends) - min(t["start"] for t in trials)).total_seconds() if ends else float("nan")
    log.info("%d worker(s): %.1f s flow, %.1f s trial span, %s", workers, wall, span, result["counts"])
    return {"workers": workers, "flow_seconds": round(wall, 1), "trial_span_seconds": round(span, 1),
            "trial_seconds": sorted(round((t["end"] - t["start"]).total_seconds(), 1) for t in trials if t["end"]),
            "counts": result["counts"], "dask_processes": len({t["worker"] for t in result["tasks"] if t["ran"]}),
            "param_sets": sorted(tuple(sorted(t["params"].items())) for t in trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60, help="training steps per trial")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    apply_prefect_env_defaults()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Dask workers unpickle the trial task as flows.tune.trial_task: they need the checkout importable.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    from prefect.testing.utilities import prefect_test_harness

    from flows.tune import tune_flow

    load_before = os.getloadavg()[0]
    with (tempfile.TemporaryDirectory(prefix="bench-dask-tune-") as tmp,
          prefect_test_harness(server_startup_timeout=120)):
        scratch = Path(tmp)
        tune = scratch_repo(scratch, args.trials, args.steps)
        runs = [run(tune_flow, scratch, workers) for workers in (1, 2)]
    load_after = os.getloadavg()[0]
    same = runs[0]["param_sets"] == runs[1]["param_sets"]
    one, two = runs
    speedup_flow = one["flow_seconds"] / two["flow_seconds"]
    speedup_span = one["trial_span_seconds"] / two["trial_span_seconds"]
    results = {
        "machine": machine(), "base": tune["base"], "trials": args.trials, "steps_per_trial": args.steps,
        "threads_per_trial": 1, "same_trials": same, "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "runs": [{k: v for k, v in r.items() if k != "param_sets"} for r in runs],
        "speedup_flow": round(speedup_flow, 2), "speedup_trial_span": round(speedup_span, 2),
    }
    md = [
        "# Parallel tuning trials: 1 vs 2 Dask workers",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/bench_dask_tune.py --trials {args.trials} "
        f"--steps {args.steps}`.",
        f"Study: `{tune['base']}` ({tune['objective']}-objective), {args.trials} trials x {args.steps} steps, no "
        "pruning, 1 torch thread per trial, fresh SQLite study per run; the same trial parameters in both runs: "
        f"{'yes' if same else 'NO'}.",
        f"1-minute load average before / after: {load_before:.1f} / {load_after:.1f} (other jobs shared the cores).",
        "",
        "| Dask workers | flow wall (s) | trial span (s) | per-trial (s) | trials |",
        "|---|---|---|---|---|",
        *[f"| {r['workers']} | {r['flow_seconds']} | {r['trial_span_seconds']} | "
          f"{', '.join(str(s) for s in r['trial_seconds'])} | {r['counts']} |" for r in runs],
        "",
        f"Speed-up with 2 workers: {speedup_flow:.2f}x flow wall time, {speedup_span:.2f}x trial span.",
    ]
    write_results("dask_tune", results, md)


if __name__ == "__main__":
    main()
