"""Export speed against what a user would deploy anyway: the fastest teacher backend (ONNX int8 here).

    python benchmarks/bench_export.py [--runs 3] [--fresh [--keep DIR]] [--repeats 20] [--warmup 3] [--threads 2]

Run 1 is the export stage's own run: by default the pipeline's ``metrics/export.json``, ``reports/export.md``
and ``models/export`` as ``dvc repro export`` wrote them (so this file quotes the same figures as the README
and ``reports/summary.md``); with ``--fresh``, the stage's code (``confkd.export.stage.export_models``) run
again into a scratch folder (``--keep DIR`` to keep it). Runs 2..N time the same exported models again
(``retime_exports``, read-only), to show how far the speed-ups move between runs on unchanged models. Every
run times all backends of all models interleaved (see ``confkd/export/latency.py``). Writes
benchmarks/results/export.{json,md}.

Targets (end to end, raw text -> probabilities, same threads everywhere; "fastest teacher" = the teacher in
its fastest backend at that batch size):

* the sparse DAN >= 100x faster than the fastest teacher at batch 32, >= 50x at batch 1;
* a transformer student that keeps >= 97% of the teacher's test accuracy and is >= 3x faster than the
  fastest teacher at batch 32 (its sigma and phi_cnf reported next to it);
* stability: over the runs, each of those speed-ups within 15% (max / min - 1);
* every exported model passes parity (fp32 <= export.max_abs_diff, int8 agreement >= export.min_int8_agreement).

The DAN's arithmetic per batch (bag sums + MLP) divided by this machine's measured fp32 GEMM rate at the
same threads is printed as its physical floor.
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

import numpy as np

from _common import ROOT, machine, write_results

from confkd.export.report import BACKEND_NAMES

DAN_B32, DAN_B1 = 100.0, 50.0
STUDENT_SPEEDUP, STUDENT_RETENTION = 3.0, 0.97
STABILITY = 0.15


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


def evaluation(model: str) -> dict:
    path = ROOT / "metrics/eval" / f"{model}.json"
    return json.loads(path.read_text())["test"] if path.is_file() else {}


def gemm_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate with numpy at ``threads`` BLAS threads (best of ``repeats``)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), dtype=np.float32), rng.standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dan_floor(out: Path, dan: str, texts: list[str], batch_size: int, gflops: float) -> dict:
    """The DAN's arithmetic on one batch of the timed size, the time it needs at ``gflops``, and a profile of
    the numpy runtime's end-to-end path on that batch (median µs of each part)."""
    from threadpoolctl import threadpool_limits

    from confkd.export.dan_runtime import NumpyDANPredictor, bag_means, dan_flops

    predictor = NumpyDANPredictor(out / "models/export" / dan)
    table, batch = predictor.table, texts[:batch_size]
    rows, owner = table.lookup(batch)
    shapes = [w.shape for w, _ in predictor.layers]
    flops = dan_flops(int(round(len(rows) / len(batch))), predictor.embedding.shape[1], shapes, len(batch))
    x = bag_means(predictor.embedding, rows, owner, len(batch))

    parts = {"token ids (regex + dict)": lambda: table.tokens(batch), "MLP": lambda: predictor.mlp(x),
             "end to end": lambda: predictor.predict_proba(batch)}
    if predictor.kernel == "numba":
        parts["n-gram bags (compiled kernel, token ids included)"] = lambda: table.compiled_bag_means(predictor.embedding, batch)
    parts["n-gram bags (numpy look-up + reduceat, token ids included)"] = (
        lambda: bag_means(predictor.embedding, *table.lookup(batch), len(batch)))
    with threadpool_limits(limits=1, user_api="blas"):
        profile = {name: median_us(fn) for name, fn in parts.items()}
    return {"n_grams_per_text": len(rows) / len(batch), "flops_per_batch": flops, "gemm_gflops": gflops,
            "floor_ms": flops / (gflops * 1e9) * 1e3, "layers": [list(s) for s in shapes],
            "kernel": predictor.kernel, "profile_us": profile}


