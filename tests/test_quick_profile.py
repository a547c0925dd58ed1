"""The quick profile's overrides (scripts/quick_profile.sh, read by the rehearsal and the task-time benchmark)
applied with DVC's own `-S` grammar: the result is a valid, runnable configuration, and a bad override fails
before params.yaml is touched."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import yaml

from confkd.config import load_params
from confkd.data.checks import ERROR, check_configs
from confkd.errors import ParamsError
from confkd.orchestration import applicable_overrides, apply_hydra_overrides

from .conftest import REPO_ROOT


def _quick_overrides() -> list[str]:
    spec = importlib.util.spec_from_file_location("rehearse_pr", REPO_ROOT / "scripts" / "rehearse_pr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.quick_overrides()


@pytest.fixture()
def repo(tmp_path):
    (tmp_path / ".dvc").mkdir()
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_quick_overrides_are_read_from_the_script_quotes_and_removals_included():
    overrides = _quick_overrides()
    assert "prepare.train_fraction=0.02" in overrides
    assert "~distill.configs.internal_pid" in overrides  # quoted in the script, unquoted here
    assert "export.models=[teacher,tinybert,sparse_dan]" in overrides
    assert not any(o.startswith("-") or "#" in o for o in overrides)


def test_quick_profile_keeps_one_student_per_kind_and_a_consistent_configuration(repo):
    apply_hydra_overrides(repo, _quick_overrides())
    params = load_params(repo / "params.yaml")
    assert sorted(params.distill.configs) == ["kd_logits_2l", "sparse_dan", "tinybert"]
    assert params.tune.base in params.distill.configs
    assert set(params.export.models) <= {"teacher", *params.distill.configs}
    assert params.prepare.train_fraction == 0.02 and params.tune.n_trials == 2
    assert params.export.latency.batch_sizes == [32] and params.export.parity_split == "dev"
    assert not [f for f in check_configs(params) if f.severity == ERROR]
    # comments and the untouched keys survive DVC's round trip
    text = (repo / "params.yaml").read_text()
    assert "# Every knob of the pipeline." in text and "internal_pid" not in yaml.safe_load(text)["distill"]["configs"]


@pytest.mark.parametrize("override, needle", [
    ("tune.n_trials=-1", "tune.n_trials"),              # the schema rejects it
    ("~distill.configs.no_such_config", "no_such_config"),  # Hydra: nothing to remove
    ("tune.n_trials=[1", "tune.n_trials=[1"),           # not Hydra's grammar
])
def test_a_bad_override_names_itself_and_leaves_params_untouched(repo, override, needle):
    before = (repo / "params.yaml").read_bytes()
    with pytest.raises(ParamsError, match=needle.replace("[", r"\[")):
        apply_hydra_overrides(repo, ["prepare.train_fraction=0.5", override])
    assert (repo / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in repo.iterdir()) == [".dvc", "params.yaml"]  # no trial file left behind


def test_removals_of_keys_a_revision_lacks_are_skipped_not_failed():
    """The same profile runs on both sides of a pull request: a configuration the head adds is not in the base."""
    params = {"distill": {"configs": {"kd": {}, "tinybert": {}}}, "tune": {"n_trials": 4}}
    kept, skipped = applicable_overrides(params, ["~distill.configs.kd", "~distill.configs.new_in_head",
                                                  "tune.n_trials=2", "~tune.missing.deeper"])
    assert kept == ["~distill.configs.kd", "tune.n_trials=2"]
    assert skipped == ["~distill.configs.new_in_head", "~tune.missing.deeper"]
