"""End-to-end speed: raw texts -> class probabilities, tokenisation or featurisation included.

Every backend is a callable ``texts -> probabilities``; all backends of all models are timed in one
process, *interleaved* (:func:`measure_interleaved`): each round calls every backend once on the same
seeded batch, at the same thread settings, so a slow moment of the machine hits all of them and the
per-round speed-up ratios hold still where absolute milliseconds do not. Backends:

* ``torch``      -- the saved PyTorch model in fp32 (the HF classifier behind the same tokenizer call
  as the ONNX path; the DAN through ``DANStudent.predict_logits``, i.e. featurizer + EmbeddingBag);
* ``onnx_fp32`` / ``onnx_int8`` -- :class:`confkd.export.predictor.OnnxPredictor` on the exported folder;
* ``numpy_fp32`` -- the DAN only: :class:`confkd.export.dan_runtime.NumpyDANPredictor` on the exported
  folder (n-gram bags found and summed by a compiled kernel, or numpy without numba; numpy forward
  pass; no graph runtime).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from confkd.errors import ParamsError
from confkd.evaluation.metrics import probabilities
from confkd.timing import interleaved_rounds, ratio

log = logging.getLogger(__name__)

Backend = Callable[[list[str]], np.ndarray]
BACKENDS = ("torch", "onnx_fp32", "onnx_int8", "numpy_fp32")
# A timed block lasts at least this long: a backend faster than that is called back to back within the block
# and its time per call is the block's time / calls (timeit's way). A single 0.2 ms call is at the mercy of
# one interrupt; a block of 25 such calls is not. Backends slower than this are timed one call per block.
MIN_BLOCK_SECONDS = 0.005
MAX_CALLS_PER_BLOCK = 1000


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
    calls: dict[int, dict[tuple[str, str], int]] = field(default_factory=dict)  # calls per timed block
    min_block_seconds: float = MIN_BLOCK_SECONDS

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


def calls_per_block(backend: Backend, batch: list[str], min_seconds: float = MIN_BLOCK_SECONDS,
                    clock: Callable[[], float] = time.perf_counter, probes: int = 3) -> int:
    """Back-to-back calls of ``backend`` that make a timed block of at least ``min_seconds`` (from the fastest
    of ``probes`` single calls, after one untimed call); 1 for a backend that is slower than that on its own."""
    if min_seconds <= 0:
        return 1
    backend(batch)
    once = math.inf
    for _ in range(max(1, probes)):
        t0 = clock()
        backend(batch)
        once = min(once, clock() - t0)
    return int(min(MAX_CALLS_PER_BLOCK, max(1, math.ceil(round(min_seconds / max(once, 1e-9), 6)))))


def repeated(backend: Backend, calls: int) -> Backend:
    """``backend`` called ``calls`` times back to back on the same batch; returns the last result."""
    if calls == 1:
        return backend

    def run(texts: list[str]) -> np.ndarray:
        for _ in range(calls - 1):
            backend(texts)
        return backend(texts)

    return run


def measure_interleaved(backends: dict[tuple[str, str], Backend], texts: Sequence[str], batch_sizes: Sequence[int],
                        warmup: int | Mapping[int, int], rounds: int | Mapping[int, int], seed: int,
                        min_block_seconds: float = MIN_BLOCK_SECONDS,
                        clock: Callable[[], float] = time.perf_counter) -> SpeedRun:
    """Time every backend of every model interleaved, once per batch size, on one seeded batch of ``texts``.

    ``warmup`` and ``rounds``: one number for every batch size, or a mapping batch size -> number.

    Each round calls every backend on the same batch (order rotating; one untimed call right before each
    timed block, so a small model is not timed with caches a large one just evicted), so machine load lands in
    all of them alike and the per-round ratios hold still. A backend faster than ``min_block_seconds`` is
    timed over a block of back-to-back calls (:func:`calls_per_block`) and its seconds are per call.
    """
    run = SpeedRun(min_block_seconds=min_block_seconds)
    for batch_size in batch_sizes:
        batch = sample_batches(texts, int(batch_size), 1, seed)[0]
        calls = {key: calls_per_block(fn, batch, min_block_seconds, clock) for key, fn in backends.items()}
        n_warmup = warmup[batch_size] if isinstance(warmup, Mapping) else warmup
        n_rounds = rounds[batch_size] if isinstance(rounds, Mapping) else rounds
        log.info("timing %d backends interleaved at batch %d: %d warm-up + %d rounds (calls per timed block: %s)",
                 len(backends), batch_size, n_warmup, n_rounds,
                 ", ".join(f"{m}/{b} {n}" for (m, b), n in calls.items() if n > 1) or "1 each")
        blocks = interleaved_rounds({key: repeated(fn, calls[key]) for key, fn in backends.items()}, batch,
                                    rounds=n_rounds, warmup=n_warmup, clock=clock, untimed_before=1)
        run.seconds[int(batch_size)] = {key: seconds / calls[key] for key, seconds in blocks.items()}
        run.calls[int(batch_size)] = calls
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
