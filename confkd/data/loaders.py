"""Dataset loaders: the embedded copies in ``data/``, local CSV/TSV/JSONL files, and the HF hub.

Every loader returns the same :class:`TaskData` with integer labels ``0..K-1`` whose names are
``labels``; problems in the input raise :class:`~confkd.errors.DataError` naming file and rows.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from confkd.config import TaskParams
from confkd.errors import DataError
from confkd.layout import DEFAULT as DEFAULT_LAYOUT

log = logging.getLogger(__name__)

DATA_ROOT = DEFAULT_LAYOUT.data_root


@dataclass(frozen=True)
class EmbeddedTask:
    train: str
    test: str
    text_column: str
    label_column: str
    labels: tuple[str, ...]
    unlabeled: tuple[str, ...]
    dev: Optional[str] = None
    hf_id: Optional[str] = None


EMBEDDED_TASKS: dict[str, EmbeddedTask] = {
    # GLUE's SST-2 test labels are not public: its labelled validation set is our test set.
    "sst2": EmbeddedTask(train="sst2/train.tsv", test="sst2/validation.tsv", text_column="sentence",
                         label_column="label", labels=("negative", "positive"),
                         unlabeled=("unlabeled/movie_reviews.txt",), hf_id="glue/sst2"),
    "tweet_offensive": EmbeddedTask(train="tweet_offensive/train.tsv", dev="tweet_offensive/validation.tsv",
                                    test="tweet_offensive/test.tsv", text_column="text", label_column="label",
                                    labels=("not-offensive", "offensive"), unlabeled=("unlabeled/tweets.txt",),
                                    hf_id="tweet_eval/offensive"),
}

# Short names users know -> (hub dataset id, config name).
HF_ALIASES: dict[str, tuple[str, Optional[str]]] = {
    "glue/sst2": ("nyu-mll/glue", "sst2"),
    "tweet_eval/offensive": ("cardiffnlp/tweet_eval", "offensive"),
}


@dataclass
class TaskData:
    name: str
    labels: list[str]
    train: pd.DataFrame
    test: pd.DataFrame
    dev: Optional[pd.DataFrame] = None
    unlabeled: dict[str, list[str]] = field(default_factory=dict)
    # rows dropped while loading (prepare.on_empty_text: drop): split -> reason -> {count, rows (1-based data rows)}
    dropped: dict[str, dict[str, dict]] = field(default_factory=dict)


# --------------------------------------------------------------------------- file reading


def _decode(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: undecodable bytes at byte {err.start} (line {line}); the file must be UTF-8"
        ) from None


def read_table(path: str | Path, fmt: Optional[str] = None) -> pd.DataFrame:
    """Read a CSV, TSV or JSONL file as strings. TSV is read unquoted (no tabs inside fields)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        if fmt == "tsv":
            return pd.read_csv(io.StringIO(text), sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
        if fmt == "csv":
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        if fmt in ("jsonl", "json", "ndjson"):
            return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(f"{path}: malformed {fmt.upper()}: {err}") from None
    raise DataError(f"{path}: unsupported format '{fmt}' (use .csv, .tsv or .jsonl)")


def read_lines(path: str | Path) -> list[str]:
    """One example per line; blank lines skipped.

    Splits on newlines only: ``str.splitlines`` would also split inside a line at characters such as
    U+0085 or U+2028, which occur in real review text.
    """
    path = Path(path)
    return [line.strip() for line in _decode(path).split("\n") if line.strip()]


def read_label_names(path: str | Path) -> list[str]:
    """``labels.txt``: ``<index>\\t<name>`` per line, indices 0..K-1 in order."""
    names = []
    for i, line in enumerate(read_lines(path)):
        parts = line.split("\t")
        if len(parts) != 2 or parts[0] != str(i):
            raise DataError(f"{path}: line {i + 1} must be '{i}<TAB>name', got {line!r}")
        names.append(parts[1])
    return names


# --------------------------------------------------------------------------- normalising frames


def to_examples(
    df: pd.DataFrame,
    *,
    text_column: str,
    label_column: str,
    labels: list[str],
    split: str,
    origin: str,
    on_empty_text: str = "error",
) -> tuple[pd.DataFrame, list[int]]:
    """Select/rename columns, map labels to 0..K-1 and check text. Returns (frame, dropped data rows (1-based))."""
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise DataError(
            f"{origin}: missing column(s) {missing}; found columns {list(df.columns)} "
            f"(set task.text_column / task.label_column)"
        )
    text = df[text_column].astype(str)
    label = df[label_column].map(lambda v: _label_index(v, labels))
    bad = label.isna()
    if bad.any():
        rows = list(df.index[bad][:5])
        values = sorted({str(v) for v in df.loc[bad, label_column]})[:5]
        raise DataError(
            f"{origin}: {int(bad.sum())} row(s) with labels outside the declared set {labels} "
            f"(values {values}, data rows {[r + 1 for r in rows]})"
        )
    empty = text.str.strip() == ""
    dropped: list[int] = []
    if empty.any():
        if on_empty_text == "error":
            rows = [r + 1 for r in df.index[empty][:5]]
            raise DataError(
                f"{origin}: {int(empty.sum())} row(s) with empty or whitespace-only text (data rows {rows}); "
                f"fix the file or set prepare.on_empty_text: drop"
            )
        dropped = [int(r) + 1 for r in df.index[empty]]
        log.warning("%s: dropped %d row(s) with empty text (data rows %s%s)", origin, len(dropped), dropped[:5],
                    "..." if len(dropped) > 5 else "")
    out = pd.DataFrame(
        {
            "id": [f"{split}-{i:06d}" for i in range(len(df))],
            "text": text.str.strip(),
            "label": label.astype("int64"),
        }
    )
    return out[~empty.to_numpy()].reset_index(drop=True), dropped


def _label_index(value, labels: list[str]) -> Optional[int]:
    if isinstance(value, str):
        value = value.strip()
        if value in labels:
            return labels.index(value)
    try:
        as_int = int(value)
        if str(as_int) == str(value).strip() or (isinstance(value, float) and as_int == value):
            if 0 <= as_int < len(labels):
                return as_int
    except (TypeError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------- sources


def load_task(task: TaskParams, on_empty_text: str = "error", data_root: Path = DATA_ROOT) -> TaskData:
    if task.source == "embedded":
        return _load_embedded(task, on_empty_text, data_root)
    if task.source == "local":
        return _load_local(task, on_empty_text)
    return _load_hf(task, on_empty_text)


def _unlabeled(paths) -> dict[str, list[str]]:
    return {Path(p).stem: read_lines(p) for p in paths or ()}


def _load_embedded(task: TaskParams, on_empty_text: str, root: Path) -> TaskData:
    spec = EMBEDDED_TASKS.get(task.name)
    if spec is None:
        raise DataError(
            f"task.name: unknown embedded task '{task.name}' (embedded: {sorted(EMBEDDED_TASKS)}); "
            f"use task.source: local or hf for other data"
        )
    labels = list(task.labels or spec.labels)
    cols = dict(
        text_column=task.text_column or spec.text_column,
        label_column=task.label_column or spec.label_column,
        labels=labels,
        on_empty_text=on_empty_text,
    )
    frames, dropped = {}, {}
    for split in ("train", "dev", "test"):
        rel = getattr(spec, split)
        if rel is None:
            continue
        path = root / rel
        frames[split], dropped[split] = to_examples(read_table(path), split=split, origin=str(path), **cols)
    unl = task.unlabeled if task.unlabeled is not None else [str(root / p) for p in spec.unlabeled]
    return TaskData(task.name, labels, frames["train"], frames["test"], frames.get("dev"), _unlabeled(unl),
                    _dropped(dropped))


def _dropped(rows: dict[str, list[int]]) -> dict[str, dict[str, dict]]:
    return {s: {"empty_text": {"count": len(r), "rows": r[:20]}} for s, r in rows.items() if r}


def _load_local(task: TaskParams, on_empty_text: str) -> TaskData:
    assert task.files is not None
    raw = {s: read_table(p) for s, p in task.files.model_dump().items() if p}
    labels = task.labels or _infer_labels(raw["train"], task.label_column or "label", task.files.train)
    cols = dict(
        text_column=task.text_column or "text",
        label_column=task.label_column or "label",
        labels=labels,
        on_empty_text=on_empty_text,
    )
    frames, dropped = {}, {}
    for s, df in raw.items():
        frames[s], dropped[s] = to_examples(df, split=s, origin=getattr(task.files, s), **cols)
    return TaskData(task.name, labels, frames["train"], frames["test"], frames.get("dev"), _unlabeled(task.unlabeled),
                    _dropped(dropped))


def _infer_labels(df: pd.DataFrame, column: str, origin: str) -> list[str]:
    """Without declared labels: integer labels 0..K-1 keep their order, names are sorted."""
    if column not in df.columns:
        raise DataError(f"{origin}: missing label column '{column}'; found columns {list(df.columns)}")
    values = sorted({str(v).strip() for v in df[column]})
    if all(v.isdigit() for v in values):
        k = max(int(v) for v in values) + 1
        return [str(i) for i in range(k)]
    return values


def _load_hf(task: TaskParams, on_empty_text: str) -> TaskData:
    """Load with HF ``datasets``: a hub id (needs network) or a local dataset folder / script."""
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a declared dependency
        raise DataError("task.source 'hf' needs the 'datasets' package") from err
    assert task.hf_id is not None
    path, config = HF_ALIASES.get(task.hf_id, (task.hf_id, None))
    config = task.hf_config or config
    log.info("loading HF dataset %s (config %s)", path, config)
    try:
        dsd = datasets.load_dataset(path, config) if config else datasets.load_dataset(path)
    except Exception as err:  # network, missing dataset, bad config: all user-facing
        raise DataError(f"task.hf_id: could not load HF dataset '{task.hf_id}': {err}") from None
    missing = [s for s in task.hf_splits.values() if s not in dsd]
    if missing:
        raise DataError(f"task.hf_splits: split(s) {missing} not in dataset '{task.hf_id}' (has {list(dsd)})")
    text_col = task.text_column or _guess_text_column(dsd[task.hf_splits["train"]].column_names)
    label_col = task.label_column or "label"
    labels = task.labels
    if labels is None:
        feature = dsd[task.hf_splits["train"]].features.get(label_col)
        names = getattr(feature, "names", None)
        labels = list(names) if names else _infer_labels(dsd[task.hf_splits["train"]].to_pandas(), label_col, task.hf_id)
    frames, dropped = {}, {}
    for split, hf_split in task.hf_splits.items():
        df = dsd[hf_split].to_pandas()
        frames[split], dropped[split] = to_examples(
            df, text_column=text_col, label_column=label_col, labels=labels, split=split,
            origin=f"{task.hf_id}[{hf_split}]", on_empty_text=on_empty_text,
        )
    if "train" not in frames or "test" not in frames:
        raise DataError("task.hf_splits must map at least 'train' and 'test'")
    return TaskData(task.name, list(labels), frames["train"], frames["test"], frames.get("dev"),
                    _unlabeled(task.unlabeled), _dropped(dropped))


def _guess_text_column(columns: list[str]) -> str:
    for name in ("text", "sentence", "content", "tweet"):
        if name in columns:
            return name
    raise DataError(f"cannot guess the text column among {columns}; set task.text_column")
