"""The tuning experiment on another configuration, outside the pipeline's outputs.

    python benchmarks/bench_tune_base.py --base kd_logits [--timeout 25]

Runs the `tune:` study of params.yaml with ``tune.base`` replaced (same space, budget, pruner and
kappa) in a scratch workspace with its own storage (benchmarks/results/tune_<base>.db, resumable),
trains the chosen configuration at the base configuration's full budget, and compares it with the
pipeline's own `<base>` student on the test split. Writes benchmarks/results/tune_<base>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, run_config, write_results

LINKED = ("data/prepared", "models/teacher", "artifacts/teacher/logits", "artifacts/teacher_reference/logits",
          "data/augmented", "artifacts/augment")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="kd_logits")
    parser.add_argument("--timeout", type=float, default=None, help="minutes (default: tune.timeout_minutes)")
    args = parser.parse_args()
    import yaml

    from confkd.config import load_params, parse_params
    from confkd.tuning.space import nest
    from confkd.layout import Layout
    from confkd.tuning.study import run_study

    raw = load_params(ROOT / "params.yaml").model_dump(by_alias=True, mode="json")
    raw["tune"]["base"] = args.base
    if args.timeout is not None:
        raw["tune"]["timeout_minutes"] = args.timeout
    params = parse_params(raw)
    tp = params.tune
    RESULTS.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{RESULTS / f'tune_{args.base}.db'}"
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for rel in LINKED:
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch / rel).symlink_to(ROOT / rel, target_is_directory=True)
        t0 = time.perf_counter()
        study = run_study(params, Layout(scratch), storage=storage)
        study_minutes = (time.perf_counter() - t0) / 60
        best = yaml.safe_load((scratch / "tune" / "best_params.yaml").read_text())
        tuned = run_config(f"tuned_{args.base}", nest(best["best_params"]), scratch / "distill", base=args.base)
    default = json.loads((ROOT / f"metrics/distill/{args.base}.json").read_text())
    keys = ("accuracy", "retention", "agreement", "sigma", "dev_accuracy", "dev_sigma", "train_kl_to_teacher")
    rows = {args.base: {k: default[k] for k in keys}, f"tuned_{args.base}": {k: tuned[k] for k in keys}}
    md = [f"# Confidence-guided tuning of `{args.base}` (SST-2)", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_tune_base.py --base {args.base}"
          + (f" --timeout {args.timeout:g}" if args.timeout is not None else "") + "`.",
          f"The `tune:` study of params.yaml with base `{args.base}`: {study['trials_complete']} complete, "
          f"{study['trials_pruned']} pruned trials in {study_minutes:.1f} min; chosen trial {best['tune']['trial']} "
          f"({best['tune']['selected_by']}): "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["best_params"].items())
          + ". The tuned configuration was then trained at the full budget.", "",
          f"| configuration | test acc | vs teacher | agreement | test sigma(X) | phi_cnf at kappa={tp.kappa} | dev acc | "
          "dev sigma |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        md.append(f"| {name} | {r['accuracy']:.4f} | {r['retention']:.1%} | {r['agreement']:.4f} | {r['sigma']:.4f} | "
                  f"{'holds' if r['sigma'] <= tp.kappa else '**fails**'} | {r['dev_accuracy']:.4f} | "
                  f"{r['dev_sigma']:.4f} |")
    restored = rows[args.base]["sigma"] > tp.kappa >= rows[f"tuned_{args.base}"]["sigma"]
    md += ["", f"Tuning {'restores' if restored else 'does **not** restore'} phi_cnf at kappa={tp.kappa} for "
               f"`{args.base}` on the test split."]
    write_results(f"tune_{args.base}", {"machine": machine(), "study": study, "study_minutes": round(study_minutes, 1),
                                        "best": best, "rows": rows, "restored": restored}, md)


if __name__ == "__main__":
    main()
