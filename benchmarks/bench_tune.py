"""Confidence-guided tuning on the embedded default: does the tuned student keep phi_cnf where the default fails?

    python benchmarks/bench_tune.py            # dvc repro of tune -> distill_tuned -> evaluate_tuned (timed)
    python benchmarks/bench_tune.py --collect  # only re-read the metrics of an existing run

The tuned configuration (tune.name) is compared with the configuration it was tuned from (tune.base)
on the test split, under the fixed bound tune.kappa and under the default bound
kappa = sqrt(final training KL). Writes benchmarks/results/tune.{json,md}.
"""

from __future__ import annotations

import argparse
import json

from _common import ROOT, dvc, machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collect", action="store_true")
    args = parser.parse_args()
    from confkd.config import load_params

    params = load_params(ROOT / "params.yaml")
    tp = params.tune
    old = ROOT / "benchmarks/results/tune.json"
    stage_seconds = json.loads(old.read_text()).get("stage_seconds") if args.collect and old.exists() else None
    if not args.collect:
        seconds, _ = dvc("repro", "evaluate_tuned")
        stage_seconds = round(seconds, 1)
    tune = json.loads((ROOT / "metrics/tune.json").read_text())
    ev = {name: json.loads((ROOT / f"metrics/eval/{name}.json").read_text()) for name in (tp.base, tp.name)}
    dist = {name: json.loads((ROOT / f"metrics/distill/{name}.json").read_text()) for name in (tp.base, tp.name)}
    teacher_acc = json.loads((ROOT / "metrics/teacher.json").read_text())["accuracy"]
    import yaml

    best = yaml.safe_load((ROOT / "tune/best_params.yaml").read_text())
    rows = {}
    for name in (tp.base, tp.name):
        t, d = ev[name]["test"], ev[name]["dev"]
        rows[name] = {"test_accuracy": t["accuracy"], "retention": t["accuracy"] / teacher_acc,
                      "test_sigma": t["sigma"], "test_sigma_ci": [t.get("sigma_ci_low"), t.get("sigma_ci_high")],
                      "dev_accuracy": d["accuracy"], "dev_sigma": d["sigma"], "kappa_default": t["kappa"],
                      "phi_cnf_default": bool(t["phi_cnf"]), "phi_cnf_fixed": bool(t["sigma"] <= tp.kappa),
                      "agreement": t["agreement"], "ece": t["ece"], "train_seconds": dist[name]["train_seconds"]}
    results = {"machine": machine(), "stage_seconds": stage_seconds, "tune": tune, "best_params": best["best_params"],
               "selected_by": best["tune"]["selected_by"], "models": rows, "kappa": tp.kappa}
    minutes = tune["wall_seconds"] / 60
    md = ["# Confidence-guided tuning (SST-2)", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_tune.py` "
          f"(= `dvc repro evaluate_tuned`: tune, then distil and evaluate the tuned configuration).",
          f"Study: `{tp.base}`, {tp.objective}-objective ({', '.join(tp.metrics)}), sampler {tp.sampler}, pruner "
          f"{tp.pruner.kind} on {tp.pruner.metric}, trial budget {tp.budget}, {tp.n_trials} trials or "
          f"{tp.timeout_minutes} min.", "",
          f"Trials: {tune['trials_complete']} complete, {tune['trials_pruned']} pruned, {tune['trials_failed']} failed; "
          f"pruning skipped {tune['steps_saved_by_pruning']:.0f} training steps "
          f"({tune['compute_saved_fraction']:.0%} of the steps the finished trials would have run).",
          f"Chosen trial {tune['best_trial']} ({best['tune']['selected_by']}): "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["best_params"].items()) + ".",
          "", f"| configuration | test acc | vs teacher | agreement | sigma(X) test [95% CI] | phi_cnf at kappa={tp.kappa} | "
              "kappa = sqrt(train KL) | phi_cnf there | dev acc | dev sigma |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lo, hi = r["test_sigma_ci"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        md.append(f"| {name} | {r['test_accuracy']:.4f} | {r['retention']:.1%} | {r['agreement']:.4f} | "
                  f"{r['test_sigma']:.4f}{ci} | {'holds' if r['phi_cnf_fixed'] else '**fails**'} | "
                  f"{r['kappa_default']:.3f} | {'holds' if r['phi_cnf_default'] else '**fails**'} | "
                  f"{r['dev_accuracy']:.4f} | {r['dev_sigma']:.4f} |")
    restored = not rows[tp.base]["phi_cnf_fixed"] and rows[tp.name]["phi_cnf_fixed"]
    md += ["", "| target | result | met |", "|---|---|---|",
           f"| tuning with the default budget <= 30 min | {minutes:.1f} min (study wall time) | "
           f"{'yes' if minutes <= 30 else '**no**'} |",
           f"| tuning restores phi_cnf (kappa={tp.kappa}) for a student that fails it | "
           f"{tp.base}: sigma {rows[tp.base]['test_sigma']:.4f} -> {tp.name}: {rows[tp.name]['test_sigma']:.4f} | "
           f"{'yes' if restored else '**no**'} |"]
    if stage_seconds is not None:
        md.append(f"\nWhole `dvc repro evaluate_tuned` (tune + distil + evaluate): {stage_seconds / 60:.1f} min.")
    write_results("tune", results, md)


if __name__ == "__main__":
    main()
