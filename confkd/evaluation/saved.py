"""The saved logits the evaluate stage scores, and kappa on a split from them, for every model and for the tune
stage's threshold (one place, so the tuner holds its trials to the number the report judges them by)."""

from __future__ import annotations

import json

import numpy as np

from confkd.config import Params
from confkd.errors import DataError
from confkd.evaluation.confidence import ConfidenceSpec, resolve_spec
from confkd.evaluation.kappa import resolve_kappa
from confkd.io import read_jsonl
from confkd.layout import DEFAULT, REFERENCE, TEACHER, TEACHERS, Layout, train_stage


def load_saved(layout: Layout, params: Params, model: str, split: str,
               ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """``(ids, logits)`` of ``model`` on ``split``; the teachers' train logits cover the whole train split and
    are cut to ``ids`` (the students' train sample)."""
    path = layout.logits_dir(model) / f"{split}.npz"
    stage = train_stage(model, params.tuned_name)
    if not path.exists():
        raise DataError(f"evaluate: {path} not found: model '{model}' has no {split} logits "
                        f"(run `dvc repro {stage}`)")
    with np.load(path) as data:
        have, logits = [str(i) for i in data["ids"]], data["logits"]
    if ids is None:
        return have, logits
    pos = {i: k for k, i in enumerate(have)}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise DataError(f"evaluate: {path} lacks {len(missing)} example(s) of the {split} sample (first: {missing[0]}); "
                        f"re-run `dvc repro {stage}`")
    return list(ids), logits[[pos[i] for i in ids]]


def split_kappa(layout: Layout, params: Params, model: str, split: str, spec: ConfidenceSpec, teacher: np.ndarray,
                labels: np.ndarray, ids: list[str]) -> float:
    """kappa on ``split`` under ``evaluate.kappa`` (see :mod:`confkd.evaluation.kappa`)."""
    kp = params.evaluate.kappa
    reference = beta_sum = n = None
    if kp.policy == "reference":
        reference = load_saved(layout, params, REFERENCE, split, ids)[1]
    elif kp.policy == "bound" and (kp.bound.beta is None or kp.bound.n is None):
        if model in TEACHERS:
            raise DataError(f"evaluate: kappa policy 'bound' with beta/n null uses a student's training KL; "
                            f"'{model}' has none (set evaluate.kappa.bound.beta and n)")
        m = json.loads(layout.train_metrics(model).read_text())
        n = int(m["train_sample_size"])
        beta_sum = float(m["train_kl_to_teacher"]) * n
    return resolve_kappa(kp.policy, spec, teacher_logits=teacher, reference_logits=reference, labels=labels,
                         value=kp.value, beta=kp.bound.beta, n=kp.bound.n, gamma=kp.bound.gamma,
                         alpha=kp.bound.alpha, measured_beta_sum=beta_sum, measured_n=n)


def dev_kappa(params: Params, layout: Layout = DEFAULT) -> float:
    """kappa on dev under ``evaluate.kappa``, computed as the evaluate stage computes it for every model: the number the
    tune stage holds its trials to (policies ``reference`` and ``fixed``; ``bound`` is per student)."""
    spec = resolve_spec(params.evaluate.confidence, json.loads(layout.labels_file.read_text())["labels"])
    dev = read_jsonl(layout.split_file("dev"))
    ids = dev["id"].astype(str).tolist()
    teacher = load_saved(layout, params, TEACHER, "dev", ids)[1]
    return split_kappa(layout, params, TEACHER, "dev", spec, teacher, dev["label"].to_numpy(), ids)
