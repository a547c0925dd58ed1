"""`confkd pr-report`: the pull-request comment, its noise tests and its bad-input handling."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from confkd.entry import main as confkd_main
from confkd.compare import mcnemar, paired_bootstrap, unpaired
from confkd.prreport import MARKER, build_comment, side_from_folder

from .conftest import REPO_ROOT

N = 400


def _predictions(seed: int, student_right: np.ndarray, conf_noise: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.random.default_rng(0).integers(0, 2, N)
    teacher_pred = np.where(np.random.default_rng(1).random(N) < 0.9, labels, 1 - labels)
    student_pred = np.where(student_right, labels, 1 - labels)
    t_conf = np.random.default_rng(2).uniform(0.6, 1.0, N)
    s_conf = np.clip(t_conf + rng.normal(0, conf_noise, N), 0.5, 1.0)
    p1 = np.where(student_pred == 1, s_conf, 1 - s_conf)
    return pd.DataFrame({"id": [f"test-{i:04d}" for i in range(N)], "label": labels, "teacher_pred": teacher_pred,
                         "student_pred": student_pred, "teacher_conf": t_conf, "student_conf": s_conf,
                         "conf_gap": t_conf - s_conf, "student_p0": 1 - p1, "student_p1": p1})


def _eval(frame: pd.DataFrame, phi: float, kappa: float = 0.05) -> dict:
    right = (frame["student_pred"] == frame["label"]).mean()
    d = frame["teacher_conf"] - frame["student_conf"]
    return {"test": {"n_examples": float(N), "accuracy": float(right),
                     "agreement": float((frame["student_pred"] == frame["teacher_pred"]).mean()),
                     "ece": 0.05, "ece_ci_low": 0.04, "ece_ci_high": 0.06, "sigma": float(d.std(ddof=0)),
                     "sigma_ci_low": 0.0, "sigma_ci_high": 0.2, "kappa": kappa, "phi_cnf": phi},
            "confidence": {"measure": "top_prob", "subset": "all", "statistic": "std", "class_index": 0}}


def _write_side(root: Path, models: dict[str, tuple[pd.DataFrame, float]], params: dict, with_predictions=True) -> Path:
    (root / "metrics" / "eval").mkdir(parents=True)
    for name, (frame, phi) in models.items():
        (root / "metrics" / "eval" / f"{name}.json").write_text(json.dumps(_eval(frame, phi)))
        if with_predictions:
            (root / "predictions" / name).mkdir(parents=True)
            frame.to_csv(root / "predictions" / name / "test.csv", index=False)
    (root / "metrics" / "summary.json").write_text(json.dumps({f"{m}.size_mb": 10.0 for m in models}))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture
def sides(tmp_path):
    labels = np.random.default_rng(0).integers(0, 2, N)
    base_right = np.random.default_rng(3).random(N) < 0.80
    better = base_right.copy()
    better[np.flatnonzero(~base_right)[:50]] = True  # 50 wrong -> right, none the other way: real
    nudged = base_right.copy()
    nudged[np.flatnonzero(~base_right)[:2]] = True  # 2 flips: noise
    teacher = _predictions(9, np.random.default_rng(1).random(N) < 0.9, 0.0)
    teacher["student_pred"], teacher["student_conf"] = teacher["teacher_pred"], teacher["teacher_conf"]
    assert (teacher["label"] == labels).all()
    base_models = {"teacher": (teacher, 1.0), "better": (_predictions(4, base_right, 0.05), 1.0),
                   "nudged": (_predictions(5, base_right, 0.05), 1.0), "flip": (_predictions(6, base_right, 0.05), 1.0),
                   "same": (_predictions(7, base_right, 0.05), 1.0), "gone": (_predictions(8, base_right, 0.05), 1.0)}
    head_models = dict(base_models)
    head_models.pop("gone")
    head_models["better"] = (_predictions(4, better, 0.05), 1.0)
    head_models["nudged"] = (_predictions(5, nudged, 0.05), 1.0)
    head_models["flip"] = (_predictions(6, base_right, 0.05), 0.0)  # same predictions, verdict flips
    head_models["fresh"] = (_predictions(10, base_right, 0.05), 1.0)
    params = {"distill": {"configs": {"better": {"alpha": 0.1}, "same": {"alpha": 0.5}}}, "seed": 42}
    head_params = {"distill": {"configs": {"better": {"alpha": 0.3}, "same": {"alpha": 0.5}}}, "seed": 42}
    base = side_from_folder(_write_side(tmp_path / "base", base_models, params), "base")
    head = side_from_folder(_write_side(tmp_path / "head", head_models, head_params), "head")
    return base, head, tmp_path


def test_compare_hand_values():
    # 10 discordant pairs all one way: p = 2 * 0.5^10
    base, head = np.ones(30, bool), np.ones(30, bool)
    base[:10] = False
    change = mcnemar(base, head)
    assert change.p_value == pytest.approx(2 * 0.5 ** 10) and change.real and change.delta == pytest.approx(10 / 30)
    base[10:13], head[13:16] = False, False  # 3 each way more: b = 3, c = 13 -> p = 2 * P(X <= 3 | Bin(16, .5))
    expected = 2 * sum(math.comb(16, k) for k in range(4)) / 2 ** 16
    assert mcnemar(base, head).p_value == pytest.approx(expected)
    assert mcnemar(np.ones(5), np.ones(5)).p_value == 1.0 and not mcnemar(np.ones(5), np.ones(5)).real
    same = paired_bootstrap(lambda idx: (float(idx.mean()), float(idx.mean())), 50, 200)
    assert same.low == same.high == 0.0 and not same.real
    shifted = paired_bootstrap(lambda idx: (float(idx.mean()), float(idx.mean()) + 1.0), 50, 200)
    assert shifted.real and shifted.low == pytest.approx(1.0)
    # unpaired: delta 0.02 with se 0.01 each -> z = 1.414, p = 0.157: noise
    u = unpaired(0.80, 0.82, 0.01, 0.01)
    assert u.p_value == pytest.approx(0.1573, abs=1e-3) and not u.real
    assert unpaired(0.80, 0.85, 0.01, 0.01).real


def test_comment_marks_real_changes_flips_new_removed_and_changed_params(sides):
    base, head, _ = sides
    comment = build_comment(base, head, n_resamples=300)
    lines = comment.splitlines()
    assert lines[0] == MARKER
    assert lines[3].startswith("**phi_cnf flipped:**") and "`flip` holds → **fails**" in lines[3]
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| `")}
    assert set(row) == {"`better`", "`nudged`", "`flip`", "`fresh` (new)", "`gone` (removed)"}
    assert row["`better`"].split("|")[2].strip() == "**0.9400 (+0.1250)**"  # 50 one-way flips: real, bold
    assert "<sub>" in row["`nudged`"].split("|")[2]  # two flips: within noise
    assert "**fails** (was holds)" in row["`flip`"]
    assert "Unchanged (2): `teacher`, `same`." in comment
    assert "**Params changed (1):** `distill.configs.better.alpha`: 0.1 → 0.3." in comment
    assert "unpaired" not in comment  # predictions on both sides: paired tests
    assert len(lines) <= 60


def test_missing_predictions_fall_back_to_unpaired_and_say_so(sides):
    base, head, tmp = sides
    bare = side_from_folder(_write_side(tmp / "bare", {"teacher": (pd.read_csv(tmp / "base/predictions/teacher/test.csv"), 1.0),
                                                       "better": (pd.read_csv(tmp / "base/predictions/better/test.csv"), 1.0)},
                                        {"seed": 42}, with_predictions=False), "bare")
    comment = build_comment(bare, head, n_resamples=100)
    assert "Per-example predictions missing on one side for `better`" in comment and "unpaired" in comment


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_bad_input_is_a_clear_error_with_exit_2(tmp_path, capsys, sides):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")
    assert confkd_main(["pr-report", "--repo", str(repo), "--base", "no-such-rev", "--no-dvc-details"]) == 2
    assert "unknown revision 'no-such-rev'" in capsys.readouterr().err
    assert confkd_main(["pr-report", "--repo", str(repo), "--base", "HEAD", "--no-dvc-details"]) == 2
    assert "revision 'HEAD' has no metrics/eval/*.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / "metrics" / "eval").mkdir(parents=True)
    (bad / "metrics" / "eval" / "kd.json").write_text(json.dumps({"test": {"accuracy": [0.8, 0.9]}}))
    assert confkd_main(["pr-report", "--base", str(bad), "--head", str(sides[2] / "head"), "--no-dvc-details"]) == 2
    assert "not flat JSON ('test.accuracy' is a list)" in capsys.readouterr().err
    (bad / "metrics" / "eval" / "kd.json").write_text("{not json")
    assert confkd_main(["pr-report", "--base", str(bad), "--head", str(sides[2] / "head"), "--no-dvc-details"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_git_revisions_with_dvc_details_and_plot(sides, tmp_path):
    """Two committed revisions of a repository: metrics from git, DVC's own diffs folded, the PNG written."""
    _, _, root = sides
    repo = tmp_path / "gitrepo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {"cmd": "true", "metrics": [
        {"metrics/summary.json": {"cache": False}}]}}}))
    for side in ("base", "head"):
        for name in ("metrics", "params.yaml"):
            src = root / side / name
            subprocess.run(["rm", "-rf", str(repo / name)], check=True)
            subprocess.run(["cp", "-r", str(src), str(repo / name)], check=True)
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", side)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    proc = subprocess.run([sys.executable, "-m", "confkd.entry", "pr-report", "--repo", str(repo), "--base", "HEAD~1",
                           "--head", "HEAD", "--plot", str(tmp_path / "pr.png"), "--out", str(tmp_path / "c.md")],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    comment = proc.stdout
    assert comment == (tmp_path / "c.md").read_text()
    assert "`better`" in comment and "<details>" in comment and "#### dvc params diff" in comment
    assert "distill.configs.better.alpha" in comment.split("<details>")[1]  # DVC's own params diff
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"


