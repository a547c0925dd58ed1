"""The pull-request workflow rehearsed end to end on the tiny configuration: two revisions, each run through
`dvc exp run` in its own scratch repository (the stages a student's comparison needs: data, both teachers,
the student, the evaluations; the whole pipeline runs end to end in `test_multiclass_pipeline.py`), then
`confkd pr-report` over the two folders."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO_ROOT, copy_repo_tiny

pytestmark = pytest.mark.integration


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_rehearsal_between_two_revisions(tmp_path, tiny_model_dir):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    repo = copy_repo_tiny(tmp_path / "repo", tiny_model_dir)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # one student; tune, export and report are not targets, so they do not run
    params["distill"]["configs"] = {"kd_logits": params["distill"]["configs"]["kd_logits"]}
    params["tune"]["base"] = "kd_logits"
    params["export"]["models"] = ["teacher"]
    params["evaluate"]["n_resamples"] = 50
    params["augment"]["size"] = 50
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("/models\n/artifacts\n/data/prepared\n/data/augmented\n/predictions\n/checkpoints\n")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "base"]):
        _run(cmd, repo, env)
    params["distill"]["configs"]["kd_logits"]["temperature"] = 4.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "head: T=4"], repo, env)

    out, plot = tmp_path / "comment.md", tmp_path / "pr.png"
    proc = _run([sys.executable, str(REPO_ROOT / "scripts" / "rehearse_pr.py"), "HEAD~1", "HEAD", "--repo", str(repo),
                 "--profile", "none", "--out", str(out), "--plot", str(plot), "--keep", str(tmp_path / "work"),
                 "--targets", "evaluate@kd_logits", "evaluate_teacher"],
                REPO_ROOT, env)
    comment = proc.stdout
    assert comment == out.read_text() and comment.startswith("<!-- confkd-pr-report -->")
    assert "## Distillation metrics: `HEAD~1` → `HEAD`" in comment  # the revisions, not the scratch folders
    assert "**Params changed (1):** `distill.configs.kd_logits.temperature`: 2.0 → 4.0." in comment
    assert "`kd_logits`" in comment  # its metrics changed: a row
    assert "#### dvc metrics diff" in comment and "<details>" in comment
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "rehearsal: base" in proc.stderr
    # only the targets and their upstream ran: no tuning, no export on either side
    for side in ("base", "head"):
        assert (tmp_path / "work" / side / "metrics/eval/kd_logits.json").exists()
        assert not (tmp_path / "work" / side / "metrics/tune.json").exists()
        assert not (tmp_path / "work" / side / "metrics/export.json").exists()
