"""Stage functions: what each DVC stage does; its file locations come from :mod:`confkd.layout`."""

from __future__ import annotations

import logging

from confkd.config import Params
from confkd.layout import DEFAULT as LAYOUT
from confkd.layout import REFERENCE, TEACHER, TeacherPaths

log = logging.getLogger(__name__)

def run_prepare(params: Params) -> None:
    from confkd.data.prepare import prepare, write_prepared

    prepared = prepare(params)
    write_prepared(prepared, LAYOUT.prepared_dir, LAYOUT.prepare_report, LAYOUT.prepare_metrics)
    log.info("prepared %s", prepared.report["output"])


def run_validate(params: Params) -> None:
    from confkd.data.validation import flat_metrics, raise_on_critical, render_markdown, validate_prepared
    from confkd.io import provenance, write_json, write_text

    report = validate_prepared(LAYOUT.prepared_dir, params.validate_)
    # The report is written even when validation fails: it is the explanation of the failure.
    write_json(LAYOUT.validation_report, report)
    write_text(LAYOUT.validation_markdown, render_markdown(report))
    write_json(LAYOUT.validation_metrics, {**provenance(LAYOUT.prepared_dir), **flat_metrics(report)})
    raise_on_critical(report)
    log.info("validation passed: %d expectations, %d warnings", report["n_expectations"], report["warnings"])


def run_teacher(params: Params) -> None:
    from confkd.training.teacher import train_teacher

    train_teacher(params)


def run_teacher_reference(params: Params) -> None:
    """A second teacher, same recipe, seed ``evaluate.kappa.reference_seed``: the yardstick of kappa policy
    ``reference`` (the teacher's own retraining noise). Its logits are kept for the examples kappa is measured on
    (dev, test and the evaluate stage's train sample, drawn with the pipeline's seed), not for the whole train
    and transfer sets: nothing distils from it."""
    from confkd.training.teacher import reference_params, train_teacher

    train_teacher(reference_params(params), TeacherPaths.of(LAYOUT, REFERENCE),
                  logits_sample=(params.evaluate.train_sample, params.seed))


def run_augment(params: Params) -> None:
    """Generate augmented texts from the transfer set and label them with the teacher."""
    import time

    import pandas as pd

    from confkd.data.augment import augment_texts, target_size
    from confkd.data.leakage import LeakIndex
    from confkd.data.text import normalize_text
    from confkd.io import provenance, write_json, write_jsonl
    from confkd.training.teacher import label_with_teacher, load_prepared, save_logits

    a = params.augment
    labels, frames = load_prepared(LAYOUT.prepared_dir)
    transfer = frames["transfer"]
    source = transfer[transfer["origin"].isin(a.sources)]
    eval_texts = frames["dev"]["text"].tolist() + frames["test"]["text"].tolist()
    t0 = time.perf_counter()
    texts, origin, stats = augment_texts(
        source["text"].tolist(), target_size(a.size, a.per_example, len(source)), params.seed, p_mask=a.p_mask, p_substitute=a.p_substitute,
        p_ngram=a.p_ngram, ngram_max=a.ngram_max, min_words=a.min_words,
        exclude=set(transfer["text"].map(normalize_text)),
        leak_index=LeakIndex(eval_texts, word_run=params.prepare.transfer.leak_word_run),
    )
    gen_seconds = time.perf_counter() - t0
    frame = pd.DataFrame({"id": [f"aug-{i:07d}" for i in range(len(texts))], "text": texts, "label": -1,
                          "origin": "augmented", "source_id": source["id"].to_numpy()[origin] if texts else []})
    t0 = time.perf_counter()
    logits = label_with_teacher(params, texts, LAYOUT.model_dir(TEACHER), a.batch_size, shard_size=a.shard_size)
    if logits is None:  # a non-zero rank under torchrun: rank 0 writes the outputs
        return
    label_seconds = time.perf_counter() - t0
    write_jsonl(LAYOUT.augmented_file, frame)
    save_logits(LAYOUT.augmented_logits, frame["id"].tolist(), logits)
    write_json(LAYOUT.augment_metrics, {
        **provenance(LAYOUT.prepared_dir), "examples": len(texts), **stats, "generate_seconds": round(gen_seconds, 2),
        "label_seconds": round(label_seconds, 2),
        "label_samples_per_second": round(len(texts) / label_seconds, 2) if texts else 0.0,
    })
    log.info("augmented %d examples (%s) in %.1fs, teacher-labelled in %.1fs", len(texts), stats, gen_seconds, label_seconds)


def run_distill(params: Params, config: str | None = None) -> None:
    from confkd.distill.trainer import distill
    from confkd.errors import ParamsError

    if not config:
        raise ParamsError(f"distill needs --config NAME (configured: {sorted(params.distill.configs)})")
    distill(_with_tuned(params, config), config)


def _with_tuned(params: Params, config: str) -> Params:
    """``params`` plus the tuned configuration, when ``config`` names it (written by the tune stage)."""
    if config != params.tune.name or config in params.distill.configs:
        return params
    from confkd.tuning.tuned import with_tuned_config

    return with_tuned_config(params)


def run_tune(params: Params) -> None:
    from confkd.tuning.study import run_study

    run_study(params)


def run_export(params: Params) -> None:
    from confkd.export.stage import export_models

    export_models(_with_tuned(params, params.tune.name) if params.tune.name in params.export.models else params)


def run_evaluate(params: Params, config: str | None = None) -> None:
    from confkd.errors import ParamsError
    from confkd.evaluation.stage import evaluate_model

    if not config:
        raise ParamsError("evaluate needs --config NAME ('teacher', 'teacher_reference' or a distillation configuration)")
    evaluate_model(_with_tuned(params, config), config)


def run_report(params: Params, only: list[str] | None = None) -> None:
    from confkd.evaluation.summary import write_summary

    write_summary(params, only)


STAGES = {"prepare": run_prepare, "validate": run_validate, "teacher": run_teacher,
          "teacher_reference": run_teacher_reference, "augment": run_augment,
          "distill": run_distill, "evaluate": run_evaluate, "tune": run_tune, "report": run_report,
          "export": run_export}
# Stages that run once per named configuration (``--config``).
PER_CONFIG = {"distill", "evaluate"}
