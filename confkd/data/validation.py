"""The ``validate`` stage: Great Expectations suites over the prepared splits.

Each split (train, dev, test, transfer) gets one GX suite. Besides schema and value checks, the
suites re-check what the prepare stage promises: no duplicate texts and no leakage of dev/test
texts into train or into the unlabeled part of the transfer set. The leak flags are computed here
with code that is deliberately independent of :mod:`confkd.data.leakage` (padded substring search
on normalised text and sets of joined word runs, rather than token-tuple n-gram indexes), so that a
bug in the prepare stage's filter is not silently repeated by its check.

Every result carries a severity: a failed ``critical`` expectation fails the stage
(:func:`raise_on_critical`), a failed ``warning`` is only reported.
"""

from __future__ import annotations

import bisect
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from confkd.config import ValidateParams
from confkd.data.text import normalize_text
from confkd.errors import DataError, ValidationFailed

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test", "transfer")
UNLABELED = -1  # label of unlabeled transfer-set rows
ORIGINS = ("train", "unlabeled")
MIN_LEAK_WORDS = 4  # shortest eval text / line that the substring leak checks consider
LEAK_FLAGS = ("leak_contains_eval", "leak_shared_word_run", "leak_contained_in_eval")
CRITICAL, WARNING = "critical", "warning"
_MAX_EXAMPLE_CHARS = 200


# --------------------------------------------------------------------------------------------
# derived columns


def _norm_or_none(value: Any) -> str | None:
    return normalize_text(value) if isinstance(value, str) else None


def _contains_eval(lines: list[str], evals: Iterable[str]) -> np.ndarray:
    """Lines that contain a whole eval text, by plain substring search on space-padded text.

    All lines are joined into one string (" line " separated by newlines, which normalised text
    never contains, so a match cannot span two lines); each eval text is searched with str.find.
    """
    flags = np.zeros(len(lines), dtype=bool)
    if not lines:
        return flags
    padded = [f" {line} " for line in lines]
    hay = "\n".join(padded)
    starts, pos = [], 0
    for p in padded:
        starts.append(pos)
        pos += len(p) + 1
    for text in evals:
        needle = f" {text} "
        hit = hay.find(needle)
        while hit != -1:
            i = bisect.bisect_right(starts, hit) - 1
            flags[i] = True
            if i + 1 >= len(starts):
                break
            hit = hay.find(needle, starts[i + 1])  # one hit per line is enough
    return flags


def _word_runs(words: list[str], n: int) -> set[str]:
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def leak_flags(lines: list[str], eval_texts: Iterable[str], word_run: int, min_words: int = MIN_LEAK_WORDS) -> dict[str, np.ndarray]:
    """The three leak flag arrays for normalised ``lines`` against normalised ``eval_texts``.

    * ``leak_contains_eval``: the line contains an eval text of at least ``min_words`` words;
    * ``leak_shared_word_run``: the line shares a run of ``word_run`` consecutive words with an eval text;
    * ``leak_contained_in_eval``: the line has ``min_words``..``word_run-1`` words and occurs inside an eval text.
    """
    evals = sorted({e for e in eval_texts if e})
    eval_words = {e: e.split() for e in evals}
    contains = _contains_eval(lines, [e for e in evals if len(eval_words[e]) >= min_words])

    eval_runs: set[str] = set()
    for words in eval_words.values():
        eval_runs |= _word_runs(words, word_run)
    shared = np.array([not eval_runs.isdisjoint(_word_runs(line.split(), word_run)) for line in lines], dtype=bool)

    eval_hay = "\n".join(f" {e} " for e in evals)
    contained = np.array(
        [min_words <= len(line.split()) < word_run and f" {line} " in eval_hay for line in lines], dtype=bool
    )
    return {"leak_contains_eval": contains, "leak_shared_word_run": shared, "leak_contained_in_eval": contained}


def _eval_norms(frames: dict[str, pd.DataFrame]) -> set[str]:
    out: set[str] = set()
    for split in ("dev", "test"):
        df = frames.get(split)
        if df is not None and "norm_text" in df.columns:
            out.update(t for t in df["norm_text"] if isinstance(t, str) and t)
    return out


