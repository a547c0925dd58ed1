"""ONNX export latency: the export stage on the real pipeline outputs, with the speed-up targets.

    python benchmarks/bench_export.py [--repeats 30] [--warmup 5] [--threads 2] [--keep DIR]

Runs ``confkd.export.stage.export_models`` with ``params.yaml``'s ``export`` section on
``models/teacher`` and ``models/distill/*`` (run ``dvc repro`` first). Exports, metrics and report go
to a scratch folder (``--keep DIR`` to keep them), so the pipeline's own ``models/export`` and
``metrics/export.json`` stay as DVC wrote them. Writes benchmarks/results/export.{json,md}.

Targets (end to end, raw text -> probabilities, same threads for every backend):

* the sparse DAN student >= 100x faster than the PyTorch fp32 teacher at batch 32;
* the best transformer student, ONNX int8, >= 4x faster than the PyTorch fp32 teacher at batch 32.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, write_results

DAN_TARGET = 100.0
TRANSFORMER_TARGET = 4.0
BACKEND_NAMES = {"torch": "PyTorch fp32", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}


def load_export_params(args):
    """``params.yaml`` with the command line's latency overrides applied."""
    from confkd.config import load_params, parse_params

    raw = load_params(ROOT / "params.yaml").model_dump(by_alias=True)
    latency = raw["export"]["latency"]
    for key in ("repeats", "warmup"):
        if getattr(args, key) is not None:
            latency[key] = getattr(args, key)
    if args.threads is not None:
        latency["num_threads"] = args.threads
    return parse_params(raw, "params.yaml (+ command line)")


def kinds(out: Path, models: list[str]) -> dict[str, str]:
    """``{model: "hf" | "dan"}`` from the manifests the export wrote."""
    return {m: json.loads((out / "models/export" / m / "export.json").read_text())["kind"] for m in models
            if (out / "models/export" / m / "export.json").is_file()}


def best_backend(metrics: dict, model: str, batch_size: int, backends=tuple(BACKEND_NAMES)) -> tuple[str, float] | None:
    """The backend with the largest speed-up vs the PyTorch teacher at ``batch_size``."""
    found = [(b, metrics[f"{model}.{b}.speedup_b{batch_size}"]) for b in backends
             if f"{model}.{b}.speedup_b{batch_size}" in metrics]
    return max(found, key=lambda x: x[1]) if found else None


def target_rows(metrics: dict, model_kinds: dict[str, str]) -> tuple[list[dict], list[str]]:
    """The targets table: one row per target (and the context figures next to it)."""
    rows = []
    dans = [m for m, k in model_kinds.items() if k == "dan"]
    students = [m for m, k in model_kinds.items() if k == "hf" and m != "teacher"]
    for dan in dans:
        for b, target in ((32, DAN_TARGET), (1, None)):
            best = best_backend(metrics, dan, b)
            if best:
                rows.append({"target": f"{dan} end to end vs PyTorch teacher, batch {b}", "threshold": target,
                             "model": dan, "backend": BACKEND_NAMES[best[0]], "value": best[1]})
        if (value := metrics.get(f"{dan}.speedup_vs_onnx_teacher_b32")) is not None:
            rows.append({"target": f"{dan} vs ONNX teacher (fastest ONNX graph of each), batch 32", "threshold": None,
                         "model": dan, "backend": "fastest ONNX", "value": value})
    # "Best" = the most accurate exported transformer student (test accuracy of its PyTorch model);
    # the others are listed for context.
    timed = [m for m in students if f"{m}.onnx_int8.speedup_b32" in metrics]
    for i, model in enumerate(sorted(timed, key=lambda m: -metrics.get(f"{m}.torch.accuracy", 0.0))):
        acc = metrics.get(f"{model}.torch.accuracy", float("nan"))
        label = "best transformer student (most accurate" if i == 0 else "transformer student ("
        rows.append({"target": f"{label}{', ' if i == 0 else ''}test acc {acc:.4f}), ONNX int8 vs PyTorch teacher, "
                               "batch 32", "threshold": TRANSFORMER_TARGET if i == 0 else None, "model": model,
                     "backend": "ONNX int8", "value": metrics[f"{model}.onnx_int8.speedup_b32"]})
        if (b1 := metrics.get(f"{model}.onnx_int8.speedup_b1")) is not None:
            rows.append({"target": f"{model}, ONNX int8 vs PyTorch teacher, batch 1", "threshold": None,
                         "model": model, "backend": "ONNX int8", "value": b1})
    for row in rows:
        row["met"] = None if row["threshold"] is None else bool(row["value"] >= row["threshold"])
    lines = ["| target | model | backend | speed-up | threshold | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        threshold = "—" if r["threshold"] is None else f">= {r['threshold']:g}x"
        met = "—" if r["met"] is None else ("**yes**" if r["met"] else "**no**")
        lines.append(f"| {r['target']} | {r['model']} | {r['backend']} | {r['value']:.1f}x | {threshold} | {met} |")
    return rows, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, help="timed calls per batch size (default: params.yaml)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default: params.yaml)")
    parser.add_argument("--threads", type=int, help="threads for PyTorch and ONNX Runtime (default: params.yaml)")
    parser.add_argument("--keep", type=Path, help="write exports, metrics and report here and keep them")
    args = parser.parse_args()
    command = "python benchmarks/bench_export.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])

    from confkd.errors import ConfkdError
    from confkd.export.stage import ExportPaths, export_models
    from confkd.runtime import setup_logging

    setup_logging("INFO")
    logging.getLogger("confkd.export").setLevel(logging.INFO)
    params = load_export_params(args)
    scratch = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-export-")
    out = args.keep or Path(scratch.name)
    t0 = time.perf_counter()
    try:
        metrics = export_models(params, ExportPaths(root=ROOT, out_root=out))
    except ConfkdError as err:
        sys.exit(f"export failed: {err}")
    wall = time.perf_counter() - t0
    model_kinds = kinds(out, params.export.models)
    report = (out / "reports/export.md").read_text(encoding="utf-8").splitlines()
    if scratch is not None:
        scratch.cleanup()
    rows, table = target_rows(metrics, model_kinds)
    cfg = params.export.latency
    md = [
        "# ONNX export: end-to-end latency vs the PyTorch teacher",
        "",
        f"Machine: {machine()}. Command: `{command}` (from the repository root, after `dvc repro`).",
        f"Threads: {cfg.num_threads} (PyTorch intra-op and ONNX Runtime intra-op; inter-op 1). "
        f"{cfg.warmup} warm-up + {cfg.repeats} timed calls per batch size; whole run {wall:.0f} s.",
        "",
        "## Targets",
        "",
        *table,
        "",
        *["#" + line if line.startswith("#") else line for line in report],
    ]
    results = {"machine": machine(), "command": command, "wall_seconds": round(wall, 1),
               "export_params": params.export.model_dump(), "kinds": model_kinds, "targets": rows, "metrics": metrics}
    write_results("export", results, md)


if __name__ == "__main__":
    main()
