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