def build_validation_frames(
    frames: dict[str, pd.DataFrame], labels: list[str], params: ValidateParams
) -> dict[str, pd.DataFrame]:
    """Copies of the split frames with the derived columns the expectations run on.

    * ``norm_text``: :func:`normalize_text` of ``text`` (None where text is not a string);
    * ``is_label_<k>``: 1.0 / 0.0 per class k on labelled rows, NaN on unlabeled rows (label -1 or null);
    * transfer only: the :data:`LEAK_FLAGS` columns, computed for rows with origin 'unlabeled'
      (False on the other rows, which the leak expectations do not look at).
    """
    out: dict[str, pd.DataFrame] = {}
    for split, df in frames.items():
        df = df.reset_index(drop=True).copy()
        if "text" in df.columns:
            df["norm_text"] = pd.Series([_norm_or_none(t) for t in df["text"]], index=df.index, dtype=object)
        if "label" in df.columns:
            lab = pd.to_numeric(df["label"], errors="coerce")
            labelled = lab.notna() & (lab != UNLABELED)
            for k in range(len(labels)):
                df[f"is_label_{k}"] = (lab == k).astype(float).where(labelled)
        out[split] = df

    transfer = out.get("transfer")
    if transfer is not None and {"norm_text", "origin"} <= set(transfer.columns):
        unl = (transfer["origin"] == "unlabeled").fillna(False).to_numpy(dtype=bool)
        lines = [t if isinstance(t, str) else "" for t in transfer.loc[unl, "norm_text"]]
        flags = leak_flags(lines, _eval_norms(out), params.leak_word_run)
        for name in LEAK_FLAGS:
            col = np.zeros(len(transfer), dtype=bool)
            col[unl] = flags[name]
            transfer[name] = col
    return out


# --------------------------------------------------------------------------------------------
# suites


@dataclass
class _Check:
    expectation: Any  # a gx.expectations.Expectation
    column: str
    description: str
    severity: str
    example_column: str | None = None  # show this column's values as examples (texts for norm_text)
    condition: str | None = None  # human-readable row condition


def _gx():
    """Import GX lazily (it takes seconds) with its import-time warnings and INFO logging muted."""
    gx_log = logging.getLogger("great_expectations")
    quiet = gx_log.level == logging.NOTSET  # leave a level someone chose alone
    if quiet:
        gx_log.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
    if quiet:
        # GX pins this one to INFO at import; it logs a line per ephemeral context
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def _class_shares(train: pd.DataFrame | None, k: int) -> np.ndarray | None:
    """Each class's share of the labelled train rows, or None when train has no usable labels."""
    if train is None or "label" not in train.columns:
        return None
    labels = pd.to_numeric(train["label"], errors="coerce").dropna().astype(int)
    labels = labels[(labels >= 0) & (labels < k)]
    return np.bincount(labels, minlength=k) / len(labels) if len(labels) else None


