"""End-to-end latency: raw texts -> class probabilities, tokenisation or featurisation included.

Every backend is a callable ``texts -> probabilities`` and is timed on the same seeded batches, at
the same thread settings, so the figures compare what a caller of ``predict_proba`` would wait for:

* ``torch``     -- the saved PyTorch model in fp32 (the HF classifier behind the same tokenizer call
  as the ONNX path; the DAN through ``DANStudent.predict_logits``, i.e. featurizer + EmbeddingBag);
* ``onnx_fp32`` / ``onnx_int8`` -- :class:`confkd.export.predictor.OnnxPredictor` on the exported folder.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch

from confkd.errors import ParamsError
from confkd.evaluation.metrics import probabilities

log = logging.getLogger(__name__)

Backend = Callable[[list[str]], np.ndarray]
BACKENDS = ("torch", "onnx_fp32", "onnx_int8")


def set_torch_threads(num_threads: int) -> None:
    """Pin PyTorch to ``num_threads`` intra-op threads and one inter-op thread (as ONNX Runtime is)."""
    torch.set_num_threads(int(num_threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # can only be set before the first inter-op parallel work of the process
        log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())


def sample_batches(texts: Sequence[str], batch_size: int, count: int, seed: int) -> list[list[str]]:
    """``count`` batches of ``batch_size`` texts drawn (with a fixed seed) from ``texts``.

    Seeded from ``(seed, batch_size)`` so every backend and every model sees the very same batches.
    """
    if not texts:
        raise ParamsError("latency needs at least one text to sample from")
    if batch_size < 1 or count < 1:
        raise ParamsError(f"batch_size and count must be >= 1, got {batch_size} and {count}")
    rng = np.random.default_rng([seed, batch_size])
    replace = batch_size > len(texts)
    return [[texts[i] for i in rng.choice(len(texts), size=batch_size, replace=replace)] for _ in range(count)]


def time_backend(backend: Backend, batches: list[list[str]], warmup: int) -> np.ndarray:
    """Milliseconds per call for ``batches[warmup:]``, after running ``batches[:warmup]`` untimed.

    The garbage collector is paused while timing so a collection triggered by one backend's
    allocations does not land in another's figures.
    """
    for batch in batches[:warmup]:
        backend(batch)
    times = []
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for batch in batches[warmup:]:
            start = time.perf_counter_ns()
            backend(batch)
            times.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if was_enabled:
            gc.enable()
    return np.asarray(times)


def summarize(times_ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(times_ms, 50)), "p95_ms": float(np.percentile(times_ms, 95)),
            "mean_ms": float(np.mean(times_ms))}


def measure(backend: Backend, texts: Sequence[str], batch_sizes: Sequence[int], warmup: int, repeats: int,
            seed: int) -> dict[int, dict[str, float]]:
    """``{batch_size: {"p50_ms", "p95_ms", "mean_ms"}}`` for one backend."""
    out = {}
    for batch_size in batch_sizes:
        batches = sample_batches(texts, batch_size, warmup + repeats, seed)
        out[int(batch_size)] = summarize(time_backend(backend, batches, warmup))
    return out


# -- backends -------------------------------------------------------------------------------------


def torch_hf_backend(model, encoder) -> Backend:
    """PyTorch fp32 HF classifier behind the export's tokenizer call (dynamic padding, truncation)."""
    model = model.float().cpu().eval()

    @torch.inference_mode()
    def run(texts: list[str]) -> np.ndarray:
        feeds = encoder(texts)
        logits = model(input_ids=torch.from_numpy(feeds["input_ids"]),
                       attention_mask=torch.from_numpy(feeds["attention_mask"])).logits
        return probabilities(logits.numpy())

    return run


def torch_dan_backend(student) -> Backend:
    """PyTorch DAN: the student's own featurizer + ``EmbeddingBag`` path."""

    def run(texts: list[str]) -> np.ndarray:
        return probabilities(student.predict_logits(texts))

    return run


def predictor_backend(predictor) -> Backend:
    """Any :class:`confkd.inference.Predictor` (the ONNX Runtime ones in particular)."""
    return predictor.predict_proba
