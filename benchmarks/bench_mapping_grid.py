"""Layer-mapping x loss-weight study for TinyBERT-style distillation (Optuna GridSampler).

    python benchmarks/bench_mapping_grid.py [--steps 300] [--intermediate-steps 150] [--top 3]

Grid: 4 mapping schemes (which teacher layer each of the 3 student layers learns from) x 3
attention:hidden loss-weight ratios, on the `tinybert` configuration of params.yaml at a reduced
budget. The grid runs as one Optuna study with ``GridSampler`` in a SQLite file, so an interrupted
run resumes where it stopped. The ``--top`` rows by dev accuracy are then repeated with two more
seeds and reported as mean ± std over 3 seeds. Selection uses the dev split; test figures are
reported, never used to choose. Writes benchmarks/results/mapping_grid.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import optuna

from _common import ROOT, machine, mean_std, run_config, write_results

SCHEMES = ["uniform", "first", "last", "skip"]
RATIOS = {"att1:hid1": (1.0, 1.0), "att4:hid1": (1.0, 0.25), "att1:hid4": (0.25, 1.0)}
KEYS = ("accuracy", "retention", "agreement", "sigma", "dev_accuracy", "dev_agreement", "dev_sigma", "train_seconds")
EXTRA_SEEDS = (1, 2)


def overrides(scheme: str, ratio: str, args, seed: int | None = None) -> dict:
    att, hid = RATIOS[ratio]
    out = {"max_steps": args.steps, "intermediate_steps": args.intermediate_steps, "eval_every_steps": 100,
           "intermediate": {"scheme": scheme, "attention": {"weight": att}, "hidden": {"weight": hid}}}
    if seed is not None:
        out["seed"] = seed
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300, help="prediction-phase steps per run")
    parser.add_argument("--intermediate-steps", type=int, default=150, help="intermediate-phase steps per run")
    parser.add_argument("--top", type=int, default=3, help="grid rows repeated over 3 seeds")
    parser.add_argument("--storage", default=str(ROOT / "benchmarks" / "results" / "mapping_grid.db"))
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"scheme": SCHEMES, "ratio": list(RATIOS)}
    study = optuna.create_study(
        study_name=f"mapping_grid-s{args.steps}-i{args.intermediate_steps}", storage=f"sqlite:///{args.storage}",
        sampler=optuna.samplers.GridSampler(space, seed=0), direction="maximize", load_if_exists=True)

    with tempfile.TemporaryDirectory() as tmp:
        def objective(trial: optuna.Trial) -> float:
            scheme = trial.suggest_categorical("scheme", SCHEMES)
            ratio = trial.suggest_categorical("ratio", list(RATIOS))
            m = run_config(f"grid_{scheme}_{ratio.replace(':', '_')}", overrides(scheme, ratio, args), Path(tmp),
                           base="tinybert")
            for k in KEYS:
                trial.set_user_attr(k, float(m[k]))
            print(scheme, ratio, {k: round(m[k], 4) for k in KEYS}, flush=True)
            return m["dev_accuracy"]

        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        finished_cells = {tuple(t.params.values()) for t in study.trials if t.state.is_finished()
                          and t.state != optuna.trial.TrialState.FAIL}
        retry = {tuple(t.params.items()) for t in study.trials if t.state == optuna.trial.TrialState.FAIL
                 and tuple(t.params.values()) not in finished_cells}
        waiting = {tuple(t.params.items()) for t in study.trials if t.state == optuna.trial.TrialState.WAITING}
        for params in retry - waiting:  # a failed cell (e.g. an interrupted run) is run again
            study.enqueue_trial(dict(params))
        n_cells = len(SCHEMES) * len(RATIOS)
        if done < n_cells:
            study.optimize(objective, n_trials=n_cells - done)

        grid = [{"scheme": t.params["scheme"], "ratio": t.params["ratio"], **t.user_attrs}
                for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        grid.sort(key=lambda r: -r["dev_accuracy"])

        seeds_file = Path(args.storage).with_suffix(".seeds.json")
        seeded = json.loads(seeds_file.read_text()) if seeds_file.exists() else {}
        for row in grid[: args.top]:
            key = f"{row['scheme']}/{row['ratio']}"
            runs = seeded.setdefault(key, {})
            for seed in EXTRA_SEEDS:
                if str(seed) in runs:
                    continue
                m = run_config(f"grid_seed{seed}", overrides(row["scheme"], row["ratio"], args, seed), Path(tmp),
                               base="tinybert")
                runs[str(seed)] = {k: float(m[k]) for k in KEYS}
                seeds_file.write_text(json.dumps(seeded, indent=2))
                print(key, seed, runs[str(seed)], flush=True)

    from confkd.config import load_params

    base_seed = load_params(ROOT / "params.yaml").seed
    repeated = {}
    for row in grid[: args.top]:
        key = f"{row['scheme']}/{row['ratio']}"
        runs = [{k: row[k] for k in KEYS}, *seeded[key].values()]
        repeated[key] = mean_std(runs, ("accuracy", "agreement", "sigma", "dev_accuracy"))

    md = ["# Layer mapping x loss weights (TinyBERT-style, SST-2)", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_mapping_grid.py --steps {args.steps} "
          f"--intermediate-steps {args.intermediate_steps} --top {args.top}`.",
          f"Student: 3 layers initialised from teacher layers 1,3,5; {args.intermediate_steps} intermediate steps "
          f"(embedding + attention MSE + hidden MSE on the mapped layers), then {args.steps} soft-label steps. "
          "Mapping = teacher layer each student layer 1,2,3 learns from: uniform 2,4,6; first 1,2,3; last 4,5,6; "
          "skip 1,3,5. Ratio = attention:hidden loss weights. Sorted by dev accuracy (the selection split).", "",
          "| mapping | att:hid | dev acc | test acc | retention | agreement | sigma(X) | train s |",
          "|---|---|---|---|---|---|---|---|"]
    for r in grid:
        md.append(f"| {r['scheme']} | {r['ratio'].replace('att', '').replace('hid', '')} | {r['dev_accuracy']:.4f} | "
                  f"{r['accuracy']:.4f} | {r['retention']:.1%} | {r['agreement']:.4f} | {r['sigma']:.4f} | "
                  f"{r['train_seconds']:.0f} |")
    md += ["", f"Top {args.top} rows over seeds {base_seed}, {', '.join(map(str, EXTRA_SEEDS))} (mean ± std):", "",
           "| mapping / ratio | dev acc | test acc | agreement | sigma(X) |", "|---|---|---|---|---|"]
    for key, s in repeated.items():
        md.append(f"| {key} | {s['dev_accuracy_mean']:.4f} ± {s['dev_accuracy_std']:.4f} | {s['accuracy_mean']:.4f} ± "
                  f"{s['accuracy_std']:.4f} | {s['agreement_mean']:.4f} ± {s['agreement_std']:.4f} | "
                  f"{s['sigma_mean']:.4f} ± {s['sigma_std']:.4f} |")
    write_results("mapping_grid", {"machine": machine(), "steps": args.steps,
                                   "intermediate_steps": args.intermediate_steps, "grid": grid,
                                   "repeated": repeated, "seed_runs": seeded}, md)


if __name__ == "__main__":
    main()
