"""The pull-request workflow, rehearsed end to end between two revisions, timed.

    python benchmarks/bench_rehearsal.py BASE HEAD [--keep DIR]

Runs ``scripts/rehearse_pr.py BASE HEAD`` (what ``.github/workflows/pr-metrics.yml`` runs: each revision
checked out into a scratch folder, the quick profile run there as a DVC experiment, then ``confkd pr-report``
on the two folders) and records the wall time of each side, of the comment and in all, against the target of
40 minutes on a 2-core machine, plus the comment it would post. Writes benchmarks/results/rehearsal.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, write_results

TARGET_MINUTES = 40.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("head")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument("--reuse", action="store_true", help="with --keep: reuse the sides already run there and "
                        "their recorded times; only the comment is rebuilt")
    args = parser.parse_args()
    base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", args.head], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    scratch = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-rehearsal-")
    work = args.keep or Path(scratch.name)
    out = work / "comment.md"
    cmd = [sys.executable, "scripts/rehearse_pr.py", args.base, args.head, "--keep", str(work / "runs"),
           "--out", str(out), "--plot", str(work / "pr_report.png"), *(["--reuse"] if args.reuse else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"rehearsal failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    times = {side: float(m.group(2)) for side in ("base", "head")
             if (m := re.search(rf"^{side} \(.*\): (pipeline ran in|reused from .* \(ran in) ([\d.]+) min", proc.stderr, re.M))}
    if args.reuse:  # the sides' recorded times, plus this comment's
        wall = 60 * sum(times.values()) + wall
    comment = proc.stdout
    visible = comment.split("<details>")[0].rstrip().splitlines()
    if scratch is not None:
        scratch.cleanup()
    minutes = wall / 60
    results = {"base": base, "head": head, "machine": machine(), "minutes": round(minutes, 1),
               "base_minutes": times.get("base"), "head_minutes": times.get("head"),
               "target_minutes": TARGET_MINUTES, "met": minutes < TARGET_MINUTES, "visible_lines": len(visible)}
    md = [f"# Pull-request workflow rehearsed: `{base}` → `{head}`", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_rehearsal.py {args.base} {args.head}` (runs "
          "`scripts/rehearse_pr.py`: the quick profile on each revision as a DVC experiment, then `confkd pr-report`)."
          + (" The two sides' pipelines and times come from an earlier run kept with `--keep`; this `--reuse` run "
             "rebuilt the comment only (its seconds added to the total)." if args.reuse else ""),
          "", "| step | wall time |", "|---|---|",
          f"| base `{base}`: checkout + quick-profile pipeline | {times.get('base', float('nan')):.1f} min |",
          f"| head `{head}`: checkout + quick-profile pipeline | {times.get('head', float('nan')):.1f} min |",
          f"| whole rehearsal, comment included | **{minutes:.1f} min** (target < {TARGET_MINUTES:g} min: "
          f"{'met' if minutes < TARGET_MINUTES else '**not met**'}) |",
          "", f"The comment it would post (visible part, {len(visible)} lines; DVC's diffs are folded below it):", "",
          "```markdown", *visible, "```"]
    write_results("rehearsal", results, md)


if __name__ == "__main__":
    main()
