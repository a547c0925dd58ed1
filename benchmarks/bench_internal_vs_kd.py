"""Internal-representation KD vs soft-label-only KD on the same student, over 3 seeds.

    python benchmarks/bench_internal_vs_kd.py [--steps 400] [--intermediate-steps 75] [--methods kd_logits,internal_pid]

Same 3-layer student (teacher layers 1,3,5), same prediction-phase budget; the internal methods
add attention-KL + [CLS]-cosine phases first (Aguilar et al. 2020). Reports mean and std.
Writes benchmarks/results/internal_vs_kd.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, mean_std, run_config, write_results

METHODS = ("kd_logits", "internal_pid", "internal_sid")
SEEDS = (1, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400, help="prediction-phase steps per run")
    parser.add_argument("--intermediate-steps", type=int, default=75, help="steps per intermediate phase")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    runs = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            for method in methods:
                overrides = {"seed": seed, "max_steps": args.steps, "intermediate_steps": args.intermediate_steps}
                m = run_config(f"{method}_s{seed}", overrides, Path(tmp), base=method)
                runs[method].append({k: m[k] for k in ("accuracy", "retention", "agreement", "sigma", "nll", "ece",
                                                      "train_seconds")})
                print(method, seed, runs[method][-1], flush=True)
    summary = {method: mean_std(rs, ("accuracy", "agreement", "sigma", "ece")) for method, rs in runs.items()}
    md = ["# Internal-representation KD vs soft-label KD (SST-2, 3 seeds)", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_internal_vs_kd.py --steps {args.steps} "
          f"--intermediate-steps {args.intermediate_steps} --methods {args.methods}`.",
          "Student: 3 layers copied from teacher layers 1,3,5; mean ± std over seeds 1, 2, 3.", "",
          "| method | test accuracy | agreement | sigma | ECE |", "|---|---|---|---|---|"]
    for method, s in summary.items():
        md.append(f"| {method} | {s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f} | {s['agreement_mean']:.4f} ± "
                  f"{s['agreement_std']:.4f} | {s['sigma_mean']:.4f} ± {s['sigma_std']:.4f} | "
                  f"{s['ece_mean']:.4f} ± {s['ece_std']:.4f} |")
    best = max(summary, key=lambda k: summary[k]["accuracy_mean"])
    md += ["", f"Highest mean accuracy: **{best}**."]
    write_results("internal_vs_kd", {"machine": machine(), "steps": args.steps,
                                     "intermediate_steps": args.intermediate_steps, "runs": runs, "summary": summary}, md)


if __name__ == "__main__":
    main()
