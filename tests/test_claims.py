"""The claims grid: statistics by hand, the table from result files, and a real DVC queue on the tiny pipeline."""

import json
import re
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from confkd.claims import (TUNE_BASE, TUNED_PICK, Experiment, Runner, TuneRun, finished_experiments, flatten, grid, load_results,
                           override_value, paired, render, run_grid, summarize, tuning_verdict, verdict,
                           workers_alive)

from .conftest import REPO_ROOT, copy_repo_tiny, run_checked


def test_summarize_by_hand():
    s = summarize([1.0, 2.0, 3.0])
    half = 4.302652729911275 / 3 ** 0.5  # t(0.975, 2) * std 1 / sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert s["ci_low"] == pytest.approx(2.0 - half) and s["ci_high"] == pytest.approx(2.0 + half)
    assert summarize([0.5]) == {"n": 1, "mean": 0.5, "std": None, "ci_low": None, "ci_high": None}
    assert summarize([])["mean"] is None


def test_verdicts_can_confirm_refute_or_stay_inconclusive():
    assert verdict(0.01, 0.03) == "confirmed"
    assert verdict(-0.03, -0.01) == "refuted"
    assert verdict(-0.01, 0.03) == "inconclusive"
    assert verdict(-0.03, -0.01, "less") == "confirmed"
    assert verdict(0.90, 0.95, "greater", reference=0.92) == "inconclusive"
    assert verdict(0.93, 0.95, "greater", reference=0.92) == "confirmed"
    assert verdict(None, None) == "inconclusive"
    with pytest.raises(ValueError):
        verdict(0, 1, "bigger")


def test_paired_uses_the_same_seeds_only():
    arm = {42: 0.86, 1: 0.87, 2: 0.85, 3: 0.99}  # seed 3 has no baseline: left out
    base = {42: 0.84, 1: 0.85, 2: 0.84}
    cmp = paired(arm, base)
    half = 4.302652729911275 * 0.005773502691896258 / 3 ** 0.5
    assert cmp["seeds"] == [1, 2, 42] and cmp["diff_n"] == 3
    assert cmp["diff_mean"] == pytest.approx(0.05 / 3) and cmp["diff_ci_low"] == pytest.approx(0.05 / 3 - half)
    assert cmp["verdict"] == "confirmed"
    assert paired(base, arm)["verdict"] == "refuted"
    assert paired({42: 0.86, 1: 0.84}, {42: 0.85, 1: 0.85})["verdict"] == "inconclusive"


def test_experiment_names_and_overrides():
    exp = Experiment("tweet_offensive", "tinybert_grid", 1)
    assert exp.name == "tweet-offensive-tinybert-grid-s1" and exp.result_file == "tweet_offensive/tinybert_grid-s1.json"
    over = exp.overrides({"tweet_offensive": "data/tweet_offensive"})
    assert over[:2] == ["task.name=tweet_offensive", "task.data_dir=data/tweet_offensive"]
    assert "++distill.configs.tinybert_grid.intermediate.hidden.weight=4.0" in over
    assert over[-1] == "++distill.configs.tinybert_grid.seed=1"
    assert Experiment("sst2", "kd_logits", 42).overrides({})[-1] == "++distill.configs.kd_logits.seed=42"
    # the seed params.yaml already gives the configuration is not spelled out (the pipeline's own stages then
    # stay up to date); any other seed is
    assert not any("seed" in o for o in Experiment("sst2", "kd_logits", 42).overrides({}, pipeline_seed=42))
    assert Experiment("sst2", "kd_logits", 1).overrides({}, pipeline_seed=42)[-1] == "++distill.configs.kd_logits.seed=1"
    assert [e.seed for e in grid(["sst2"], ["kd_logits"], 3)] == [42, 1, 2]
    with pytest.raises(ValueError):
        grid(["sst2"], ["kd_logits"], 0)


