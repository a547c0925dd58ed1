"""How long the pull-request comment is, and how fast it is built, between two committed revisions.

    python benchmarks/bench_pr_report.py [--base 20c9995] [--head 5dbeb53] [--repeats 3]

Runs `confkd pr-report --base BASE --head HEAD` (committed metrics, DVC diffs folded) ``repeats`` times and
reports the visible lines (outside <details>), the total lines, and the wall time of each run; compares the
visible length with `scripts/metrics_diff.sh` (the raw DVC diffs). Writes benchmarks/results/pr_report.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import ROOT, machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="20c9995")
    parser.add_argument("--head", default="5dbeb53")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    seconds, comment = [], ""
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "confkd.entry", "pr-report", "--base", args.base, "--head", args.head],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        comment = proc.stdout
    visible = comment.split("<details>")[0].rstrip().splitlines()
    raw = subprocess.run(["bash", "scripts/metrics_diff.sh", args.base, args.head], cwd=ROOT, env=env,
                         capture_output=True, text=True).stdout.splitlines()
    results = {"base": args.base, "head": args.head, "visible_lines": len(visible),
               "total_lines": len(comment.splitlines()), "raw_dvc_diff_lines": len(raw),
               "seconds": [round(s, 2) for s in seconds], "machine": machine()}
    md = [f"# Pull-request comment: `{args.base}` → `{args.head}`", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_pr_report.py --base {args.base} --head {args.head}`.",
          "", "| measure | value | target |", "|---|---|---|",
          f"| visible lines (outside `<details>`) | {len(visible)} | <= 60 |",
          f"| total lines (DVC's diffs folded) | {len(comment.splitlines())} | reported |",
          f"| `scripts/metrics_diff.sh` (raw DVC diffs) | {len(raw)} lines | reported |",
          f"| wall time per comment, {args.repeats} runs | {', '.join(f'{s:.1f} s' for s in seconds)} | < 10 s |",
          "", "The visible part of the comment:", "", "```markdown", *visible, "```"]
    write_results("pr_report", results, md)


if __name__ == "__main__":
    main()
