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

The tuning claim needs one more step per task: the tune stage runs once (experiment ``<task>-tune``, the
pipeline's seed; on the default task DVC's run cache restores the pipeline's own study), its pick is written
to ``<task>/tuned_pick.yaml``, and only then is that configuration queued over the seeds, as ``tuned_pick``,
next to the configuration the study starts from (``tune.base``).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from confkd.layout import DEFAULT, TEACHER, TUNE, evaluate_stage

log = logging.getLogger("confkd.claims")

SEEDS = (42, 1, 2, 3, 4)  # 42 is the default pipeline's seed: that experiment is the pipeline's own run (up to date, no retraining)
TASKS = ("sst2", "tweet_offensive")
# Configurations the claims need beyond the default run's params.yaml (nested or dotted keys; a configuration
# params.yaml already defines is taken from there): the SID arm of internal-representation KD, the 2-layer
# student on the augmented transfer set, and the mapping x weights grid's best row
# (benchmarks/results/mapping_grid.md: skip mapping, attention:hidden = 1:4, best dev accuracy over 3 seeds).
EXTRA_CONFIGS: dict[str, dict[str, Any]] = {
    "internal_sid": {"method": "internal_sid", "temperature": 2.0, "intermediate_steps": 150,
                     "intermediate": {"scheme": "uniform", "attention": {"loss": "attention_kl", "weight": 1.0},
                                      "cls": {"loss": "cls_cosine", "weight": 1.0}}},
    "kd_logits_2l_aug": {"method": "kd_logits", "prediction_loss": "mse_logits", "alpha": 0.3, "learning_rate": 2.2e-4,
                         "student": {"num_layers": 2, "init_scheme": "first"}, "augmented_size": "all",
                         "max_steps": 5400, "eval_every_steps": 400},
    "tinybert_grid": {"method": "tinybert", "temperature": 1.0, "intermediate.scheme": "skip",
                      "intermediate.embedding.loss": "embedding_mse", "intermediate.embedding.weight": 1.0,
                      "intermediate.attention.loss": "attention_mse", "intermediate.attention.weight": 1.0,
                      "intermediate.hidden.loss": "hidden_mse", "intermediate.hidden.weight": 4.0},
}
# The tune stage's pick on a task, retrained over the seeds (its definition comes from the task's tune run).
TUNED_PICK = "tuned_pick"
TUNE_BASE = "kd_logits_2l"  # params.yaml's tune.base: the configuration the study starts from (checked at run time)
# Retention the DAN paper reports (Ye et al. 2022): 92.0% on SST-2, about 97% on average over six tasks.
DAN_PAPER_RETENTION = {"sst2": 0.920, "default": 0.97}
READ_RETRIES = 3  # a read-only dvc call (exp show/list, queue status) tried up to 4 times: see Runner.dvc


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
                                        "sparse_dan", "sparse_dan_no_kd", "kd_logits_2l_aug", TUNE_BASE, TUNED_PICK),
          kind="phi_cnf"),
    Claim("tuning", "Tuning (dev accuracy, dev sigma <= kappa, over the authors' knobs and ours) restores phi_cnf "
          "for the 2-layer student, and at what accuracy cost", "Vengertsev & Sherman 2024; this project",
          (TUNED_PICK,), TUNE_BASE, kind="tuning"),
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

    def overrides(self, data_dirs: dict[str, str], definition: dict[str, Any] | None = None,
                  pipeline_seed: int | None = None) -> list[str]:
        """``-S`` overrides: the task, the configuration's definition when params.yaml lacks it (``definition``,
        else :data:`EXTRA_CONFIGS`; nested or dotted keys) and the seed. ``pipeline_seed``: the seed the
        configuration already trains with in params.yaml; that seed is not written again, so the experiment's
        params are the pipeline's own and DVC finds its stages up to date instead of retraining an identical
        student under a params file that merely spells the seed out."""
        out = task_overrides(self.task, data_dirs)
        prefix = f"distill.configs.{self.config}"
        # '++' (Hydra's add-or-override): the seed key, or a whole configuration, may not be in params.yaml
        flat = flatten(EXTRA_CONFIGS.get(self.config, {}) if definition is None else definition)
        out += [f"++{prefix}.{k}={override_value(v)}" for k, v in flat.items() if k != "seed"]
        if self.seed != pipeline_seed:
            out.append(f"++{prefix}.seed={self.seed}")
        return out


