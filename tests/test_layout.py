"""dvc.yaml and confkd.layout declare the same files: every output DVC tracks (outs, metrics, plots) is one the
code writes according to the layout, and every file the layout gives a stage is tracked by that stage."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from confkd.config import load_params
from confkd.layout import DEFAULT, DISTILL_TUNED, REFERENCE, TEACHER, Layout, evaluate_stage, stage_outputs, train_stage

from .conftest import REPO_ROOT


def _covers(outer: PurePosixPath, inner: PurePosixPath) -> bool:
    return inner == outer or outer in inner.parents


def _dvc_outputs() -> dict[str, set[PurePosixPath]]:
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        return {stage.name: {PurePosixPath(o.def_path) for o in stage.outs} for stage in repo.index.stages
                if getattr(stage, "name", None)}


@pytest.fixture(scope="module")
def declared():
    params = load_params(REPO_ROOT / "params.yaml")
    layout = {s: {PurePosixPath(p.as_posix()) for p in paths}
              for s, paths in stage_outputs(params.distill.configs, params.tune.name).items()}
    return layout, _dvc_outputs()


def test_every_stage_of_dvc_yaml_is_in_the_layout_and_back(declared):
    layout, dvc = declared
    assert set(dvc) == set(layout)


def test_every_tracked_output_is_a_layout_path_and_every_layout_path_is_tracked(declared):
    layout, dvc = declared
    problems = []
    for stage, outs in dvc.items():
        mine = layout[stage]
        problems += [f"{stage}: dvc.yaml tracks {o}, which the layout does not give it" for o in outs
                     if not any(_covers(p, o) or _covers(o, p) for p in mine)]
        problems += [f"{stage}: the layout writes {p}, which dvc.yaml does not track" for p in mine
                     if not any(_covers(o, p) or _covers(p, o) for o in outs)]
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_drift(declared):
    """A path renamed in the layout (or in dvc.yaml) is caught: the check above is not vacuous."""
    layout, dvc = declared
    moved = dict(layout, export={PurePosixPath("models/exported")} | {p for p in layout["export"]
                                                                       if p.name != "export"})
    missing = [p for p in moved["export"] if not any(_covers(o, p) or _covers(p, o) for o in dvc["export"])]
    assert missing == [PurePosixPath("models/exported")]


def test_layout_paths_by_model_family():
    layout = Layout(Path("/r"))
    assert layout.model_dir(TEACHER) == Path("/r/models/teacher")
    assert layout.model_dir(REFERENCE) == Path("/r/models/teacher_reference")
    assert layout.model_dir("kd") == Path("/r/models/distill/kd")
    assert layout.logits_dir(TEACHER) == Path("/r/artifacts/teacher/logits")
    assert layout.logits_dir("kd") == Path("/r/artifacts/distill/kd")
    assert layout.train_metrics("kd") == Path("/r/metrics/distill/kd.json")
    assert layout.eval_metrics("kd") == Path("/r/metrics/eval/kd.json")
    assert DEFAULT.prepared_dir == Path("data/prepared")


def test_stage_names():
    assert train_stage(TEACHER) == "teacher" and train_stage("kd") == "distill@kd"
    assert train_stage("tuned", tuned_name="tuned") == DISTILL_TUNED
    assert evaluate_stage(TEACHER) == "evaluate_teacher" and evaluate_stage("kd") == "evaluate@kd"
    assert evaluate_stage("tuned", tuned_name="tuned") == "evaluate_tuned"


# -- DVC's run cache ------------------------------------------------------------------------------------------

# The stages DVC cannot restore from its run cache, and why. Every other stage must stay restorable: a queued
# experiment (`confkd claims`) or the head side of a pull request then reruns only what its change touches.
NOT_RUN_CACHED = {
    "tune": "the Optuna study persists across runs (resumable), and DVC never run-caches a persistent output",
    "report": "reports/summary.md is tracked by git, not by DVC (cache: false)",
    "export": "reports/export.md is tracked by git, not by DVC (cache: false)",
}


def run_cache_blockers(stage) -> list[str]:
    """Why DVC would not save ``stage`` to its run cache (dvc/stage: ``Stage.run`` skips it when an output
    other than a metric or a plot has ``cache: false``; ``stage/cache._can_hash`` refuses persistent outputs)."""
    return ([f"{o.def_path}: cache: false" for o in stage.outs
             if not o.use_cache and not (o.is_metric or o.is_plot)]
            + [f"{o.def_path}: persist: true" for o in stage.outs if o.persist])


def _stages(root: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.name: run_cache_blockers(s) for s in repo.index.stages if getattr(s, "name", None)}


def test_every_stage_but_the_listed_ones_is_restored_from_the_run_cache():
    blockers = _stages(REPO_ROOT)
    assert {name for name, why in blockers.items() if why} == set(NOT_RUN_CACHED), blockers
    assert blockers["evaluate_teacher"] == [] and blockers["prepare"] == []


def test_the_run_cache_check_fails_on_an_uncached_report_or_a_persistent_output(tmp_path):
    """The check above is not vacuous: a git-tracked report among a stage's outputs, or a persistent output,
    is named; the same file declared as a plot is not."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  figures_as_outs:\n    cmd: 'true'\n    deps: [x]\n    outs: [{figs: {cache: false}}]\n"
        "  figures_as_plots:\n    cmd: 'true'\n    deps: [x]\n    outs: [y]\n    plots: [{figs2: {cache: false}}]\n"
        "  study:\n    cmd: 'true'\n    deps: [x]\n    outs: [{db: {persist: true}}]\n")
    blockers = _stages(tmp_path)
    assert blockers == {"figures_as_outs": ["figs: cache: false"], "figures_as_plots": [],
                        "study": ["db: persist: true"]}
