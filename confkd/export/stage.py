"""DVC stage `export`: ONNX (fp32 + int8) of ``export.models``, parity against PyTorch, latency, report.

For each model name (``teacher`` or a distill configuration):

1. load the saved PyTorch model (``models/teacher`` or ``models/distill/<name>``);
2. write ``models/export/<name>/`` atomically: ``model.onnx``, ``model.int8.onnx`` (when
   ``export.quantize``; transformer activations smoothed with statistics from 256 train texts), the
   tokenizer files or ``featurizer.json``, and the ``export.json`` manifest;
3. check parity on ``data/prepared/<export.parity_split>.jsonl`` (fp32 logits vs PyTorch, int8 argmax
   vs fp32) -- a failing export is not written, the previous one stays;
4. time raw text -> probabilities for every backend of every model (PyTorch, ONNX fp32, ONNX int8,
   and the numpy runtime for a DAN) *interleaved* in one process at every batch size, so speed-ups are
   per-round ratios that hold still (:mod:`confkd.export.latency`);
5. measure each model's peak resident memory in its fastest runtime, in a fresh process.

Then ``metrics/export.json`` (flat keys, ratios only, see :func:`flat_metrics`), the per-backend
timings for the accuracy-vs-latency plot (``plots/export/latency.json``: milliseconds stay out of the
metrics that pull requests compare) and ``reports/export.md`` are written, and only then does a failed
check stop the stage with an error naming model, check, value and threshold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from confkd.config import ExportParams, Params
from confkd.errors import ModelNotFound
from confkd.export import latency as lat
from confkd.export.convert import quantize_int8
from confkd.export.kinds import KindServer, server_of, server_of_saved
from confkd.export.manifest import FP32_FILE, INT8_FILE, build_manifest, write_manifest
from confkd.export.memory import load_runtime, probe_memory, serving_kernel
from confkd.export.parity import ExportCheckFailed, label_indices, parity_failures, parity_metrics
from confkd.export.report import render_report
from confkd.export.smoothing import DEFAULT_ALPHA as SMOOTHING_ALPHA
from confkd.io import atomic_dir, provenance, write_json, write_text
from confkd.layout import TEACHER, ExportPaths, train_stage
from confkd.runtime import progress

log = logging.getLogger(__name__)

MB = 1024 * 1024
CALIBRATION_SPLIT = "train"  # activation statistics for int8 smoothing: never the evaluation split
CALIBRATION_TEXTS = 256


@dataclass
class ModelResult:
    """Everything measured for one model; ``failures`` empty means the export was written."""

    name: str
    kind: str = ""
    parity: dict[str, float] = field(default_factory=dict)
    sizes_mb: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    peak_rss_runtime: str | None = None
    peak_rss_kernel: str | None = None


# -- sources ---------------------------------------------------------------------------------------


def producing_stage(name: str, params: Params) -> str:
    """The DVC stage that writes a model's source folder, for error messages."""
    return train_stage(name, params.tuned_name)


def check_sources(params: Params, paths: ExportPaths) -> None:
    """Fail before any work when a model to export has not been trained."""
    for name in params.export.models:
        source = paths.inputs.model_dir(name)
        if not (source / "config.json").is_file():
            stage = producing_stage(name, params)
            raise ModelNotFound(f"export.models: '{name}' has no saved model at '{source}' "
                                f"(produced by the `{stage}` stage: run `dvc repro {stage}`)")


def load_source(path: Path, max_length: int) -> tuple[KindServer, str, Any]:
    """The server and export kind of the saved PyTorch model the export is made from and compared with, and its
    predictor.

    transformers' per-file loading bar is switched off meanwhile: in a DVC log it is noise.
    """
    from transformers.utils import logging as hf_logging

    from confkd.inference import load_predictor

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        predictor = load_predictor(path, max_length=max_length)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    kind, server = server_of_saved(path)
    return server, kind.export_kind, predictor


# -- export ----------------------------------------------------------------------------------------


