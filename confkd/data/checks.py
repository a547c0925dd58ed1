"""The task checked before any work starts: ``confkd check-params`` and every stage call :func:`check_task`.

The schema (``confkd.config``) checks types and names; this module checks the params against the data they
point at, reading as little as it can: that the embedded task exists, that every local file exists and is
readable, that the named text and label columns are in each file's header, that the declared labels cover
the label values, which rows have empty text, and the class shares against ``validate.class_balance``.
Every finding names the params key to change. HF hub datasets are not fetched here (that needs network);
the prepare stage checks them when it loads them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from confkd.config import Params
from confkd.errors import DataError
from confkd.layout import DEFAULT as DEFAULT_LAYOUT

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning
    key: str  # the params key to change
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.key}: {self.message}"


@dataclass(frozen=True)
class TaskFiles:
    """Where a task's data lives and how to read it (resolved from ``task`` params)."""

    files: dict[str, Path]  # split -> file
    keys: dict[str, str]  # split -> the params key that names the file
    text_column: str
    label_column: str
    labels: Optional[list[str]]  # None: inferred from train
    unlabeled: list[Path]


def task_files(params: Params, data_root: Path = DEFAULT_LAYOUT.data_root) -> TaskFiles | None:
    """The task's local files (embedded copies or ``task.files``); None for an HF dataset.

    Raises ``DataError`` for an unknown embedded task name.
    """
    from confkd.data.loaders import EMBEDDED_TASKS

    task = params.task
    if task.source == "hf":
        return None
    if task.source == "embedded":
        spec = EMBEDDED_TASKS.get(task.name)
        if spec is None:
            raise DataError(f"task.name: unknown embedded task '{task.name}' (embedded: {sorted(EMBEDDED_TASKS)}); "
                            f"use task.source: local for your own files")
        files = {s: data_root / getattr(spec, s) for s in ("train", "dev", "test") if getattr(spec, s)}
        keys = {s: "task.name" for s in files}
        unlabeled = task.unlabeled if task.unlabeled is not None else [str(data_root / p) for p in spec.unlabeled]
        return TaskFiles(files, keys, task.text_column or spec.text_column, task.label_column or spec.label_column,
                         list(task.labels or spec.labels), [Path(p) for p in unlabeled])
    assert task.files is not None  # the schema requires files for source: local
    files = {s: Path(p) for s, p in task.files.model_dump().items() if p}
    return TaskFiles(files, {s: f"task.files.{s}" for s in files}, task.text_column or "text",
                     task.label_column or "label", task.labels, [Path(p) for p in task.unlabeled or ()])


