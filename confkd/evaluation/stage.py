"""The ``evaluate`` stage: accuracy, calibration and confidence preservation of one model vs the teacher.

Works from saved logits only (no model is run): the teacher's cached logits, the reference teacher's
(kappa policy ``reference``), and each student's dev/test/train-sample logits written by its distill stage.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from confkd.config import Params
from confkd.data.splitting import sample_index
from confkd.errors import DataError
from confkd.evaluation.calibration import reliability_curve
from confkd.evaluation.confidence import ConfidenceSpec, confidence_pair, resolve_spec
from confkd.evaluation.kappa import implied_by_maths, resolve_kappa
from confkd.evaluation.metrics import probabilities
from confkd.evaluation.report import evaluate_split, trust_flags
from confkd.evaluation.saved import load_saved, split_kappa
from confkd.evaluation.selective import risk_coverage_curve
from confkd.evaluation.temperature import fit_temperature
from confkd.io import atomic_dir, provenance, read_jsonl, write_json, write_text
from confkd.layout import DEFAULT, REFERENCE, TEACHER, TEACHERS, Layout

log = logging.getLogger(__name__)

TRAIN = "train"


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _warn_flags(model: str, result: dict) -> None:
    for key, on in result["flags"].items():
        if not on:
            continue
        if key.startswith("near_baseline_"):
            split = key.removeprefix("near_baseline_")
            log.warning("%s on %s: accuracy %.4f is within reach of the majority-class baseline %.4f: its results "
                        "mean little", model, split, result[split]["accuracy"], result[split]["majority_accuracy"])
        elif key == "dev_test_shift":
            log.warning("%s: dev accuracy %.4f and test accuracy %.4f have disjoint 95%% intervals: dev does not "
                        "predict test (distribution shift)", model, result["dev"]["accuracy"], result["test"]["accuracy"])


def evaluate_model(params: Params, model: str, layout: Layout = DEFAULT) -> dict:
    if model not in TEACHERS and model not in params.distill.configs:
        raise DataError(f"evaluate: '{model}' is neither 'teacher', '{REFERENCE}' nor a configuration in distill.configs")
    ep = params.evaluate
    label_names = json.loads(layout.labels_file.read_text())["labels"]
    spec = resolve_spec(ep.confidence, label_names)
    frames = {s: read_jsonl(layout.split_file(s)) for s in {"dev", TRAIN, *ep.splits}}
    if model in TEACHERS:
        train_ids = frames[TRAIN]["id"].to_numpy()[sample_index(len(frames[TRAIN]), ep.train_sample, params.seed)]
        train_ids = [str(i) for i in train_ids]
    else:
        train_ids = load_saved(layout, params, model, TRAIN)[0]
    labels_by_id = dict(zip(frames[TRAIN]["id"].astype(str), frames[TRAIN]["label"]))
    ids = {s: frames[s]["id"].astype(str).tolist() for s in ("dev", *ep.splits)}
    ids[TRAIN] = train_ids
    labels = {s: frames[s]["label"].to_numpy() for s in ("dev", *ep.splits)}
    labels[TRAIN] = np.array([labels_by_id[i] for i in train_ids])
    teacher = {s: load_saved(layout, params, TEACHER, s, ids[s])[1] for s in ids}
    student = teacher if model == TEACHER else {s: load_saved(layout, params, model, s, ids[s])[1] for s in ids}
    temperature = fit_temperature(student["dev"], labels["dev"]) if ep.temperature_scaling else None
    result: dict = {}
    with atomic_dir(layout.predictions_dir(model)) as pred_dir:
        for split in (*ep.splits, TRAIN):
            kappa = split_kappa(layout, params, model, split, spec, teacher[split], labels[split], ids[split])
            m = evaluate_split(teacher[split], student[split], labels[split], kappa=kappa, spec=spec, n_bins=ep.n_bins,
                               n_resamples=ep.n_resamples, seed=params.seed, temperature_dev=temperature)
            if model != TEACHER and implied_by_maths(m["kappa"], m["pinsker_bound"]):
                log.warning("%s on %s: kappa %.4f >= the Pinsker bound %.4f = sqrt(mean KL / 2): phi_cnf holds for any "
                            "student with this KL, so the verdict says nothing", model, split, m["kappa"], m["pinsker_bound"])
            result[split] = _finite(m)
            if split == TRAIN:
                continue
            frame = frames[split]
            _write_predictions(pred_dir / f"{split}.csv", frame, teacher[split], student[split], spec)
            _write_plot_data(layout.eval_plots_dir(model), split, teacher[split], student[split], labels[split],
                             ep.n_bins, spec)
        for name, extra in ep.extra_sets.items():
            result[name] = _evaluate_extra(layout, params, model, name, extra, spec, temperature, pred_dir)
    result["confidence"] = {"measure": spec.measure, "subset": spec.subset, "statistic": spec.statistic,
                            "class_index": spec.class_index}
    result["kappa_policy"] = ep.kappa.policy
    result["flags"] = trust_flags(result, ep.baseline_margin)
    _warn_flags(model, result)
    write_json(layout.eval_metrics(model), {**provenance(layout.prepared_dir), **result})
    _write_figures(layout.figures_dir(model), model, layout.eval_plots_dir(model), ep.splits[0])
    t = result[ep.splits[0]]
    log.info("%s on %s: accuracy %.4f, ECE %.4f, sigma %.4f vs kappa %.4f (%s) -> phi_cnf %s", model, ep.splits[0],
             t["accuracy"], t["ece"], t["sigma"], t["kappa"], ep.kappa.policy, "holds" if t["phi_cnf"] else "fails")
    return result


def _evaluate_extra(layout: Layout, params: Params, model: str, name: str, extra, spec: ConfidenceSpec, temperature,
                    pred_dir: Path) -> dict:
    """Run the saved teacher and student on an extra labelled file and score the student on it."""
    from confkd.data.loaders import read_table, to_examples
    from confkd.inference import load_predictor

    if name in ("test", "dev", "train", "transfer"):
        raise DataError(f"evaluate.extra_sets: '{name}' is a reserved split name")
    labels = json.loads(layout.labels_file.read_text())["labels"]
    frame, _ = to_examples(read_table(extra.path), text_column=extra.text_column, label_column=extra.label_column,
                           labels=labels, split=name, origin=extra.path)
    texts = frame["text"].tolist()
    max_length = params.teacher.max_length
    y = frame["label"].to_numpy()
    predict = {m: load_predictor(layout.model_dir(m), max_length=max_length).predict_logits for m in {TEACHER, model}}
    t_logits = predict[TEACHER](texts)
    s_logits = t_logits if model == TEACHER else predict[model](texts)
    ep = params.evaluate
    reference = None
    if ep.kappa.policy == "reference":
        reference = load_predictor(layout.model_dir(REFERENCE), max_length=max_length).predict_logits(texts)
    if ep.kappa.policy == "bound":
        raise DataError(f"evaluate.extra_sets.{name}: kappa policy 'bound' is defined on the training data only; "
                        "use 'reference' or 'fixed' with extra sets")
    kappa = resolve_kappa(ep.kappa.policy, spec, teacher_logits=t_logits, reference_logits=reference, labels=y,
                          value=ep.kappa.value)
    m = evaluate_split(t_logits, s_logits, y, kappa=kappa, spec=spec, n_bins=ep.n_bins, n_resamples=ep.n_resamples,
                       seed=params.seed, temperature_dev=temperature)
    _write_predictions(pred_dir / f"{name}.csv", frame, t_logits, s_logits, spec)
    return _finite(m)


def _write_predictions(path: Path, frame: pd.DataFrame, t_logits, s_logits, spec: ConfidenceSpec) -> None:
    pt, ps = probabilities(t_logits), probabilities(s_logits)
    ct, cs = confidence_pair(pt, ps, spec)
    df = pd.DataFrame({"id": frame["id"], "label": frame["label"], "teacher_pred": pt.argmax(1),
                       "student_pred": ps.argmax(1), "teacher_conf": ct, "student_conf": cs, "conf_gap": ct - cs})
    for k in range(ps.shape[1]):
        df[f"student_p{k}"] = ps[:, k]
    df.to_csv(path, index=False, float_format="%.6f")


def _write_plot_data(folder: Path, split: str, t_logits, s_logits, labels, n_bins: int, spec: ConfidenceSpec) -> None:
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
    ct, cs = confidence_pair(pt, ps, spec)
    scatter = pd.DataFrame({"teacher_conf": ct, "student_conf": cs, "agree": (pt.argmax(1) == ps.argmax(1)).astype(int)})
    write_text(folder / f"confidence_{split}.csv", scatter.to_csv(index=False, float_format="%.6f"))
    rows = []
    for who, p in (("teacher", pt), ("student", ps)):
        rc = risk_coverage_curve(p, labels)
        step = max(1, len(rc["coverage"]) // 200)  # ~200 points are enough for a curve
        rows += [{"model": who, "coverage": c, "risk": r} for c, r in zip(rc["coverage"][::step], rc["risk"][::step])]
    write_text(folder / f"risk_coverage_{split}.csv", pd.DataFrame(rows).to_csv(index=False, float_format="%.6f"))


def _write_figures(folder: Path, model: str, data: Path, split: str) -> None:
    """PNG versions of the three plots, for the README and reports (matplotlib's Figure API: no pyplot, no
    global state, no GUI backend to import)."""
    from matplotlib.figure import Figure

    def subplots():
        fig = Figure(figsize=(4.2, 4))
        return fig, fig.subplots()

    folder.mkdir(parents=True, exist_ok=True)
    rel = pd.read_csv(data / f"reliability_{split}.csv")
    fig, ax = subplots()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    for who, g in rel.groupby("model"):
        ax.plot(g["confidence"], g["accuracy"], marker="o", label=who)
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"{model}: reliability ({split})", xlim=(0.45, 1.01), ylim=(0, 1.01))
    ax.legend(fontsize=8)
    _save(fig, folder / f"reliability_{split}.png")
    sc = pd.read_csv(data / f"confidence_{split}.csv")
    fig, ax = subplots()
    ax.scatter(sc["teacher_conf"], sc["student_conf"], s=6, alpha=0.5, c=np.where(sc["agree"] == 1, "tab:blue", "tab:red"))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="teacher confidence", ylabel="student confidence", title=f"{model}: confidence ({split})")
    _save(fig, folder / f"confidence_{split}.png")
    rc = pd.read_csv(data / f"risk_coverage_{split}.csv")
    fig, ax = subplots()
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