def _split_checks(
    gx, split: str, df: pd.DataFrame, frames: dict[str, pd.DataFrame], labels: list[str], params: ValidateParams
) -> tuple[list[_Check], list[dict]]:
    """The checks for one split, and the ones skipped because a column they need is missing."""
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    cols = set(df.columns)
    checks: list[_Check] = []
    skipped: list[dict] = []

    def add(exp, column, description, severity=CRITICAL, needs=(), example_column=None, condition=None):
        missing = [c for c in needs if c not in cols]
        if missing:
            skipped.append({"expectation": exp.expectation_type, "column": column, "description": description,
                            "reason": f"missing column(s): {', '.join(missing)}"})
            return
        checks.append(_Check(exp, column, description, severity, example_column, condition))

    k = len(labels)
    required = ("id", "text", "label", "origin") if split == "transfer" else ("id", "text", "label")
    for c in required:
        add(E.ExpectColumnToExist(column=c), c, f"column '{c}' exists")

    add(E.ExpectColumnValuesToNotBeNull(column="id"), "id", "id is not null", needs=("id",))
    add(E.ExpectColumnValuesToBeUnique(column="id"), "id", "id is unique", needs=("id",))

    add(E.ExpectColumnValuesToNotBeNull(column="text"), "text", "text is not null", needs=("text",))
    add(E.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$"), "text",
        "text is not empty or whitespace-only", needs=("text",))
    add(E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=params.min_chars, max_value=params.max_chars),
        "text", f"text length in [{params.min_chars}, {params.max_chars}] chars", needs=("text",))
    add(E.ExpectColumnValuesToBeUnique(column="norm_text"), "norm_text", "no duplicate normalised text",
        severity=WARNING if split == "test" else CRITICAL, needs=("text",), example_column="text")

    add(E.ExpectColumnValuesToNotBeNull(column="label"), "label", "label is not null", needs=("label",))
    classes = list(range(k))
    if split == "transfer":
        add(E.ExpectColumnValuesToBeInSet(column="label", value_set=[UNLABELED, *classes]), "label",
            f"label in {{{UNLABELED}, 0..{k - 1}}}", needs=("label",))
        add(E.ExpectColumnValuesToBeInSet(column="origin", value_set=list(ORIGINS)), "origin",
            "origin is 'train' or 'unlabeled'", needs=("origin",))
        add(E.ExpectColumnValuesToBeInSet(column="label", value_set=[UNLABELED], row_condition=Column("origin") == "unlabeled"),
            "label", f"unlabeled rows have label {UNLABELED}", needs=("label", "origin"), condition="origin == 'unlabeled'")
        add(E.ExpectColumnValuesToBeInSet(column="label", value_set=classes, row_condition=Column("origin") == "train"),
            "label", f"train-origin rows have a label in 0..{k - 1}", needs=("label", "origin"), condition="origin == 'train'")
    else:
        add(E.ExpectColumnValuesToBeInSet(column="label", value_set=classes), "label", f"label in 0..{k - 1}",
            needs=("label",))
        cb = params.class_balance
        train_share = _class_shares(frames.get("train"), k)
        for i, name in enumerate(labels):
            col = f"is_label_{i}"
            if split != "test" and (cb.min_fraction is not None or cb.max_fraction is not None):
                lo, hi = cb.min_fraction or 0.0, 1.0 if cb.max_fraction is None else cb.max_fraction
                add(E.ExpectColumnMeanToBeBetween(column=col, min_value=lo, max_value=hi), col,
                    f"fraction of class '{name}' in [{lo}, {hi}] (validate.class_balance)", needs=("label",))
            if split == "train":
                add(E.ExpectColumnMeanToBeBetween(column=col, min_value=cb.warn_below, max_value=1.0), col,
                    f"class '{name}' is at least {cb.warn_below:.0%} of train (else imbalanced)",
                    severity=WARNING, needs=("label",))
            elif train_share is not None:
                lo, hi = max(0.0, train_share[i] - cb.max_shift), min(1.0, train_share[i] + cb.max_shift)
                add(E.ExpectColumnMeanToBeBetween(column=col, min_value=round(lo, 4), max_value=round(hi, 4)), col,
                    f"fraction of class '{name}' within {cb.max_shift} of its train share {train_share[i]:.3f}",
                    severity=WARNING if split == "test" else CRITICAL, needs=("label",))

    # leakage: exact overlaps with the evaluation splits, then the substring / word-run flags
    have_eval = {s: "norm_text" in frames[s].columns for s in ("dev", "test")}
    if split in ("train", "transfer"):
        eval_set = sorted(_eval_norms(frames)) if all(have_eval.values()) else []
        eval_needs = ("text",) + tuple(f"{s}.text" for s, ok in have_eval.items() if not ok)
    if split == "train":
        add(E.ExpectColumnValuesToNotBeInSet(column="norm_text", value_set=eval_set), "norm_text",
            "no train text also in dev/test", needs=eval_needs, example_column="text")
    elif split == "dev":
        test_set = sorted(_eval_norms({"test": frames["test"]})) if have_eval["test"] else []
        add(E.ExpectColumnValuesToNotBeInSet(column="norm_text", value_set=test_set), "norm_text",
            "no dev text also in test", needs=("text",) + (() if have_eval["test"] else ("test.text",)),
            example_column="text")
    elif split == "transfer":
        unl = Column("origin") == "unlabeled"
        cond = "origin == 'unlabeled'"
        needs = eval_needs + ("origin",)
        w = params.leak_word_run
        add(E.ExpectColumnValuesToNotBeInSet(column="norm_text", value_set=eval_set, row_condition=unl), "norm_text",
            "no unlabeled text equal to a dev/test text", needs=needs, example_column="text", condition=cond)
        for flag, desc in (
            ("leak_contains_eval", f"no unlabeled line contains a dev/test text of >= {MIN_LEAK_WORDS} words"),
            ("leak_shared_word_run", f"no unlabeled line shares a run of {w} words with a dev/test text"),
            ("leak_contained_in_eval", f"no unlabeled line of {MIN_LEAK_WORDS}..{w - 1} words inside a dev/test text"),
        ):
            add(E.ExpectColumnValuesToBeInSet(column=flag, value_set=[False], row_condition=unl), flag, desc,
                needs=needs, example_column="text", condition=cond)

    demote = set(params.warn_only)
    for c in checks:
        if c.expectation.expectation_type in demote:
            c.severity = WARNING
    return checks, skipped


