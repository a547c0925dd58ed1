"""``confkd pr-report``: the pull-request comment a reviewer reads in thirty seconds.

    confkd pr-report --base main [--head HEAD] [--out comment.md] [--plot pr_report.png]

``--base`` / ``--head`` are git revisions of the repository (head default: the workspace) or folders holding
a pipeline run (a checkout where the quick profile ran). From each side's ``metrics/eval/<model>.json``,
``metrics/summary.json``, ``params.yaml`` and, where present, ``predictions/<model>/test.csv`` it builds:

* the phi_cnf verdicts that flipped, first;
* one row per model whose headline metrics changed (test accuracy, retention vs the teacher, agreement, ECE,
  sigma, kappa, phi_cnf, size, speed-up), each cell ``head (delta)``; a delta outside noise is bold, one inside
  noise is small (paired tests on the per-example predictions: McNemar's exact test for accuracy and agreement,
  a paired bootstrap interval for sigma and ECE; without predictions on both sides, an unpaired test on the
  recorded intervals, and the comment says so); new and removed models are marked; unchanged ones are named
  on one line;
* the params that changed, and only those;
* the full ``dvc metrics diff`` and ``dvc params diff`` folded in ``<details>``;
* a PNG plot, test accuracy vs sigma for every model, base and head.

Speed-ups are ratios measured interleaved within one run (``metrics/export.json`` via ``metrics/summary.json``:
model vs the fastest teacher backend, batch 32); absolute milliseconds are never compared. A speed-up change
counts as real only when it exceeds the larger of the two sides' spreads over rounds, and a speed-up change
within that band alone does not list a model as changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from confkd.errors import ConfkdError, DataError
from confkd.evaluation.calibration import ece
from confkd.compare import Change, mcnemar, paired_bootstrap, se_from_interval, se_of_proportion, \
    unpaired
from confkd.evaluation.confidence import masked_dispersion
from confkd.layout import DEFAULT, TEACHER

log = logging.getLogger(__name__)

MARKER = "<!-- confkd-pr-report -->"
EVAL_DIR = DEFAULT.eval_metrics(TEACHER).parent.as_posix()
SUMMARY = DEFAULT.summary_metrics.as_posix()
PARAMS = "params.yaml"
# (key, header, format); retention and size are derived, the rest are test-split keys of metrics/eval
COLUMNS = [("accuracy", "test acc", "{:.4f}"), ("retention", "vs teacher", "{:.1%}"), ("agreement", "agreement", "{:.3f}"),
           ("ece", "ECE", "{:.3f}"), ("sigma", "sigma", "{:.4f}"), ("kappa", "kappa", "{:.4f}"),
           ("phi_cnf", "phi_cnf", "{}"), ("size_mb", "size", "{:.1f} MB"), ("speedup", "speed-up b32", "{:.1f}x")]
SPEEDUP = "speedup_vs_best_teacher_b32"  # metrics/summary.json, from the export stage's interleaved run
TESTED = ("accuracy", "agreement", "ece", "sigma")
EPS = 1e-12


class ReportError(ConfkdError):
    """The comment cannot be built (unknown revision, no metrics, unreadable file)."""


@dataclass
class Side:
    """One side of the comparison: a git revision, the workspace, or a folder."""

    label: str
    evals: dict[str, dict[str, Any]]  # model -> flat eval metrics ("test.accuracy", "confidence.subset", ...)
    summary: dict[str, Any]
    params: dict[str, Any]  # flat params.yaml
    read_predictions: Callable[[str], pd.DataFrame | None]
    rev: str | None = None  # git revision (None: workspace or folder)
    folder: Path | None = None
    source: str | None = None  # the repository a revision belongs to
    other_data: list[str] = dataclasses.field(default_factory=list)  # models whose metrics are of other data


def on_teacher_data(evals: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The evaluations computed on the same task and data as the side's teacher, and the names of the others.

    A run over a subset of configurations (the quick profile) leaves the committed metrics of the rest in place;
    their provenance stamp (``task``, ``data_fingerprint``) tells them apart, so they are not compared as if
    they were results of this run. Revisions from before the stamp are taken whole."""
    from confkd.evaluation.summary import stale_reason

    teacher = evals.get(TEACHER) or {}
    current = {k: teacher[k] for k in ("task", "data_fingerprint") if teacher.get(k) is not None}
    same = {m: ev for m, ev in evals.items() if stale_reason(ev, current) is None}
    return same, sorted(set(evals) - set(same))


