"""Stage functions: what each DVC stage does, with its file locations in one place."""

from __future__ import annotations

import logging
from pathlib import Path

from confkd.config import Params

log = logging.getLogger(__name__)

PREPARED_DIR = Path("data/prepared")


def run_prepare(params: Params) -> None:
    from confkd.data.prepare import prepare, write_prepared

    prepared = prepare(params)
    write_prepared(prepared, PREPARED_DIR, Path("reports/prepare.json"), Path("metrics/prepare.json"))
    log.info("prepared %s", prepared.report["output"])


def run_validate(params: Params) -> None:
    from confkd.data.validation import flat_metrics, raise_on_critical, render_markdown, validate_prepared
    from confkd.io import write_json, write_text

    report = validate_prepared(PREPARED_DIR, params.validate_)
    # The report is written even when validation fails: it is the explanation of the failure.
    write_json(Path("reports/validation.json"), report)
    write_text(Path("reports/validation.md"), render_markdown(report))
    write_json(Path("metrics/validation.json"), flat_metrics(report))
    raise_on_critical(report)
    log.info("validation passed: %d expectations, %d warnings", report["n_expectations"], report["warnings"])


def run_teacher(params: Params) -> None:
    from confkd.training.teacher import train_teacher

    train_teacher(params)


def run_distill(params: Params, config: str | None = None) -> None:
    from confkd.distill.trainer import distill
    from confkd.errors import ParamsError

    if not config:
        raise ParamsError(f"distill needs --config NAME (configured: {sorted(params.distill.configs)})")
    distill(params, config)


STAGES = {"prepare": run_prepare, "validate": run_validate, "teacher": run_teacher, "distill": run_distill}
# Stages that run once per named configuration (``--config``).
PER_CONFIG = {"distill"}
