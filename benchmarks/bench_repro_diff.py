"""Did the rerun reproduce the committed results? The largest difference per metrics file, old run vs new.

    python benchmarks/bench_repro_diff.py --base ff0cb7d [--all-keys] [--name repro_diff]

Compares every metrics file of the workspace with the same file at ``--base`` (git), over the numeric keys
both have. Keys whose definition changed on purpose (sigma and kappa and what derives from them) and wall-clock
timings are listed apart: they are not expected to match; ``--all-keys`` compares the former too (a rerun with no
redefinition). A file identical to the base's is marked "identical file" (not rerun, or rerun to the same
bytes). Writes benchmarks/results/<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess

from _common import ROOT, machine, write_results

from confkd.prreport import flatten

REDEFINED = re.compile(r"(^|\.)(ts_)?(sigma|kappa|phi_cnf|mean_abs_conf_gap|max_abs_conf_gap|beta_sum)"
                       r"(_ci_low|_ci_high)?$|^sigma|^dev_sigma|^dev_mean_abs_conf_gap|^mean_abs_conf_gap"
                       r"|train_kl_to_teacher|conf_pearson|conf_spearman")
TIMING = re.compile(r"seconds|per_second|_ms_|p50|p95|speedup|latency|wall")


def _numbers(flat: dict) -> dict[str, float]:
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--all-keys", action="store_true", help="compare sigma, kappa and the like too")
    parser.add_argument("--name", default="repro_diff")
    args = parser.parse_args()
    redefined = re.compile(r"(?!)") if args.all_keys else REDEFINED  # (?!) matches nothing
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "metrics").rglob("*.json"))
    rows = []
    for rel in files:
        old = subprocess.run(["git", "show", f"{args.base}:{rel}"], cwd=ROOT, capture_output=True, text=True)
        if old.returncode != 0:
            rows.append({"file": rel, "status": "new file"})
            continue
        if old.stdout == (ROOT / rel).read_text():
            rows.append({"file": rel, "status": "identical file"})
            continue
        a = _numbers(flatten(json.loads(old.stdout), rel))
        b = _numbers(flatten(json.loads((ROOT / rel).read_text()), rel))
        common = sorted(set(a) & set(b))
        same_def = [k for k in common if not redefined.search(k) and not TIMING.search(k)]
        diffs = {k: abs(a[k] - b[k]) for k in same_def}
        worst = max(diffs, key=diffs.get) if diffs else None
        rows.append({"file": rel, "status": "compared", "keys": len(same_def),
                     "max_abs_diff": diffs[worst] if worst else 0.0, "worst_key": worst,
                     "redefined_keys": sum(bool(redefined.search(k)) for k in common),
                     "timing_keys": sum(bool(TIMING.search(k)) for k in common),
                     "new_keys": len(set(b) - set(a)), "dropped_keys": len(set(a) - set(b))})
    md = [f"# Rerun vs committed results (`{args.base}` → workspace)", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_repro_diff.py --base {args.base}"
          f"{' --all-keys' if args.all_keys else ''} --name {args.name}`.", "",
          "Compared: numeric keys present in both, excluding wall-clock timings"
          + ("." if args.all_keys else " and keys redefined on purpose (sigma, kappa, phi_cnf, the confidence "
             "correlations and what derives from them; the final training KL, now measured on the train sample)."),
          "", "| metrics file | keys compared | largest difference | key | new / dropped keys |", "|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "compared":
            md.append(f"| {r['file']} | — | {r['status']} | — | — |")
        else:
            md.append(f"| {r['file']} | {r['keys']} | {r['max_abs_diff']:.3g} | {r['worst_key'] or '—'} | "
                      f"{r['new_keys']} / {r['dropped_keys']} |")
    write_results(args.name, {"base": args.base, "all_keys": args.all_keys, "rows": rows, "machine": machine()}, md)


if __name__ == "__main__":
    main()
