"""The ``report`` stage: one comparison table, the teacher and every student."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from confkd.config import Params
from confkd.errors import DataError, ParamsError
from confkd.evaluation.confidence import resolve_spec
from confkd.export.report import BACKEND_NAMES
from confkd.io import provenance, write_json, write_text
from confkd.layout import DEFAULT, REFERENCE, TEACHER, TEACHERS, Layout, evaluate_stage

log = logging.getLogger(__name__)

COLUMNS = [  # (key, header, format)
    ("accuracy", "test acc", "{:.4f}"),
    ("retention", "vs teacher", "{:.1%}"),
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("agreement", "agreement", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("ts_ece", "ECE (TS)", "{:.4f}"),
    ("sigma", "sigma(X)", "{:.4f}"),
    ("kappa", "kappa", "{:.4f}"),
    ("pinsker_bound", "Pinsker bound", "{:.4f}"),
    ("phi_cnf", "phi_cnf", "{}"),
    ("train_sigma", "sigma(X train)", "{:.4f}"),
    ("parameters", "params", "{}"),
    ("active_parameters", "active params/example", "{}"),
    ("size_mb", "size on disk", "{:.1f} MB"),
    ("speedup_vs_best_teacher_b32", "speed-up vs fastest teacher, b32", "{:.1f}x"),
    ("speedup_vs_torch_teacher_b32", "vs PyTorch teacher, b32", "{:.1f}x"),
]
SPEED_KEYS = ("speedup_vs_best_teacher_b32", "speedup_vs_best_teacher_b32_spread", "speedup_vs_torch_teacher_b32")


def _dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6 if path.exists() else float("nan")


def _human(n) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def build_summary(params: Params, split: str = "test", only: list[str] | None = None,
                  layout: Layout = DEFAULT) -> tuple[dict, str, dict[str, dict]]:
    """The comparison table of the teacher and every configuration (``only``: just these configurations; the
    others are listed as left out)."""
    models = [TEACHER, *params.distill.configs]
    if layout.eval_metrics(REFERENCE).exists():  # kappa's yardstick, once evaluated
        models.insert(1, REFERENCE)
    if layout.eval_metrics(params.tune.name).exists():  # the tuned configuration, once evaluated
        models.append(params.tune.name)
    left_out: dict[str, str] = {}  # model -> why it is not in the table
    if only is not None:
        unknown = sorted(set(only) - set(models))
        if unknown:
            raise ParamsError(f"report --only: unknown configuration(s) {unknown} (known: {models[1:]})")
        left_out = {m: "outside this run's configurations" for m in models
                    if m not in only and m not in TEACHERS}
        models = [m for m in models if m not in left_out]
    rows: dict[str, dict] = {}
    teacher_acc = None
    current = provenance(layout.prepared_dir)
    flags: dict[str, dict] = {}
    for model in models:
        eval_path = layout.eval_metrics(model)
        if not eval_path.exists():
            if model == TEACHER:
                raise DataError(f"{eval_path}: not found (run `dvc repro {evaluate_stage(TEACHER)}`)")
            left_out[model] = "not run on this task yet"
            continue
        evaluation = json.loads(eval_path.read_text())
        mismatch = stale_reason(evaluation, current)
        if mismatch is not None:
            if model == TEACHER:
                raise DataError(f"{eval_path}: {mismatch}; rerun the pipeline (`dvc repro`) before reporting")
            left_out[model] = mismatch
            continue
        ev = evaluation[split]
        flags[model] = evaluation.get("flags") or {}
        info = json.loads(layout.train_metrics(model).read_text())
        model_dir = layout.model_dir(model)
        if model == TEACHER:
            teacher_acc = ev["accuracy"]
        rows[model] = {
            **{k: ev.get(k) for k in ("accuracy", "macro_f1", "agreement", "ece", "ts_ece", "sigma", "kappa",
                                      "pinsker_bound", "accuracy_ci_low", "accuracy_ci_high", "sigma_ci_low",
                                      "sigma_ci_high", "aurc")},
            "phi_cnf": bool(ev.get("phi_cnf")),
            "phi_cnf_implied": bool(model != TEACHER and ev.get("kappa") is not None
                                    and ev.get("pinsker_bound") is not None and ev["kappa"] >= ev["pinsker_bound"]),
            "train_sigma": (evaluation.get("train") or {}).get("sigma"),
            "retention": ev["accuracy"] / teacher_acc if teacher_acc else None,
            "parameters": info.get("parameters"),
            "active_parameters": info.get("active_parameters_per_example", info.get("parameters")),
            "size_mb": _dir_size_mb(model_dir),
        }
    _add_latency(rows, layout.export_metrics)
    teacher_ev = json.loads(layout.eval_metrics(TEACHER).read_text())
    labels_meta = json.loads(layout.labels_file.read_text()) if layout.labels_file.exists() else {}
    lines = [f"# Teacher vs students ({split} split)", "",
             *warnings(current, teacher_ev, split, flags, left_out, labels_meta.get("train_label_counts"),
                       params.validate_.class_balance.warn_below),
             "| model | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for model, r in rows.items():
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            if key in ("parameters", "active_parameters"):
                cells.append(_human(v))
            elif key == "speedup_vs_best_teacher_b32" and v is not None:
                spread = r.get("speedup_vs_best_teacher_b32_spread")
                cells.append(fmt.format(v) + (f" (spread {spread:.0%})" if spread is not None else ""))
            elif key == "phi_cnf":
                cells.append(("holds" + (" (implied)" if r["phi_cnf_implied"] else "")) if v else "**fails**")
            elif v is None:
                cells.append("—")
            else:
                cells.append(fmt.format(v))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    labels = labels_meta.get("labels")
    spec = resolve_spec(params.evaluate.confidence, labels)
    kappa_text = {"reference": "sigma of a second teacher (same recipe, another seed) against the teacher on the same "
                               "split: the teacher's own retraining noise",
                  "fixed": f"the fixed value {params.evaluate.kappa.value}",
                  "bound": "the paper's gamma * sqrt(beta / (|X| (1 - alpha)))"}[params.evaluate.kappa.policy]
    lines += ["", f"sigma(X): {spec.describe()} (Vengertsev & Sherman 2024); phi_cnf holds when sigma(X) <= kappa, "
              f"kappa = {kappa_text}. Pinsker bound: sqrt(mean KL(teacher || student) / 2) on the same examples, "
              "the largest sigma the KL allows; a kappa at or above it holds for any student (marked 'implied'). "
              "ECE: 15 equal-width bins; TS: after temperature scaling fitted on dev. "
              "Speed-up: raw text to probabilities at batch 32, model and teacher each in their fastest backend, "
              "timed interleaved in one run of the export stage: median of the per-round ratios, spread = "
              "(p90 - p10) / median (reports/export.md; the same figures as metrics/export.json)."]
    flat = {**current, **{f"{model}.{k}": (float(v) if isinstance(v, (int, float, bool)) and v is not None else None)
                          for model, r in rows.items() for k, v in r.items()}}
    return flat, "\n".join(lines) + "\n", rows


COMPACT = (("accuracy", 4), ("retention", 3), ("sigma", 4), ("kappa", 4), ("phi_cnf", None),
           ("speedup_vs_best_teacher_b32", 1))


def compact_rows(flat: dict) -> list[dict]:
    """One narrow row per model from ``metrics/summary.json``'s flat keys: the headline columns only (for
    a table that fits a screen, e.g. the Prefect run's artifact)."""
    models = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in flat if "." in k and k.rsplit(".", 1)[1] == "accuracy"))
    rows = []
    for model in models:
        row: dict = {"model": model}
        for key, digits in COMPACT:
            v = flat.get(f"{model}.{key}")
            row[key.replace("speedup_vs_best_teacher_b32", "speed-up b32")] = (
                None if v is None else ("holds" if v else "fails") if digits is None else round(float(v), digits))
        rows.append(row)
    return rows


