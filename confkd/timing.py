"""Speed-ups that hold still: predictors timed interleaved in one process, the ratio taken per round.

Timing the teacher and then a student lets machine load between the two land in their ratio. Here every
round calls each predictor once on the same batch, in a rotating order, so a slow moment hits all of them;
the speed-up of a model is the per-round ratio ``t_reference / t_model``, summarised by its median and its
spread over rounds.

    results = time_interleaved({"teacher": teacher_fn, "dan": dan_fn}, texts, batch_size=32, rounds=30,
                               reference="teacher")
    results["dan"].speedup, results["dan"].speedup_spread
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from confkd.errors import ParamsError

Predict = Callable[[list], Any]


@dataclass(frozen=True)
class Timing:
    """One predictor at one batch size. Seconds are per call (one batch)."""

    median_s: float
    p90_s: float
    speedup: float  # median over rounds of t_reference / t_self (1.0 for the reference)
    speedup_spread: float  # (p90 - p10) / median of the per-round ratios: relative spread
    batch_size: int

    @property
    def samples_per_second(self) -> float:
        return self.batch_size / self.median_s


def check_settings(batch_size: int, rounds: int, warmup: int) -> None:
    if batch_size < 1 or rounds < 1 or warmup < 0:
        raise ParamsError(f"batch_size and rounds must be >= 1 and warmup >= 0 (got {batch_size}, {rounds}, {warmup})")


def interleaved_rounds(predictors: dict[str, Predict], batch: list, rounds: int = 30, warmup: int = 3,
                       clock: Callable[[], float] = time.perf_counter, untimed_before: int = 0) -> dict[str, np.ndarray]:
    """Seconds per call, ``{name: [rounds]}``: ``warmup`` untimed rounds, then ``rounds`` rounds in which
    every predictor is called once on ``batch`` (timed), the order rotating by one each round.

    ``untimed_before`` untimed calls of the same predictor come right before its timed one in every round, so
    a small model is timed with its own data in cache rather than with what a large one just evicted (what it
    would see serving alone); machine load still lands in every predictor of the round.

    The garbage collector is paused while timing, so a collection triggered by one predictor's
    allocations does not land in another's figures.
    """
    if not predictors:
        raise ParamsError("interleaved timing needs at least one predictor")
    if not batch:
        raise ParamsError("interleaved timing needs at least one input")
    check_settings(len(batch), rounds, warmup)
    if untimed_before < 0:
        raise ParamsError(f"untimed_before must be >= 0, got {untimed_before}")
    names = list(predictors)
    for _ in range(warmup):
        for name in names:
            predictors[name](batch)
    seconds = {name: np.empty(rounds) for name in names}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                for _ in range(untimed_before):
                    predictors[name](batch)
                t0 = clock()
                predictors[name](batch)
                seconds[name][r] = clock() - t0
    finally:
        if was_enabled:
            gc.enable()
    return seconds


def ratio(reference: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """``(median, relative spread)`` of the per-round ratio ``reference / seconds`` (a speed-up).

    Spread = (p90 - p10) / median of the per-round ratios.
    """
    per_round = np.asarray(reference, dtype=float) / np.maximum(np.asarray(seconds, dtype=float), 1e-12)
    med = float(np.median(per_round))
    p10, p90 = np.percentile(per_round, [10, 90])
    return med, (float((p90 - p10) / med) if med > 0 else float("nan"))


def time_interleaved(predictors: dict[str, Predict], items: Sequence, batch_size: int, rounds: int = 30,
                     warmup: int = 3, reference: str | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """:func:`interleaved_rounds` on one batch (the first ``batch_size`` of ``items``, cycled if fewer),
    summarised per predictor; ``reference`` (default: the first predictor) is what speed-ups are relative to."""
    if not predictors:
        raise ParamsError("time_interleaved needs at least one predictor")
    check_settings(batch_size, rounds, warmup)
    if not items:
        raise ParamsError("time_interleaved needs at least one input")
    names = list(predictors)
    reference = reference or names[0]
    if reference not in predictors:
        raise ParamsError(f"reference '{reference}' is not one of the predictors {names}")
    batch = [items[i % len(items)] for i in range(batch_size)]
    seconds = interleaved_rounds(predictors, batch, rounds, warmup, clock)
    out = {}
    for name in names:
        med, spread = ratio(seconds[reference], seconds[name])
        out[name] = Timing(median_s=float(np.median(seconds[name])), p90_s=float(np.percentile(seconds[name], 90)),
                           speedup=med, speedup_spread=spread, batch_size=batch_size)
    return out