def flatten(data: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` as DVC shows metrics; lists and other non-scalars are refused."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: not a JSON object of metrics")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, where, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            raise ReportError(f"{where}: not flat JSON ('{name}' is a {type(value).__name__})")
    return out


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReportError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _parse_json(text: str, where: str) -> dict[str, Any]:
    try:
        return flatten(json.loads(text), where)
    except json.JSONDecodeError as err:
        raise ReportError(f"{where}: not valid JSON ({err})") from None


def _params(text: str | None, where: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ReportError(f"{where}: not valid YAML ({err})") from None
    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = value

    walk(data, "")
    return out


def _read_csv(text: str | bytes | None) -> pd.DataFrame | None:
    if text is None:
        return None
    return pd.read_csv(io.StringIO(text.decode() if isinstance(text, bytes) else text))


def side_from_folder(folder: Path, label: str | None = None) -> Side:
    """A checkout (or the workspace) where the pipeline ran: its files as they are on disk."""
    folder = Path(folder)
    files = sorted((folder / EVAL_DIR).glob("*.json"))
    if not files:
        raise ReportError(f"{folder}: no {EVAL_DIR}/*.json (run the pipeline there first)")
    evals = {f.stem: _parse_json(f.read_text(encoding="utf-8"), str(f)) for f in files}
    summary_path = folder / SUMMARY
    summary = _parse_json(summary_path.read_text(encoding="utf-8"), str(summary_path)) if summary_path.exists() else {}
    params_path = folder / PARAMS
    params = _params(params_path.read_text(encoding="utf-8") if params_path.exists() else None, str(params_path))

    def predictions(model: str) -> pd.DataFrame | None:
        path = folder / "predictions" / model / "test.csv"
        return _read_csv(path.read_text(encoding="utf-8")) if path.exists() else None

    evals, other = on_teacher_data(evals)
    return Side(label or str(folder), evals, summary, params, predictions, folder=folder, other_data=other)


def side_from_rev(repo: Path, rev: str) -> Side:
    """A committed revision: metrics and params from git, predictions from the DVC cache where it has them."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except ReportError:
        raise ReportError(f"unknown revision '{rev}'") from None
    names = [n for n in _git(repo, "ls-tree", "--name-only", commit, f"{EVAL_DIR}/").split() if n.endswith(".json")]
    if not names:
        raise ReportError(f"revision '{rev}' has no {EVAL_DIR}/*.json (the pipeline's metrics were not committed there)")
    evals = {Path(n).stem: _parse_json(_git(repo, "show", f"{commit}:{n}"), f"{n} at {rev}") for n in names}

    def show(path: str) -> str | None:
        try:
            return _git(repo, "show", f"{commit}:{path}")
        except ReportError:
            return None

    summary_text = show(SUMMARY)
    summary = _parse_json(summary_text, f"{SUMMARY} at {rev}") if summary_text else {}
    params = _params(show(PARAMS), f"{PARAMS} at {rev}")

    def predictions(model: str) -> pd.DataFrame | None:
        try:
            import dvc.api

            return _read_csv(dvc.api.read((DEFAULT.predictions_dir(model) / "test.csv").as_posix(), repo=str(repo), rev=commit))
        except Exception:  # noqa: BLE001 - not in the cache or not tracked at that revision: fall back
            return None

    evals, other = on_teacher_data(evals)
    return Side(rev, evals, summary, params, predictions, rev=commit, source=str(repo), other_data=other)


def resolve_side(repo: Path, spec: str | None) -> Side:
    """``None``: the workspace; an existing folder: that folder; anything else: a git revision."""
    if spec is None:
        return side_from_folder(repo, "workspace")
    if Path(spec).is_dir():
        return side_from_folder(Path(spec))
    return side_from_rev(repo, spec)


# ---------------------------------------------------------------------------------------------
# comparison


def _value(side: Side, model: str, key: str) -> Any:
    ev = side.evals.get(model)
    if ev is None:
        return None
    if key == "retention":
        teacher = side.evals.get("teacher", {}).get("test.accuracy")
        acc = ev.get("test.accuracy")
        return acc / teacher if acc is not None and teacher else None
    if key == "size_mb":
        return side.summary.get(f"{model}.size_mb")
    if key == "speedup":
        return side.summary.get(f"{model}.{SPEEDUP}")
    if key == "phi_cnf":
        v = ev.get("test.phi_cnf")
        return None if v is None else bool(v)
    return ev.get(f"test.{key}")


def _definition(side: Side, model: str) -> tuple:
    ev = side.evals.get(model, {})
    return tuple(ev.get(f"confidence.{k}", d) for k, d in (("measure", "top_prob"), ("subset", "all"),
                                                             ("statistic", "std"), ("class_index", 0)))


def _paired_frames(base: pd.DataFrame | None, head: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    if base is None or head is None or "id" not in base or "id" not in head:
        return None
    if len(base) != len(head) or not (base["id"].astype(str).values == head["id"].astype(str).values).all():
        return None
    return base, head


def _sigma_fn(frame: pd.DataFrame, definition: tuple) -> Callable[[np.ndarray], float]:
    _, subset, statistic, _ = definition
    d = (frame["teacher_conf"] - frame["student_conf"]).to_numpy(dtype=np.float64)
    t_ok = (frame["teacher_pred"] == frame["label"]).to_numpy()
    s_ok = (frame["student_pred"] == frame["label"]).to_numpy()
    mask = {"all": np.ones(len(d), bool), "teacher_correct": t_ok, "both_correct": t_ok & s_ok}[subset]
    return lambda idx: float(masked_dispersion(d[idx], mask[idx], statistic))


def _ece_fn(frame: pd.DataFrame) -> Callable[[np.ndarray], float]:
    cols = sorted(c for c in frame.columns if c.startswith("student_p"))
    probs = frame[cols].to_numpy(dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # the CSV rounds to 6 decimals
    labels = frame["label"].to_numpy()
    return lambda idx: ece(probs[idx], labels[idx])


def compare_model(base: Side, head: Side, model: str, n_resamples: int = 1000) -> tuple[dict[str, Change], str | None]:
    """Noise tests of the TESTED metrics for ``model`` (present on both sides); the second value says which
    fallback was taken, if any."""
    out: dict[str, Change] = {}
    frames = _paired_frames(base.read_predictions(model), head.read_predictions(model))
    same_definition = _definition(base, model) == _definition(head, model)
    note = None
    if frames is not None:
        b, h = frames
        out["accuracy"] = mcnemar((b["student_pred"] == b["label"]).to_numpy(), (h["student_pred"] == h["label"]).to_numpy())
        out["agreement"] = mcnemar((b["student_pred"] == b["teacher_pred"]).to_numpy(),
                                   (h["student_pred"] == h["teacher_pred"]).to_numpy())
        fb, fh = _ece_fn(b), _ece_fn(h)
        out["ece"] = paired_bootstrap(lambda idx: (fb(idx), fh(idx)), len(b), n_resamples)
        if same_definition:
            sb, sh = _sigma_fn(b, _definition(base, model)), _sigma_fn(h, _definition(head, model))
            out["sigma"] = paired_bootstrap(lambda idx: (sb(idx), sh(idx)), len(b), n_resamples)
    else:
        note = "unpaired"
        for key in TESTED:
            vb, vh = _value(base, model, key), _value(head, model, key)
            if vb is None or vh is None:
                continue
            if key in ("accuracy", "agreement"):
                sb = se_of_proportion(vb, base.evals[model].get("test.n_examples") or 0)
                sh = se_of_proportion(vh, head.evals[model].get("test.n_examples") or 0)
            else:
                sb = se_from_interval(base.evals[model].get(f"test.{key}_ci_low"), base.evals[model].get(f"test.{key}_ci_high"))
                sh = se_from_interval(head.evals[model].get(f"test.{key}_ci_low"), head.evals[model].get(f"test.{key}_ci_high"))
            if key == "sigma" and not same_definition:
                continue
            if math.isfinite(sb) and math.isfinite(sh):
                out[key] = unpaired(vb, vh, sb, sh)
    return out, note


def speedup_change(base: Side, head: Side, model: str) -> Change | None:
    """A speed-up change is real when the relative change exceeds the larger per-round spread of the two runs."""
    vb, vh = _value(base, model, "speedup"), _value(head, model, "speedup")
    if vb is None or vh is None or vb <= 0:
        return None
    spreads = [side.summary.get(f"{model}.{SPEEDUP}_spread") for side in (base, head)]
    band = max((s for s in spreads if s is not None), default=math.inf)
    return Change(vb, vh, real=bool(abs(vh / vb - 1) > band), method="spread over rounds")


def _order(models) -> list[str]:
    rest = sorted(m for m in models if m not in ("teacher", "teacher_reference"))
    return [m for m in ("teacher", "teacher_reference") if m in models] + rest


def _cell(key: str, fmt: str, vb: Any, vh: Any, change: Change | None) -> str:
    if vh is None:
        return "—" if vb is None else "missing"
    if key == "phi_cnf":
        text = "holds" if vh else "fails"
        return f"**{text}** (was {'holds' if vb else 'fails'})" if vb is not None and vb != vh else text
    text = fmt.format(vh)
    if vb is None or abs(vh - vb) <= EPS:
        return text
    delta = (f"{vh / vb - 1:+.1%}" if key == "size_mb" else fmt.replace(":.", ":+.").format(vh - vb))
    if change is None:  # not tested (kappa, size): the plain delta
        return f"{text} ({delta})"
    if change.real:
        return f"**{text} ({delta})**"
    return f"{text} <sub>({delta})</sub>"


def _changed(base: Side, head: Side, model: str) -> bool:
    for key, _, _ in COLUMNS:
        vb, vh = _value(base, model, key), _value(head, model, key)
        if key == "speedup" and vb is not None and vh is not None:
            if speedup_change(base, head, model).real:
                return True
            continue
        if (vb is None) != (vh is None):
            return True
        if vb is not None and (vb != vh if isinstance(vb, bool) else abs(vh - vb) > EPS):
            return True
    return False


def changed_params(base: Side, head: Side) -> list[tuple[str, Any, Any]]:
    keys = sorted(set(base.params) | set(head.params))
    return [(k, base.params.get(k, "—"), head.params.get(k, "—")) for k in keys
            if base.params.get(k, "—") != head.params.get(k, "—")]


def _subtree_root(key: str, other: dict[str, Any]) -> str:
    """The shortest dotted prefix of ``key`` that no key of ``other`` lives under: where an added (or removed)
    block of params starts (``distill.configs.new`` for every key of a new configuration)."""
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if not any(k == prefix or k.startswith(prefix + ".") for k in other):
            return prefix
    return key


def summarize_params(base: Side, head: Side) -> list[str]:
    """The changed params as a reviewer reads them: a whole block added or removed (a new configuration) is one
    entry, ``block: added (n keys)``; every other change is ``key: old → new``."""
    entries, blocks = [], {}
    for k, b, h in changed_params(base, head):
        if k not in base.params or k not in head.params:
            added = k not in base.params
            root = _subtree_root(k, base.params if added else head.params)
            if root != k:
                blocks.setdefault((root, "added" if added else "removed"), []).append(k)
                continue
        entries.append((k, f"`{k}`: {b!r} → {h!r}"))
    for (root, how), ks in blocks.items():
        if len(ks) > 1:
            entries.append((root, f"`{root}`: {how} ({len(ks)} keys)"))
        else:
            entries.append((ks[0], f"`{ks[0]}`: {base.params.get(ks[0], '—')!r} → {head.params.get(ks[0], '—')!r}"))
    return [text for _, text in sorted(entries)]


def build_comment(base: Side, head: Side, details: str = "", plot_name: str | None = None,
                  n_resamples: int = 1000) -> str:
    apart = set(base.other_data) | set(head.other_data)
    models = _order((set(base.evals) | set(head.evals)) - apart)
    new = [m for m in models if m not in base.evals]
    removed = [m for m in models if m not in head.evals]
    changed = [m for m in models if m in base.evals and m in head.evals and _changed(base, head, m)]
    unchanged = [m for m in models if m in base.evals and m in head.evals and m not in changed]
    lines = [MARKER, f"## Distillation metrics: `{base.label}` → `{head.label}`", ""]
    flips = [m for m in models if _value(base, m, "phi_cnf") is not None and _value(head, m, "phi_cnf") is not None
             and _value(base, m, "phi_cnf") != _value(head, m, "phi_cnf")]
    if flips:
        lines.append("**phi_cnf flipped:** " + "; ".join(
            f"`{m}` {'holds' if _value(base, m, 'phi_cnf') else 'fails'} → **{'holds' if _value(head, m, 'phi_cnf') else 'fails'}**"
            for m in flips))
    else:
        lines.append("No phi_cnf verdict flipped.")
    lines.append("")
    notes: list[str] = []
    shown = changed + new + removed
    if shown:
        lines += ["| model | " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for m in _order(shown):
            if m in removed:
                lines.append(f"| `{m}` (removed) | " + " | ".join("—" for _ in COLUMNS) + " |")
                continue
            tests: dict[str, Change] = {}
            if m in changed:
                tests, fallback = compare_model(base, head, m, n_resamples)
                if fallback:
                    notes.append(m)
            tests["retention"] = tests.get("accuracy")  # retention moves with accuracy (same teacher run)
            if m in changed:
                tests["speedup"] = speedup_change(base, head, m)
            cells = [_cell(k, f, _value(base, m, k) if m not in new else None, _value(head, m, k), tests.get(k))
                     for k, _, f in COLUMNS]
            lines.append(f"| `{m}`{' (new)' if m in new else ''} | " + " | ".join(cells) + " |")
        lines.append("")
    if unchanged:
        lines.append(f"Unchanged ({len(unchanged)}): " + ", ".join(f"`{m}`" for m in unchanged) + ".")
    if apart:
        lines.append(f"Not compared ({len(apart)}): " + ", ".join(f"`{m}`" for m in _order(apart))
                     + ": on one side their metrics were computed on other data than that side's teacher "
                     "(not rerun there).")
    if not shown:
        lines.append("No model's quality metrics changed.")
    lines += ["", "**Bold**: outside noise (paired McNemar exact test for accuracy and agreement, paired bootstrap "
              "95% interval for ECE and sigma, on the test split's per-example predictions); <sub>(small)</sub>: "
              "within noise; kappa and size are not tested. Speed-up: vs the fastest teacher backend at batch 32, a "
              "per-round ratio from one interleaved run per side; bold when the change exceeds both runs' spread "
              "over rounds."]
    if notes:
        lines.append(f"Per-example predictions missing on one side for {', '.join(f'`{m}`' for m in notes)}: "
                     "those used an unpaired test on the recorded 95% intervals (weaker).")
    defs = [m for m in changed if _definition(base, m) != _definition(head, m)]
    if defs:
        lines.append(f"The sigma definition differs between the two sides for {len(defs)} model(s) "
                     "(`evaluate.confidence`): their sigma changes are not tested.")
    params = summarize_params(base, head)
    lines.append("")
    if params:
        lines.append(f"**Params changed ({len(params)}):** " + "; ".join(params[:12])
                     + (f"; … and {len(params) - 12} more (below)." if len(params) > 12 else "."))
    else:
        lines.append("No params changed.")
    if plot_name:
        lines += ["", f"Plot: `{plot_name}` (test accuracy vs sigma, base and head) is attached to the run."]
    if details:
        lines += ["", "<details><summary>Full <code>dvc metrics diff</code> and <code>dvc params diff</code></summary>",
                  "", details.strip(), "", "</details>"]
    return "\n".join(lines) + "\n"


COMPARED = ("dvc.yaml", "params.yaml", "metrics", "plots")  # what the comparison repository holds of each side


def comparison_repo(base: Side, head: Side, workdir: Path) -> tuple[Path, str, str]:
    """A scratch git repository with two commits, the base's then the head's ``dvc.yaml``, ``params.yaml``,
    ``metrics/`` and ``plots/``, so that DVC's own ``metrics diff``, ``params diff`` and ``plots diff`` compare
    two folders (or any mix of revisions and folders). Returns ``(path, base commit, head commit)``."""
    import shutil

    repo = workdir / "comparison"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "pr-report@localhost")
    _git(repo, "config", "user.name", "confkd pr-report")
    commits = []
    for side in (base, head):
        for name in COMPARED:
            target = repo / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        if side.folder is not None:
            for name in COMPARED:
                src = side.folder / name
                if src.is_dir():
                    shutil.copytree(src, repo / name)
                elif src.exists():
                    shutil.copy(src, repo / name)
        else:
            names = _git(Path(side.source), "ls-tree", "-r", "--name-only", side.rev, *COMPARED).split()
            for name in names:
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                blob = subprocess.run(["git", "-C", str(side.source), "show", f"{side.rev}:{name}"], capture_output=True)
                (repo / name).write_bytes(blob.stdout)
        (repo / ".dvc").mkdir(exist_ok=True)
        (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", side.label)
        commits.append(_git(repo, "rev-parse", "HEAD").strip())
    return repo, commits[0], commits[1]


def _dvc(repo: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def dvc_details(base: Side, head: Side, workdir: Path, plots_dir: Path | None = None) -> str:
    """``dvc metrics diff`` and ``dvc params diff`` (changes only) between the two sides, and, with
    ``plots_dir``, ``dvc plots diff`` rendered there as HTML."""
    repo, a, b = comparison_repo(base, head, workdir)
    procs = {"metrics": _dvc(repo, "metrics", "diff", a, b, "--md", "--precision", "4"),
             "params": _dvc(repo, "params", "diff", a, b, "--md")}  # at once: each is mostly DVC's start-up
    if plots_dir is not None:
        procs["plots"] = _dvc(repo, "plots", "diff", a, b, "-o", str(plots_dir.resolve()))
    parts = [f"Left column: base `{base.label}`; right column: head `{head.label}` (commits of a scratch comparison "
             "repository).", ""]
    for what, proc in procs.items():
        out, err = proc.communicate()
        if what == "plots":
            if proc.returncode != 0:
                log.warning("dvc plots diff failed: %s", err.strip()[-500:])
            continue
        parts += [f"#### dvc {what} diff", "", out.strip() or err.strip() or "(no differences)", ""]
    return "\n".join(parts)


def write_plot(base: Side, head: Side, path: Path) -> None:
    """Test accuracy vs sigma per model: base hollow, head filled, an arrow where a model moved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from confkd.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for m in _order(set(base.evals) | set(head.evals)):
        pts = [(_value(s, m, "sigma"), _value(s, m, "accuracy")) for s in (base, head)]
        (xb, yb), (xh, yh) = pts
        if xb is not None and yb is not None:
            ax.scatter([xb], [yb], facecolors="none", edgecolors="grey")
        if xh is not None and yh is not None:
            ax.scatter([xh], [yh], color="tab:blue")
            ax.annotate(m, (xh, yh), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if xb is not None and yb is not None and (abs(xh - xb) > EPS or abs(yh - yb) > EPS):
                ax.annotate("", (xh, yh), (xb, yb), arrowprops={"arrowstyle": "->", "color": "tab:orange"})
    ax.set(xlabel="test sigma (teacher-student confidence dispersion)", ylabel="test accuracy",
           title=f"{base.label} (hollow) → {head.label} (filled)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confkd pr-report", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision or folder of a pipeline run")
    parser.add_argument("--head", default=None, help="git revision or folder (default: the workspace)")
    parser.add_argument("--repo", default=".", help="the git repository (default: .)")
    parser.add_argument("--out", default=None, help="write the comment here too (default: stdout only)")
    parser.add_argument("--plot", default=None, help="write the accuracy-vs-sigma PNG here")
    parser.add_argument("--no-dvc-details", action="store_true", help="skip the folded full DVC diffs (faster)")
    parser.add_argument("--plots-html", default=None, help="render `dvc plots diff` of the two sides in this folder")
    parser.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    parser.add_argument("--base-label", default=None, help="how the comment names the base (default: --base)")
    parser.add_argument("--head-label", default=None, help="how the comment names the head (default: --head)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    repo = Path(args.repo)
    t0 = time.perf_counter()
    try:
        base, head = resolve_side(repo, args.base), resolve_side(repo, args.head)
        if args.base_label:
            base = dataclasses.replace(base, label=args.base_label)
        if args.head_label:
            head = dataclasses.replace(head, label=args.head_label)
        with tempfile.TemporaryDirectory() as tmp:
            details = "" if args.no_dvc_details else dvc_details(
                base, head, Path(tmp), Path(args.plots_html) if args.plots_html else None)
        comment = build_comment(base, head, details, Path(args.plot).name if args.plot else None, args.resamples)
        if args.plot:
            write_plot(base, head, Path(args.plot))
    except (ConfkdError, DataError) as err:
        print(f"confkd pr-report: {err}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(comment, encoding="utf-8")
    sys.stdout.write(comment)
    log.info("pr-report built in %.1fs", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