def read_header(path: Path) -> list[str]:
    """Column names from the first line (CSV/TSV) or the first record (JSONL), without reading the rest."""
    fmt = path.suffix.lstrip(".").lower()
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        first = f.readline()
    if not first.strip():
        raise DataError(f"{path}: file is empty")
    if fmt == "tsv":
        return first.rstrip("\r\n").split("\t")
    if fmt == "csv":
        return next(csv.reader(io.StringIO(first)))
    if fmt in ("jsonl", "json", "ndjson"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line 1 is not a JSON object: {err}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line 1 is not a JSON object")
        return list(record)
    raise DataError(f"{path}: unsupported format '{fmt}' (use .csv, .tsv or .jsonl)")


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return f"{path}: file not found"
    if not path.is_file():
        return f"{path}: not a regular file"
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as err:
        return f"{path}: not readable ({err.strerror})"
    return None


def check_task(params: Params, data_root: Path = DEFAULT_LAYOUT.data_root, balance: bool = True) -> list[Finding]:
    """Every problem of the task params against its files, errors first. An empty list: good to go.

    ``balance=False`` leaves out the class-share checks (the validate stage enforces those, with its report)."""
    from confkd.data.loaders import _infer_labels, _label_index, read_table

    try:
        tf = task_files(params, data_root)
    except DataError as err:
        return [Finding(ERROR, "task.name", str(err).split(": ", 1)[1])]
    if tf is None:
        return []
    out: list[Finding] = []
    frames: dict[str, pd.DataFrame] = {}
    for split, path in tf.files.items():
        key = tf.keys[split]
        problem = _file_problem(path)
        if problem is not None:
            out.append(Finding(ERROR, key, problem))
            continue
        try:
            header = read_header(path)
        except (DataError, UnicodeDecodeError) as err:
            out.append(Finding(ERROR, key, str(err)))
            continue
        missing = [(k, c) for k, c in (("task.text_column", tf.text_column), ("task.label_column", tf.label_column))
                   if c not in header]
        for k, c in missing:
            out.append(Finding(ERROR, k, f"{path} has no column '{c}' (its columns: {header})"))
        if missing:
            continue
        try:
            frames[split] = read_table(path)[[tf.text_column, tf.label_column]]
        except (DataError, KeyError) as err:
            out.append(Finding(ERROR, key, str(err)))
    for path in tf.unlabeled:
        problem = _file_problem(path)
        if problem is not None:
            out.append(Finding(ERROR, "task.unlabeled", problem))
    out += _watched(params, tf, data_root)
    if "train" not in frames:
        return _sorted(out)

    labels = tf.labels if tf.labels is not None else _infer_labels(frames["train"], tf.label_column, str(tf.files["train"]))
    if len(labels) < 2:
        out.append(Finding(ERROR, "task.labels", f"train has {len(labels)} distinct label(s); a classifier needs 2+"))
        return _sorted(out)
    counts = {}
    for split, frame in frames.items():
        index = frame[tf.label_column].map(lambda v: _label_index(v, labels))
        bad = index.isna()
        if bad.any():
            values = sorted({str(v) for v in frame.loc[bad, tf.label_column]})[:5]
            out.append(Finding(ERROR, "task.labels", f"{tf.files[split]}: {int(bad.sum())} row(s) with labels outside "
                               f"{labels} (values {values}, data rows {[int(r) + 1 for r in frame.index[bad][:5]]})"))
        empty = frame[tf.text_column].astype(str).str.strip() == ""
        if empty.any():
            rows = [int(r) + 1 for r in frame.index[empty][:5]]
            if params.prepare.on_empty_text == "error":
                out.append(Finding(ERROR, "prepare.on_empty_text", f"{tf.files[split]}: {int(empty.sum())} row(s) with "
                                   f"empty text (data rows {rows}); fix the file or set prepare.on_empty_text: drop"))
            else:
                out.append(Finding(WARNING, "prepare.on_empty_text", f"{tf.files[split]}: {int(empty.sum())} row(s) "
                                   f"with empty text (data rows {rows}) will be dropped and counted in reports/prepare.json"))
        known = index.dropna().astype(int).to_numpy()
        counts[split] = np.bincount(known, minlength=len(labels))
    if balance:
        out += _balance(params, labels, counts)
    return _sorted(out)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _watched(params: Params, tf: TaskFiles, data_root: Path) -> list[Finding]:
    """Your own files must sit in ``task.data_dir`` (or the embedded data folders), which DVC watches."""
    from confkd.data.loaders import EMBEDDED_TASKS

    if params.task.source != "local":
        return []
    data_dir = params.task.data_dir
    if data_dir is None:
        return [Finding(ERROR, "task.data_dir", "set it to the folder holding your files (e.g. data/my_task): "
                        "it is the prepare stage's DVC dependency, so editing a file there reruns the pipeline")]
    if not Path(data_dir).is_dir():
        return [Finding(ERROR, "task.data_dir", f"{data_dir}: no such folder")]
    embedded = {data_root / Path(getattr(spec, s)).parent for spec in EMBEDDED_TASKS.values() for s in ("train", "test")}
    embedded |= {data_root / Path(p).parent for spec in EMBEDDED_TASKS.values() for p in spec.unlabeled}
    watched = [Path(data_dir), *embedded]
    outside = [p for p in [*tf.files.values(), *tf.unlabeled] if not any(_inside(p, w) for w in watched)]
    return [Finding(ERROR, "task.data_dir", f"{p} is outside {data_dir}: DVC would not see it change (move it there "
                    f"or point task.data_dir at its folder)") for p in outside]


def _balance(params: Params, labels: list[str], counts: dict[str, np.ndarray]) -> list[Finding]:
    cb = params.validate_.class_balance
    out = []
    share = {s: c / c.sum() for s, c in counts.items() if c.sum()}
    train = share.get("train")
    if train is None:
        return out
    for i, name in enumerate(labels):
        for split in ("train", "dev"):
            if split not in share:
                continue
            s = share[split][i]
            if cb.min_fraction is not None and s < cb.min_fraction:
                out.append(Finding(ERROR, "validate.class_balance.min_fraction", f"class '{name}' is {s:.1%} of {split}, "
                                   f"below min_fraction {cb.min_fraction} (lower it or set it to null)"))
            if cb.max_fraction is not None and s > cb.max_fraction:
                out.append(Finding(ERROR, "validate.class_balance.max_fraction", f"class '{name}' is {s:.1%} of {split}, "
                                   f"above max_fraction {cb.max_fraction} (raise it or set it to null)"))
        if train[i] < cb.warn_below:
            out.append(Finding(WARNING, "validate.class_balance.warn_below", f"class '{name}' is {train[i]:.1%} of train: "
                               f"imbalanced (accuracy is then a weak headline: the report shows the majority baseline)"))
        for split in ("dev", "test"):
            if split in share and abs(share[split][i] - train[i]) > cb.max_shift:
                out.append(Finding(ERROR if split == "dev" else WARNING, "validate.class_balance.max_shift",
                                   f"class '{name}' is {share[split][i]:.1%} of {split} but {train[i]:.1%} of train "
                                   f"(shift > {cb.max_shift}): {split} is not distributed like train"))
    return out


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.severity != ERROR)


def check_configs(params: Params) -> list[Finding]:
    """Problems of single configurations (they fail that configuration's stage, not the others) and of the
    tune stage's bound."""
    out = []
    for name, cfg in params.distill.configs.items():
        wanted = params.distill.resolve(name).augmented_size
        if wanted != "all" and wanted > params.augment.size:
            out.append(Finding(WARNING, f"distill.configs.{name}.augmented_size",
                               f"{wanted} augmented examples wanted but augment.size is {params.augment.size}: "
                               f"distilling '{name}' will fail until one of them changes"))
    if params.tune.timeout_minutes is not None:
        out.append(Finding(WARNING, "tune.timeout_minutes",
                           f"{params.tune.timeout_minutes:g} min: the number of trials, so the tuned configuration, "
                           "then depends on how fast this machine is; a rerun may not reproduce it (bound the stage "
                           "with tune.n_trials and keep the timeout null)"))
    return out
