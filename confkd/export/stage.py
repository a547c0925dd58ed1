"""DVC stage `export`: ONNX (fp32 + int8) of ``export.models``, parity against PyTorch, latency, report.

For each model name (``teacher`` or a distill configuration):

1. load the saved PyTorch model (``models/teacher`` or ``models/distill/<name>``);
2. write ``models/export/<name>/`` atomically: ``model.onnx``, ``model.int8.onnx`` (when
   ``export.quantize``; transformer activations smoothed with statistics from 256 train texts), the
   tokenizer files or ``featurizer.json``, and the ``export.json`` manifest;
3. check parity on ``data/prepared/<export.parity_split>.jsonl`` (fp32 logits vs PyTorch, int8 argmax
   vs fp32) -- a failing export is not written, the previous one stays;
4. time raw text -> probabilities for PyTorch, ONNX fp32 and ONNX int8 at every batch size.

Then ``metrics/export.json`` (flat keys, see :func:`flat_metrics`) and ``reports/export.md`` are
written, and only then does a failed check stop the stage with an error naming model, check, value
and threshold.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from confkd.config import ExportParams, Params
from confkd.errors import ModelNotFound
from confkd.export import latency as lat
from confkd.export.convert import export_dan_onnx, export_hf_onnx, ffn_down_projections, quantize_int8
from confkd.export.encoders import DANTextEncoder, HFTextEncoder
from confkd.export.manifest import FEATURIZER_FILE, FP32_FILE, INT8_FILE, build_manifest, write_manifest
from confkd.export.parity import ExportCheckFailed, label_indices, parity_failures, parity_metrics
from confkd.export.report import render_report
from confkd.export.smoothing import DEFAULT_ALPHA as SMOOTHING_ALPHA
from confkd.io import atomic_dir, write_json, write_text
from confkd.runtime import progress

log = logging.getLogger(__name__)

TEACHER = "teacher"
MB = 1024 * 1024
CALIBRATION_SPLIT = "train"  # activation statistics for int8 smoothing: never the evaluation split
CALIBRATION_TEXTS = 256


@dataclass(frozen=True)
class ExportPaths:
    """Where the stage reads (under ``root``) and writes (under ``out_root``, default ``root``).

    A separate ``out_root`` lets a benchmark export the real models without touching the
    pipeline's own outputs.
    """

    root: Path = Path(".")
    out_root: Path | None = None

    @property
    def prepared_dir(self) -> Path:
        return self.root / "data/prepared"

    @property
    def _out(self) -> Path:
        return self.root if self.out_root is None else self.out_root

    @property
    def export_dir(self) -> Path:
        return self._out / "models/export"

    @property
    def metrics_file(self) -> Path:
        return self._out / "metrics/export.json"

    @property
    def report_file(self) -> Path:
        return self._out / "reports/export.md"

    def source(self, name: str) -> Path:
        return self.root / ("models/teacher" if name == TEACHER else f"models/distill/{name}")


@dataclass
class ModelResult:
    """Everything measured for one model; ``failures`` empty means the export was written."""

    name: str
    kind: str = ""
    parity: dict[str, float] = field(default_factory=dict)
    sizes_mb: dict[str, float] = field(default_factory=dict)
    latency: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- sources ---------------------------------------------------------------------------------------


def producing_stage(name: str, params: Params) -> str:
    """The DVC stage that writes a model's source folder, for error messages."""
    if name == TEACHER:
        return "teacher"
    if name == params.tune.name and name not in params.distill.configs:
        return "distill_tuned"
    return f"distill@{name}"


def check_sources(params: Params, paths: ExportPaths) -> None:
    """Fail before any work when a model to export has not been trained."""
    for name in params.export.models:
        source = paths.source(name)
        if not (source / "config.json").is_file():
            stage = producing_stage(name, params)
            raise ModelNotFound(f"export.models: '{name}' has no saved model at '{source}' "
                                f"(produced by the `{stage}` stage: run `dvc repro {stage}`)")


def load_source(path: Path, max_length: int):
    """The saved PyTorch predictor (HF or DAN) the export is made from and compared with.

    transformers' per-file loading bar is switched off meanwhile: in a DVC log it is noise.
    """
    from transformers.utils import logging as hf_logging

    from confkd.inference import DANPredictor, load_predictor

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        predictor = load_predictor(path, max_length=max_length)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    return ("dan" if isinstance(predictor, DANPredictor) else "hf"), predictor


# -- export ----------------------------------------------------------------------------------------


