"""Wall time of every stage of the default pipeline on one task, resumable.

    python benchmarks/bench_task_time.py --task tweet_offensive [--set KEY=VALUE ...] [--until teacher]
                                         [--work DIR] [--rev HEAD] [--quick] [--name NAME]

Exports the revision (``git archive``) into a work folder (default ``benchmarks/.work/<NAME>``,
kept), sets ``task.name`` (and ``task.data_dir``) plus any ``--set`` in its params.yaml, then runs one
``dvc repro`` there, as a user would, timing each stage from DVC's "Running stage" line to the next one (DVC's
start-up counts towards the first). Every finished stage's time is saved at once, so an interrupted run resumes
where it stopped (DVC skips the stages that are done; their recorded times are kept). ``--quick`` applies the quick profile's overrides
(``scripts/quick_profile.sh``). Writes ``benchmarks/results/<NAME>.{json,md}`` (default
``task_time_<task>[_quick]``, also the work folder's name): each stage's minutes, prepare + validate + teacher,
the whole pipeline, the tune study's trials and steps when it ran, and the headline results of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, write_results

FIRST_STAGES = ("prepare", "validate", "teacher")
RUNNING = re.compile(r"^Running stage '([^']+)'")


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _headline(repo: Path, prepared: dict) -> list[str]:
    """The run's results: the teacher, then each evaluated model's test accuracy, baseline, sigma, phi_cnf.
    Only metrics of this run's task and data (``prepared``: its ``metrics/prepare.json``), judged by the report's
    own check: the snapshot also holds the committed metrics of the default task, computed on its full data."""
    from confkd.evaluation.summary import stale_reason

    lines = []
    teacher = repo / "metrics" / "teacher.json"
    t = json.loads(teacher.read_text()) if teacher.exists() else None
    if t is not None and stale_reason(t, prepared) is None:
        lines.append(f"| teacher (training stage) | {t['accuracy']:.4f} | — | — | — | — | dev accuracy "
                     f"{t.get('dev_accuracy', float('nan')):.4f}, {t.get('steps')} steps |")
    for path in sorted((repo / "metrics" / "eval").glob("*.json")):
        ev = json.loads(path.read_text())
        if stale_reason(ev, prepared) is not None:
            continue
        test = ev.get("test") or {}
        flags = [k for k, v in (ev.get("flags") or {}).items() if v]
        lines.append(f"| {path.stem} | {test.get('accuracy', float('nan')):.4f} | "
                     f"{test.get('majority_accuracy', float('nan')):.4f} | {test.get('sigma', float('nan')):.4f} | "
                     f"{test.get('kappa', float('nan')):.4f} | {'holds' if test.get('phi_cnf') else 'fails'} | "
                     f"{', '.join(flags) or '—'} |")
    if not lines:
        return []
    return ["", "Results of this run (test split):", "",
            "| model | accuracy | majority baseline | sigma | kappa | phi_cnf | flags |", "|---|---|---|---|---|---|---|",
            *lines]


def _tune_line(repo: Path, task: str) -> list[str]:
    """The tune study's size when it ran on this task: trials and optimiser steps (machine-independent)."""
    path = repo / "metrics" / "tune.json"
    tune = json.loads(path.read_text()) if path.exists() else {}
    if tune.get("task") != task:
        return []
    return ["", f"Tune study: {tune['trials_complete']} trials complete, {tune['trials_pruned']} pruned, "
                f"{tune['steps_run']:.0f} optimiser steps in all, {tune['wall_seconds'] / 60:.1f} min of trials; "
                f"picked trial {tune['best_trial']}."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="tweet_offensive", help="embedded task name")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params override in `dvc exp run -S` syntax (~KEY removes a key)")
    parser.add_argument("--quick", action="store_true", help="with the quick profile's overrides")
    parser.add_argument("--until", default=None, help="stop after this stage (with its upstream stages)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--name", default=None, help="results file name (default: task_time_<task>[_quick])")
    args = parser.parse_args()
    from confkd.layout import DEFAULT
    import yaml

    from confkd.orchestration import applicable_overrides, apply_hydra_overrides, plan_stages

    name = args.name or f"task_time_{args.task}" + ("_quick" if args.quick else "")
    work = (args.work or ROOT / "benchmarks" / ".work" / name).resolve()
    repo = work / "repo"
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    state_file = work / "times.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if not repo.exists():
        rehearse = _load_script("rehearse_pr")
        rehearse.checkout(ROOT, args.rev, repo, env)  # the revision's .dvc/ comes with it: a DVC repo already
        from confkd.data.loaders import EMBEDDED_TASKS

        spec = EMBEDDED_TASKS.get(args.task)
        data_dir = (DEFAULT.embedded_task_dir(spec.train) if spec else DEFAULT.data_root / args.task).as_posix()
        quick = rehearse.quick_overrides() if args.quick else []
        overrides = [f"task.name={args.task}", f"task.data_dir={data_dir}", *quick, *args.set]
        overrides, skipped = applicable_overrides(yaml.safe_load((repo / "params.yaml").read_text()), overrides)
        if skipped:
            print(f"not in this revision's params, so not removed: {' '.join(skipped)}", file=sys.stderr)
        apply_hydra_overrides(repo, overrides)
        state = {"rev": subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(), "overrides": overrides, "stages": {}}
        state_file.write_text(json.dumps(state, indent=2))
    # One `dvc repro` process, as a user runs it; a stage's time runs from DVC's "Running stage" line to the
    # next stage's line (or the end), so DVC's own start-up and hashing are counted once, not per stage.
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "dvc", "repro", *([args.until] if args.until else [])]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail, current = [], None

    def close(stage: str | None, now: float) -> None:
        if stage is not None:
            state["stages"][stage] = round((now - started) / 60, 2)
            state_file.write_text(json.dumps(state, indent=2))
            print(f"{stage}: {state['stages'][stage]:.2f} min", file=sys.stderr)

    for line in proc.stdout:
        tail = (tail + [line])[-60:]
        match = RUNNING.match(line.strip())
        if match and current is None:  # DVC's start-up counts towards the first stage run
            current = match.group(1)
        elif match:
            now = time.perf_counter()
            close(current, now)
            current, started = match.group(1), now
    proc.wait()
    if proc.returncode != 0:
        sys.exit(f"dvc repro failed{f' in stage {current}' if current else ''}:\n{''.join(tail)}")
    close(current, time.perf_counter())
    missing = [p.name for p in plan_stages(repo, [args.until] if args.until else None) if p.name not in state["stages"]]
    if missing:
        sys.exit(f"no recorded time for {missing}: they were restored from a cache, not run (empty the work folder)")

    stages = state["stages"]
    first = sum(stages.get(s, 0.0) for s in FIRST_STAGES)
    total = sum(stages.values())
    prepared = json.loads((repo / "metrics" / "prepare.json").read_text())
    complete = args.until is None
    results = {"task": args.task, "rev": state["rev"], "overrides": state["overrides"], "machine": machine(),
               "train_rows": prepared.get("train_rows"), "transfer_rows": prepared.get("transfer_rows"),
               "stage_minutes": stages, "prepare_validate_teacher_minutes": round(first, 1),
               "total_minutes": round(total, 1) if complete else None}
    md = [f"# Stage times of the {'quick profile' if args.quick else 'default pipeline'} on `{args.task}`", "",
          f"Machine: {machine()}. Revision `{state['rev']}`; params overrides: "
          f"{', '.join(f'`{o}`' for o in state['overrides'])}. Train {prepared.get('train_rows')} "
          f"examples, transfer set {prepared.get('transfer_rows')}. Command: `python benchmarks/bench_task_time.py "
          f"--task {args.task}{' --quick' if args.quick else ''}{' --until ' + args.until if args.until else ''}"
          f"{' --name ' + args.name if args.name else ''}`: one `dvc repro`, each stage timed from its start to "
          "the next stage's, nothing else running.", "",
          "| stage | minutes |", "|---|---|", *[f"| {s} | {m:.2f} |" for s, m in stages.items()],
          f"| **prepare + validate + teacher** | **{first:.1f}** |",
          f"| **whole pipeline** | **{total:.1f}** |" if complete else
          f"| whole pipeline | not measured (stopped after `{args.until}`) |", *_tune_line(repo, args.task),
          *_headline(repo, prepared)]
    write_results(name, results, md)
    print(f"wrote {RESULTS / (name + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