def write_export(name: str, source: Path, kind: str, predictor, out: Path, ep: ExportParams,
                 calibration_texts: list[str] | None = None) -> dict[str, Any]:
    """Write graph(s), text -> inputs files and manifest of one model into the (temporary) folder ``out``.

    ``calibration_texts`` (never from the evaluation split) enable activation smoothing of an HF
    model before int8 quantisation; the DAN has no activation to smooth.
    """
    written = server_of(kind).write_onnx(predictor, source, out, ep, calibration_texts)
    files: dict[str, Any] = {"fp32": FP32_FILE, **written.files}
    quantization = None
    if ep.quantize:
        smoothed = quantize_int8(out / FP32_FILE, out / INT8_FILE, keep_fp32=written.keep_fp32,
                                 calibration=written.calibration)
        files["int8"] = INT8_FILE
        quantization = {"method": "onnxruntime dynamic", "weights": "int8, per channel",
                        "activations": "uint8, per tensor, at run time", "fp32_nodes": written.keep_fp32,
                        "smoothing": {"alpha": SMOOTHING_ALPHA, "activations": smoothed,
                                      "calibration_texts": len(calibration_texts or [])} if smoothed else None}
    manifest = build_manifest(kind=kind, name=name, source=source.as_posix(),
                              labels=list(predictor.labels), max_length=written.max_length, opset=ep.opset, files=files,
                              quantization=quantization)
    write_manifest(out, manifest)
    return manifest


def export_saved_model(source: str | Path, out: str | Path, ep: ExportParams, name: str | None = None,
                       calibration_texts: list[str] | None = None) -> dict[str, Any]:
    """Export one saved model folder (HF or DAN) to ``out``, atomically, without checks or timing.

    Returns the manifest. The stage adds parity checks and latency; this is the building block for
    exporting a model outside the pipeline.
    """
    source, out = Path(source), Path(out)
    _, kind, predictor = load_source(source, ep.max_length)
    with atomic_dir(out) as tmp:
        return write_export(name or source.name, source, kind, predictor, tmp, ep, calibration_texts)


def onnx_logits(folder: Path, precision: str, texts: list[str], num_threads: int) -> np.ndarray:
    from confkd.export.predictor import OnnxPredictor

    return OnnxPredictor(folder, precision=precision, num_threads=num_threads).predict_logits(texts)


def file_sizes(source: Path, folder: Path, quantize: bool) -> dict[str, float]:
    """Sizes in MB of the weights each backend loads (tokenizer / featurizer files counted apart)."""
    weights = [p for p in source.iterdir() if p.suffix in (".safetensors", ".bin")]
    sizes = {"torch": sum(p.stat().st_size for p in weights) / MB,
             "onnx_fp32": (folder / FP32_FILE).stat().st_size / MB}
    if quantize:
        sizes["onnx_int8"] = (folder / INT8_FILE).stat().st_size / MB
    other = [p for p in folder.iterdir() if p.name not in (FP32_FILE, INT8_FILE)]
    sizes["text_files"] = sum(p.stat().st_size for p in other) / MB
    return sizes


def export_one(name: str, params: Params, paths: ExportPaths, texts: list[str], gold: np.ndarray,
               split_labels: list[str], calibration_texts: list[str] | None = None) -> tuple[ModelResult, Any]:
    """Export, check and (when it passes) commit one model; returns its result and the PyTorch predictor."""
    ep = params.export
    result = ModelResult(name)
    source = paths.inputs.model_dir(name)
    t0 = time.perf_counter()
    server, result.kind, predictor = load_source(source, ep.max_length)
    reference = predictor.predict_logits(texts)
    out = paths.outputs.export_dir / name
    try:
        with atomic_dir(out) as tmp:
            write_export(name, source, result.kind, predictor, tmp, ep, calibration_texts)
            fp32 = onnx_logits(tmp, "fp32", texts, ep.latency.num_threads)
            int8 = onnx_logits(tmp, "int8", texts, ep.latency.num_threads) if ep.quantize else None
            exact = server.exact_runtimes(tmp, texts)
            result.parity = parity_metrics(reference, fp32, int8, gold, label_indices(predictor.labels, split_labels),
                                           exact)
            result.sizes_mb = file_sizes(source, tmp, ep.quantize)
            result.failures = parity_failures(name, result.parity, ep.max_abs_diff, ep.min_int8_agreement)
            if result.failures:
                raise ExportCheckFailed("; ".join(result.failures))  # leaves the previous export in place
    except ExportCheckFailed as err:
        log.error("%s: not written: %s", out, err)
    result.seconds = time.perf_counter() - t0
    log.info("%s: %s export in %.1fs, parity %s", name, result.kind, result.seconds,
             {k: round(v, 6) for k, v in result.parity.items()})
    return result, predictor


