"""The documentation site builds strictly (links and anchors cannot rot) and the README stays a front door."""

import os
import shutil
import subprocess
import sys

from .conftest import REPO_ROOT


def _build(root, site):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, env=env)


def test_docs_build_strictly(tmp_path):
    proc = _build(REPO_ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "confidence" / "index.html").exists()
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Three ways to use it" in home  # the README is the home page: one source, no stale copy


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "docs", root / "docs")
    (root / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts" / "mkdocs_hooks.py", root / "scripts")
    shutil.copy(REPO_ROOT / "mkdocs.yml", root)
    for rel in ("benchmarks", "reports", "confkd", "tests", "flows", "data", ".github"):
        if (REPO_ROOT / rel).exists():
            os.symlink(REPO_ROOT / rel, root / rel)
    for name in ("params.yaml", "dvc.yaml", "README.md"):
        shutil.copy(REPO_ROOT / name, root)
    assert _build(root, tmp_path / "ok").returncode == 0
    page = root / "docs" / "tuning.md"
    original = page.read_text()
    page.write_text(original + "\n[gone](benchmarks/results/no_such_result.md)\n")
    proc = _build(root, tmp_path / "bad1")
    assert proc.returncode != 0 and "no_such_result.md" in proc.stdout + proc.stderr
    page.write_text(original + "\n[gone](confidence.md#no-such-section)\n")
    proc = _build(root, tmp_path / "bad2")
    assert proc.returncode != 0 and "no-such-section" in proc.stdout + proc.stderr


def test_readme_is_a_front_door():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