def stale_reason(evaluation: dict, current: dict) -> str | None:
    """Why metrics stamped with ``evaluation``'s task and data fingerprint do not belong with data ``current``
    (None: they do). Unstamped metrics count as computed on other data once the prepared data is stamped."""
    if not current:
        return None
    task, data = evaluation.get("task"), evaluation.get("data_fingerprint")
    if task is None or data is None:
        return "computed before results recorded their data (rerun it)"
    if task != current.get("task"):
        return f"computed on task '{task}', not '{current.get('task')}'"
    if data != current.get("data_fingerprint"):
        return f"computed on other data (fingerprint {data}, now {current.get('data_fingerprint')})"
    return None


def warnings(current: dict, teacher_eval: dict, split: str, flags: dict[str, dict], left_out: dict[str, str],
             train_counts: dict[str, int] | None = None, warn_below: float = 0.05) -> list[str]:
    """The lines above the table: what the results are computed on, and when they mean little."""
    out = []
    if current:
        out.append(f"Task `{current.get('task')}`, data fingerprint `{current.get('data_fingerprint')}` (every row "
                   f"below was computed on this data).")
    if train_counts:
        total = sum(train_counts.values())
        shares = ", ".join(f"{name} {n / total:.1%}" for name, n in train_counts.items())
        rare = [name for name, n in train_counts.items() if n / total < warn_below]
        out.append(f"Classes in train: {shares}" + (f" — **imbalanced** ({', '.join(rare)} below {warn_below:.0%}): "
                                                    "accuracy says little, read macro-F1 and the baseline." if rare else "."))
    ev = teacher_eval.get(split) or {}
    if ev.get("majority_accuracy") is not None:
        out.append(f"Majority-class baseline on {split}: {ev['majority_accuracy']:.4f} (always answering the most "
                   f"frequent class); teacher: {ev['accuracy']:.4f}.")
    teacher_flags = flags.get(TEACHER, {})
    if teacher_flags.get(f"near_baseline_{split}"):
        out.append(f"> **Warning: the teacher is within reach of the majority-class baseline on {split}.** Retention "
                   "and phi_cnf compare students with a teacher that has learnt little: they mean little.")
    if teacher_flags.get("dev_test_shift"):
        dev = teacher_eval.get("dev") or {}
        out.append(f"> **Warning: dev and test disagree** (teacher accuracy {dev.get('accuracy', float('nan')):.4f} on "
                   f"dev, {ev.get('accuracy', float('nan')):.4f} on test; disjoint 95% intervals): model selection on "
                   "dev does not predict test here (a distribution shift between the splits).")
    near = [m for m, f in flags.items() if m != TEACHER and f.get(f"near_baseline_{split}")]
    if near:
        out.append(f"Near the majority-class baseline on {split}: {', '.join(near)}.")
    if left_out:
        out.append("Not in the table: " + "; ".join(f"{m} ({why})" for m, why in left_out.items()) + ".")
    return out + ([""] if out else [])