def test_override_values_and_a_nested_definition_become_dvc_set_overrides():
    assert [override_value(v) for v in (None, True, 3, 2.7306109164498475, "mse_logits", "a b", [1, "x"])] == [
        "null", "true", "3", "2.7306109164498475", "mse_logits", '"a b"', "[1,x]"]
    assert override_value("null") == '"null"'  # the word, not the value
    assert flatten({"method": "kd_logits", "student": {"num_layers": 2, "init_scheme": "skip"}, "x": {}}) == {
        "method": "kd_logits", "student.num_layers": 2, "student.init_scheme": "skip", "x": {}}
    pick = {"method": "kd_logits", "temperature": 2.5, "student": {"num_layers": 2}, "seed": 42}
    over = Experiment("sst2", TUNED_PICK, 1).overrides({"sst2": "data/sst2"}, pick)
    assert over == ["task.name=sst2", "task.data_dir=data/sst2", f"++distill.configs.{TUNED_PICK}.method=kd_logits",
                    f"++distill.configs.{TUNED_PICK}.temperature=2.5",
                    f"++distill.configs.{TUNED_PICK}.student.num_layers=2", f"++distill.configs.{TUNED_PICK}.seed=1"]
    assert TuneRun("tweet_offensive").name == "tweet-offensive-tune"


def test_tuning_verdict_needs_the_pick_to_hold_where_its_start_does_not():
    assert tuning_verdict("confirmed", "refuted") == "confirmed"
    assert tuning_verdict("confirmed", "inconclusive") == "confirmed"
    assert tuning_verdict("confirmed", "confirmed").startswith("inconclusive")
    assert tuning_verdict("refuted", "refuted") == "refuted"
    assert tuning_verdict("inconclusive", "refuted") == "inconclusive"


class FakeQueue(Runner):
    """Runner with DVC replaced by a queue that finishes one experiment per look; collect* are the real ones."""

    def __init__(self, repo, results):
        super().__init__(repo, results)
        self.status, self.queued, self.defs = {}, [], {}

    def dvc(self, *args, check=True):
        return ""

    def queue(self, exp, data_dirs, definition=None):
        self.queued.append(exp.name)
        self.defs[exp.name] = definition
        self.status[exp.name] = "Queued"

    def queue_tune(self, run, data_dirs):
        self.queued.append(run.name)
        self.status[run.name] = "Queued"

    def queue_status(self):
        first = next((n for n, s in self.status.items() if s == "Queued"), None)
        if first:
            self.status[first] = "Success"
        return dict(self.status)

    def finished(self):
        return {n: _fake_exp_data(n) for n, s in self.status.items() if s == "Success"}

    def read_at(self, rev, path):
        assert rev == "rev-sst2-tune" and path.as_posix() == "tune/best_params.yaml"
        return yaml.safe_dump({"tune": {"trial": 3, "selected_by": "most accurate with dev_sigma <= kappa"},
                               "distill": {"configs": {"tuned": {"method": "kd_logits", "temperature": 3.0}}}})


def _fake_exp_data(name):
    config = name.split("-s")[0].split("-", 1)[1].replace("-", "_") if not name.endswith("-tune") else None
    ev = {"task": "sst2", "test": {"accuracy": 0.85, "sigma": 0.07, "kappa": 0.08, "phi_cnf": 1.0}}
    metrics = {"metrics/eval/teacher.json": {"data": {**ev, "test": {"accuracy": 0.88}}},
               "metrics/tune.json": {"data": {"trials_complete": 10}}}
    if config:
        metrics[f"metrics/eval/{config}.json"] = {"data": ev}
    return {"rev": f"rev-{name}", "metrics": metrics}


def test_a_tuned_pick_is_queued_once_its_task_tune_run_is_collected(tmp_path):
    runner = FakeQueue(tmp_path, tmp_path / "claims")
    experiments = grid(["sst2"], [TUNE_BASE, TUNED_PICK], 2)
    counts = run_grid(runner, experiments, {}, poll_seconds=0)
    assert runner.queued[:3] == ["sst2-tune", "sst2-kd-logits-2l-s42", "sst2-kd-logits-2l-s1"]  # the picks wait
    assert sorted(runner.queued[3:]) == ["sst2-tuned-pick-s1", "sst2-tuned-pick-s42"]
    assert runner.defs["sst2-tuned-pick-s1"] == {"method": "kd_logits", "temperature": 3.0}  # from the tune run
    pick = yaml.safe_load((tmp_path / "claims/sst2/tuned_pick.yaml").read_text())
    assert pick["study"] == {"trials_complete": 10} and pick["tune"]["trial"] == 3
    assert counts == {"had": 0, "collected": 5, "queued": 5, "failed": 0}
    again = FakeQueue(tmp_path, tmp_path / "claims")
    assert run_grid(again, experiments, {}, poll_seconds=0)["had"] == 5 and again.queued == []