def median_us(fn, calls: int = 20, rounds: int = 25) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` back-to-back calls, in µs (after one warm-up call)."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times) * 1e6)


def run_speedups(run, models: list[str], batch_sizes: list[int]) -> dict[str, dict[str, float]]:
    from confkd.export.stage import speed_metrics

    return {m: speed_metrics(m, run, batch_sizes) for m in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="speed runs on the same exports (run 1 = the export)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds per batch size (default: params.yaml)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: params.yaml)")
    parser.add_argument("--threads", type=int, help="threads for PyTorch and ONNX Runtime (default: params.yaml)")
    parser.add_argument("--fresh", action="store_true", help="run the export again into a scratch folder for run 1")
    parser.add_argument("--keep", type=Path, help="with --fresh: write exports, metrics and report here and keep them")
    args = parser.parse_args()
    command = "python benchmarks/bench_export.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])

    from confkd.errors import ConfkdError
    from confkd.export.stage import export_models, retime_exports
    from confkd.layout import ExportPaths
    from confkd.runtime import setup_logging
    from confkd.training.teacher import load_prepared

    setup_logging("INFO")
    logging.getLogger("confkd.export").setLevel(logging.INFO)
    params = load_export_params(args)
    cfg = params.export.latency
    scratch = None
    t0 = time.perf_counter()
    if args.fresh:
        scratch = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-export-")
        out = args.keep or Path(scratch.name)
        try:
            metrics = export_models(params, ExportPaths(root=ROOT, out_root=out))
        except ConfkdError as err:
            sys.exit(f"export failed: {err}")
    else:
        out = ROOT
        if args.repeats is not None or args.warmup is not None or args.threads is not None:
            sys.exit("--repeats/--warmup/--threads change the timing settings: use them with --fresh")
        if not (ROOT / "metrics/export.json").is_file():
            sys.exit("no metrics/export.json: run `dvc repro export` first (or pass --fresh)")
        metrics = json.loads((ROOT / "metrics/export.json").read_text())
    paths = ExportPaths(root=ROOT, out_root=None if out == ROOT else out)
    export_wall = time.perf_counter() - t0
    model_kinds = kinds(out, params.export.models)
    models = list(model_kinds)
    runs = [{m: {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{m}.") and "speedup" in k
                 or k.startswith(f"{m}.samples_per_second")} for m in models}]
    for i in range(2, args.runs + 1):
        logging.getLogger(__name__).info("speed run %d of %d", i, args.runs)
        runs.append(run_speedups(retime_exports(params, paths), models, cfg.batch_sizes))
    report = (out / "reports/export.md").read_text(encoding="utf-8").splitlines()
    texts = load_prepared(ROOT / "data/prepared")[1][params.export.parity_split]["text"].tolist()
    gflops = gemm_gflops(1)  # the DAN's numpy runtime is timed with single-threaded BLAS
    dans = [m for m, k in model_kinds.items() if k == "dan"]
    floors = {d: dan_floor(out, d, texts, 32, gflops) for d in dans}
    latency = json.loads((out / "plots/export/latency.json").read_text())
    measured = {d: min((r["median_ms"], r["backend"]) for r in latency if r["model"] == d and r["batch_size"] == 32)
                for d in dans}
    if scratch is not None:
        scratch.cleanup()
    wall = time.perf_counter() - t0

    teacher_acc = evaluation("teacher").get("accuracy")
    targets, stability = [], []

    def spread_over_runs(model: str, key: str) -> float | None:
        values = [r[model][key] for r in runs if key in r.get(model, {})]
        return max(values) / min(values) - 1 if len(values) > 1 else None

    def target(name, model, key, threshold, extra=""):
        value = metrics.get(f"{model}.{key}")
        targets.append({"target": name, "model": model, "value": value, "threshold": threshold,
                        "met": None if value is None or threshold is None else bool(value >= threshold), "note": extra})
        if (s := spread_over_runs(model, key)) is not None:
            stability.append({"model": model, "key": key, "values": [r[model].get(key) for r in runs], "spread": s,
                              "met": bool(s <= STABILITY)})

    for dan in dans:
        target("DAN vs fastest teacher, batch 32", dan, "speedup_vs_best_teacher_b32", DAN_B32)
        target("DAN vs fastest teacher, batch 1", dan, "speedup_vs_best_teacher_b1", DAN_B1)
    students = [m for m, k in model_kinds.items() if k == "hf" and m != "teacher"]
    qualifying = []
    for model in students:
        ev = evaluation(model)
        retention = ev["accuracy"] / teacher_acc if teacher_acc and "accuracy" in ev else None
        note = (f"retention {retention:.1%}, sigma {ev.get('sigma', float('nan')):.4f}, phi_cnf "
                f"{'holds' if ev.get('phi_cnf') else 'fails'}" if retention is not None else "not evaluated")
        target(f"transformer student vs fastest teacher, batch 32 ({note})", model, "speedup_vs_best_teacher_b32", None)
        if retention is not None and retention >= STUDENT_RETENTION:
            qualifying.append((model, metrics.get(f"{model}.speedup_vs_best_teacher_b32") or 0.0, retention))
    best = max(qualifying, key=lambda q: q[1], default=None)
    student_met = best is not None and best[1] >= STUDENT_SPEEDUP
    passed = {m: metrics.get(f"{m}.passed") for m in models}

    lines = ["| target | model | value | threshold | met |", "|---|---|---|---|---|"]
    for t in targets:
        threshold = "—" if t["threshold"] is None else f">= {t['threshold']:g}x"
        met = "—" if t["met"] is None else ("**yes**" if t["met"] else "**no**")
        value = "—" if t["value"] is None else f"{t['value']:.1f}x"
        lines.append(f"| {t['target']} | {t['model']} | {value} | {threshold} | {met} |")
    lines.append(f"| transformer student with >= {STUDENT_RETENTION:.0%} retention and >= {STUDENT_SPEEDUP:g}x, batch 32 | "
                 f"{best[0] if best else '—'} | {f'{best[1]:.1f}x at {best[2]:.1%}' if best else 'none keeps 97%'} | "
                 f">= {STUDENT_SPEEDUP:g}x | {'**yes**' if student_met else '**no**'} |")
    lines.append(f"| parity (every exported model) | {', '.join(models)} | "
                 f"{'all passed' if all(v == 1 for v in passed.values()) else passed} | passed | "
                 f"{'**yes**' if all(v == 1 for v in passed.values()) else '**no**'} |")
    if len(runs) < 2:
        stab = ["Not measured: one run. `--runs 3` times the same exports twice more."]
    else:
        stab = ["| model | speed-up | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | max/min - 1 | <= 15% |",
                "|---|---|" + "---|" * len(runs) + "---|---|"]
        for s in stability:
            stab.append(f"| {s['model']} | {s['key']} | " + " | ".join("—" if v is None else f"{v:.1f}x" for v in s["values"])
                        + f" | {s['spread']:.1%} | {'**yes**' if s['met'] else '**no**'} |")
    floor_lines = []
    for dan, f in floors.items():
        ms, backend = measured[dan]
        floor_lines.append(
            f"- `{dan}`: {f['n_grams_per_text']:.1f} n-grams per text, layers {f['layers']}: "
            f"{f['flops_per_batch'] / 1e6:.1f} MFLOP per batch of 32; at this machine's measured numpy fp32 GEMM rate "
            f"({f['gemm_gflops']:.0f} GFLOP/s, 1 thread, as the DAN's numpy runtime runs) that is **{f['floor_ms'] * 1e3:.0f} µs**"
            f", against **{ms * 1e3:.0f} µs** measured end to end ({BACKEND_NAMES[backend]}, run 1; featurisation "
            "included). Its parts, each timed alone on the same batch (median µs; "
            f"the runtime's kernel: {f['kernel']}): "
            + ", ".join(f"{name} {us:.0f}" for name, us in f["profile_us"].items()) + ".")
    md = [
        "# Export speed vs the fastest teacher",
        "",
        f"Machine: {machine()}. Command: `{command}` (from the repository root, after `dvc repro`).",
        f"Threads: {cfg.num_threads} (PyTorch intra-op, ONNX Runtime intra-op; inter-op 1; numpy BLAS, used by the "
        "DAN's numpy runtime only, 1). Every run "
        f"times all backends of all models interleaved: {cfg.rounds_text()} "
        f"(batch sizes {', '.join(map(str, cfg.batch_sizes))}). {args.runs} run{'s' if args.runs != 1 else ''}; run 1 = "
        + (f"a fresh export ({export_wall:.0f} s)" if args.fresh else "the pipeline's own export stage (metrics/export.json)")
        + f"; whole benchmark {wall:.0f} s.",
        "",
        "## Targets (run 1 = the export stage's own figures)",
        "",
        *lines,
        "",
        "## Stability over runs on unchanged models",
        "",
        *stab,
        "",
        "## The DAN's physical floor",
        "",
        *floor_lines,
        "",
        *["#" + line if line.startswith("#") else line for line in report],
    ]
    results = {"machine": machine(), "command": command, "wall_seconds": round(wall, 1),
               "export_seconds": round(export_wall, 1), "export_params": params.export.model_dump(),
               "kinds": model_kinds, "targets": targets,
               "student_target": {"model": best[0] if best else None, "speedup": best[1] if best else None,
                                  "retention": best[2] if best else None, "met": student_met},
               "stability": stability, "runs": runs, "dan_floor": floors, "dan_measured_ms_b32": measured,
               "metrics": metrics}
    write_results("export", results, md)


if __name__ == "__main__":
    main()