def _add_latency(rows: dict[str, dict], export_metrics: Path) -> None:
    """The export stage's speed-ups (ratios from one interleaved run; no absolute times)."""
    if not export_metrics.exists():
        return
    m = json.loads(export_metrics.read_text())
    for model, row in rows.items():
        row.update({k: m[f"{model}.{k}"] for k in SPEED_KEYS if f"{model}.{k}" in m})


def accuracy_latency_rows(rows: dict[str, dict], latency: list[dict]) -> list[dict]:
    """The accuracy-vs-latency plot's points: every timed backend of every model at batch 32 (or the largest
    timed batch when 32 was not timed), with the backend's own test accuracy (from the export's parity run) and
    the model's test sigma (PyTorch model)."""
    sizes = {item.get("batch_size") for item in latency}
    batch_size = 32 if 32 in sizes else max((b for b in sizes if b is not None), default=None)
    points = []
    for item in latency:
        if item.get("batch_size") != batch_size or item.get("accuracy") is None:
            continue
        model, backend = item["model"], BACKEND_NAMES.get(item["backend"], item["backend"])
        points.append({"model": model, "backend": backend, "point": f"{model} ({backend})", "batch_size": batch_size,
                       "latency_ms": item["median_ms"], "accuracy": item["accuracy"],
                       "sigma": (rows.get(model) or {}).get("sigma"), "fastest": bool(item.get("fastest"))})
    return points


def plot_accuracy_latency(points: list[dict], path: Path) -> Path:
    """Test accuracy vs end-to-end latency (log scale), one marker per backend, sigma(X) as the colour.

    Without any timed point (no export run, or nothing timed) the figure says so.
    """
    import matplotlib.cm
    import matplotlib.colors
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    if not points:
        ax.text(0.5, 0.5, "no exported model timed yet (run `dvc repro export`)", ha="center", va="center")
        ax.set_axis_off()
    else:
        batch_size = points[0]["batch_size"]
        markers = {"PyTorch fp32": "o", "ONNX fp32": "s", "ONNX int8": "D", "numpy fp32": "^"}
        sigmas = [p["sigma"] for p in points if p["sigma"] is not None]
        norm = matplotlib.colors.Normalize(vmin=min(sigmas, default=0.0), vmax=max(sigmas, default=1.0))
        for backend, marker in markers.items():
            group = [p for p in points if p["backend"] == backend]
            if group:
                ax.scatter([p["latency_ms"] for p in group], [p["accuracy"] for p in group],
                           c=[p["sigma"] if p["sigma"] is not None else float("nan") for p in group], cmap="viridis",
                           norm=norm, marker=marker, s=70, edgecolors="black", linewidths=0.5, label=backend)
        for p in points:
            if p["fastest"]:  # one label per model, at its fastest backend
                ax.annotate(f"{p['model']} ({p['backend']})", (p["latency_ms"], p["accuracy"]),
                            textcoords="offset points", xytext=(-4, 7), fontsize=8, ha="center")
        ax.set_xscale("log")
        ax.set_xlabel(f"end-to-end latency, batch {batch_size} (ms, log scale; one interleaved run)")
        ax.set_ylabel("test accuracy")
        ax.legend(title="backend", fontsize=8, loc="lower right")
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="sigma(X), test")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def write_summary(params: Params, only: list[str] | None = None, layout: Layout = DEFAULT) -> None:
    flat, md, rows = build_summary(params, only=only, layout=layout)
    latency_file = layout.latency_plot
    latency = json.loads(latency_file.read_text()) if latency_file.exists() else []
    points = accuracy_latency_rows(rows, latency)
    write_json(layout.accuracy_latency_plot, points)
    plot_accuracy_latency(points, layout.accuracy_latency_figure)
    md += "\n![accuracy vs latency](figures/accuracy_latency.png)\n"
    write_json(layout.summary_metrics, flat)
    write_text(layout.summary_markdown, md)
    log.info("wrote %s", layout.summary_markdown)