# -- speed -----------------------------------------------------------------------------------------


def backends_of(name: str, kind: str, predictor, folder: Path | None, params: Params) -> dict[tuple[str, str], lat.Backend]:
    """``{(model, backend): texts -> probabilities}``: PyTorch, plus each runtime of the exported ``folder``
    (None: not exported, or the export failed its checks)."""
    ep = params.export
    server = server_of(kind)
    out = {(name, "torch"): server.torch_backend(predictor, ep.max_length)}
    if folder is not None:
        for runtime in server.runtimes(ep.quantize):
            out[(name, runtime)] = lat.predictor_backend(load_runtime(folder, runtime, ep.latency.num_threads))
    return out


def time_backends(backends: dict[tuple[str, str], lat.Backend], texts: list[str], params: Params) -> lat.SpeedRun:
    """All backends timed interleaved. numpy's BLAS (the DAN's numpy runtime) runs single-threaded: its
    matmuls are a few MFLOP, where handing work to a second thread costs more than it saves, and OpenBLAS's
    spin-waiting threads collapse (10-100x slower) when another process shares the cores."""
    from threadpoolctl import threadpool_limits

    cfg = params.export.latency
    with threadpool_limits(limits=1, user_api="blas"):
        return lat.measure_interleaved(backends, texts, cfg.batch_sizes, cfg.warmup, cfg.repeats, params.seed)


def saved_backends(params: Params, names: list[str], paths: ExportPaths) -> tuple[dict[tuple[str, str], lat.Backend], list[str]]:
    """The backends of ``names`` from their saved sources and existing exports (a model outside
    ``export.models`` or without an export folder: PyTorch only), and the texts of the parity split to time
    them on."""
    from confkd.export.manifest import is_export_dir
    from confkd.training.teacher import load_prepared

    _, frames = load_prepared(paths.inputs.prepared_dir)
    texts = frames[params.export.parity_split]["text"].tolist()
    backends = {}
    for name in names:
        _, kind, predictor = load_source(paths.inputs.model_dir(name), params.export.max_length)
        folder = paths.outputs.export_dir / name
        exported = name in params.export.models and is_export_dir(folder)
        backends.update(backends_of(name, kind, predictor, folder if exported else None, params))
    return backends, texts


def retime_exports(params: Params, paths: ExportPaths | None = None) -> lat.SpeedRun:
    """Time the models of ``export.models`` again from their saved sources and existing exports (and the
    PyTorch teacher when it is not exported): a repeat of the stage's speed run, for stability checks."""
    paths = paths or ExportPaths()
    check_sources(params, paths)
    lat.set_torch_threads(params.export.latency.num_threads)
    names = list(params.export.models) + ([] if TEACHER in params.export.models else [TEACHER])
    return time_backends(*saved_backends(params, names, paths), params)


def teacher_reference(params: Params, paths: ExportPaths) -> tuple[ModelResult, Any] | None:
    """The PyTorch teacher, the speed-up baseline, when the teacher itself is not exported."""
    source = paths.inputs.model_dir(TEACHER)
    if not (source / "config.json").is_file():
        log.warning("no teacher at %s: speed-ups vs the teacher are left out", source)
        return None
    result = ModelResult(TEACHER)
    _, result.kind, predictor = load_source(source, params.export.max_length)
    return result, predictor


