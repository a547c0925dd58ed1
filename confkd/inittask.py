"""``confkd init-task``: look at your data files and propose the ``task:`` block of params.yaml.

    confkd init-task data/hate/train.tsv data/hate/test.tsv [data/hate/dev.tsv] [--name hate] [--write]

Reads CSV, TSV or JSONL files (splits recognised by file name: train, dev/valid/validation, test; one file
with no split in its name is taken as train), picks the text column (named text/sentence/content/tweet,
else the string column with the longest texts) and the label column (named label/labels/class/target/y,
else the column with the fewest distinct values), lists the labels with their counts per split, flags
empty texts and labels that appear in dev/test but not in train, and prints the ``task:`` block. With
``--write`` it puts the block into params.yaml (comments elsewhere kept), after checking the whole file
against the schema; nothing is written if that check fails.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from confkd.config import parse_params
from confkd.data.loaders import read_table
from confkd.errors import ConfkdError, DataError, ParamsError

log = logging.getLogger(__name__)

TEXT_NAMES = ("text", "sentence", "content", "tweet", "review", "comment")
LABEL_NAMES = ("label", "labels", "class", "target", "y", "category")
SPLIT_WORDS = {"train": ("train",), "dev": ("dev", "valid", "validation", "val"), "test": ("test",)}


def split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    for split, words in SPLIT_WORDS.items():
        if any(w == stem or stem.startswith(w + "_") or stem.endswith("_" + w) or stem.endswith("-" + w)
               or stem.startswith(w + "-") or stem == w for w in words):
            return split
    return None


def assign_splits(paths: list[Path]) -> dict[str, Path]:
    """``{split: path}`` from file names; a single unnamed file is train."""
    out: dict[str, Path] = {}
    unnamed = []
    for p in paths:
        split = split_of(p)
        if split is None:
            unnamed.append(p)
        elif split in out:
            raise DataError(f"two files look like the {split} split: {out[split]} and {p}")
        else:
            out[split] = p
    if unnamed:
        if len(unnamed) == 1 and "train" not in out:
            out["train"] = unnamed[0]
        else:
            raise DataError(f"cannot tell which split {[str(p) for p in unnamed]} hold: name the files "
                            "train/dev/test (e.g. train.tsv)")
    if "train" not in out:
        raise DataError("no train file among the paths (a file named train.*)")
    return out


def guess_columns(frame: pd.DataFrame, text_column: str | None = None,
                  label_column: str | None = None) -> tuple[str, str]:
    cols = [str(c) for c in frame.columns]
    for given, what in ((text_column, "text"), (label_column, "label")):
        if given is not None and given not in cols:
            raise DataError(f"--{what}-column '{given}' is not a column (found {cols})")
    lower = {c.lower(): c for c in cols}
    label = label_column or next((lower[n] for n in LABEL_NAMES if n in lower), None)
    text = text_column or next((lower[n] for n in TEXT_NAMES if n in lower), None)
    if text is None:
        strings = [c for c in cols if c != label and frame[c].map(lambda v: isinstance(v, str)).all()]
        if not strings:
            raise DataError(f"no text column among {cols}; pass --text-column")
        text = max(strings, key=lambda c: frame[c].str.len().mean())
    if label is None:
        others = [c for c in cols if c != text]
        if not others:
            raise DataError(f"no label column among {cols}; pass --label-column")
        label = min(others, key=lambda c: frame[c].nunique())
    if text == label:
        raise DataError(f"text and label column are both '{text}'; pass --text-column and --label-column")
    return text, label


def _labels(values: pd.Series) -> list[str]:
    names = sorted({str(v).strip() for v in values if str(v).strip() != ""})
    if names and all(v.isdigit() for v in names):
        return [str(i) for i in range(max(int(v) for v in names) + 1)]
    return names


def inspect(paths: list[Path], name: str | None = None, text_column: str | None = None,
            label_column: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """``(task block, report lines)`` for the files."""
    files = assign_splits(paths)
    frames = {s: read_table(p) for s, p in files.items()}
    text, label = guess_columns(frames["train"], text_column, label_column)
    for split, frame in frames.items():
        missing = [c for c in (text, label) if c not in frame.columns]
        if missing:
            raise DataError(f"{files[split]}: missing column(s) {missing} (found {list(frame.columns)})")
    labels = _labels(frames["train"][label])
    if len(labels) < 2:
        raise DataError(f"{files['train']}: column '{label}' has {len(labels)} distinct label(s); a classifier needs 2+")
    report = [f"text column: '{text}'; label column: '{label}'; {len(labels)} classes: {labels}"]
    for split, frame in frames.items():
        counts = frame[label].map(lambda v: str(v).strip()).value_counts()
        empty = int(frame[text].map(lambda v: not str(v).strip()).sum())
        dist = ", ".join(f"{k}: {int(counts.get(k, 0))} ({counts.get(k, 0) / len(frame):.1%})" for k in labels)
        report.append(f"{split} ({files[split]}): {len(frame)} rows; {dist}"
                      + (f"; {empty} empty text(s): set prepare.on_empty_text: drop" if empty else ""))
        unknown = sorted(set(counts.index) - set(labels) - {""})
        if unknown:
            report.append(f"  {split}: label(s) {unknown} do not occur in train: add them to task.labels or fix the file")
    import os

    data_dir = os.path.commonpath([str(p.parent) for p in files.values()]) or "."
    block: dict[str, Any] = {"name": name or files["train"].parent.name or "my_task", "source": "local",
                             "data_dir": data_dir,
                             "files": {s: str(files[s]) for s in ("train", "dev", "test") if s in files},
                             "text_column": text, "label_column": label, "labels": labels}
    if "test" not in files:
        report.append("no test file: the pipeline needs one (a file named test.*); the block below is incomplete")
    if "dev" not in files:
        report.append("no dev file: prepare holds out prepare.dev_fraction of train as dev")
    share = frames["train"][label].map(lambda v: str(v).strip()).value_counts(normalize=True)
    report.append(f"class shares in train: min {share.min():.1%}, max {share.max():.1%}"
                  + (" (imbalanced: the report states it next to the majority-class baseline; see validate.class_balance)"
                     if share.min() < 0.05 else ""))
    return block, report


def planned_steps(cfg: Any, train_rows: int, transfer_rows: int, augmented_rows: int) -> int:
    """Optimiser steps of every phase of distill configuration ``cfg`` (a resolved ``DistillConfig``) on data of
    these sizes: each phase's epochs over its own data (train, or the transfer set plus the configuration's share
    of the augmented set), capped at its ``max_steps``."""
    import math

    from confkd.distill.methods import expand_phases
    from confkd.training.loop import step_budget

    size = cfg.augmented_size
    extra = 0 if not size else augmented_rows if size == "all" else min(size, augmented_rows)
    return sum(step_budget(math.ceil((train_rows if phase.data == "train" else transfer_rows + extra) / cfg.batch_size),
                           phase.epochs, phase.max_steps)
               for phase in expand_phases(cfg, cfg.student.num_layers))


def budget_lines(params: Any, n_train: int, has_dev: bool) -> list[str]:
    """What the params' epoch budgets come to on this data: optimiser steps per stage, and the dev split."""
    import math

    from confkd.training.loop import step_budget

    train = n_train if has_dev else int(n_train * (1 - params.prepare.dev_fraction))
    lines = ["dev split: the dev file" if has_dev else
             f"dev split: {params.prepare.dev_fraction:.0%} of train held out (~{n_train - train} examples; "
             "prepare.dev_fraction)"]
    tp = params.teacher
    steps = step_budget(math.ceil(train / tp.batch_size), tp.epochs, tp.max_steps)
    capped = tp.max_steps is not None and steps == tp.max_steps
    epochs = f"{tp.epochs:g} epoch" + ("" if tp.epochs == 1 else "s")
    lines.append(f"teacher: {steps} steps ({'capped by teacher.max_steps' if capped else epochs} of ~{train} examples)")
    from confkd.data.augment import target_size

    transfer = train + params.prepare.transfer.unlabeled_size
    augmented = target_size(params.augment.size, params.augment.per_example, transfer)
    lines.append(f"augment: {augmented} teacher-labelled examples (augment.per_example x ~{transfer} transfer texts, "
                 f"cap augment.size)")
    for name in params.distill.configs:
        lines.append(f"distill {name}: {planned_steps(params.distill.resolve(name), train, transfer, augmented)} "
                     "steps in all phases")
    tu = params.tune
    if tu.base in params.distill.configs:
        from confkd.tuning.study import trial_params

        dim = tu.space.get("batch_size")
        sizes = dim.choices if dim is not None and dim.type == "categorical" else [None]
        trial = sorted({planned_steps(trial_params(params, "trial", {} if b is None else {"batch_size": b})
                                      .distill.resolve("trial"), train, transfer, augmented) for b in sizes})
        span = f"{trial[0]}" if len(trial) == 1 else f"{trial[0]}-{trial[-1]}"
        lines.append(f"tune {tu.base}: {tu.n_trials} trials of {span} steps each (tune.budget), then "
                     f"{tu.name} at {tu.base}'s budget")
    return lines