@dataclass(frozen=True)
class TuneRun:
    """The tune stage on one task, at the pipeline's seed: the pick the tuning claim retrains over seeds."""

    task: str
    name = property(lambda self: f"{self.task}-tune".replace("_", "-"))
    result_file = property(lambda self: f"{self.task}/{TUNED_PICK}.yaml")  # the pick, and the study's summary

    def overrides(self, data_dirs: dict[str, str]) -> list[str]:
        return task_overrides(self.task, data_dirs)


def task_overrides(task: str, data_dirs: dict[str, str]) -> list[str]:
    return [f"task.name={task}", f"task.data_dir={data_dirs.get(task, 'data/' + task)}"]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys to dotted ones: ``{"student": {"num_layers": 2}}`` -> ``{"student.num_layers": 2}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def override_value(value: Any) -> str:
    """A value as a Hydra override writes it: ``null``, ``true``, numbers as Python prints them (every float
    digit kept), plain words bare, other strings quoted, lists in brackets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        raise ValueError(f"a non-empty mapping cannot be one override value: {value!r} (flatten it)")
    text = str(value)
    plain = text and all(c.isalnum() or c in "_-./" for c in text) and text not in ("null", "true", "false")
    return text if plain else json.dumps(text)


def grid(tasks: Sequence[str], configs: Sequence[str], n_seeds: int) -> list[Experiment]:
    if not 1 <= n_seeds <= len(SEEDS):
        raise ValueError(f"--seeds must be 1..{len(SEEDS)}, got {n_seeds}")
    return [Experiment(t, c, s) for t in tasks for c in configs for s in SEEDS[:n_seeds]]


def default_configs(include_optional: bool = True) -> list[str]:
    return list(dict.fromkeys(a for c in CLAIMS if include_optional or not c.optional
                              for a in (*c.arms, *([c.baseline] if c.baseline else []))))


def workers_alive(queue_status_text: str) -> int | None:
    """Active + idle workers from ``dvc queue status``'s last line, ``Worker status: 1 active, 0 idle``; None when
    the output has no such line (another DVC version): unknown, so nothing is restarted on its account."""
    for line in queue_status_text.splitlines():
        if line.startswith("Worker status:"):
            return sum(int(n) for n in re.findall(r"(\d+) (?:active|idle)", line))
    return None


def finished_experiments(shown: list[dict]) -> dict[str, dict]:
    """Experiment name -> ``{"rev", **data}`` from ``dvc exp show --json``, finished experiments only. That list
    also holds queued and running experiments, whose "metrics" are their baseline's (the files they started
    from), so an experiment counts only when its executor's state is ``success`` (or it has no executor left:
    DVC drops it once the queue entry is cleared)."""
    out = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if ((exp.get("executor") or {}).get("state") or "success") != "success":
                continue
            for rev in exp.get("revs") or []:
                if rev.get("name") and rev.get("data") and not rev.get("error"):
                    out[rev["name"]] = {"rev": rev["rev"], **rev["data"]}
    return out


class Runner:
    """The DVC side: queue, start, and read finished experiments back (all through the ``dvc`` CLI)."""

    def __init__(self, repo: Path, results: Path):
        self.repo, self.results = repo, results
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        # "." first: each experiment's stages import the confkd of the experiment's own workspace (DVC runs them
        # from its root), not an editable install of another checkout.
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (".", self.env.get("PYTHONPATH")) if p)

    command: tuple[str, ...] = (sys.executable, "-m", "dvc")  # the DVC command line

    retry_seconds: float = 5.0  # pause before a read-only call is tried again

    workers: int | None = None  # queue workers alive (active or idle) at the last queue_status(); None: unknown

    def dvc(self, *args: str, check: bool = True, retries: int = 0) -> str:
        """Run ``dvc *args``; its output goes through temporary files, not pipes: ``dvc queue start`` leaves a
        worker behind that inherits the output, and a pipe would keep this call waiting until that worker exits
        (until the whole queue is done), so nothing would be collected as experiments finish.

        ``retries``: for read-only calls (``exp show``, ``exp list``, ``queue status``), how many more times a
        failed call is tried. They can fail transiently while a worker is committing an experiment (DVC's
        "Empty git repo" while it reads the experiment refs being written); a queueing call is never retried."""
        import tempfile

        for attempt in range(retries + 1):
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                proc = subprocess.run([*self.command, *args], cwd=self.repo, env=self.env, stdout=out, stderr=err,
                                      text=True)
                out.seek(0)
                err.seek(0)
                stdout, stderr = out.read(), err.read()
            if proc.returncode == 0 or not check:
                return stdout
            if attempt < retries:
                log.warning("dvc %s failed (%d): %s; trying again in %g s", " ".join(args), proc.returncode,
                            (stderr.strip().splitlines() or ["no message"])[-1], self.retry_seconds)
                time.sleep(self.retry_seconds)
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")

    def queue_status(self) -> dict[str, str]:
        """Experiment name -> status (Queued, Running, Success, Failed) from ``dvc queue status``; the same output's
        worker line sets :attr:`workers`."""
        out = {}
        text = self.dvc("queue", "status", retries=READ_RETRIES)
        self.workers = workers_alive(text)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
                out[parts[1]] = parts[-1]
        return out

    def baselines(self) -> list[str]:
        """The commits that experiments were run from: ``dvc exp list -A`` prints ``<baseline>:`` (a branch
        name, or a short SHA once the branch has moved on), then that baseline's experiments, indented."""
        return [line[:-1] for line in self.dvc("exp", "list", "-A", retries=READ_RETRIES).splitlines()
                if line.strip() and not line[0].isspace() and line.endswith(":")]

    def finished(self) -> dict[str, dict]:
        """Experiment name -> its data (``params``, ``metrics``) as ``dvc exp show --json`` gives it, for the
        baselines that have experiments (not ``-A``: that reads the metrics of every commit of the history,
        minutes on a long one, at every look at the queue)."""
        revs = self.baselines()
        if not revs:
            return {}
        shown = self.dvc("exp", "show", "--json", *[a for rev in revs for a in ("--rev", rev)], retries=READ_RETRIES)
        return finished_experiments(json.loads(shown or "[]"))

    def _queue(self, name: str, overrides: list[str], *targets: str) -> None:
        self.dvc("exp", "run", "--queue", "-n", name, *[a for o in overrides for a in ("-S", o)], *targets)

    @functools.cached_property
    def params(self):
        """The repository's params.yaml, parsed once."""
        from confkd.config import load_params

        return load_params(self.repo / "params.yaml")

    def pipeline_seed(self, config: str) -> int | None:
        """The seed ``config`` trains with in the repository's params.yaml (its own, else the global seed), or
        None when params.yaml has no such configuration."""
        params = self.params
        if config not in params.distill.configs:
            return None
        seed = params.distill.resolve(config).seed
        return params.seed if seed is None else seed

    def queue(self, exp: Experiment, data_dirs: dict[str, str], definition: dict[str, Any] | None = None) -> None:
        # the teacher's evaluation too: retention needs it
        seed = None if definition is not None else self.pipeline_seed(exp.config)
        self._queue(exp.name, exp.overrides(data_dirs, definition, seed), evaluate_stage(exp.config),
                    evaluate_stage(TEACHER))

    def queue_tune(self, run: TuneRun, data_dirs: dict[str, str]) -> None:
        self._queue(run.name, run.overrides(data_dirs), TUNE)

    def read_at(self, rev: str, path: Path) -> str:
        """A git-tracked file as the experiment ``rev`` committed it."""
        proc = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], cwd=self.repo, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"git show {rev}:{path.as_posix()} failed: {proc.stderr.strip()}")
        return proc.stdout

    def collect_tune(self, run: TuneRun, data: dict) -> Path:
        """The finished tune run's pick (``distill.configs.<tune.name>`` of its ``tune/best_params.yaml``) and its
        study summary, to ``<task>/tuned_pick.yaml``."""
        best = yaml.safe_load(self.read_at(data["rev"], DEFAULT.best_params)) or {}
        configs = (best.get("distill") or {}).get("configs") or {}
        if len(configs) != 1:
            raise RuntimeError(f"experiment {run.name}: {DEFAULT.best_params} holds {len(configs)} configurations, not 1")
        metrics = {Path(k).as_posix(): v.get("data") for k, v in (data.get("metrics") or {}).items()}
        record = {"task": run.task, "experiment": run.name, "experiment_rev": data.get("rev"),
                  "tune": best.get("tune"), "study": metrics.get(DEFAULT.tune_metrics.as_posix()),
                  "config": next(iter(configs.values()))}
        path = self.results / run.result_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(record, sort_keys=False))
        return path

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
                  "teacher_test_nll": teacher["test"].get("nll"), "eval": ev}
        path = self.results / exp.result_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return path