class StallingQueue(FakeQueue):
    """A queue whose worker stops after each experiment: nothing advances until ``dvc queue start`` again."""

    def __init__(self, repo, results):
        super().__init__(repo, results)
        self.alive, self.starts, self.stalled = False, 0, 0

    def dvc(self, *args, check=True):
        if args[:2] == ("queue", "start"):
            self.alive, self.starts = True, self.starts + 1
        return ""

    def queue_status(self):
        self.workers = 0  # what dvc queue status reports after the look below
        if not self.alive:
            self.stalled += 1
            assert self.stalled < 5, "run_grid kept waiting on a queue that no worker serves"
            return dict(self.status)
        self.alive = False  # finishes one experiment, then stops
        return super().queue_status()


def test_a_stopped_worker_is_started_again_while_experiments_wait(tmp_path, caplog):
    runner = StallingQueue(tmp_path, tmp_path / "claims")
    with caplog.at_level("WARNING", logger="confkd.claims"):
        counts = run_grid(runner, grid(["sst2"], ["kd_logits"], 3), {}, poll_seconds=0)
    assert counts == {"had": 0, "collected": 3, "queued": 3, "failed": 0}
    assert runner.starts == 3  # the first start, then once after each of the first two experiments
    assert sum("no queue worker alive" in r.message for r in caplog.records) == 2


def test_workers_alive_reads_dvc_queue_status():
    out = "Task     Name   Created   Status\nab12  sst2-kd-logits-s1  01:47 AM  Queued\n\nWorker status: 0 active, 0 idle\n"
    assert workers_alive(out) == 0
    assert workers_alive(out.replace("0 active, 0 idle", "1 active, 1 idle")) == 2
    assert workers_alive("Task Name Created Status\n") is None  # unknown: run_grid restarts nothing


def _record(root, task, config, seed, acc, sigma=0.07, kappa=0.08, teacher=0.88):
    path = root / task / f"{config}-s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": task, "config": config, "seed": seed, "teacher_test_accuracy": teacher,
                                "eval": {"test": {"accuracy": acc, "sigma": sigma, "kappa": kappa,
                                                  "phi_cnf": float(sigma <= kappa)}}}))


def test_render_states_each_claim_from_the_files(tmp_path):
    for seed, (pid, kd) in zip((42, 1, 2), ((0.873, 0.862), (0.870, 0.861), (0.875, 0.860))):
        _record(tmp_path, "sst2", "internal_pid", seed, pid)
        _record(tmp_path, "sst2", "kd_logits", seed, kd)
        _record(tmp_path, "sst2", "sparse_dan", seed, 0.80, sigma=0.12)
    lines, rows = render(tmp_path, ["sst2"])
    by = {(r["claim"], r["arm"]): r for r in rows}
    assert by[("internal_vs_soft", "internal_pid")]["verdict"] == "confirmed"
    assert by[("internal_vs_soft", "internal_sid")]["diff_n"] == 0  # not run: no verdict claimed
    assert by[("dan_retention", "sparse_dan")]["verdict"] == "refuted"  # 0.80 / 0.88 = 90.9% < 92.0%, every seed
    assert by[("confidence", "sparse_dan")]["verdict"] == "refuted" and by[("confidence", "sparse_dan")]["holds"] == 0
    assert by[("confidence", "kd_logits")]["verdict"] == "confirmed"
    text = "\n".join(lines)
    assert "| sst2 | internal_sid | — | 0.8610" in text and "not run" in text


def test_records_of_one_task_from_two_teachers_are_refused(tmp_path):
    _record(tmp_path, "sst2", "kd_logits", 42, 0.86)
    _record(tmp_path, "sst2", "kd_logits", 1, 0.86)
    _record(tmp_path, "tweet_offensive", "kd_logits", 42, 0.75, teacher=0.80)  # another task: its own teacher
    assert len(load_results(tmp_path)) == 2
    _record(tmp_path, "sst2", "internal_pid", 42, 0.87, teacher=0.8819)  # a retrained teacher
    with pytest.raises(RuntimeError, match=r"2 different teachers.*0\.8819, NLL None: internal_pid-s42\.json"):
        load_results(tmp_path)


