"""Rehearse the pull-request workflow locally: what `.github/workflows/pr-metrics.yml` runs, between two revisions.

    python scripts/rehearse_pr.py BASE HEAD [--out comment.md] [--plot pr_report.png] [--plots-html dir]
                                  [--profile quick|none] [--set key=value ...] [--keep DIR]
                                  [--targets STAGE ...]

For each revision: export it (`git archive`) into a scratch folder, make that a git repository, run the
pipeline there as a DVC experiment in the workspace (`dvc exp run` with the quick profile's overrides of
THIS checkout's scripts/quick_profile.sh, then any --set), and finally build the comment with
`confkd pr-report --base <base folder> --head <head folder>`. Prints the comment it would post and the wall
time of each step. Both sides get the same overrides, so their numbers are comparable. ``--targets`` runs
only those stages and what they need on both sides (``dvc exp run <targets>``), e.g. the students a pull
request is about and the teacher's evaluation; the comment then compares the metrics those stages wrote.

Both sides share one DVC cache (``--cache-dir``, default ``<work>/dvc-cache``; the workflow keeps it between
runs), so DVC's run cache restores every stage whose code, params and inputs the head did not change instead
of recomputing it: a pull request pays for what it changed. ``--no-shared-cache`` runs each side from nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_overrides(script: Path = ROOT / "scripts" / "quick_profile.sh") -> list[str]:
    """The ``-S key=value`` overrides of the quick profile, read from its script (one source)."""
    words = shlex.split(script.read_text(encoding="utf-8"), comments=True)
    return [value for flag, value in zip(words, words[1:]) if flag == "-S"]


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(shlex.quote(c) for c in cmd)} failed in {cwd} ({proc.returncode}):\n"
                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def checkout(repo: Path, rev: str, target: Path, env: dict) -> None:
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev], capture_output=True)
    if archive.returncode != 0:
        sys.exit(f"git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "rehearsal@localhost"],
                ["git", "config", "user.name", "rehearsal"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", f"snapshot of {rev}"]):
        run(cmd, target, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("head")
    parser.add_argument("--repo", default=str(ROOT))
    parser.add_argument("--out", default="comment.md")
    parser.add_argument("--plot", default="pr_report.png")
    parser.add_argument("--plots-html", default=None)
    parser.add_argument("--profile", choices=["quick", "none"], default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra params override")
    parser.add_argument("--targets", nargs="+", default=[], metavar="STAGE",
                        help="run only these stages and their upstream on each side (default: the whole pipeline)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--cache-dir", default=None, help="DVC cache shared by both sides (default: <work>/dvc-cache)")
    parser.add_argument("--no-shared-cache", action="store_true", help="each side with its own, empty DVC cache")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: a side already run there is not run again (only the comment is rebuilt)")
    args = parser.parse_args()
    import yaml

    from confkd.orchestration import applicable_overrides

    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    overrides = (quick_overrides() if args.profile == "quick" else []) + args.set
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rehearse-pr-"))
    times_file = work / "times.json"
    times = json.loads(times_file.read_text()) if args.reuse and times_file.exists() else {}
    for side, rev in (("base", args.base), ("head", args.head)):
        folder = work / side
        if side in times and folder.is_dir():
            print(f"{side} ({rev}): reused from {folder} (ran in {times[side] / 60:.1f} min)", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        checkout(Path(args.repo), rev, folder, env)
        if not args.no_shared_cache:
            cache = Path(args.cache_dir or work / "dvc-cache").resolve()
            run([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(cache)], folder, env)
        # The revision's own package, not the environment's (editable) install of this checkout: without this,
        # `python stages/x.py` would import the workspace's confkd on both sides.
        side_env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p))
        side_overrides, skipped = applicable_overrides(yaml.safe_load((folder / "params.yaml").read_text()), overrides)
        if skipped:
            print(f"{side} ({rev}): not there, so not removed: {' '.join(skipped)}", file=sys.stderr)
        run([sys.executable, "-m", "dvc", "exp", "run", *[a for o in side_overrides for a in ("-S", o)], *args.targets],
            folder, side_env)
        # The profile's overrides are how the pipeline ran, not what the pull request changes: the comment's params
        # diff compares the revisions' own params.yaml.
        run(["git", "checkout", "--", "params.yaml"], folder, env)
        times[side] = time.perf_counter() - t0
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps(times))
        print(f"{side} ({rev}): pipeline ran in {times[side] / 60:.1f} min", file=sys.stderr)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "confkd.entry", "pr-report", "--repo", args.repo, "--base", str(work / "base"),
           "--head", str(work / "head"), "--base-label", args.base, "--head-label", args.head, "--out", args.out,
           "--plot", args.plot]
    if args.plots_html:
        cmd += ["--plots-html", args.plots_html]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    times["report"] = time.perf_counter() - t0
    sys.stdout.write(proc.stdout)
    print(f"rehearsal: base {times['base'] / 60:.1f} min, head {times['head'] / 60:.1f} min, comment "
          f"{times['report']:.1f} s; total {sum(times.values()) / 60:.1f} min (work folder {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
