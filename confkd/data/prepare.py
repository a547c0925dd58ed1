"""The ``prepare`` stage: load a task, clean it, split dev, build the transfer set, record drops."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from confkd.config import Params
from confkd.data.leakage import REASONS, LeakIndex
from confkd.data.loaders import TaskData, load_task
from confkd.data.splitting import grouped_dev_split
from confkd.data.text import normalize_text
from confkd.runtime import progress
from confkd.io import fingerprint, write_json, write_jsonl

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test", "transfer")
UNLABELED = -1  # label of transfer-set rows that have no gold label


@dataclass
class PreparedData:
    labels: list[str]
    frames: dict[str, pd.DataFrame]
    report: dict


class _DropLog:
    """Counts and a few examples per drop reason, for the JSON report."""

    def __init__(self, max_examples: int = 5):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.max_examples = max_examples

    def add(self, reason: str, text: str) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < self.max_examples:
            self.examples[reason].append(text)

    def as_dict(self) -> dict:
        return {r: {"count": c, "examples": self.examples[r]} for r, c in sorted(self.counts.items())}


def dedupe(df: pd.DataFrame, drops: _DropLog) -> pd.DataFrame:
    """Keep the first of each normalised text; drop every copy of a text seen with two labels."""
    norm = df["text"].map(normalize_text)
    labels_per_text = df.groupby(norm)["label"].nunique()
    conflicting = norm.map(labels_per_text) > 1
    duplicate = norm.duplicated(keep="first") & ~conflicting
    for text in df.loc[conflicting, "text"]:
        drops.add("conflicting_label_duplicate", text)
    for text in df.loc[duplicate, "text"]:
        drops.add("duplicate", text)
    return df[~conflicting & ~duplicate].reset_index(drop=True)


def drop_overlap(df: pd.DataFrame, other_norms: set[str], reason: str, drops: _DropLog) -> pd.DataFrame:
    overlap = df["text"].map(normalize_text).isin(other_norms)
    for text in df.loc[overlap, "text"]:
        drops.add(reason, text)
    return df[~overlap].reset_index(drop=True)


def build_transfer(
    train: pd.DataFrame,
    unlabeled: dict[str, list[str]],
    eval_texts: list[str],
    size: int,
    seed: int,
    word_run: int,
    include_train: bool,
    drops: _DropLog,
) -> tuple[pd.DataFrame, dict]:
    """Train texts (with gold labels) + up to ``size`` clean unlabeled lines (label -1).

    Pools are shuffled with ``seed`` and scanned until ``size`` lines pass the filters, so a larger
    size extends a smaller one and huge pools are never scanned in full.
    """
    rows = []
    seen: set[str] = set()
    if include_train:
        rows.append(train.assign(origin="train")[["id", "text", "label", "origin"]])
        seen.update(train["text"].map(normalize_text))
    candidates = [(f"unl-{pool}-{i:07d}", line) for pool, lines in sorted(unlabeled.items()) for i, line in enumerate(lines)]
    order = np.random.default_rng(seed).permutation(len(candidates)) if candidates else []
    index = LeakIndex(eval_texts, word_run=word_run)
    kept, examined = [], 0
    with progress(total=size, desc="transfer set", unit="line", disable=size == 0, leave=False) as bar:
        for j in order:
            if len(kept) >= size:
                break
            examined += 1
            uid, line = candidates[j]
            norm = normalize_text(line)
            if not norm:
                drops.add("empty", line)
                continue
            if norm in seen:
                drops.add("duplicate", line)
                continue
            reason = index.reason(line)
            if reason is not None:
                drops.add(f"leak_{reason}", line)
                continue
            seen.add(norm)
            kept.append((uid, line))
            bar.update(1)
    if len(kept) < size:
        log.warning("transfer set: only %d clean unlabeled lines available (asked for %d)", len(kept), size)
    unl = pd.DataFrame(kept, columns=["id", "text"]).assign(label=UNLABELED, origin="unlabeled")
    rows.append(unl)
    transfer = pd.concat(rows, ignore_index=True)
    info = {
        "unlabeled_pool_lines": len(candidates),
        "unlabeled_examined": examined,
        "unlabeled_kept": len(kept),
        "train_rows": int(len(train)) if include_train else 0,
    }
    return transfer, info


def prepare(params: Params, task_data: TaskData | None = None) -> PreparedData:
    p = params.prepare
    data = task_data or load_task(params.task, on_empty_text=p.on_empty_text)
    log.info("loaded task %s: train %d, test %d, dev %s, unlabeled pools %s", data.name, len(data.train),
             len(data.test), None if data.dev is None else len(data.dev), {k: len(v) for k, v in data.unlabeled.items()})
    train_drops, transfer_drops = _DropLog(), _DropLog()
    report: dict = {"task": data.name, "labels": data.labels, "input": {
        "train": len(data.train), "test": len(data.test), "dev": None if data.dev is None else len(data.dev)},
        "input_dropped": data.dropped}  # rows dropped while loading (e.g. empty text), per split and reason

    test = data.test
    eval_norms = set(test["text"].map(normalize_text))
    train = data.train
    if data.dev is not None:
        eval_norms |= set(data.dev["text"].map(normalize_text))
    if p.dedupe_train:
        train = dedupe(train, train_drops)
    train = drop_overlap(train, eval_norms, "overlaps_eval_split", train_drops)
    keep_n = len(train) if p.train_fraction == 1.0 else max(10, int(round(p.train_fraction * len(train))))
    if p.max_train_examples is not None:
        keep_n = min(keep_n, p.max_train_examples)
    if keep_n < len(train):
        keep = np.sort(np.random.default_rng(params.seed).choice(len(train), keep_n, replace=False))
        report["subsampled_train_from"] = int(len(train))
        train = train.iloc[keep].reset_index(drop=True)

    if data.dev is not None:
        # An official dev split gets what train gets: one copy of each text (none of a text seen with two
        # labels) and no text of the test set, each drop recorded (TweetEval's dev has both).
        dev_drops = _DropLog()
        dev = dedupe(data.dev, dev_drops) if p.dedupe_train else data.dev
        dev = drop_overlap(dev, set(test["text"].map(normalize_text)), "overlaps_test", dev_drops)
        report["dev_dropped"] = dev_drops.as_dict()
        dev = dev.assign(group=np.arange(len(dev)))
        train = train.assign(group=np.arange(len(train)))
        report["dev_split"] = {"source": "official"}
    else:
        train, dev, split_info = grouped_dev_split(
            train, p.dev_fraction, params.seed, group_by_parent=p.dev_group_by_parent, keep=p.dev_keep
        )
        report["dev_split"] = {"source": "train", "group_by_parent": p.dev_group_by_parent, "keep": p.dev_keep, **split_info}
    test = test.assign(group=np.arange(len(test)))

    eval_texts = dev["text"].tolist() + test["text"].tolist()
    transfer, transfer_info = build_transfer(
        train, data.unlabeled, eval_texts, p.transfer.unlabeled_size, params.seed,
        p.transfer.leak_word_run, p.transfer.include_train, transfer_drops,
    )
    report["train_dropped"] = train_drops.as_dict()
    report["transfer"] = transfer_info
    report["transfer_dropped"] = transfer_drops.as_dict()
    frames = {"train": train, "dev": dev, "test": test, "transfer": transfer}
    report["output"] = {k: int(len(v)) for k, v in frames.items()}
    report["label_counts"] = {
        k: {data.labels[i]: int(c) for i, c in sorted(Counter(v["label"]).items()) if i >= 0}
        for k, v in frames.items() if k != "transfer"
    }
    return PreparedData(data.labels, frames, report)


def flat_metrics(report: dict) -> dict:
    """Flat numeric view of the report for ``dvc metrics``."""
    out = {f"{k}_rows": v for k, v in report["output"].items()}
    for k, v in report["train_dropped"].items():
        out[f"train_dropped_{k}"] = v["count"]
    for k, v in report["transfer_dropped"].items():
        out[f"transfer_dropped_{k}"] = v["count"]
    for k, v in report.get("dev_dropped", {}).items():
        out[f"dev_dropped_{k}"] = v["count"]
    for reason in REASONS:
        out.setdefault(f"transfer_dropped_leak_{reason}", 0)
    out["transfer_unlabeled_kept"] = report["transfer"]["unlabeled_kept"]
    for split, reasons in report.get("input_dropped", {}).items():
        for reason, v in reasons.items():
            out[f"{split}_input_dropped_{reason}"] = v["count"]
    return out


def write_prepared(prepared: PreparedData, out_dir: Path, report_path: Path, metrics_path: Path) -> None:
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", prepared.frames[split])
    data_fp = fingerprint(*(out_dir / f"{split}.jsonl" for split in SPLITS))[:16]
    stamp = {"task": prepared.report["task"], "data_fingerprint": data_fp}
    write_json(out_dir / "labels.json", {"labels": prepared.labels, **stamp,
                                         "train_label_counts": prepared.report["label_counts"]["train"]})
    write_json(report_path, {**prepared.report, **stamp})
    write_json(metrics_path, {**stamp, **flat_metrics(prepared.report)})