def tuned_definition(results: Path, task: str) -> dict[str, Any] | None:
    """The tuned pick's configuration on ``task`` (from its tune run's result file), or None before that run."""
    record = tuned_record(results, task)
    return None if record is None else record["config"]


def run_grid(runner: Runner, experiments: list[Experiment], data_dirs: dict[str, str], jobs: int = 1,
             wait: bool = True, poll_seconds: float = 20.0) -> dict[str, int]:
    """Collect what is finished, queue what is missing, start the queue and collect as experiments finish.

    A ``tuned_pick`` experiment waits for its task's tune run (queued here when its result file is missing) and is
    queued as soon as that run is collected."""
    counts = {"had": 0, "collected": 0, "queued": 0, "failed": 0}
    tune_runs = [TuneRun(t) for t in dict.fromkeys(e.task for e in experiments if e.config == TUNED_PICK)]
    units: list[Experiment | TuneRun] = [*tune_runs, *experiments]
    todo = [u for u in units if not (runner.results / u.result_file).exists()]
    counts["had"] = len(units) - len(todo)

    def collect(unit, data) -> Path:
        return runner.collect_tune(unit, data) if isinstance(unit, TuneRun) else runner.collect(unit, data)

    def ready(unit) -> bool:  # a tuned pick needs its task's tune run collected first
        return not (isinstance(unit, Experiment) and unit.config == TUNED_PICK
                    and tuned_definition(runner.results, unit.task) is None)

    def enqueue(unit) -> None:
        if isinstance(unit, TuneRun):
            runner.queue_tune(unit, data_dirs)
        elif unit.config == TUNED_PICK:
            runner.queue(unit, data_dirs, tuned_definition(runner.results, unit.task))
        else:
            runner.queue(unit, data_dirs)
        counts["queued"] += 1

    done = runner.finished()
    for unit in [u for u in todo if u.name in done]:
        collect(unit, done[unit.name])
        counts["collected"] += 1
    todo = [u for u in todo if u.name not in done]
    status = runner.queue_status()
    waiting = [u for u in todo if status.get(u.name) not in ("Queued", "Running") and not ready(u)]
    for unit in todo:
        if status.get(unit.name) not in ("Queued", "Running") and ready(unit):
            enqueue(unit)
    log.info("claims grid: %d runs, %d already collected, %d collected now, %d queued, %d waiting for a tune run",
             len(units), counts["had"], counts["collected"], counts["queued"], len(waiting))
    if not todo or not wait:
        return counts
    runner.dvc("queue", "start", "-j", str(jobs))
    pending = {u.name: u for u in todo if u not in waiting}
    while pending:
        time.sleep(poll_seconds)
        status = runner.queue_status()
        queued = sum(status.get(n) == "Queued" for n in pending)
        if queued and "Running" not in status.values() and runner.workers == 0:  # the worker stopped, work queued
            log.warning("%d experiment(s) queued and no queue worker alive; starting one", queued)
            runner.dvc("queue", "start", "-j", str(jobs), check=False)
        finished = runner.finished() if any(status.get(n) == "Success" for n in pending) else {}
        for name in list(pending):
            if name in finished:
                unit = pending.pop(name)
                path = collect(unit, finished[name])
                counts["collected"] += 1
                log.info("collected %s -> %s", name, path)
                released = [u for u in waiting if ready(u)]
                for u in released:
                    waiting.remove(u)
                    enqueue(u)
                    pending[u.name] = u
                if released:
                    runner.dvc("queue", "start", "-j", str(jobs), check=False)  # a no-op while a worker runs
            elif status.get(name) == "Failed":
                log.error("experiment %s failed (see `dvc queue logs %s`); rerun this command to queue it again",
                          name, name)
                pending.pop(name)
                counts["failed"] += 1
            elif name not in status:
                log.error("experiment %s left the queue without a result", name)
                pending.pop(name)
                counts["failed"] += 1
    for unit in waiting:
        log.error("%s not queued: the tune run on %s has no result; rerun this command", unit.name, unit.task)
        counts["failed"] += 1
    return counts


