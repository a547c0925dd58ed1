"""End-to-end speed: raw texts -> class probabilities, tokenisation or featurisation included.

Every backend is a callable ``texts -> probabilities``; all backends of all models are timed in one
process, *interleaved* (:func:`measure_interleaved`): each round calls every backend once on the same
seeded batch, at the same thread settings, so a slow moment of the machine hits all of them and the
per-round speed-up ratios hold still where absolute milliseconds do not. Backends:

* ``torch``      -- the saved PyTorch model in fp32 (the HF classifier behind the same tokenizer call
  as the ONNX path; the DAN through ``DANStudent.predict_logits``, i.e. featurizer + EmbeddingBag);
* ``onnx_fp32`` / ``onnx_int8`` -- :class:`confkd.export.predictor.OnnxPredictor` on the exported folder;
* ``numpy_fp32`` -- the DAN only: :class:`confkd.export.dan_runtime.NumpyDANPredictor` on the exported
  folder (vectorised n-gram look-up + numpy forward pass, no graph runtime).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from confkd.errors import ParamsError
from confkd.evaluation.metrics import probabilities
from confkd.timing import interleaved_rounds, ratio

log = logging.getLogger(__name__)

Backend = Callable[[list[str]], np.ndarray]
BACKENDS = ("torch", "onnx_fp32", "onnx_int8", "numpy_fp32")


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


@dataclass
class SpeedRun:
    """Seconds per call of every ``(model, backend)`` at every batch size, all timed interleaved.

    ``seconds[batch_size][(model, backend)]`` holds one entry per round (see
    :func:`confkd.timing.interleaved_rounds`); ratios are always taken round by round.
    """

    seconds: dict[int, dict[tuple[str, str], np.ndarray]] = field(default_factory=dict)

    def backends(self, model: str, batch_size: int) -> list[str]:
        return [b for (m, b) in self.seconds.get(batch_size, {}) if m == model]

    def median_ms(self, model: str, backend: str, batch_size: int) -> float | None:
        values = self.seconds.get(batch_size, {}).get((model, backend))
        return None if values is None else float(np.median(values) * 1e3)

    def fastest(self, model: str, batch_size: int) -> str | None:
        """The backend with the lowest median time (what a user would deploy)."""
        found = {b: self.median_ms(model, b, batch_size) for b in self.backends(model, batch_size)}
        return min(found, key=found.get) if found else None

    def speedup(self, model: str, backend: str, reference: tuple[str, str], batch_size: int) -> tuple[float, float] | None:
        """``(median, relative spread)`` of the per-round ratio ``t_reference / t_model``."""
        rounds = self.seconds.get(batch_size, {})
        if (model, backend) not in rounds or reference not in rounds:
            return None
        return ratio(rounds[reference], rounds[(model, backend)])


def measure_interleaved(backends: dict[tuple[str, str], Backend], texts: Sequence[str], batch_sizes: Sequence[int],
                        warmup: int, rounds: int, seed: int) -> SpeedRun:
    """Time every backend of every model interleaved, once per batch size, on one seeded batch of ``texts``.

    Each round calls every backend on the same batch (order rotating; one untimed call right before each
    timed one, so a small model is not timed with caches a large one just evicted), so machine load lands in
    all of them alike and the per-round ratios hold still.
    """
    run = SpeedRun()
    for batch_size in batch_sizes:
        batch = sample_batches(texts, int(batch_size), 1, seed)[0]
        log.info("timing %d backends interleaved at batch %d: %d warm-up + %d rounds", len(backends), batch_size,
                 warmup, rounds)
        run.seconds[int(batch_size)] = interleaved_rounds(backends, batch, rounds=rounds, warmup=warmup,
                                                          untimed_before=1)
    return run


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
    """Any :class:`confkd.predictors.Predictor` (the ONNX Runtime ones in particular)."""
    return predictor.predict_proba
