"""Stage dependencies that cannot drift: every project module a DVC stage's code imports is in its ``deps``."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from confkd.depgraph import closure, entry_stage, stage_closure, stage_function, uncovered

REPO_ROOT = Path(__file__).resolve().parents[1]
CMD_RE = re.compile(r"^\s*python\s+((?:stages|flows)/[\w/]+\.py)\b")


def stage_entries(dvc_file: Path) -> dict[str, tuple[str, list[str]]]:
    """``{stage: (entry script, deps)}`` for stages run as ``python stages/...`` or ``python flows/...``.

    A ``foreach`` stage is checked once, through its ``do`` template (``${key}`` left unresolved).
    """
    entries: dict[str, tuple[str, list[str]]] = {}
    for name, stage in yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"].items():
        body = stage.get("do", stage)
        match = CMD_RE.match(body["cmd"] if isinstance(body["cmd"], str) else body["cmd"][0])
        if match:
            entries[name] = (match.group(1), [str(d) for d in body.get("deps", [])])
    return entries


def missing_deps(root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """Per stage, the project files its entry point reaches that its ``deps`` do not cover."""
    missing = {}
    for name, (entry, deps) in stage_entries(root / "dvc.yaml").items():
        stage = entry_stage(root, entry)
        files = stage_closure(root, entry, stage) if stage else closure(root, entry)
        if gaps := uncovered(files, deps):
            missing[name] = gaps
    return missing


def test_dvc_stage_deps_cover_imported_code() -> None:
    assert stage_entries(REPO_ROOT / "dvc.yaml"), "no python stages found in dvc.yaml"
    missing = missing_deps()
    report = "\n".join(f"  {stage}: {', '.join(files)}" for stage, files in missing.items())
    assert not missing, f"dvc.yaml deps miss project code the stage imports:\n{report}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_closure_follows_lazy_and_relative_imports_only(tmp_path: Path) -> None:
    _write(tmp_path, {
        "scripts/run.py": "import json\nfrom pkg import a\n",
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b  # lazy, and b is a submodule\n    return b\n",
        "pkg/b.py": "from .sub import d\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.typed\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "from .. import e\n",
        "pkg/e.py": "",
        "pkg/typed.py": "",
        "pkg/unused.py": "",
    })
    got = closure(tmp_path, "scripts/run.py", packages=("pkg", "scripts"))
    assert got == {"scripts/run.py", "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/sub/__init__.py",
                   "pkg/sub/d.py", "pkg/e.py"}


def test_stage_closure_follows_only_the_stage_function(tmp_path: Path) -> None:
    _write(tmp_path, {
        "stages/x.py": "from pkg.cli import stage_main\nstage_main('x')\n",
        "pkg/__init__.py": "",
        "pkg/cli.py": ("def stage_main(s):\n    main(s)\n\ndef main(s):\n    from pkg.pipeline import STAGES\n"
                       "    if s == 'predict':\n        predict_main()\n\ndef predict_main():\n    import pkg.predict\n"),
        "pkg/pipeline.py": ("import pkg.common\n\ndef run_x():\n    from pkg import xmod\n    _helper()\n\n"
                            "def _helper():\n    import pkg.helper\n\ndef run_y():\n    import pkg.ymod\n\n"
                            "STAGES = {'x': run_x, 'y': run_y}\n"),
        **{f"pkg/{m}.py": "" for m in ("common", "xmod", "ymod", "helper", "predict")},
    })
    assert entry_stage(tmp_path, "stages/x.py") == "x"
    assert stage_function(tmp_path, "y", "pkg/pipeline.py") == "run_y"
    got = stage_closure(tmp_path, "stages/x.py", "x", pipeline="pkg/pipeline.py", cli="pkg/cli.py",
                        packages=("pkg", "stages"))
    assert got == {"stages/x.py", "pkg/__init__.py", "pkg/cli.py", "pkg/pipeline.py", "pkg/common.py",
                   "pkg/xmod.py", "pkg/helper.py"}


def test_uncovered_flags_missing_files_and_accepts_parent_folders() -> None:
    files = {"confkd/evaluation/report.py", "confkd/io.py", "confkd/iox.py", "stages/evaluate.py"}
    deps = ["stages/evaluate.py", "confkd/evaluation/", "./confkd/io.py", "data/prepared"]
    assert uncovered(files, deps) == ["confkd/iox.py"]
    assert uncovered(files, ["confkd", "stages"]) == []


def test_no_import_cycles_in_the_package() -> None:
    """No two confkd modules import each other, lazy imports inside functions included."""
    from confkd.depgraph import import_cycles

    files = [p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "confkd").rglob("*.py")]
    assert import_cycles(REPO_ROOT, files) == []


def test_the_cycle_check_finds_a_planted_cycle(tmp_path) -> None:
    from confkd.depgraph import import_cycles

    pkg = tmp_path / "confkd"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from confkd import b\n")
    (pkg / "b.py").write_text("def f():\n    from confkd.c import g\n")  # lazy
    (pkg / "c.py").write_text("import confkd.a\n")
    (pkg / "d.py").write_text("from confkd import a\n")  # imports into the cycle, not part of it
    files = ["confkd/a.py", "confkd/b.py", "confkd/c.py", "confkd/d.py"]
    assert import_cycles(tmp_path, files) == [["confkd/a.py", "confkd/b.py", "confkd/c.py"]]
    assert import_cycles(tmp_path, files, lazy=False) == []


def test_evaluation_depends_on_saved_predictions_not_on_training_code() -> None:
    reached = closure(REPO_ROOT, "confkd/evaluation/stage.py")
    training = {"confkd/distill/trainer.py", "confkd/distill/kinds.py", "confkd/distill/students.py",
                "confkd/training/loop.py", "confkd/training/teacher.py"}
    assert not reached & training
    assert not [f for f in reached if f.startswith("confkd/tuning/")]
