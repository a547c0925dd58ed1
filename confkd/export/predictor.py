"""ONNX Runtime predictor for exported folders: raw text in, logits / probabilities / labels out.

    from confkd.inference import load_predictor
    predictor = load_predictor("models/export/tinybert", precision="fp32", num_threads=2)
    predictor.predict_proba(["a gorgeous, witty film"])

Precision: ``"auto"`` (the default) runs the int8 graph when the folder has one and the fp32 graph
otherwise. The export stage only writes an int8 graph after checking its argmax agreement with fp32
(``export.min_int8_agreement``), and it is the smaller and usually the faster one; pass
``precision="fp32"`` for logits that match PyTorch to ``export.max_abs_diff``. int8 activations are
quantised with one scale per call, so int8 logits also shift slightly with the other texts in the
batch (mean |logit difference| vs fp32 is about 0.03 for the SST-2 transformers).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from confkd.errors import ModelNotFound, ParamsError
from confkd.export.manifest import OUTPUT_NAME, PRECISIONS, read_manifest
from confkd import student_kinds
from confkd.predictors import Predictor, _check_texts

log = logging.getLogger(__name__)

def make_session(path: str | Path, num_threads: int | None = None, spinning: bool = False):
    """An ONNX Runtime CPU session with explicit threads, or ``ModelNotFound`` naming a missing / corrupt file.

    ``intra_op_num_threads`` is always set (``None`` = all cores) and inter-op parallelism is off, so
    a latency figure says how many cores it used. Spin-waiting is off by default, matching the
    ``OMP_WAIT_POLICY=PASSIVE`` that confkd sets for PyTorch: spinning threads buy a little latency
    on an idle machine and cost a lot when another process shares the cores.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"ONNX model file '{path}' does not exist")
    threads = int(num_threads or os.cpu_count() or 1)
    if threads < 1:
        raise ParamsError(f"num_threads must be >= 1, got {num_threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the optimiser's notes are not actionable here
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own InvalidProtobuf / Fail / InvalidGraph types
        raise ModelNotFound(f"ONNX model file '{path}' could not be loaded (corrupted or not ONNX?): {err}") from None


def resolve_precision(manifest: dict, precision: str) -> str:
    """``auto`` -> int8 when the export has an int8 graph, else fp32; an explicit choice must exist."""
    if precision == "auto":
        return "int8" if manifest["files"].get("int8") else "fp32"
    if precision not in PRECISIONS:
        raise ParamsError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    if not manifest["files"].get(precision):
        raise ModelNotFound(f"export '{manifest.get('model')}' has no {precision} graph (export.quantize was off?)")
    return precision


class OnnxPredictor(Predictor):
    """Text -> encoder (tokenizer or n-gram featurizer) -> ONNX Runtime session -> logits."""

    def __init__(self, path: str | Path, precision: str = "auto", num_threads: int | None = None,
                 batch_size: int | None = None, max_length: int | None = None, spinning: bool = False):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.kind = self.manifest["kind"]
        self.labels = list(self.manifest["labels"])
        self.precision = resolve_precision(self.manifest, precision)
        self.batch_size = int(batch_size or student_kinds.by_export_kind(self.kind).onnx_batch_size)
        if self.batch_size < 1:
            raise ParamsError(f"batch_size must be >= 1, got {batch_size!r}")
        self.encoder = self._load_encoder(max_length)
        self.session = make_session(self.path / self.manifest["files"][self.precision], num_threads, spinning)
        self._check_graph()

    def _load_encoder(self, max_length: int | None):
        """The text -> inputs step saved with the graph (a tokenizer or the n-gram featurizer)."""
        from confkd.export.kinds import server_of

        return server_of(self.kind).onnx_encoder(self.path, self.manifest, max_length)

    def _check_graph(self) -> None:
        """Fail at load time, not on the first call, when graph and manifest disagree."""
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if sorted(graph_inputs) != sorted(self.manifest["inputs"]):
            raise ModelNotFound(f"'{self.path}': graph inputs {graph_inputs} differ from the manifest's {self.manifest['inputs']}")
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.labels):
            raise ModelNotFound(f"'{self.path}': graph has {width} outputs for {len(self.labels)} labels")

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Graph inputs for one batch of texts (exposed for parity checks and benchmarks)."""
        return self.encoder(texts)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), num_labels]`` float32 logits, in input order.

        More texts than ``batch_size`` are batched longest first (by characters, a cheap proxy for
        tokens / n-grams), so each batch pads to similar lengths.
        """
        texts = _check_texts(texts)
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        order = np.arange(len(texts))
        if len(texts) > self.batch_size:
            order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self.session.run([OUTPUT_NAME], self.encoder([texts[i] for i in rows]))[0]
        return out

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, kind={self.kind!r}, precision={self.precision!r})"