# --------------------------------------------------------------------------------------------
# running and reporting


def _plain(value: Any) -> Any:
    """JSON-able copy: numpy scalars to Python, NaN/inf to None, long strings shortened."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and len(value) > _MAX_EXAMPLE_CHARS:
        return value[: _MAX_EXAMPLE_CHARS - 1] + "…"
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _examples(res: dict, df: pd.DataFrame, check: _Check, max_examples: int) -> list:
    idx = res.get("partial_unexpected_index_list")
    if check.example_column and idx and check.example_column in df.columns:
        values = [df.at[i, check.example_column] for i in idx if i in df.index]
    else:
        values = res.get("partial_unexpected_list") or []
    return _plain(list(values)[:max_examples])


def _entry(split: str, check: _Check, result, df: pd.DataFrame, max_examples: int) -> dict:
    res = dict(result.result or {})
    entry = {
        "split": split,
        "expectation": check.expectation.expectation_type,
        "column": check.column,
        "description": check.description,
        "severity": check.severity,
        "success": bool(result.success),
        "element_count": _plain(res.get("element_count")),
        "unexpected_count": _plain(res.get("unexpected_count")),
        "unexpected_percent": _plain(res.get("unexpected_percent")),
        "observed_value": _plain(res.get("observed_value")),
        "examples": _examples(res, df, check, max_examples),
    }
    if check.condition:
        entry["condition"] = check.condition
    info = result.exception_info or {}
    if info.get("raised_exception"):
        entry["success"] = False
        entry["exception"] = str(info.get("exception_message"))
    if check.expectation.expectation_type == "expect_column_to_exist" and not entry["success"]:
        entry["observed_value"] = "missing"
        entry["examples"] = [f"columns present: {sorted(map(str, df.columns))}"]
    return entry


def run_validation(frames: dict[str, pd.DataFrame], labels: list[str], params: ValidateParams) -> dict:
    """Run the suites of all splits in one ephemeral GX context; return the JSON-able report."""
    missing = [s for s in SPLITS if s not in frames]
    if missing:
        raise DataError(f"validation needs all splits {list(SPLITS)}; missing: {missing}")
    known = {"expect_column_to_exist", "expect_column_values_to_not_be_null", "expect_column_values_to_be_unique",
             "expect_column_values_to_not_match_regex", "expect_column_value_lengths_to_be_between",
             "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
             "expect_column_mean_to_be_between"}
    for name in params.warn_only:
        if name not in known:
            log.warning("validate.warn_only: %r is not an expectation used by the suites (known: %s)", name,
                        ", ".join(sorted(known)))

    vframes = build_validation_frames({s: frames[s] for s in SPLITS}, labels, params)
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("confkd_prepared")
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": params.max_examples}

    report: dict = {"success": True, "critical_failures": 0, "warnings": 0, "n_expectations": 0, "splits": {}}
    for split in SPLITS:
        df = vframes[split]
        checks, skipped = _split_checks(gx, split, df, vframes, labels, params)
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"confkd_{split}"))
        for i, c in enumerate(checks):
            c.expectation.meta = {"confkd_check": i}
            c.expectation.description = c.description
            suite.add_expectation(c.expectation)
        batch = source.add_dataframe_asset(split).add_batch_definition_whole_dataframe(split)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"confkd_{split}", data=batch, suite=suite))
        run = vd.run(batch_parameters={"dataframe": df}, result_format=result_format)
        by_check = {r.expectation_config.meta["confkd_check"]: r for r in run.results}
        results = [_entry(split, c, by_check[i], df, params.max_examples) for i, c in enumerate(checks)]
        report["splits"][split] = {"rows": int(len(df)), "results": results, "skipped": skipped}
        for r in results:
            report["n_expectations"] += 1
            if not r["success"]:
                if r["severity"] == CRITICAL:
                    report["critical_failures"] += 1
                else:
                    report["warnings"] += 1
    report["success"] = report["critical_failures"] == 0
    log.info("validation: %d expectations, %d critical failures, %d warnings", report["n_expectations"],
             report["critical_failures"], report["warnings"])
    return report


def validate_prepared(prepared_dir: Path, params: ValidateParams) -> dict:
    """Read ``<prepared_dir>/{train,dev,test,transfer}.jsonl`` and ``labels.json``; validate them."""
    import json

    from confkd.io import read_jsonl

    prepared_dir = Path(prepared_dir)
    labels_path = prepared_dir / "labels.json"
    if not labels_path.exists():
        raise DataError(f"{labels_path}: file not found (run the prepare stage first)")
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))["labels"]
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{labels_path}: expected {{\"labels\": [names...]}} ({err})") from None
    if not isinstance(labels, list) or len(labels) < 2:
        raise DataError(f"{labels_path}: 'labels' must be a list of at least two class names")
    frames = {s: read_jsonl(prepared_dir / f"{s}.jsonl") for s in SPLITS}
    return run_validation(frames, [str(x) for x in labels], params)


# --------------------------------------------------------------------------------------------
# views of the report


def _failures(report: dict, severity: str | None = None) -> list[dict]:
    return [r for s in report["splits"].values() for r in s["results"]
            if not r["success"] and (severity is None or r["severity"] == severity)]


def _outcome(r: dict, rows: int | None = None) -> str:
    if r.get("exception"):
        return f"raised {r['exception']}"
    if r["expectation"] == "expect_column_to_exist":
        return "column missing"
    if r.get("unexpected_count") is not None:
        n = r["element_count"] if r.get("element_count") is not None else rows
        where = f" where {r['condition']}" if r.get("condition") else ""
        return f"{r['unexpected_count']} of {n} rows{where}"
    return f"observed {r.get('observed_value')!r}"


def _line(r: dict, rows: int | None = None) -> str:
    out = f"{r['split']}: {r['expectation']}({r['column']}) [{r['description']}]: {_outcome(r, rows)}"
    if r.get("examples") and r["expectation"] != "expect_column_to_exist":
        shown = [x[:77] + "..." if isinstance(x, str) and len(x) > 80 else x for x in r["examples"]]
        out += f"; examples: {shown!r}"
    return out


def raise_on_critical(report: dict) -> None:
    """Raise :class:`ValidationFailed` listing every failed critical expectation, if any."""
    failed = _failures(report, CRITICAL)
    if not failed:
        return
    lines = [f"data validation failed: {len(failed)} critical expectation(s)"]
    lines += [f"  - {_line(r, report['splits'][r['split']]['rows'])}" for r in failed]
    warned = _failures(report, WARNING)
    if warned:
        lines.append(f"  ({len(warned)} warning(s) besides; see reports/validation.md)")
    raise ValidationFailed("\n".join(lines))


def flat_metrics(report: dict) -> dict:
    """Flat numeric view of the report for ``dvc metrics``."""
    out = {
        "success": int(bool(report["success"])),
        "n_expectations": report["n_expectations"],
        "critical_failures": report["critical_failures"],
        "warnings": report["warnings"],
    }
    for split, s in report["splits"].items():
        out[f"{split}_rows"] = s["rows"]
        out[f"{split}_failed"] = sum(not r["success"] for r in s["results"])
        out[f"{split}_critical_failed"] = sum(not r["success"] and r["severity"] == CRITICAL for r in s["results"])
        out[f"{split}_skipped"] = len(s.get("skipped", []))
    return out


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    """Compact Markdown summary: one table row per expectation, then the failures with examples."""
    status = "PASSED" if report["success"] else "FAILED"
    lines = [
        "# Data validation",
        "",
        f"**{status}**: {report['n_expectations']} expectations, {report['critical_failures']} critical "
        f"failure(s), {report['warnings']} warning(s). Rows: "
        + ", ".join(f"{s} {v['rows']}" for s, v in report["splits"].items()),
        "",
        "| split | expectation | column | check | severity | ok | unexpected |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, s in report["splits"].items():
        for r in s["results"]:
            if r.get("unexpected_count") is not None:
                unexpected = str(r["unexpected_count"])
            elif r["expectation"] == "expect_column_to_exist":
                unexpected = "" if r["success"] else "missing"
            else:
                ov = r.get("observed_value")
                unexpected = f"observed {ov:.4g}" if isinstance(ov, float) else f"observed {ov}"
            ok = "yes" if r["success"] else ("**NO**" if r["severity"] == CRITICAL else "no")
            lines.append(f"| {split} | {r['expectation']} | {_md(r['column'])} | {_md(r['description'])} | "
                         f"{r['severity']} | {ok} | {_md(unexpected)} |")
        for sk in s.get("skipped", []):
            lines.append(f"| {split} | {sk['expectation']} | {_md(sk['column'])} | {_md(sk['description'])} | "
                         f"skipped | - | {_md(sk['reason'])} |")
    failed = _failures(report)
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {r['severity']}: {_md(_line(r, report['splits'][r['split']]['rows']))}" for r in failed]
    return "\n".join(lines) + "\n"
