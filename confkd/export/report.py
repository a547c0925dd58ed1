"""``reports/export.md``: latency / size / accuracy table and parity table of the export stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from confkd.config import Params
    from confkd.export.latency import SpeedRun
    from confkd.export.stage import ModelResult

BACKEND_NAMES = {"torch": "PyTorch fp32", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8",
                 "numpy_fp32": "numpy fp32"}
TEACHER = "teacher"


def _num(value, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def speed_table(rows: list["ModelResult"], metrics: dict, batch_sizes: list[int]) -> list[str]:
    """One row per model in its fastest backend: the ratios that ``metrics/export.json`` holds."""
    largest = max(batch_sizes)
    head = (["model"] + [f"vs fastest teacher, b{b}" for b in batch_sizes] + ["vs PyTorch teacher, b32"
            if 32 in batch_sizes else f"vs PyTorch teacher, b{largest}"] + [f"samples/s b{largest}", "peak RSS"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    vs_torch_b = 32 if 32 in batch_sizes else largest
    for r in rows:
        key = r.name
        cells = [key]
        for b in batch_sizes:
            med, spread = metrics.get(f"{key}.speedup_vs_best_teacher_b{b}"), metrics.get(f"{key}.speedup_vs_best_teacher_b{b}_spread")
            cells.append("—" if med is None else f"{med:.1f}x (spread {spread:.0%})")
        cells.append(_num(metrics.get(f"{key}.speedup_vs_torch_teacher_b{vs_torch_b}"), 1, "x"))
        cells.append(_num(metrics.get(f"{key}.samples_per_second_b{largest}"), 0))
        rss = metrics.get(f"{key}.peak_rss_mb")
        cells.append("—" if rss is None else f"{rss:.0f} MiB ({BACKEND_NAMES[r.peak_rss_runtime]}, {r.peak_rss_kernel})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def latency_table(rows: list["ModelResult"], metrics: dict, run: "SpeedRun", batch_sizes: list[int]) -> list[str]:
    """One row per model and backend: size, median ms per batch size (this run only), speed-up vs the
    fastest teacher backend, accuracy; the fastest backend of each model in bold."""
    head = ["model", "backend", "size (MB)"] + [f"median b{b} (ms)" for b in batch_sizes]
    head += [f"vs fastest teacher b{b}" for b in batch_sizes] + ["accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for backend in BACKEND_NAMES:
            if not any(backend in run.backends(r.name, b) for b in batch_sizes):
                continue
            key = f"{r.name}.{backend}"
            fastest = backend == run.fastest(r.name, 32 if 32 in batch_sizes else max(batch_sizes))
            name = f"**{BACKEND_NAMES[backend]}**" if fastest else BACKEND_NAMES[backend]
            cells = [r.name, name, _num(metrics.get(f"{key}.size_mb"), 1)]
            for b in batch_sizes:
                ms = run.median_ms(r.name, backend, b)
                cells.append(_num(ms, 3 if (ms or 0) < 10 else 1))
            for b in batch_sizes:
                best_teacher = run.fastest(TEACHER, b)
                ratio = None if best_teacher is None else run.speedup(r.name, backend, (TEACHER, best_teacher), b)
                cells.append(_num(None if ratio is None else ratio[0], 1, "x"))
            cells.append(_num(metrics.get(f"{key}.accuracy"), 4))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def parity_table(results: list["ModelResult"], metrics: dict, params: "Params") -> list[str]:
    ep = params.export
    lines = [f"| model | kind | fp32 max abs logit diff (<= {ep.max_abs_diff:g}) | int8 argmax agreement "
             f"(>= {ep.min_int8_agreement:g}) | int8 mean / max abs logit diff | status |", "|---|---|---|---|---|---|"]
    for r in results:
        m = r.parity
        status = "passed" if not r.failures else "**failed** (export not written)"
        exact = _num(m.get('onnx_fp32.max_abs_diff'), 7)
        if "numpy_fp32.max_abs_diff" in m:
            exact += f" (numpy runtime {m['numpy_fp32.max_abs_diff']:.7f})"
        lines.append(f"| {r.name} | {r.kind} | {exact} | "
                     f"{_num(m.get('onnx_int8.agreement'), 4)} | {_num(m.get('onnx_int8.mean_abs_diff'), 4)} / "
                     f"{_num(m.get('onnx_int8.max_abs_diff'), 4)} | {status} |")
    return lines


def render_report(results: list["ModelResult"], teacher: "ModelResult | None", metrics: dict, run: "SpeedRun",
                  params: "Params") -> str:
    ep, cfg = params.export, params.export.latency
    rows = results if teacher is None else [teacher, *results]
    largest = max(cfg.batch_sizes)
    lines = [
        "# ONNX export: speed, size, accuracy and parity",
        "",
        f"End to end, raw text to class probabilities (tokenisation / featurisation included), on one seeded batch "
        f"of the `{ep.parity_split}` split per batch size; {cfg.num_threads} intra-op thread(s) for PyTorch and ONNX "
        f"Runtime (numpy's BLAS, used by the DAN's numpy runtime only, single-threaded). Every backend of every model is timed **interleaved** in one process: "
        f"{cfg.rounds_text()}, in each of which every backend runs once (timed rounds: rotating order; "
        "one untimed call right before, so a small model is not timed with caches a large one just evicted). "
        f"A backend faster than {run.min_block_seconds * 1e3:g} ms a call is timed over a block of back-to-back calls "
        f"lasting at least {run.min_block_seconds * 1e3:g} ms, "
        "and its time is per call (one interrupt would otherwise make a single 0.2 ms call look twice as slow). "
        "A speed-up is the median over rounds of the per-round ratio teacher time / model time, model and teacher "
        "each in their **fastest** backend at that batch size; spread = (p90 - p10) / median of those ratios. "
        f"Throughput at batch {largest}; peak resident memory of a fresh process serving the model in its fastest "
        "runtime (interpreter and runtime libraries included).",
        "",
        *speed_table(rows, metrics, cfg.batch_sizes),
        "",
        "## Every backend",
        "",
        "Medians of this run (absolute times move with the machine; the ratios above are what to compare). "
        f"Accuracy on `{ep.parity_split}` ({metrics.get('parity_examples')} examples). Sizes: the weights file each "
        "backend loads (tokenizer or n-gram featurizer files not included).",
        "",
        *latency_table(rows, metrics, run, cfg.batch_sizes),
        "",
        "## Parity",
        "",
        f"ONNX fp32 (and the DAN's numpy runtime) logits vs PyTorch logits on the same texts, and ONNX int8 argmax vs ONNX fp32 argmax "
        f"(opset {ep.opset}). int8 = ONNX Runtime dynamic quantisation: int8 per-channel weights, uint8 "
        f"activations quantised per call; FFN down-projections kept fp32; LayerNorm-fed activations smoothed "
        f"(SmoothQuant) with statistics from the train split. Logit differences are vs PyTorch.",
        "",
        *parity_table(results, metrics, params),
        "",
    ]
    return "\n".join(lines)
