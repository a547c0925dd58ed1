"""The ``report`` stage: one comparison table, the teacher and every student."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from confkd.config import Params
from confkd.errors import DataError
from confkd.evaluation.confidence import resolve_spec
from confkd.io import write_json, write_text

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
    ("latency_b32", "fastest p50, batch 32", "{}"),
    ("speedup_b32", "speed-up vs teacher", "{:.1f}x"),
]
BACKENDS = {"torch": "PyTorch", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}


def _dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6 if path.exists() else float("nan")


def _human(n) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def build_summary(params: Params, split: str = "test") -> tuple[dict, str]:
    models = ["teacher", *params.distill.configs]
    if (Path("metrics/eval") / "teacher_reference.json").exists():  # kappa's yardstick, once evaluated
        models.insert(1, "teacher_reference")
    if (Path("metrics/eval") / f"{params.tune.name}.json").exists():  # the tuned configuration, once evaluated
        models.append(params.tune.name)
    rows: dict[str, dict] = {}
    teacher_acc = None
    for model in models:
        eval_path = Path("metrics/eval") / f"{model}.json"
        if not eval_path.exists():
            raise DataError(f"{eval_path}: not found (run `dvc repro evaluate`)")
        evaluation = json.loads(eval_path.read_text())
        ev = evaluation[split]
        if model in ("teacher", "teacher_reference"):
            info = json.loads((Path("metrics") / f"{model}.json").read_text())
            model_dir = Path("models") / model
            teacher_acc = ev["accuracy"] if model == "teacher" else teacher_acc
        else:
            info = json.loads((Path("metrics/distill") / f"{model}.json").read_text())
            model_dir = Path("models/distill") / model
        rows[model] = {
            **{k: ev.get(k) for k in ("accuracy", "macro_f1", "agreement", "ece", "ts_ece", "sigma", "kappa",
                                      "pinsker_bound", "accuracy_ci_low", "accuracy_ci_high", "sigma_ci_low",
                                      "sigma_ci_high", "aurc")},
            "phi_cnf": bool(ev.get("phi_cnf")),
            "phi_cnf_implied": bool(model != "teacher" and ev.get("kappa") is not None
                                    and ev.get("pinsker_bound") is not None and ev["kappa"] >= ev["pinsker_bound"]),
            "train_sigma": (evaluation.get("train") or {}).get("sigma"),
            "retention": ev["accuracy"] / teacher_acc if teacher_acc else None,
            "parameters": info.get("parameters"),
            "active_parameters": info.get("active_parameters_per_example", info.get("parameters")),
            "size_mb": _dir_size_mb(model_dir),
        }
    _add_latency(rows, Path("metrics/export.json"))
    lines = [f"# Teacher vs students ({split} split)", "",
             "| model | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for model, r in rows.items():
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            if key in ("parameters", "active_parameters"):
                cells.append(_human(v))
            elif key == "latency_b32":
                cells.append(f"{v[0]:.1f} ms ({v[1]})" if v else "—")
            elif key == "phi_cnf":
                cells.append(("holds" + (" (implied)" if r["phi_cnf_implied"] else "")) if v else "**fails**")
            elif v is None:
                cells.append("—")
            else:
                cells.append(fmt.format(v))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    labels_file = Path("data/prepared/labels.json")
    labels = json.loads(labels_file.read_text())["labels"] if labels_file.exists() else None
    spec = resolve_spec(params.evaluate.confidence, labels)
    kappa_text = {"reference": "sigma of a second teacher (same recipe, another seed) against the teacher on the same "
                               "split: the teacher's own retraining noise",
                  "fixed": f"the fixed value {params.evaluate.kappa.value}",
                  "bound": "the paper's gamma * sqrt(beta / (|X| (1 - alpha)))"}[params.evaluate.kappa.policy]
    lines += ["", f"sigma(X): {spec.describe()} (Vengertsev & Sherman 2024); phi_cnf holds when sigma(X) <= kappa, "
              f"kappa = {kappa_text}. Pinsker bound: sqrt(mean KL(teacher || student) / 2) on the same examples, "
              "the largest sigma the KL allows; a kappa at or above it holds for any student (marked 'implied'). "
              "ECE: 15 equal-width bins; TS: after temperature scaling fitted on dev. "
              "Latency: raw text to probabilities, the export stage's fastest backend at batch 32 (reports/export.md)."]
    flat = {f"{model}.{k}": (float(v) if isinstance(v, (int, float, bool)) and v is not None else None)
            for model, r in rows.items() for k, v in r.items() if k != "latency_b32"}
    return flat, "\n".join(lines) + "\n"


def _add_latency(rows: dict[str, dict], export_metrics: Path) -> None:
    """End-to-end latency from the export stage: each model's fastest backend at batch 32, and its
    speed-up over the PyTorch teacher (same threads, same texts)."""
    if not export_metrics.exists():
        return
    m = json.loads(export_metrics.read_text())
    teacher = m.get("teacher.torch.p50_ms_b32")
    for model, row in rows.items():
        timed = {b: m[f"{model}.{b}.p50_ms_b32"] for b in BACKENDS if f"{model}.{b}.p50_ms_b32" in m}
        if not timed:
            continue
        backend = min(timed, key=timed.get)
        row["latency_b32"] = (timed[backend], BACKENDS[backend])
        row["p50_ms_b32"] = timed[backend]
        row["speedup_b32"] = teacher / timed[backend] if teacher else None


def write_summary(params: Params) -> None:
    flat, md = build_summary(params)
    write_json(Path("metrics/summary.json"), flat)
    write_text(Path("reports/summary.md"), md)
    log.info("wrote reports/summary.md")
