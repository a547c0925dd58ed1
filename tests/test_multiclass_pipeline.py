"""Any number of classes, end to end: the whole pipeline (``dvc repro``: prepare, validate, both teachers,
augment, every student kind, evaluation, tune, export, report) on a 3-class task of local files, brought in
by params alone; then a user's edit of a data file reruns prepare (DVC watches ``task.data_dir``)."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import copy_repo_tiny, run_checked

pytestmark = pytest.mark.integration

WORDS = {
    "negative": ["dull", "tedious", "awful", "boring", "stale", "lifeless", "clumsy", "pointless"],
    "neutral": ["a film", "released in may", "runs two hours", "shot in ohio", "a sequel", "in colour",
                "with subtitles", "about a town"],
    "positive": ["wonderful", "moving", "brilliant", "charming", "delightful", "smart", "warm", "heartfelt"],
}


def _write_task(folder: Path, seed: int = 0) -> None:
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", 90), ("test", 24)):
        rows = ["text\tlabel"]
        for i in range(n):
            label = list(WORDS)[i % 3]
            words = rng.sample(WORDS[label], 2)
            rows.append(f"{split} {i} it was {words[0]} and {words[1]}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    (folder / "pool.txt").write_text("\n".join(f"some {w} text number {i}" for i, w in
                                               enumerate(sum(WORDS.values(), []) * 3)) + "\n")


def _run(args, cwd, check=True):
    return run_checked([sys.executable, *args], cwd, check)


@pytest.fixture(scope="module")
def three_class_repo(tmp_path_factory, tiny_model_dir):
    root = copy_repo_tiny(tmp_path_factory.mktemp("kclass"), tiny_model_dir)
    _write_task(root / "data" / "reviews3")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["task"] = {"name": "reviews3", "source": "local", "data_dir": "data/reviews3",
                      "files": {"train": "data/reviews3/train.tsv", "test": "data/reviews3/test.tsv"},
                      "text_column": "text", "label_column": "label", "labels": list(WORDS),
                      "unlabeled": ["data/reviews3/pool.txt"]}
    params["prepare"]["dev_fraction"] = 0.2
    params["prepare"]["dev_group_by_parent"] = False
    params["prepare"]["transfer"]["unlabeled_size"] = 40
    params["augment"]["size"] = 60
    # one configuration per loss family and student kind: soft labels, transformer distillation (intermediate
    # layers, then predictions), the n-gram DAN (KD, then gold labels)
    keep = ("kd_logits", "tinybert", "sparse_dan")
    params["distill"]["configs"] = {k: v for k, v in params["distill"]["configs"].items() if k in keep}
    params["distill"]["configs"]["sparse_dan"]["augmented_size"] = 60
    params["tune"].update(base="kd_logits", n_trials=2, n_startup_trials=1, timeout_minutes=3,
                          budget={"max_steps": 4, "eval_every_steps": 2, "early_stopping_patience": 2})
    params["tune"]["pruner"]["n_warmup_steps"] = 2
    params["evaluate"]["n_resamples"] = 50
    params["evaluate"]["train_sample"] = 30
    params["evaluate"]["confidence"] = {"preset": None, "measure": "top_prob", "subset": "all", "statistic": "std"}
    params["export"]["models"] = ["teacher", "kd_logits", "sparse_dan"]
    params["export"]["min_int8_agreement"] = 0.5
    params["export"]["latency"] = {"batch_sizes": [1, 8], "warmup": 1, "repeats": 2, "num_threads": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["-m", "dvc", "init", "--no-scm", "-q"], root)
    return root


def test_a_three_class_task_runs_end_to_end_by_params_alone(three_class_repo):
    root = three_class_repo
    check = _run(["-m", "confkd.cli", "check-params"], root)
    assert "params.yaml: OK" in check.stdout
    _run(["-m", "dvc", "repro"], root)
    labels = json.loads((root / "data/prepared/labels.json").read_text())
    assert labels["labels"] == ["negative", "neutral", "positive"] and labels["task"] == "reviews3"
    for model in ("teacher", "teacher_reference", "kd_logits", "tinybert", "sparse_dan", "tuned"):
        ev = json.loads((root / "metrics/eval" / f"{model}.json").read_text())
        assert ev["task"] == "reviews3" and ev["data_fingerprint"] == labels["data_fingerprint"], model
        test = ev["test"]
        assert 0 <= test["accuracy"] <= 1 and test["n_examples"] == 24, model
        assert test["majority_accuracy"] == pytest.approx(8 / 24), model  # 3 balanced classes
        assert test["sigma"] is not None and test["ece"] is not None and test["aurc"] is not None, model
        pred = (root / "predictions" / model / "test.csv").read_text().splitlines()
        assert len(pred) == 25, model
    export = json.loads((root / "metrics/export.json").read_text())
    assert export["task"] == "reviews3"
    assert any(k.startswith("sparse_dan.") and "speedup" in k for k in export)
    summary = (root / "reports/summary.md").read_text()
    assert "Task `reviews3`" in summary and "Majority-class baseline on test: 0.3333" in summary
    for model in ("kd_logits", "tinybert", "sparse_dan", "tuned"):
        assert f"| {model} |" in summary


def test_editing_a_file_in_task_data_dir_reruns_prepare(three_class_repo):
    root = three_class_repo
    # a no-op after the end-to-end test above; needed when this test runs alone (or on another worker)
    _run(["-m", "dvc", "repro", "prepare"], root)
    status = _run(["-m", "dvc", "status", "prepare"], root)
    assert "changed" not in status.stdout
    train = root / "data/reviews3/train.tsv"
    train.write_text(train.read_text() + "train 999 it was dull and stale\tnegative\n")
    status = _run(["-m", "dvc", "status", "prepare"], root)
    assert "data/reviews3" in status.stdout and "modified" in status.stdout
