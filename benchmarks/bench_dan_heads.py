"""Sparse DAN: shallow vs deep MLP head after the n-gram average, with and without KD, over 3 seeds.

    python benchmarks/bench_dan_heads.py [--heads 256 512,512] [--seeds 42,1,2]

Iyyer et al.'s DAN is *deep*: several non-linear layers after the average, which can model
interactions the average alone cannot (negation, contrast). Each head is trained as `sparse_dan`
(teacher KD on the transfer set, then gold fine-tuning) and as `sparse_dan_no_kd` (gold labels only),
everything else as in params.yaml. The choice between heads is made on the dev split; test is reported.
Writes benchmarks/results/dan_heads.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, mean_std, run_config, write_results

KEYS = ("dev_accuracy", "dev_sigma", "accuracy", "retention", "agreement", "sigma", "train_seconds")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", nargs="+", default=["256", "512,512"], help="hidden widths, comma-separated per head")
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--bases", default="sparse_dan,sparse_dan_no_kd")
    args = parser.parse_args()
    heads = [[int(w) for w in h.split(",")] for h in args.heads]
    seeds = [int(s) for s in args.seeds.split(",")]
    bases = args.bases.split(",")
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for base in bases:
            for head in heads:
                key = f"{base} [{','.join(map(str, head))}]"
                runs[key] = []
                for seed in seeds:
                    m = run_config(f"{base}_h{'x'.join(map(str, head))}_s{seed}",
                                   {"seed": seed, "student": {"hidden_dims": head}}, Path(tmp), base=base)
                    runs[key].append({"seed": seed, **{k: m[k] for k in KEYS}})
                    print(key, runs[key][-1], flush=True)
    summary = {key: mean_std(rs, KEYS) for key, rs in runs.items()}
    cmd = f"python benchmarks/bench_dan_heads.py --heads {' '.join(args.heads)} --seeds {args.seeds} --bases {args.bases}"
    md = ["# Sparse DAN heads (SST-2, mean ± std over seeds " + ", ".join(map(str, seeds)) + ")", "",
          f"Machine: {machine()}. Command: `{cmd}`.", "",
          "| configuration [hidden widths] | dev acc | dev sigma | test acc | retention | agreement | sigma | train s |",
          "|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        md.append(f"| {key} | {s['dev_accuracy_mean']:.4f} ± {s['dev_accuracy_std']:.4f} | {s['dev_sigma_mean']:.4f} | "
                  f"{s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f} | {100 * s['retention_mean']:.1f}% ± "
                  f"{100 * s['retention_std']:.1f} | {s['agreement_mean']:.4f} | {s['sigma_mean']:.4f} ± "
                  f"{s['sigma_std']:.4f} | {s['train_seconds_mean']:.0f} |")
    md += ["", "Per seed (test accuracy): " + "; ".join(
        f"{key}: " + ", ".join(f"{r['seed']}: {r['accuracy']:.4f}" for r in rs) for key, rs in runs.items()) + "."]
    write_results("dan_heads", {"machine": machine(), "seeds": seeds, "runs": runs, "summary": summary}, md)


if __name__ == "__main__":
    main()
