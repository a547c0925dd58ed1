"""``confkd claims``: the research claims, over seeds and tasks, as queued DVC experiments.

    confkd claims [--tasks sst2 tweet_offensive] [--seeds 3] [--configs ...] [--jobs 1] [--no-wait] [--render-only]

Each task x configuration x seed is one DVC experiment (``dvc exp run --queue -S task.name=<task>
-S distill.configs.<config>.seed=<seed> evaluate@<config> evaluate_teacher``): only that configuration's stages and their
upstream run, and DVC's run cache restores what another experiment already computed (one teacher per
task; the seeds vary the students). ``dvc queue start`` runs the queue; as each experiment finishes, its
metrics are read back with DVC's own API (``dvc exp show --json``) and written to one small JSON file per
task x configuration x seed under ``benchmarks/results/claims/``. Commit those files: the command skips
every combination that has one (and every one already queued or running), so the grid resumes after any
interruption, on this machine or another. The table (``benchmarks/results/claims.md``) is rendered from
those files alone: per claim, each arm's mean, std and 95% t-interval over seeds, and for two methods a
paired comparison on the same seeds, with a plain verdict: confirmed, refuted or inconclusive.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from confkd.layout import DEFAULT, TEACHER, evaluate_stage

log = logging.getLogger("confkd.claims")

SEEDS = (42, 1, 2, 3, 4)  # 42 is the default pipeline's seed: that experiment is restored from the run cache
TASKS = ("sst2", "tweet_offensive")
# Configurations the claims need beyond params.yaml: the mapping x weights grid's best row
# (benchmarks/results/mapping_grid.md: skip mapping, attention:hidden = 1:4, best dev accuracy over 3 seeds).
EXTRA_CONFIGS: dict[str, dict[str, Any]] = {
    "tinybert_grid": {"method": "tinybert", "temperature": 1.0, "intermediate.scheme": "skip",
                      "intermediate.embedding.loss": "embedding_mse", "intermediate.embedding.weight": 1.0,
                      "intermediate.attention.loss": "attention_mse", "intermediate.attention.weight": 1.0,
                      "intermediate.hidden.loss": "hidden_mse", "intermediate.hidden.weight": 4.0},
}
# Retention the DAN paper reports (Ye et al. 2022): 92.0% on SST-2, about 97% on average over six tasks.
DAN_PAPER_RETENTION = {"sst2": 0.920, "default": 0.97}


@dataclass(frozen=True)
class Claim:
    """One research claim: ``arms`` compared with ``baseline`` on ``metric`` (paired, same seeds), or, with
    no baseline, a per-arm statement (``kind``: ``retention`` against a paper's figure, ``phi_cnf``)."""

    id: str
    title: str
    source: str
    arms: tuple[str, ...]
    baseline: str | None = None
    metric: str = "accuracy"
    expect: str = "greater"  # the arms' metric is expected greater (or less) than the baseline's
    kind: str = "paired"  # paired | retention | phi_cnf
    optional: bool = False


CLAIMS: tuple[Claim, ...] = (
    Claim("internal_vs_soft", "Internal-representation KD (PID, SID) beats soft-label KD on the same 3-layer "
          "student", "Aguilar et al. 2020", ("internal_pid", "internal_sid"), "kd_logits"),
    Claim("mapping_grid", "TinyBERT with the grid's best mapping and attention:hidden weights beats the default",
          "layer-mapping x loss-weight grid", ("tinybert_grid",), "tinybert"),
    Claim("dan_kd", "The sparse DAN with KD+FT beats the DAN without KD", "Ye et al. 2022", ("sparse_dan",),
          "sparse_dan_no_kd"),
    Claim("dan_retention", "The sparse DAN keeps the paper's retention of the teacher's accuracy (92.0% on SST-2, "
          "~97% averaged over six tasks)", "Ye et al. 2022", ("sparse_dan",), kind="retention"),
    Claim("two_layer_retention", "The 2-layer student with augmentation keeps >= 97% of the teacher's accuracy",
          "this project", ("kd_logits_2l_aug",), kind="retention", optional=True),
    Claim("confidence", "Each student preserves the teacher's confidence (sigma <= kappa)",
          "Vengertsev & Sherman 2024", ("kd_logits", "internal_pid", "internal_sid", "tinybert", "tinybert_grid",
                                        "sparse_dan", "sparse_dan_no_kd", "kd_logits_2l_aug"), kind="phi_cnf"),
)


# ------------------------------------------------------------------------------------------- statistics


def t_quantile(q: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, dof))


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """``n``, ``mean``, ``std`` (sample, ddof 1) and a 95% t-interval of the mean (None below 2 values)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    mean = sum(xs) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def verdict(ci_low: float | None, ci_high: float | None, expect: str = "greater", reference: float = 0.0) -> str:
    """``confirmed`` when the whole interval lies on the expected side of ``reference``, ``refuted`` when it
    lies wholly on the other side, ``inconclusive`` when it contains the reference (or there is none)."""
    if ci_low is None or ci_high is None:
        return "inconclusive"
    above, below = ci_low > reference, ci_high < reference
    if expect == "greater":
        return "confirmed" if above else "refuted" if below else "inconclusive"
    if expect == "less":
        return "confirmed" if below else "refuted" if above else "inconclusive"
    raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")


def paired(arm: dict[int, float], base: dict[int, float], expect: str = "greater") -> dict[str, Any]:
    """Paired comparison on the seeds both have: the per-seed differences arm - base, summarised."""
    seeds = sorted(set(arm) & set(base))
    diff = summarize([arm[s] - base[s] for s in seeds])
    return {"seeds": seeds, **{f"diff_{k}": v for k, v in diff.items()},
            "verdict": verdict(diff["ci_low"], diff["ci_high"], expect)}


# ------------------------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Experiment:
    task: str
    config: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}-{self.config}-s{self.seed}".replace("_", "-")

    @property
    def result_file(self) -> str:
        return f"{self.task}/{self.config}-s{self.seed}.json"

    def overrides(self, data_dirs: dict[str, str]) -> list[str]:
        out = [f"task.name={self.task}", f"task.data_dir={data_dirs.get(self.task, 'data/' + self.task)}"]
        prefix = f"distill.configs.{self.config}"
        # '++' (Hydra's add-or-override): the seed key, or a whole configuration, may not be in params.yaml
        out += [f"++{prefix}.{k}={v}" for k, v in EXTRA_CONFIGS.get(self.config, {}).items()]
        out.append(f"++{prefix}.seed={self.seed}")
        return out


def grid(tasks: Sequence[str], configs: Sequence[str], n_seeds: int) -> list[Experiment]:
    if not 1 <= n_seeds <= len(SEEDS):
        raise ValueError(f"--seeds must be 1..{len(SEEDS)}, got {n_seeds}")
    return [Experiment(t, c, s) for t in tasks for c in configs for s in SEEDS[:n_seeds]]


def default_configs(include_optional: bool = True) -> list[str]:
    return list(dict.fromkeys(a for c in CLAIMS if include_optional or not c.optional
                              for a in (*c.arms, *([c.baseline] if c.baseline else []))))


class Runner:
    """The DVC side: queue, start, and read finished experiments back (all through the ``dvc`` CLI)."""

    def __init__(self, repo: Path, results: Path):
        self.repo, self.results = repo, results
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        # "." first: each experiment's stages import the confkd of the experiment's own workspace (DVC runs them
        # from its root), not an editable install of another checkout.
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (".", self.env.get("PYTHONPATH")) if p)

    def dvc(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=self.repo, env=self.env, capture_output=True,
                              text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def queue_status(self) -> dict[str, str]:
        """Experiment name -> status (Queued, Running, Success, Failed) from ``dvc queue status``."""
        out = {}
        for line in self.dvc("queue", "status").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
                out[parts[1]] = parts[-1]
        return out

    def finished(self) -> dict[str, dict]:
        """Experiment name -> its data (``params``, ``metrics``) as ``dvc exp show -A --json`` gives it."""
        out = {}
        for baseline in json.loads(self.dvc("exp", "show", "-A", "--json") or "[]"):
            for exp in baseline.get("experiments") or []:
                for rev in exp.get("revs") or []:
                    if rev.get("name") and rev.get("data") and not rev.get("error"):
                        out[rev["name"]] = {"rev": rev["rev"], **rev["data"]}
        return out

    def queue(self, exp: Experiment, data_dirs: dict[str, str]) -> None:
        args = ["exp", "run", "--queue", "-n", exp.name]
        for o in exp.overrides(data_dirs):
            args += ["-S", o]
        self.dvc(*args, evaluate_stage(exp.config), evaluate_stage(TEACHER))  # the teacher's too: retention needs it

    def collect(self, exp: Experiment, data: dict) -> Path:
        """Write the finished experiment's evaluation metrics (and the teacher's) to its result file."""
        metrics = {Path(k).as_posix(): v.get("data") for k, v in (data.get("metrics") or {}).items()}
        ev = metrics.get(DEFAULT.eval_metrics(exp.config).as_posix())
        teacher = metrics.get(DEFAULT.eval_metrics(TEACHER).as_posix())
        if ev is None or teacher is None:
            raise RuntimeError(f"experiment {exp.name}: no {DEFAULT.eval_metrics(exp.config)} or {DEFAULT.eval_metrics(TEACHER)}")
        for what, m in (("its", ev), ("its teacher's", teacher)):
            if m.get("task") != exp.task:  # metrics files carry the task they were computed on
                raise RuntimeError(f"experiment {exp.name}: {what} metrics are of task {m.get('task')!r}, not {exp.task!r}")
        record = {"task": exp.task, "config": exp.config, "seed": exp.seed, "experiment": exp.name,
                  "experiment_rev": data.get("rev"), "teacher_test_accuracy": teacher["test"]["accuracy"],
                  "eval": ev}
        path = self.results / exp.result_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return path


def run_grid(runner: Runner, experiments: list[Experiment], data_dirs: dict[str, str], jobs: int = 1,
             wait: bool = True, poll_seconds: float = 20.0) -> dict[str, int]:
    """Collect what is finished, queue what is missing, start the queue and collect as experiments finish."""
    counts = {"had": 0, "collected": 0, "queued": 0, "failed": 0}
    todo = [e for e in experiments if not (runner.results / e.result_file).exists()]
    counts["had"] = len(experiments) - len(todo)
    done = runner.finished()
    for exp in [e for e in todo if e.name in done]:
        runner.collect(exp, done[exp.name])
        counts["collected"] += 1
    todo = [e for e in todo if e.name not in done]
    status = runner.queue_status()
    for exp in todo:
        if status.get(exp.name) in ("Queued", "Running"):
            continue
        runner.queue(exp, data_dirs)
        counts["queued"] += 1
    log.info("claims grid: %d experiments, %d already collected, %d collected now, %d queued", len(experiments),
             counts["had"], counts["collected"], counts["queued"])
    if not todo or not wait:
        return counts
    runner.dvc("queue", "start", "-j", str(jobs))
    pending = {e.name: e for e in todo}
    while pending:
        time.sleep(poll_seconds)
        status = runner.queue_status()
        finished = runner.finished() if any(status.get(n) == "Success" for n in pending) else {}
        for name in list(pending):
            if name in finished:
                path = runner.collect(pending.pop(name), finished[name])
                counts["collected"] += 1
                log.info("collected %s -> %s", name, path)
            elif status.get(name) == "Failed":
                log.error("experiment %s failed (see `dvc queue logs %s`); rerun this command to queue it again",
                          name, name)
                pending.pop(name)
                counts["failed"] += 1
            elif name not in status:
                log.error("experiment %s left the queue without a result", name)
                pending.pop(name)
                counts["failed"] += 1
    return counts


# ------------------------------------------------------------------------------------------- the table


def load_results(results: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(task, config) -> seed -> record, from the result files."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(results.glob("*/*.json")):
        record = json.loads(path.read_text())
        out.setdefault((record["task"], record["config"]), {})[int(record["seed"])] = record
    return out


def _by_seed(records: dict[int, dict], fn) -> dict[int, float]:
    return {s: fn(r) for s, r in records.items() if fn(r) is not None}


def _fmt(s: dict, digits: int = 4, pct: bool = False) -> str:
    if s["mean"] is None:
        return "—"
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.{digits}f}")
    if s["std"] is None:
        return f"{f(s['mean'])} (n=1)"
    return f"{f(s['mean'])} ± {f(s['std'])} [{f(s['ci_low'])}, {f(s['ci_high'])}] (n={s['n']})"


def render(results: Path, tasks: Sequence[str]) -> tuple[list[str], list[dict]]:
    """The claims table (Markdown lines) and one row per claim x task x arm with its numbers and verdict."""
    data = load_results(results)
    accuracy = lambda r: r["eval"]["test"]["accuracy"]  # noqa: E731
    lines, rows = [], []
    for claim in CLAIMS:
        lines += [f"### {claim.title}", "", f"Source: {claim.source}.", ""]
        if claim.kind == "paired":
            lines += [f"| task | model | test accuracy | {claim.baseline} (test accuracy) | difference (paired, same "
                      "seeds) | verdict |", "|---|---|---|---|---|---|"]
        elif claim.kind == "retention":
            lines += ["| task | model | retention of the teacher's accuracy | paper | verdict |", "|---|---|---|---|---|"]
        else:
            lines += ["| task | model | sigma | kappa | sigma - kappa | phi_cnf holds | verdict |",
                      "|---|---|---|---|---|---|---|"]
        for task in tasks:
            for arm in claim.arms:
                records = data.get((task, arm), {})
                if claim.kind == "paired":
                    a = _by_seed(records, accuracy)
                    b = _by_seed(data.get((task, claim.baseline), {}), accuracy)
                    cmp = paired(a, b, claim.expect)
                    row = {"claim": claim.id, "task": task, "arm": arm, "arm_stats": summarize(list(a.values())),
                           "base_stats": summarize(list(b.values())), **cmp}
                    lines.append(f"| {task} | {arm} | {_fmt(row['arm_stats'])} | {_fmt(row['base_stats'])} | "
                                 f"{_fmt({k[5:]: v for k, v in cmp.items() if k.startswith('diff_')})} | "
                                 f"{cmp['verdict'] if cmp['diff_n'] >= 2 else 'not run'} |")
                elif claim.kind == "retention":
                    ret = _by_seed(records, lambda r: accuracy(r) / r["teacher_test_accuracy"])
                    stats = summarize(list(ret.values()))
                    paper = DAN_PAPER_RETENTION.get(task, DAN_PAPER_RETENTION["default"]) if arm == "sparse_dan" else 0.97
                    v = verdict(stats["ci_low"], stats["ci_high"], "greater", paper) if stats["n"] >= 2 else "not run"
                    row = {"claim": claim.id, "task": task, "arm": arm, "stats": stats, "reference": paper, "verdict": v}
                    lines.append(f"| {task} | {arm} | {_fmt(stats, pct=True)} | {100 * paper:.1f}% | {v} |")
                else:
                    sig = _by_seed(records, lambda r: r["eval"]["test"].get("sigma"))
                    kap = _by_seed(records, lambda r: r["eval"]["test"].get("kappa"))
                    held = sum(bool(r["eval"]["test"].get("phi_cnf")) for r in records.values())
                    cmp = paired(sig, kap, "less")
                    row = {"claim": claim.id, "task": task, "arm": arm, "sigma": summarize(list(sig.values())),
                           "kappa": summarize(list(kap.values())), "holds": held, **cmp}
                    lines.append(f"| {task} | {arm} | {_fmt(row['sigma'])} | {_fmt(row['kappa'])} | "
                                 f"{_fmt({k[5:]: v for k, v in cmp.items() if k.startswith('diff_')})} | "
                                 f"{held}/{len(records)} | {cmp['verdict'] if cmp['diff_n'] >= 2 else 'not run'} |")
                rows.append(row)
        lines.append("")
    lines += ["Verdicts: **confirmed** when the 95% interval (of the paired difference, or of the retention) lies "
              "wholly on the claimed side; **refuted** when it lies wholly on the other side; **inconclusive** when "
              "it contains zero (or the paper's figure). Intervals are t-intervals over seeds (n per arm shown)."]
    return lines, rows


# ------------------------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confkd claims", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--configs", nargs="+", default=None, help="default: every configuration a claim needs")
    parser.add_argument("--seeds", type=int, default=3, help=f"how many of the seeds {SEEDS} (default 3)")
    parser.add_argument("--skip-optional", action="store_true", help="leave out the optional claims' configurations")
    parser.add_argument("--jobs", type=int, default=1, help="queue workers (each experiment uses every core)")
    parser.add_argument("--no-wait", action="store_true", help="queue and start, then return")
    parser.add_argument("--poll", type=float, default=20.0, help="seconds between looks at the queue (default 20)")
    parser.add_argument("--render-only", action="store_true", help="only rebuild the table from the result files")
    parser.add_argument("--repo", default=".")
    parser.add_argument("--results", default="benchmarks/results/claims")
    parser.add_argument("--table", default="benchmarks/results/claims.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repo = Path(args.repo).resolve()
    results = repo / args.results
    from confkd.data.loaders import EMBEDDED_TASKS

    unknown = sorted(set(args.tasks) - set(EMBEDDED_TASKS))
    if unknown:
        print(f"confkd claims: unknown task(s) {unknown} (embedded: {sorted(EMBEDDED_TASKS)})", file=sys.stderr)
        return 2
    data_dirs = {name: DEFAULT.embedded_task_dir(spec.train).as_posix() for name, spec in EMBEDDED_TASKS.items()}
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    if not args.render_only:
        configs = args.configs or default_configs(not args.skip_optional)
        try:
            counts = run_grid(Runner(repo, results), grid(args.tasks, configs, args.seeds), data_dirs, args.jobs,
                              wait=not args.no_wait, poll_seconds=args.poll)
        except (RuntimeError, ValueError) as err:
            print(f"confkd claims: {err}", file=sys.stderr)
            return 1
    lines, _ = render(results, args.tasks)
    table = repo / args.table
    table.parent.mkdir(parents=True, exist_ok=True)
    head = ["# The research claims, over seeds", "",
            f"Rendered by `confkd claims` from `{args.results}/` (one file per task x configuration x seed; each "
            f"the metrics of one DVC experiment). Tasks: {', '.join(args.tasks)}.", ""]
    table.write_text("\n".join(head + lines) + "\n")
    print("\n".join(lines))
    if counts:
        print(f"\nthis invocation: {counts} in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)
    return 1 if counts.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
