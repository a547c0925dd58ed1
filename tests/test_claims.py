"""The claims grid: statistics by hand, the table from result files, and a real DVC queue on the tiny pipeline."""

import json
import shutil
import sys

import pytest
import yaml

from confkd.claims import Experiment, grid, paired, render, summarize, verdict

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
    assert [e.seed for e in grid(["sst2"], ["kd_logits"], 3)] == [42, 1, 2]
    with pytest.raises(ValueError):
        grid(["sst2"], ["kd_logits"], 0)


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
    cmd = [sys.executable, "-m", "confkd.entry", "claims", "--tasks", "sst2", "--configs", "kd_logits", "ft_only",
           "--seeds", "2", "--poll", "15", "--repo", str(root)]
    first = _run(cmd, root)
    files = sorted(p.relative_to(root / "benchmarks/results/claims").as_posix()
                   for p in (root / "benchmarks/results/claims").rglob("*.json"))
    assert files == ["sst2/ft_only-s1.json", "sst2/ft_only-s42.json", "sst2/kd_logits-s1.json",
                     "sst2/kd_logits-s42.json"], first.stderr[-3000:]
    records = {f: json.loads((root / "benchmarks/results/claims" / f).read_text()) for f in files}
    assert records["sst2/kd_logits-s1.json"]["seed"] == 1 and records["sst2/kd_logits-s1.json"]["eval"]["task"] == "sst2"
    # the seed reaches the student: two seeds, two different students (the teacher is shared)
    a, b = records["sst2/kd_logits-s42.json"], records["sst2/kd_logits-s1.json"]
    assert a["teacher_test_accuracy"] == b["teacher_test_accuracy"]
    assert a["eval"]["test"]["kl_to_teacher"] != b["eval"]["test"]["kl_to_teacher"]
    table = (root / "benchmarks/results/claims.md").read_text()
    assert "| sst2 | kd_logits |" in table
    second = _run(cmd, root)
    assert "'queued': 0" in second.stderr and "'had': 4" in second.stderr