def test_render_states_whether_tuning_restores_phi_cnf_and_its_cost(tmp_path):
    for seed, (base_acc, base_sig, pick_acc, pick_sig) in zip((42, 1, 2), ((0.835, 0.086, 0.850, 0.075),
                                                                          (0.830, 0.088, 0.846, 0.074),
                                                                          (0.838, 0.085, 0.851, 0.076))):
        _record(tmp_path, "sst2", TUNE_BASE, seed, base_acc, sigma=base_sig)
        _record(tmp_path, "sst2", TUNED_PICK, seed, pick_acc, sigma=pick_sig)
    (tmp_path / "sst2" / "tuned_pick.yaml").write_text(yaml.safe_dump(
        {"config": {}, "tune": {"trial": 6, "selected_by": "best dev_sigma"}, "study": {"trials_complete": 10}}))
    lines, rows = render(tmp_path, ["sst2"])
    row = next(r for r in rows if r["claim"] == "tuning")
    assert row["verdict"] == "confirmed"  # sigma - kappa of the pick: about -0.005 on every seed; the start: +0.006
    assert row["arm_phi_cnf"]["holds"] == 3 and row["base_phi_cnf"]["holds"] == 0
    assert row["accuracy_change"]["diff_mean"] == pytest.approx(0.0147, abs=1e-4)
    assert "- sst2: the pick is trial 6 of 10 complete trials (best dev_sigma)." in lines
    _record(tmp_path, "sst2", TUNED_PICK, 2, 0.851, sigma=0.095)  # one seed well above kappa: no longer confirmed
    row = next(r for r in render(tmp_path, ["sst2"])[1] if r["claim"] == "tuning")
    assert row["verdict"] == "inconclusive" and row["arm_phi_cnf"]["holds"] == 2


def _run(args, cwd):
    return run_checked(args, cwd, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost", GIT_COMMITTER_NAME="t",
                       GIT_COMMITTER_EMAIL="t@localhost")


@pytest.mark.integration
def test_the_grid_runs_as_queued_dvc_experiments_and_resumes(tmp_path, tiny_model_dir):
    root = copy_repo_tiny(tmp_path / "repo", tiny_model_dir)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["n_resamples"] = 50
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO_ROOT / ".gitignore", root / ".gitignore")  # outputs stay out of git, as in the project
    _run(["git", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "tiny pipeline"], root)
    cmd = [sys.executable, "-m", "confkd.entry", "claims", "--tasks", "sst2", "--configs", "kd_logits", "internal_sid",
           "--seeds", "2", "--poll", "8", "--repo", str(root)]
    first = _run(cmd, root)
    files = sorted(p.relative_to(root / "benchmarks/results/claims").as_posix()
                   for p in (root / "benchmarks/results/claims").rglob("*.json"))
    # internal_sid is not in params.yaml: its whole definition comes from the claims (EXTRA_CONFIGS)
    assert files == ["sst2/internal_sid-s1.json", "sst2/internal_sid-s42.json", "sst2/kd_logits-s1.json",
                     "sst2/kd_logits-s42.json"], first.stderr[-3000:]
    records = {f: json.loads((root / "benchmarks/results/claims" / f).read_text()) for f in files}
    assert records["sst2/kd_logits-s1.json"]["seed"] == 1 and records["sst2/kd_logits-s1.json"]["eval"]["task"] == "sst2"
    # the seed reaches the student: two seeds, two different students (the teacher is shared)
    a, b = records["sst2/kd_logits-s42.json"], records["sst2/kd_logits-s1.json"]
    assert a["teacher_test_accuracy"] == b["teacher_test_accuracy"]
    assert a["eval"]["test"]["kl_to_teacher"] != b["eval"]["test"]["kl_to_teacher"]
    # each experiment is collected as it finishes, while the queue runs on (not all at the end)
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") for m in
              re.finditer(r"^(\S+ \S+),\d+ INFO confkd.claims: collected ", first.stderr, re.MULTILINE)]
    assert len(stamps) == 4 and (stamps[-1] - stamps[0]).total_seconds() >= 10, first.stderr[-3000:]
    # DVC's run cache restores what the seeds share (data, teachers, the teacher's evaluation): the last
    # experiment trains and evaluates its own student only
    last = _run([sys.executable, "-m", "dvc", "queue", "logs", "sst2-internal-sid-s1"], root).stdout
    for stage in ("prepare", "validate", "teacher", "evaluate_teacher"):
        assert f"Stage '{stage}' is cached - skipping run" in last, last[-3000:]
    assert "Running stage 'distill@internal_sid'" in last and "Running stage 'evaluate@internal_sid'" in last
    table = (root / "benchmarks/results/claims.md").read_text()
    assert "| sst2 | kd_logits |" in table
    second = _run(cmd, root)
    assert "'queued': 0" in second.stderr and "'had': 4" in second.stderr