def write_task(params_path: Path, block: dict[str, Any]) -> None:
    """Replace the ``task:`` block of ``params_path`` (other keys and comments kept) once the result passes
    the schema; written atomically."""
    from ruamel.yaml import YAML

    from confkd.io import atomic_path

    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(params_path.read_text(encoding="utf-8")) if params_path.exists() else {}
    data = data if data is not None else {}
    data["task"] = block
    buf = io.StringIO()
    yaml.dump(data, buf)
    import yaml as pyyaml

    parse_params(pyyaml.safe_load(buf.getvalue()), f"{params_path} (with the new task block)")
    with atomic_path(params_path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confkd init-task", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="CSV/TSV/JSONL files: train, optional dev, test")
    parser.add_argument("--name", default=None, help="task name (default: the folder of the train file)")
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--write", action="store_true", help="put the block into --params")
    args = parser.parse_args(argv)
    try:
        missing = [p for p in args.paths if not Path(p).is_file()]
        if missing:
            raise DataError(f"not a readable file: {missing}")
        block, report = inspect([Path(p) for p in args.paths], args.name, args.text_column, args.label_column)
        print("\n".join(report))
        params_path = Path(args.params)
        if params_path.exists():
            import yaml as pyyaml

            current = pyyaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
            merged = parse_params({**current, "task": block}, f"{params_path} (with this task)")
            n_train = len(read_table(Path(block["files"]["train"])))
            print(f"\nbudgets with {params_path}'s settings (epochs follow the data; step caps bind on large data):")
            print("\n".join("  " + line for line in budget_lines(merged, n_train, "dev" in block["files"])))
        print()
        import yaml

        print(yaml.safe_dump({"task": block}, sort_keys=False).rstrip())
        if args.write:
            write_task(Path(args.params), block)
            print(f"\nwrote the task block into {args.params}")
    except (ConfkdError, DataError, ParamsError) as err:
        print(f"confkd init-task: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
