"""``reports/export.md``: latency / size / accuracy table and parity table of the export stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from confkd.config import Params
    from confkd.export.stage import ModelResult

BACKEND_NAMES = {"torch": "PyTorch fp32", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}


def _num(value, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def latency_table(rows: list["ModelResult"], metrics: dict, batch_sizes: list[int]) -> list[str]:
    """One row per model and backend: size, p50/p95 per batch size, speed-up vs PyTorch teacher, accuracy."""
    head = ["model", "backend", "size (MB)"]
    for b in batch_sizes:
        head += [f"p50 b{b} (ms)", f"p95 b{b} (ms)"]
    head += [f"speed-up b{b}" for b in batch_sizes] + ["accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for backend in BACKEND_NAMES:
            if backend not in r.latency and f"{backend}.accuracy" not in r.parity:
                continue
            key = f"{r.name}.{backend}"
            cells = [r.name, BACKEND_NAMES[backend], _num(metrics.get(f"{key}.size_mb"), 1)]
            for b in batch_sizes:
                cells += [_num(metrics.get(f"{key}.p50_ms_b{b}")), _num(metrics.get(f"{key}.p95_ms_b{b}"))]
            cells += [_num(metrics.get(f"{key}.speedup_b{b}"), 1, "x") for b in batch_sizes]
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
        lines.append(f"| {r.name} | {r.kind} | {_num(m.get('onnx_fp32.max_abs_diff'), 7)} | "
                     f"{_num(m.get('onnx_int8.agreement'), 4)} | {_num(m.get('onnx_int8.mean_abs_diff'), 4)} / "
                     f"{_num(m.get('onnx_int8.max_abs_diff'), 4)} | {status} |")
    return lines


def render_report(results: list["ModelResult"], teacher: "ModelResult | None", metrics: dict, params: "Params") -> str:
    ep, cfg = params.export, params.export.latency
    rows = results if teacher is None else [teacher, *results]
    lines = [
        "# ONNX export: latency, size, accuracy and parity",
        "",
        f"End-to-end latency from raw text to class probabilities (tokenisation / featurisation included), "
        f"{cfg.warmup} warm-up then {cfg.repeats} timed calls per batch size on seeded batches of the "
        f"`{ep.parity_split}` split, {cfg.num_threads} intra-op thread(s) for PyTorch and ONNX Runtime alike. "
        f"Speed-up = PyTorch fp32 teacher p50 / this p50 at the same batch size. Accuracy on `{ep.parity_split}` "
        f"({metrics.get('parity_examples')} examples). Sizes: the weights file each backend loads "
        f"(tokenizer or n-gram featurizer files not included).",
        "",
        *latency_table(rows, metrics, cfg.batch_sizes),
        "",
        "## Parity",
        "",
        f"ONNX fp32 logits vs PyTorch logits on the same texts, and ONNX int8 argmax vs ONNX fp32 argmax "
        f"(opset {ep.opset}). int8 = ONNX Runtime dynamic quantisation: int8 per-channel weights, uint8 "
        f"activations quantised per call; FFN down-projections kept fp32; LayerNorm-fed activations smoothed "
        f"(SmoothQuant) with statistics from the train split. Logit differences are vs PyTorch.",
        "",
        *parity_table(results, metrics, params),
        "",
    ]
    return "\n".join(lines)
