"""The ``evaluate`` stage: accuracy, calibration and confidence preservation of one model vs the teacher.

Works from saved logits only (no model is run): the teacher's cached logits and each student's dev/test
logits written by its distill stage.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from confkd.config import Params
from confkd.errors import DataError
from confkd.evaluation.calibration import reliability_curve
from confkd.evaluation.confidence import confidence_pair
from confkd.evaluation.metrics import probabilities
from confkd.evaluation.report import evaluate_split
from confkd.evaluation.selective import risk_coverage_curve
from confkd.evaluation.temperature import apply_temperature, fit_temperature
from confkd.io import atomic_dir, read_jsonl, write_json, write_text
from confkd.training.teacher import load_logits

log = logging.getLogger(__name__)

TEACHER = "teacher"


def _student_logits_path(model: str, split: str) -> Path:
    if model == TEACHER:
        return Path("artifacts/teacher/logits") / f"{split}.npz"
    return Path("artifacts/distill") / model / f"{split}.npz"


def _kappa(params: Params, model: str) -> tuple[float | None, str]:
    """The phi_cnf bound and where it came from."""
    if params.evaluate.kappa is not None:
        return params.evaluate.kappa, "fixed"
    if model == TEACHER:
        return 0.0, "teacher"  # the teacher against itself: sigma is exactly 0
    path = Path("metrics/distill") / f"{model}.json"
    if not path.exists():
        raise DataError(f"{path}: not found (run `dvc repro distill@{model}` first)")
    beta_mean = json.loads(path.read_text()).get("train_kl_to_teacher")
    if beta_mean is None or not math.isfinite(beta_mean):
        raise DataError(f"{path}: no train_kl_to_teacher (re-run `dvc repro distill@{model}`)")
    # kappa = sqrt(beta / |X|) with beta the final training prediction loss summed over |X| examples
    return math.sqrt(max(beta_mean, 0.0)), "sqrt(final training KL)"


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def evaluate_model(params: Params, model: str, out_root: Path = Path(".")) -> dict:
    if model != TEACHER and model not in params.distill.configs:
        raise DataError(f"evaluate: '{model}' is neither 'teacher' nor a configuration in distill.configs")
    ep = params.evaluate
    frames = {s: read_jsonl(Path("data/prepared") / f"{s}.jsonl") for s in {"dev", *ep.splits}}
    ids = {s: f["id"].tolist() for s, f in frames.items()}
    missing = [str(_student_logits_path(model, s)) for s in frames if not _student_logits_path(model, s).exists()]
    if missing:
        raise DataError(f"evaluate: model '{model}' is listed in params but its predictions are missing: {missing} "
                        f"(run `dvc repro {'teacher' if model == TEACHER else 'distill@' + model}`)")
    teacher = {s: load_logits(_student_logits_path(TEACHER, s), ids[s]) for s in frames}
    student = {s: load_logits(_student_logits_path(model, s), ids[s]) for s in frames}
    labels = {s: f["label"].to_numpy() for s, f in frames.items()}
    temperature = fit_temperature(student["dev"], labels["dev"]) if ep.temperature_scaling else None
    kappa, kappa_source = _kappa(params, model)
    result: dict = {"kappa_source": kappa_source}
    with atomic_dir(out_root / "predictions" / model) as pred_dir:
        for split in ep.splits:
            m = evaluate_split(teacher[split], student[split], labels[split], n_bins=ep.n_bins,
                               n_resamples=ep.n_resamples, seed=params.seed, kappa=kappa,
                               measure=ep.confidence_measure, statistic=ep.statistic, temperature_dev=temperature)
            result[split] = _finite(m)
            _write_predictions(pred_dir / f"{split}.csv", frames[split], teacher[split], student[split], ep.confidence_measure)
            _write_plot_data(out_root / "plots" / "eval" / model, split, teacher[split], student[split], labels[split],
                             ep.n_bins, ep.confidence_measure)
        for name, spec in ep.extra_sets.items():
            result[name] = _evaluate_extra(params, model, name, spec, kappa, temperature, pred_dir)
    write_json(out_root / "metrics" / "eval" / f"{model}.json", {k: v for k, v in result.items() if k != "kappa_source"})
    _write_figures(out_root / "reports" / "figures" / model, model, out_root / "plots" / "eval" / model, ep.splits[0])
    t = result[ep.splits[0]]
    log.info("%s on %s: accuracy %.4f, ECE %.4f, sigma %.4f vs kappa %.4f -> phi_cnf %s", model, ep.splits[0],
             t["accuracy"], t["ece"], t["sigma"], t["kappa"], "holds" if t["phi_cnf"] else "fails")
    return result


def _evaluate_extra(params: Params, model: str, name: str, spec, kappa, temperature, pred_dir: Path) -> dict:
    """Run the saved teacher and student on an extra labelled file and score the student on it."""
    from confkd.data.loaders import read_table, to_examples
    from confkd.inference import load_predictor

    if name in ("test", "dev", "train", "transfer"):
        raise DataError(f"evaluate.extra_sets: '{name}' is a reserved split name")
    labels = json.loads(Path("data/prepared/labels.json").read_text())["labels"]
    frame, _ = to_examples(read_table(spec.path), text_column=spec.text_column, label_column=spec.label_column,
                           labels=labels, split=name, origin=spec.path)
    texts = frame["text"].tolist()
    max_length = params.teacher.max_length
    t_logits = load_predictor("models/teacher", max_length=max_length).predict_logits(texts)
    s_logits = t_logits if model == TEACHER else load_predictor(Path("models/distill") / model, max_length=max_length).predict_logits(texts)
    ep = params.evaluate
    m = evaluate_split(t_logits, s_logits, frame["label"].to_numpy(), n_bins=ep.n_bins, n_resamples=ep.n_resamples,
                       seed=params.seed, kappa=kappa, measure=ep.confidence_measure, statistic=ep.statistic,
                       temperature_dev=temperature)
    _write_predictions(pred_dir / f"{name}.csv", frame, t_logits, s_logits, ep.confidence_measure)
    return _finite(m)


def _write_predictions(path: Path, frame: pd.DataFrame, t_logits, s_logits, measure: str) -> None:
    pt, ps = probabilities(t_logits), probabilities(s_logits)
    ct, cs = confidence_pair(pt, ps, measure)
    df = pd.DataFrame({"id": frame["id"], "label": frame["label"], "teacher_pred": pt.argmax(1),
                       "student_pred": ps.argmax(1), "teacher_conf": ct, "student_conf": cs, "conf_gap": ct - cs})
    for k in range(ps.shape[1]):
        df[f"student_p{k}"] = ps[:, k]
    df.to_csv(path, index=False, float_format="%.6f")


def _write_plot_data(folder: Path, split: str, t_logits, s_logits, labels, n_bins: int, measure: str) -> None:
    """CSV series for `dvc plots`: reliability diagram, confidence scatter, risk-coverage curve."""
    pt, ps = probabilities(t_logits), probabilities(s_logits)
    rel = []
    for who, p in (("teacher", pt), ("student", ps)):
        curve = reliability_curve(p, labels, n_bins=n_bins)
        for i in range(len(curve["count"])):
            if curve["count"][i] > 0:
                rel.append({"model": who, "bin_upper": curve["bin_upper"][i], "confidence": curve["confidence"][i],
                            "accuracy": curve["accuracy"][i], "count": int(curve["count"][i])})
    write_text(folder / f"reliability_{split}.csv", pd.DataFrame(rel).to_csv(index=False, float_format="%.6f"))
    ct, cs = confidence_pair(pt, ps, measure)
    scatter = pd.DataFrame({"teacher_conf": ct, "student_conf": cs, "agree": (pt.argmax(1) == ps.argmax(1)).astype(int)})
    write_text(folder / f"confidence_{split}.csv", scatter.to_csv(index=False, float_format="%.6f"))
    rows = []
    for who, p in (("teacher", pt), ("student", ps)):
        rc = risk_coverage_curve(p, labels)
        step = max(1, len(rc["coverage"]) // 200)  # ~200 points are enough for a curve
        rows += [{"model": who, "coverage": c, "risk": r} for c, r in zip(rc["coverage"][::step], rc["risk"][::step])]
    write_text(folder / f"risk_coverage_{split}.csv", pd.DataFrame(rows).to_csv(index=False, float_format="%.6f"))


def _write_figures(folder: Path, model: str, data: Path, split: str) -> None:
    """PNG versions of the three plots, for the README and reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rel = pd.read_csv(data / f"reliability_{split}.csv")
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    for who, g in rel.groupby("model"):
        ax.plot(g["confidence"], g["accuracy"], marker="o", label=who)
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"{model}: reliability ({split})", xlim=(0.45, 1.01), ylim=(0, 1.01))
    ax.legend(fontsize=8)
    _save(fig, folder / f"reliability_{split}.png")
    sc = pd.read_csv(data / f"confidence_{split}.csv")
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(sc["teacher_conf"], sc["student_conf"], s=6, alpha=0.5, c=np.where(sc["agree"] == 1, "tab:blue", "tab:red"))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="teacher confidence", ylabel="student confidence", title=f"{model}: confidence ({split})")
    _save(fig, folder / f"confidence_{split}.png")
    rc = pd.read_csv(data / f"risk_coverage_{split}.csv")
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for who, g in rc.groupby("model"):
        ax.plot(g["coverage"], g["risk"], label=who)
    ax.set(xlabel="coverage", ylabel="selective risk", title=f"{model}: risk-coverage ({split})")
    ax.legend(fontsize=8)
    _save(fig, folder / f"risk_coverage_{split}.png")


def _save(fig, path: Path) -> None:
    from confkd.io import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