# ------------------------------------------------------------------------------------------- the table


def teacher_signature(record: dict) -> tuple:
    """What identifies the teacher a record's student learned from: its test accuracy and NLL (older records
    hold the accuracy only). The seeds vary the students, never the teacher, so within a task it is one value."""
    return (record.get("teacher_test_accuracy"), record.get("teacher_test_nll"))


def load_results(results: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(task, config) -> seed -> record, from the result files. Raises ``RuntimeError`` when one task's records
    come from different teachers (a changed teacher recipe or data): comparing them would mix two experiments."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    teachers: dict[str, dict[tuple, list[str]]] = {}
    for path in sorted(results.glob("*/*.json")):
        record = json.loads(path.read_text())
        out.setdefault((record["task"], record["config"]), {})[int(record["seed"])] = record
        teachers.setdefault(record["task"], {}).setdefault(teacher_signature(record), []).append(path.name)
    for task, by_teacher in teachers.items():
        accuracies = {sig[0] for sig in by_teacher}
        nlls = {sig[1] for sig in by_teacher if sig[1] is not None}
        if len(accuracies) > 1 or len(nlls) > 1:
            listing = "; ".join(f"teacher test accuracy {sig[0]}, NLL {sig[1]}: {', '.join(names)}"
                                for sig, names in by_teacher.items())
            raise RuntimeError(f"{results / task}: the records come from {len(by_teacher)} different teachers ({listing}). "
                               "Move the stale ones out of the folder (they stay in git history) and rerun their experiments")
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


def _diff(cmp: dict) -> dict:
    """The paired difference's summary (``diff_*`` keys of :func:`paired`) in :func:`summarize`'s keys."""
    return {k[5:]: v for k, v in cmp.items() if k.startswith("diff_")}


def _phi_cnf(records: dict[int, dict]) -> dict[str, Any]:
    """Test sigma and kappa over seeds, sigma - kappa paired over seeds (expected below 0), and how many seeds hold
    phi_cnf."""
    sig = _by_seed(records, lambda r: r["eval"]["test"].get("sigma"))
    kap = _by_seed(records, lambda r: r["eval"]["test"].get("kappa"))
    return {"sigma": summarize(list(sig.values())), "kappa": summarize(list(kap.values())), **paired(sig, kap, "less"),
            "holds": sum(bool(r["eval"]["test"].get("phi_cnf")) for r in records.values())}


def tuning_verdict(arm: str, base: str) -> str:
    """Does tuning restore phi_cnf? ``arm``/``base``: the verdicts of "sigma < kappa" for the tuned pick and for the
    configuration it starts from. Confirmed only when the pick holds over the seeds and the start does not."""
    if arm == "confirmed":
        return "confirmed" if base != "confirmed" else "inconclusive (the start already holds)"
    return "refuted" if arm == "refuted" else "inconclusive"


def tuned_record(results: Path, task: str) -> dict | None:
    path = results / TuneRun(task).result_file
    return yaml.safe_load(path.read_text()) if path.exists() else None


def render(results: Path, tasks: Sequence[str]) -> tuple[list[str], list[dict]]:
    """The claims table (Markdown lines) and one row per claim x task x arm with its numbers and verdict."""
    data = load_results(results)
    accuracy = lambda r: r["eval"]["test"]["accuracy"]  # noqa: E731
    lines, rows, notes = [], [], []
    for claim in CLAIMS:
        lines += [f"### {claim.title}", "", f"Source: {claim.source}.", ""]
        if claim.kind == "paired":
            lines += [f"| task | model | test accuracy | {claim.baseline} (test accuracy) | difference (paired, same "
                      "seeds) | verdict |", "|---|---|---|---|---|---|"]
        elif claim.kind == "tuning":
            lines += [f"| task | model | test accuracy | accuracy change vs {claim.baseline} (paired) | sigma - kappa | "
                      f"phi_cnf holds | {claim.baseline}: sigma - kappa | {claim.baseline}: phi_cnf holds | "
                      "restores phi_cnf |", "|---|---|---|---|---|---|---|---|---|"]
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
                                 f"{_fmt(_diff(cmp))} | "
                                 f"{cmp['verdict'] if cmp['diff_n'] >= 2 else 'not run'} |")
                elif claim.kind == "tuning":
                    base = data.get((task, claim.baseline), {})
                    cost = paired(_by_seed(records, accuracy), _by_seed(base, accuracy), "greater")
                    arm_cnf, base_cnf = _phi_cnf(records), _phi_cnf(base)
                    v = tuning_verdict(arm_cnf["verdict"], base_cnf["verdict"]) if arm_cnf["diff_n"] >= 2 else "not run"
                    row = {"claim": claim.id, "task": task, "arm": arm, "accuracy_change": cost, "arm_phi_cnf": arm_cnf,
                           "base_phi_cnf": base_cnf, "verdict": v}
                    lines.append(f"| {task} | {arm} | {_fmt(summarize(list(_by_seed(records, accuracy).values())))} | "
                                 f"{_fmt(_diff(cost))} | {_fmt(_diff(arm_cnf))} | {arm_cnf['holds']}/{len(records)} | "
                                 f"{_fmt(_diff(base_cnf))} | {base_cnf['holds']}/{len(base)} | {v} |")
                    pick = tuned_record(results, task)
                    if pick is not None:
                        tune = pick.get("tune") or {}
                        study = pick.get("study") or {}
                        notes.append(f"- {task}: the pick is trial {tune.get('trial')} of {study.get('trials_complete')} "
                                     f"complete trials ({tune.get('selected_by')}).")
                elif claim.kind == "retention":
                    ret = _by_seed(records, lambda r: accuracy(r) / r["teacher_test_accuracy"])
                    stats = summarize(list(ret.values()))
                    paper = DAN_PAPER_RETENTION.get(task, DAN_PAPER_RETENTION["default"]) if arm == "sparse_dan" else 0.97
                    v = verdict(stats["ci_low"], stats["ci_high"], "greater", paper) if stats["n"] >= 2 else "not run"
                    row = {"claim": claim.id, "task": task, "arm": arm, "stats": stats, "reference": paper, "verdict": v}
                    lines.append(f"| {task} | {arm} | {_fmt(stats, pct=True)} | {100 * paper:.1f}% | {v} |")
                else:
                    cmp = _phi_cnf(records)
                    row = {"claim": claim.id, "task": task, "arm": arm, **cmp}
                    lines.append(f"| {task} | {arm} | {_fmt(cmp['sigma'])} | {_fmt(cmp['kappa'])} | {_fmt(_diff(cmp))} | "
                                 f"{cmp['holds']}/{len(records)} | {cmp['verdict'] if cmp['diff_n'] >= 2 else 'not run'} |")
                rows.append(row)
        lines += ["", *notes, ""] if notes else [""]
        notes = []
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
        runner = Runner(repo, results)
        params = runner.params
        unknown = [c for c in configs if c not in params.distill.configs and c not in EXTRA_CONFIGS and c != TUNED_PICK]
        if unknown:
            print(f"confkd claims: unknown configuration(s) {unknown}: neither in params.yaml's distill.configs "
                  f"({', '.join(params.distill.configs)}) nor defined by the claims ({', '.join(EXTRA_CONFIGS)})",
                  file=sys.stderr)
            return 2
        if TUNED_PICK in configs:
            base = params.tune.base
            if base != TUNE_BASE:
                print(f"confkd claims: the tuning claim compares with {TUNE_BASE}, but params.yaml's tune.base is "
                      f"{base!r}", file=sys.stderr)
                return 2
        try:
            counts = run_grid(runner, grid(args.tasks, configs, args.seeds), data_dirs, args.jobs,
                              wait=not args.no_wait, poll_seconds=args.poll)
        except (RuntimeError, ValueError) as err:
            print(f"confkd claims: {err}", file=sys.stderr)
            return 1
    try:
        lines, _ = render(results, args.tasks)
    except RuntimeError as err:  # e.g. one task's records from two different teachers
        print(f"confkd claims: {err}", file=sys.stderr)
        return 1
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
