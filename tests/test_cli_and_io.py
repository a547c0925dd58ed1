import json
import subprocess
import sys

import numpy as np
import pytest

from confkd.cli import main
from confkd.io import atomic_dir, write_json, write_npy


def test_check_params_reports_typos_with_nonzero_exit(tmp_path, caplog):
    bad = tmp_path / "params.yaml"
    bad.write_text("teacher:\n  epocs: 3\n")
    assert main(["check-params", "--params", str(bad)]) == 1
    assert "teacher.epocs: unknown key" in caplog.text
    good = tmp_path / "good.yaml"
    good.write_text("seed: 1\n")
    assert main(["check-params", "--params", str(good)]) == 0


def test_stage_without_inputs_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    proc = subprocess.run([sys.executable, "-m", "confkd.cli", "teacher"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "data/prepared/labels.json: not found (run the prepare stage first)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    with pytest.raises(TypeError):
        write_json(target, {"accuracy": object()})
    assert json.loads(target.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind
    write_npy(tmp_path / "a.npy", np.arange(3))
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]


def test_failed_directory_write_keeps_the_previous_directory(tmp_path):
    model = tmp_path / "model"
    with atomic_dir(model) as d:
        (d / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(model) as d:
            (d / "weights").write_text("half")
            raise RuntimeError("interrupted")
    assert (model / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_dir(model) as d:
        (d / "weights").write_text("v2")
    assert (model / "weights").read_text() == "v2"