def write_export(name: str, source: Path, kind: str, predictor, out: Path, ep: ExportParams,
                 calibration_texts: list[str] | None = None) -> dict[str, Any]:
    """Write graph(s), text -> inputs files and manifest of one model into the (temporary) folder ``out``.

    ``calibration_texts`` (never from the evaluation split) enable activation smoothing of an HF
    model before int8 quantisation; the DAN has no activation to smooth.
    """
    files: dict[str, Any] = {"fp32": FP32_FILE}
    keep_fp32: list[str] = []
    calibration = None
    quantization = None
    if kind == "hf":
        encoder = HFTextEncoder(predictor.tokenizer, ep.max_length)
        export_hf_onnx(predictor.model, encoder, out / FP32_FILE, ep.opset)
        files["tokenizer"] = sorted(Path(p).name for p in predictor.tokenizer.save_pretrained(str(out)))
        import onnx

        keep_fp32 = ffn_down_projections(onnx.load(str(out / FP32_FILE), load_external_data=False))
        if calibration_texts:
            calibration = [encoder(calibration_texts[i:i + 32]) for i in range(0, len(calibration_texts), 32)]
        max_length = ep.max_length
    else:
        export_dan_onnx(predictor.student, DANTextEncoder(predictor.student.featurizer), out / FP32_FILE, ep.opset)
        shutil.copyfile(source / FEATURIZER_FILE, out / FEATURIZER_FILE)  # the saved plain-JSON featurizer, as is
        files["featurizer"] = FEATURIZER_FILE
        max_length = None
    if ep.quantize:
        smoothed = quantize_int8(out / FP32_FILE, out / INT8_FILE, keep_fp32=keep_fp32, calibration=calibration)
        files["int8"] = INT8_FILE
        quantization = {"method": "onnxruntime dynamic", "weights": "int8, per channel",
                        "activations": "uint8, per tensor, at run time", "fp32_nodes": keep_fp32,
                        "smoothing": {"alpha": SMOOTHING_ALPHA, "activations": smoothed,
                                      "calibration_texts": len(calibration_texts or [])} if smoothed else None}
    manifest = build_manifest(kind=kind, name=name, source=source.as_posix(), labels=list(predictor.labels),
                              max_length=max_length, opset=ep.opset, files=files,
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
    kind, predictor = load_source(source, ep.max_length)
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
    source = paths.source(name)
    t0 = time.perf_counter()
    result.kind, predictor = load_source(source, ep.max_length)
    reference = predictor.predict_logits(texts)
    out = paths.export_dir / name
    try:
        with atomic_dir(out) as tmp:
            write_export(name, source, result.kind, predictor, tmp, ep, calibration_texts)
            fp32 = onnx_logits(tmp, "fp32", texts, ep.latency.num_threads)
            int8 = onnx_logits(tmp, "int8", texts, ep.latency.num_threads) if ep.quantize else None
            result.parity = parity_metrics(reference, fp32, int8, gold, label_indices(predictor.labels, split_labels))
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


# -- latency ---------------------------------------------------------------------------------------


def torch_backend(kind: str, predictor, max_length: int) -> lat.Backend:
    if kind == "hf":
        return lat.torch_hf_backend(predictor.model, HFTextEncoder(predictor.tokenizer, max_length))
    return lat.torch_dan_backend(predictor.student)


def measure_latency(result: ModelResult, predictor, folder: Path | None, texts: list[str], params: Params) -> None:
    """Fill ``result.latency[backend][batch_size]``; ONNX backends only for a written export."""
    from confkd.export.predictor import OnnxPredictor

    ep, cfg = params.export, params.export.latency
    backends = {"torch": torch_backend(result.kind, predictor, ep.max_length)}
    if folder is not None:
        backends["onnx_fp32"] = lat.predictor_backend(OnnxPredictor(folder, "fp32", num_threads=cfg.num_threads))
        if ep.quantize:
            backends["onnx_int8"] = lat.predictor_backend(OnnxPredictor(folder, "int8", num_threads=cfg.num_threads))
    for backend, run in backends.items():
        result.latency[backend] = lat.measure(run, texts, cfg.batch_sizes, cfg.warmup, cfg.repeats, params.seed)
        log.info("%s %s: %s", result.name, backend,
                 ", ".join(f"b{b} p50 {s['p50_ms']:.2f} ms" for b, s in result.latency[backend].items()))


def teacher_reference(params: Params, paths: ExportPaths, texts: list[str]) -> ModelResult | None:
    """PyTorch teacher latency, the speed-up baseline, when the teacher itself is not exported."""
    source = paths.source(TEACHER)
    if not (source / "config.json").is_file():
        log.warning("no teacher at %s: speed-ups vs the teacher are left out", source)
        return None
    result = ModelResult(TEACHER)
    result.kind, predictor = load_source(source, params.export.max_length)
    measure_latency(result, predictor, None, texts, params)
    return result


# -- metrics ---------------------------------------------------------------------------------------


def _p50(result: ModelResult | None, backend: str, batch_size: int) -> float | None:
    if result is None:
        return None
    return result.latency.get(backend, {}).get(batch_size, {}).get("p50_ms")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def speedups(result: ModelResult, teacher: ModelResult | None, batch_sizes: list[int]) -> dict[str, float]:
    """Teacher p50 / model p50 at equal batch size (higher = faster than the teacher).

    * ``<backend>.speedup_b<B>``: vs the PyTorch fp32 teacher, for each backend of the model;
    * ``speedup_b<B>``: PyTorch model vs PyTorch teacher (= ``torch.speedup_b<B>``);
    * ``speedup_vs_onnx_teacher_b<B>``: the model's fastest ONNX graph vs the teacher's fastest
      ONNX graph -- the gain left once both are deployed the fast way.
    """
    out: dict[str, float] = {}
    onnx = ("onnx_fp32", "onnx_int8")
    for b in batch_sizes:
        base = _p50(teacher, "torch", b)
        for backend in result.latency:
            value = _ratio(base, _p50(result, backend, b))
            if value is not None:
                out[f"{backend}.speedup_b{b}"] = value
        if (value := _ratio(base, _p50(result, "torch", b))) is not None:
            out[f"speedup_b{b}"] = value
        best_teacher = min((v for k in onnx if (v := _p50(teacher, k, b))), default=None)
        best_model = min((v for k in onnx if (v := _p50(result, k, b))), default=None)
        if (value := _ratio(best_teacher, best_model)) is not None:
            out[f"speedup_vs_onnx_teacher_b{b}"] = value
    return out


def flat_metrics(results: list[ModelResult], teacher: ModelResult | None, params: Params, n_examples: int) -> dict:
    """``metrics/export.json``: one flat ``<model>.<backend>.<metric>`` key per number.

    Per model: ``<backend>.accuracy``, ``onnx_fp32.max_abs_diff``, ``onnx_int8.agreement``,
    ``.max_abs_diff`` and ``.mean_abs_diff``, ``<backend>.size_mb``, ``text_files_mb``, ``<backend>.p50_ms_b<B>`` /
    ``p95_ms_b<B>``, the speed-ups of :func:`speedups`, and ``passed`` (1/0).
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
        for backend, by_batch in r.latency.items():
            for b, stats in by_batch.items():
                metrics[f"{backend}.p50_ms_b{b}"] = stats["p50_ms"]
                metrics[f"{backend}.p95_ms_b{b}"] = stats["p95_ms"]
        metrics.update(speedups(r, reference, cfg.batch_sizes))
        if id(r) in exported:
            metrics["passed"] = int(not r.failures)
        flat.update({f"{r.name}.{k}": float(f"{v:.6g}") if isinstance(v, float) else v for k, v in metrics.items()})
    return flat


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
    split_labels, frames = load_prepared(paths.prepared_dir)
    frame = frames[ep.parity_split]
    texts, gold = frame["text"].tolist(), frame["label"].to_numpy()
    log.info("exporting %s (opset %d, int8 %s); parity and latency on %s (%d texts), %d threads",
             ep.models, ep.opset, ep.quantize, ep.parity_split, len(texts), ep.latency.num_threads)
    calibration = calibration_sample(frames[CALIBRATION_SPLIT]["text"].tolist(), params.seed)
    results = []
    for name in progress(ep.models, desc="export", unit="model"):
        result, predictor = export_one(name, params, paths, texts, gold, split_labels, calibration)
        folder = None if result.failures else paths.export_dir / name
        measure_latency(result, predictor, folder, texts, params)
        results.append(result)
        del predictor
    teacher = None if TEACHER in ep.models else teacher_reference(params, paths, texts)
    metrics = flat_metrics(results, teacher, params, len(texts))
    write_json(paths.metrics_file, metrics)
    write_text(paths.report_file, render_report(results, teacher, metrics, params))
    failures = [f for r in results for f in r.failures]
    if failures:
        raise ExportCheckFailed("export checks failed (metrics and report written; failing exports not written): "
                                + "; ".join(failures))
    log.info("export done: %s", ", ".join(f"{r.name} {r.seconds:.0f}s" for r in results))
    return metrics