def measure_memory(results: list[ModelResult], run: lat.SpeedRun, kernels: dict[tuple[str, str], str],
                   paths: ExportPaths, texts: list[str], params: Params, batch_size: int) -> None:
    """Peak resident memory of a fresh process serving each exported model in its fastest runtime, with the
    kernel that was timed (``kernels``, from :func:`serving_kernel` of each backend): one that serves otherwise in
    the fresh process is an error."""
    for r in results:
        fastest = run.fastest(r.name, batch_size)
        if fastest is None or fastest == "torch":
            continue
        probe = probe_memory(paths.outputs.export_dir / r.name, fastest, texts, params.export.latency.num_threads,
                             expect_kernel=kernels[(r.name, fastest)])
        r.peak_rss_runtime, r.peak_rss_mb, r.peak_rss_kernel = fastest, probe.peak_rss_mb, probe.kernel
        log.info("%s: peak resident memory %.0f MiB (%s, %s kernel, batch %d)", r.name, r.peak_rss_mb, fastest,
                 probe.kernel, batch_size)


# -- metrics ---------------------------------------------------------------------------------------


def headline_batch(batch_sizes: list[int]) -> int:
    """The batch size that picks each model's deployed runtime and its memory probe: 32 when timed."""
    return 32 if 32 in batch_sizes else max(batch_sizes)


def speed_metrics(name: str, run: lat.SpeedRun, batch_sizes: list[int]) -> dict[str, float]:
    """Per-round ratios of ``name`` in its fastest backend against the teacher (see :func:`flat_metrics`)."""
    out: dict[str, float] = {}
    for b in batch_sizes:
        best_model, best_teacher = run.fastest(name, b), run.fastest(TEACHER, b)
        if best_model is None or best_teacher is None:
            continue
        med, spread = run.speedup(name, best_model, (TEACHER, best_teacher), b)
        out[f"speedup_vs_best_teacher_b{b}"] = med
        out[f"speedup_vs_best_teacher_b{b}_spread"] = spread
        if (vs_torch := run.speedup(name, best_model, (TEACHER, "torch"), b)) is not None:
            out[f"speedup_vs_torch_teacher_b{b}"] = vs_torch[0]
    largest = max(batch_sizes)
    if (best := run.fastest(name, largest)) is not None:
        out[f"samples_per_second_b{largest}"] = largest / (run.median_ms(name, best, largest) / 1e3)
    return out


def flat_metrics(results: list[ModelResult], teacher: ModelResult | None, run: lat.SpeedRun, params: Params,
                 n_examples: int) -> dict:
    """``metrics/export.json``: one flat ``<model>.<metric>`` key per number; no absolute times.

    Per model: ``<backend>.accuracy``, ``onnx_fp32.max_abs_diff`` (and ``numpy_fp32.max_abs_diff`` for a
    DAN), ``onnx_int8.agreement`` / ``.max_abs_diff`` / ``.mean_abs_diff``, ``<backend>.size_mb``,
    ``text_files_mb``, ``passed`` (1/0); then, with the model and the teacher each in their fastest
    backend at that batch size, ``speedup_vs_best_teacher_b<B>`` (median over rounds of the per-round
    ratio) and its relative spread ``speedup_vs_best_teacher_b<B>_spread`` ((p90 - p10) / median),
    ``speedup_vs_torch_teacher_b<B>`` (vs the PyTorch fp32 teacher), ``samples_per_second_b<largest B>``
    and ``peak_rss_mb`` (fastest runtime at the headline batch, fresh process).
    """
    cfg = params.export.latency
    flat: dict[str, float | int] = {"parity_examples": n_examples, "num_threads": cfg.num_threads}
    exported = {id(r) for r in results}
    reference = next((r for r in results if r.name == TEACHER), teacher)
    rows = results if reference is None or id(reference) in exported else [reference, *results]
    for r in rows:
        metrics: dict[str, float] = dict(r.parity)
        for backend, size in r.sizes_mb.items():
            metrics[f"{backend}.size_mb" if backend != "text_files" else "text_files_mb"] = size
        metrics.update(speed_metrics(r.name, run, cfg.batch_sizes))
        if r.peak_rss_mb is not None:
            metrics["peak_rss_mb"] = r.peak_rss_mb
        if id(r) in exported:
            metrics["passed"] = int(not r.failures)
        flat.update({f"{r.name}.{k}": float(f"{v:.6g}") if isinstance(v, float) else v for k, v in metrics.items()})
    return flat