def test_the_pipeline_seed_of_a_configuration_comes_from_params_yaml(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["seed"] = 7
    params["distill"]["configs"]["kd_logits"]["seed"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runner = Runner(tmp_path, tmp_path / "claims")
    assert runner.pipeline_seed("kd_logits") == 3  # its own
    assert runner.pipeline_seed("tinybert") == 7  # the global seed
    assert runner.pipeline_seed("tinybert_grid") is None  # not in params.yaml: defined by the claims


def test_only_finished_experiments_are_read_back():
    """`dvc exp show --json` lists queued and running experiments too, with their baseline's metrics: reading
    those as results would record the pipeline's numbers under another seed."""
    def exp(name, state):
        executor = None if state is None else {"state": state, "name": "dvc-task"}
        return {"name": name, "executor": executor,
                "revs": [{"rev": f"r-{name}", "name": name, "error": None, "data": {"metrics": {"m": 1}}}]}

    shown = [{"rev": "workspace", "experiments": None},
             {"rev": "abc", "experiments": [exp("q", "queued"), exp("r", "running"), exp("f", "failed"),
                                            exp("s", "success"), exp("done", None)]}]
    assert finished_experiments(shown) == {"s": {"rev": "r-s", "metrics": {"m": 1}},
                                           "done": {"rev": "r-done", "metrics": {"m": 1}}}


def test_starting_the_queue_returns_while_its_worker_runs_on(tmp_path):
    """`dvc queue start` leaves a worker behind that inherits its output. Here a stand-in command does the same
    (a child that lives 20 s); the call returns at once, where a captured pipe would wait for the child."""
    runner = Runner(tmp_path, tmp_path / "claims")
    worker = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)']); print('up')"
    runner.command = (sys.executable, "-c", worker)
    t0 = time.perf_counter()
    assert runner.dvc("queue", "start", "-j", "1") == "up\n"
    assert time.perf_counter() - t0 < 10
    runner.command = (sys.executable, "-c", "import sys; print('no queue'); sys.exit(3)")
    with pytest.raises(RuntimeError, match="no queue"):
        runner.dvc("queue", "start", "-j", "1")
    runner.dvc("queue", "start", "-j", "1", check=False)  # a second start while a worker runs may fail harmlessly


def test_read_at_reads_the_file_as_the_experiment_committed_it(tmp_path):
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune/best_params.yaml").write_text("tune: {trial: 1}\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "exp"]):
        _run(cmd, tmp_path)
    rev = _run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    (tmp_path / "tune/best_params.yaml").write_text("tune: {trial: 2}\n")  # the workspace moved on
    runner = Runner(tmp_path, tmp_path / "claims")
    assert yaml.safe_load(runner.read_at(rev, Path("tune/best_params.yaml"))) == {"tune": {"trial": 1}}
    with pytest.raises(RuntimeError, match="git show"):
        runner.read_at(rev, Path("tune/missing.yaml"))


def test_an_unknown_configuration_is_refused_before_anything_is_queued(tmp_path, capsys):
    from confkd.claims import main

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    assert main(["--tasks", "sst2", "--configs", "kd_logits", "ft_onyl", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown configuration(s) ['ft_onyl']" in err and "internal_sid" in err
    assert not (tmp_path / "benchmarks").exists()  # no table, no results folder


def test_a_read_only_dvc_call_is_tried_again_after_a_transient_failure_and_a_queueing_call_is_not(tmp_path):
    """`dvc exp show` can fail while a worker commits an experiment ("Empty git repo"); the collector tries a
    read-only call again. The stand-in command fails on its first call and succeeds on the next."""
    runner = Runner(tmp_path, tmp_path / "claims")
    runner.retry_seconds = 0.0
    marker = tmp_path / "called"
    flaky = (f"import pathlib, sys; p = pathlib.Path({str(marker)!r})\n"
             "if not p.exists():\n    p.write_text('1'); print('ERROR: Empty git repo', file=sys.stderr); sys.exit(255)\n"
             "print('shown')")
    runner.command = (sys.executable, "-c", flaky)
    assert runner.dvc("exp", "show", "--json", retries=2) == "shown\n"
    marker.unlink()
    with pytest.raises(RuntimeError, match="Empty git repo"):
        runner.dvc("exp", "run", "--queue")  # no retries: queueing twice would queue twice
    runner.command = (sys.executable, "-c", "import sys; print('broken', file=sys.stderr); sys.exit(1)")
    with pytest.raises(RuntimeError, match="broken"):
        runner.dvc("queue", "status", retries=2)  # a lasting failure still ends in a clear error
