"""The task checked against its files at parse time (``confkd check-params``), each problem naming its key."""

import json

import pytest
import yaml

from confkd.cli import main
from confkd.config import parse_params
from confkd.data.checks import ERROR, WARNING, check_configs, check_task, read_header

from .conftest import REPO_ROOT


def _files(folder, train_rows, test_rows, header="text\tlabel", dev_rows=None):
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train_rows), ("test", test_rows), ("dev", dev_rows)):
        if rows is not None:
            (folder / f"{split}.tsv").write_text("\n".join([header, *rows]) + "\n")


def _params(tmp_path, **task):
    block = {"name": "mine", "source": "local", "data_dir": str(tmp_path / "d"),
             "files": {"train": str(tmp_path / "d/train.tsv"), "test": str(tmp_path / "d/test.tsv")},
             "labels": ["no", "yes"], **task}
    return {"task": block}


def _balanced(n=40):
    return [f"text {i}\t{'yes' if i % 2 else 'no'}" for i in range(n)]


def _keys(findings, severity=ERROR):
    return [f.key for f in findings if f.severity == severity]


def test_good_local_task_has_no_findings(tmp_path):
    _files(tmp_path / "d", _balanced(), _balanced(10))
    assert check_task(parse_params(_params(tmp_path))) == []


def test_the_embedded_default_passes_and_an_unknown_embedded_name_is_caught():
    assert _keys(check_task(parse_params({}), REPO_ROOT / "data")) == []
    findings = check_task(parse_params({"task": {"name": "sst5"}}), REPO_ROOT / "data")
    assert _keys(findings) == ["task.name"] and "unknown embedded task 'sst5'" in findings[0].message


@pytest.mark.parametrize("case, key, text", [
    ("missing_file", "task.files.test", "file not found"),
    ("missing_text_column", "task.text_column", "has no column 'text'"),
    ("missing_label_column", "task.label_column", "has no column 'label'"),
    ("unknown_label", "task.labels", "labels outside ['no', 'yes'] (values ['maybe']"),
    ("empty_text", "prepare.on_empty_text", "empty text (data rows [3]"),
    ("outside_data_dir", "task.data_dir", "is outside"),
    ("no_data_dir", "task.data_dir", "set it to the folder"),
    ("min_fraction", "validate.class_balance.min_fraction", "below min_fraction 0.4"),
    ("dev_shift", "validate.class_balance.max_shift", "of dev but 50.0% of train"),
])
def test_each_problem_is_an_error_naming_its_key(tmp_path, case, key, text):
    train, test = _balanced(), _balanced(10)
    params = _params(tmp_path)
    header = "text\tlabel"
    if case == "missing_file":
        test = None
    elif case == "missing_text_column":
        header = "sentence\tlabel"
    elif case == "missing_label_column":
        header = "text\tclass"
    elif case == "unknown_label":
        test = test + ["odd one\tmaybe"]
    elif case == "empty_text":
        train = train[:2] + ["  \tyes"] + train[2:]
    elif case == "outside_data_dir":
        (tmp_path / "elsewhere").mkdir()
        params["task"]["data_dir"] = str(tmp_path / "elsewhere")
    elif case == "no_data_dir":
        params["task"].pop("data_dir")
    elif case == "min_fraction":
        train = [f"text {i}\t{'yes' if i % 5 == 0 else 'no'}" for i in range(40)]  # 20% yes
        params["validate"] = {"class_balance": {"min_fraction": 0.4}}
    elif case == "dev_shift":
        params["task"]["files"]["dev"] = str(tmp_path / "d/dev.tsv")
        _files(tmp_path / "d", train, test, header, dev_rows=[f"dev {i}\tyes" for i in range(9)] + ["dev 9\tno"])
    if case != "dev_shift":
        _files(tmp_path / "d", train, test, header)
    findings = check_task(parse_params(params))
    errors = [f for f in findings if f.severity == ERROR]
    assert key in _keys(findings), findings
    assert any(text in f.message for f in errors if f.key == key), errors


def test_soft_problems_are_warnings(tmp_path):
    imbalanced = [f"text {i}\t{'yes' if i % 25 == 0 else 'no'}" for i in range(100)]  # 4% yes: moderation-like
    _files(tmp_path / "d", imbalanced[:50] + ["   \tno"] + imbalanced[50:], _balanced(10))
    params = _params(tmp_path)
    params["prepare"] = {"on_empty_text": "drop"}
    findings = check_task(parse_params(params))
    assert _keys(findings) == [], "an imbalanced task and dropped empty rows must not block the run"
    assert set(_keys(findings, WARNING)) >= {"validate.class_balance.warn_below", "prepare.on_empty_text",
                                             "validate.class_balance.max_shift"}  # test is 50/50, train 4%


def test_augmented_size_beyond_augment_size_warns_instead_of_blocking_the_params():
    params = parse_params({"augment": {"size": 100},
                           "distill": {"configs": {"big": {"method": "kd_logits", "augmented_size": 500}}}})
    findings = check_configs(params)
    assert [f.key for f in findings] == ["distill.configs.big.augmented_size"] and findings[0].severity == WARNING


def test_a_tuning_timeout_warns_that_the_result_depends_on_machine_speed():
    assert check_configs(parse_params({})) == []  # the default bounds tuning by trials only
    findings = check_configs(parse_params({"tune": {"timeout_minutes": 25}}))
    assert [(f.key, f.severity) for f in findings] == [("tune.timeout_minutes", WARNING)]
    assert "machine" in findings[0].message and "n_trials" in findings[0].message


def test_read_header_reads_only_the_first_line(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text('text,label\n"a, b",1\n' + "\x00\xff garbage that is not csv\n" * 3)
    assert read_header(path) == ["text", "label"]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"sentence": "x", "y": 1}\n{broken\n')
    assert read_header(jsonl) == ["sentence", "y"]


def test_check_params_exits_1_naming_the_key_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _files(tmp_path / "d", _balanced(), _balanced(10))
    params = _params(tmp_path, label_column="target")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["check-params"]) == 1
    out = capsys.readouterr().out
    assert "task.label_column" in out and "has no column 'target'" in out and "nothing was run" in out
    # the prepare stage refuses the same params before doing any work
    assert main(["prepare"]) == 1
    assert not (tmp_path / "data").exists()
    params["task"].pop("label_column")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["check-params"]) == 0


def test_prepare_counts_every_dropped_empty_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = _balanced()
    train = train[:5] + ["\tyes", "   \tno"] + train[5:]
    _files(tmp_path / "d", train, _balanced(10) + [" \tyes"])
    params = _params(tmp_path)
    params["prepare"] = {"on_empty_text": "drop", "transfer": {"unlabeled_size": 0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["prepare"]) == 0
    report = json.loads((tmp_path / "reports/prepare.json").read_text())
    assert report["input_dropped"]["train"]["empty_text"] == {"count": 2, "rows": [6, 7]}
    assert report["input_dropped"]["test"]["empty_text"]["count"] == 1
    metrics = json.loads((tmp_path / "metrics/prepare.json").read_text())
    assert metrics["train_input_dropped_empty_text"] == 2 and metrics["test_input_dropped_empty_text"] == 1
    labels = json.loads((tmp_path / "data/prepared/labels.json").read_text())
    assert labels["task"] == "mine" and len(labels["data_fingerprint"]) == 16
    assert metrics["data_fingerprint"] == labels["data_fingerprint"]