def latency_rows(results: list[ModelResult], run: lat.SpeedRun) -> list[dict[str, Any]]:
    """``plots/export/latency.json``: one row per model, backend and batch size (median ms, accuracy)."""
    rows = []
    for r in results:
        for b in sorted(run.seconds):
            for backend in run.backends(r.name, b):
                accuracy = r.parity.get(f"{backend}.accuracy")
                rows.append({"model": r.name, "backend": backend, "batch_size": b,
                             "median_ms": round(run.median_ms(r.name, backend, b), 4),
                             "accuracy": None if accuracy is None else round(accuracy, 6),
                             "fastest": backend == run.fastest(r.name, b)})
    return rows


# -- stage -----------------------------------------------------------------------------------------


def calibration_sample(texts: list[str], seed: int, size: int = CALIBRATION_TEXTS) -> list[str]:
    """A seeded sample of texts for int8 activation statistics (all of them when fewer)."""
    if len(texts) <= size:
        return list(texts)
    rng = np.random.default_rng([seed, size])
    return [texts[i] for i in sorted(rng.choice(len(texts), size=size, replace=False))]


def export_models(params: Params, paths: ExportPaths | None = None) -> dict:
    """Run the export stage; returns the flat metrics. Raises ``ExportCheckFailed`` after writing them."""
    from confkd.training.teacher import load_prepared

    paths = paths or ExportPaths()
    ep = params.export
    check_sources(params, paths)
    lat.set_torch_threads(ep.latency.num_threads)
    split_labels, frames = load_prepared(paths.inputs.prepared_dir)
    frame = frames[ep.parity_split]
    texts, gold = frame["text"].tolist(), frame["label"].to_numpy()
    log.info("exporting %s (opset %d, int8 %s); parity and latency on %s (%d texts), %d threads",
             ep.models, ep.opset, ep.quantize, ep.parity_split, len(texts), ep.latency.num_threads)
    calibration = calibration_sample(frames[CALIBRATION_SPLIT]["text"].tolist(), params.seed)
    results, backends = [], {}
    for name in progress(ep.models, desc="export", unit="model"):
        result, predictor = export_one(name, params, paths, texts, gold, split_labels, calibration)
        folder = None if result.failures else paths.outputs.export_dir / name
        backends.update(backends_of(name, result.kind, predictor, folder, params))
        results.append(result)
    teacher = None
    if TEACHER not in ep.models and (found := teacher_reference(params, paths)) is not None:
        teacher, predictor = found
        backends.update(backends_of(TEACHER, teacher.kind, predictor, None, params))
    run = time_backends(backends, texts, params)
    kernels = {key: serving_kernel(backend) for key, backend in backends.items()}
    del backends
    head = headline_batch(ep.latency.batch_sizes)
    measure_memory(results, run, kernels, paths, lat.sample_batches(texts, head, 1, params.seed)[0], params, head)
    metrics = flat_metrics(results, teacher, run, params, len(texts))
    timed = results if teacher is None else [teacher, *results]
    write_json(paths.outputs.latency_plot, latency_rows(timed, run))
    write_json(paths.outputs.export_metrics, {**provenance(paths.inputs.prepared_dir), **metrics})
    write_text(paths.outputs.export_report, render_report(results, teacher, metrics, run, params))
    failures = [f for r in results for f in r.failures]
    if failures:
        raise ExportCheckFailed("export checks failed (metrics and report written; failing exports not written): "
                                + "; ".join(failures))
    log.info("export done: %s", ", ".join(f"{r.name} {r.seconds:.0f}s" for r in results))
    return metrics
