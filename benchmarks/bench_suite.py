"""How long the README's test command takes on this machine, over repeated runs.

    python benchmarks/bench_suite.py [--runs 2] [--name test_suite]

Runs ``python -m pytest -q -p no:cacheprovider --durations=15`` (the README's command; the cache plugin off so
that one run's failures do not reorder the next) ``--runs`` times, one after another, and reads pytest's own
summary: the wall time it reports, the test count, and the slowest tests. CPU time over wall time says how
busy the cores were (the CPU time of pytest, its workers and every subprocess they waited for; DVC's detached
queue workers are not counted, so it is a lower bound). Run it on an otherwise idle machine: anything else
running lands in the figure.

Writes benchmarks/results/<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time

from _common import ROOT, machine, write_results

SUMMARY = re.compile(r"(\d+) passed.* in ([\d.]+)s")
FAILED = re.compile(r"(\d+) (failed|error)")
DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")
BUDGET_S = 600.0


def one_run() -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15"],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = SUMMARY.search(proc.stdout)
    failed = FAILED.search(proc.stdout.splitlines()[-1] if proc.stdout else "")
    if proc.returncode != 0 or summary is None or failed:
        sys.exit(f"the test suite failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    slowest = [{"seconds": float(m.group(1)), "when": m.group(2), "test": m.group(3)}
               for m in map(DURATION.match, proc.stdout.splitlines()) if m]
    return {"passed": int(summary.group(1)), "pytest_seconds": float(summary.group(2)), "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1), "cpu_busy_percent": round(100 * cpu / wall), "slowest": slowest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--name", default="test_suite")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    runs = []
    for i in range(args.runs):
        runs.append(one_run())
        print(f"run {i + 1}/{args.runs}: {runs[-1]['pytest_seconds']:.0f} s, {runs[-1]['passed']} passed", flush=True)
    times = [r["pytest_seconds"] for r in runs]
    within = all(t < BUDGET_S for t in times)
    results = {"machine": machine(), "workers": os.cpu_count(), "runs": runs, "min_seconds": min(times),
               "max_seconds": max(times), "budget_seconds": BUDGET_S, "every_run_within_budget": within}
    md = [f"# Test suite wall time ({len(runs)} runs)", "",
          f"`python benchmarks/bench_suite.py --runs {args.runs}`: the README's test command, run after run on an "
          f"otherwise idle machine ({machine()}; pytest-xdist, one worker per core plus one).", "",
          "| run | tests passed | pytest wall (s) | CPU busy (% of one core, lower bound) |", "|---|---|---|---|"]
    md += [f"| {i + 1} | {r['passed']} | {r['pytest_seconds']:.0f} | {r['cpu_busy_percent']} |" for i, r in enumerate(runs)]
    md += ["", f"Budget {BUDGET_S:.0f} s (10 minutes): **{'every run within it' if within else 'exceeded'}** "
           f"({min(times):.0f}–{max(times):.0f} s).", "", "Slowest tests of the last run:", "",
           "| seconds | test |", "|---|---|"]
    md += [f"| {s['seconds']:.1f} | `{s['test']}` ({s['when']}) |" for s in runs[-1]["slowest"][:10]]
    write_results(args.name, results, md)


if __name__ == "__main__":
    main()