def test_speedup_changes_count_only_outside_both_runs_spread(sides):
    """Timing noise alone never lists a model as changed; a move beyond both spreads is bold."""
    from confkd.prreport import speedup_change

    base, head, _ = sides
    base.summary.update({"same.speedup_vs_best_teacher_b32": 100.0, "same.speedup_vs_best_teacher_b32_spread": 0.10,
                         "better.speedup_vs_best_teacher_b32": 3.0, "better.speedup_vs_best_teacher_b32_spread": 0.05})
    head.summary.update({"same.speedup_vs_best_teacher_b32": 108.0, "same.speedup_vs_best_teacher_b32_spread": 0.06,
                         "better.speedup_vs_best_teacher_b32": 4.5, "better.speedup_vs_best_teacher_b32_spread": 0.05})
    assert not speedup_change(base, head, "same").real  # +8% inside the 10% spread
    assert speedup_change(base, head, "better").real  # +50% outside both 5% spreads
    assert speedup_change(base, head, "teacher") is None  # not timed on one side: not tested
    comment = build_comment(base, head, n_resamples=200)
    assert "Unchanged (2): `teacher`, `same`." in comment  # the 8% timing wobble does not make `same` changed
    row = next(line for line in comment.splitlines() if line.startswith("| `better`"))
    assert row.rstrip(" |").endswith("**4.5x (+1.5x)**")
    head.summary["same.speedup_vs_best_teacher_b32"] = 130.0  # +30%: beyond both spreads
    assert "`same`" in next(line for line in build_comment(base, head, n_resamples=200).splitlines()
                            if line.startswith("| `same`"))


def test_metrics_of_other_data_are_not_compared(tmp_path):
    """A run over a subset of configurations (the quick profile) leaves the committed metrics of the rest in the
    checkout; their provenance differs from the run's teacher, so the comment names them apart, not unchanged."""
    right = np.random.default_rng(3).random(N) < 0.8
    teacher = _predictions(9, np.random.default_rng(1).random(N) < 0.9, 0.0)
    models = {"teacher": (teacher, 1.0), "kd": (_predictions(4, right, 0.05), 1.0),
              "old": (_predictions(5, right, 0.05), 1.0)}
    folders = {}
    for side in ("base", "head"):
        root = _write_side(tmp_path / side, models, {"seed": 42})
        for name in models:  # this run's data for teacher and kd; the full data's stamp on "old"
            path = root / "metrics" / "eval" / f"{name}.json"
            stamp = {"task": "sst2", "data_fingerprint": "full" if name == "old" else "quick"}
            path.write_text(json.dumps({**stamp, **json.loads(path.read_text())}))
        folders[side] = root
    base, head = side_from_folder(folders["base"], "base"), side_from_folder(folders["head"], "head")
    assert sorted(base.evals) == ["kd", "teacher"] and base.other_data == ["old"]
    comment = build_comment(base, head)
    assert "Unchanged (2): `teacher`, `kd`." in comment
    assert "Not compared (1): `old`: on one side their metrics were computed on other data" in comment
    # without stamps (revisions from before them) every file is compared, as before
    for side in folders.values():
        for path in (side / "metrics" / "eval").glob("*.json"):
            path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items()
                                        if k not in ("task", "data_fingerprint")}))
    comment = build_comment(side_from_folder(folders["base"]), side_from_folder(folders["head"]))
    assert "Unchanged (3): `teacher`, `kd`, `old`." in comment and "Not compared" not in comment


def test_a_block_of_params_added_or_removed_is_one_entry(sides):
    """A new configuration is one line of the comment, not one per key; single changes stay key by key."""
    from confkd.prreport import summarize_params

    base, head, _ = sides
    head.params = {**head.params, "distill.configs.narrow.method": "tinybert",
                   "distill.configs.narrow.student.hidden_size": 192, "distill.configs.narrow.temperature": 1.0,
                   "export.new_knob": 3}
    base.params = {**base.params, "distill.configs.gone.method": "kd_logits", "distill.configs.gone.alpha": 0.5}
    assert summarize_params(base, head) == [
        "`distill.configs.better.alpha`: 0.1 → 0.3", "`distill.configs.gone`: removed (2 keys)",
        "`distill.configs.narrow`: added (3 keys)", "`export.new_knob`: '—' → 3"]
    assert "**Params changed (4):**" in build_comment(base, head)
