"""Is a change between two runs of the same model more than noise? Paired tests on per-example predictions,
and an unpaired fallback on the recorded intervals.

Inputs are per-example arrays over the SAME examples in the same order (paired) or summary numbers
(unpaired). Every test returns a :class:`Change`: the two values, the difference, a p-value or a 95% interval
of the difference, and ``real`` (the difference is outside noise at the 5% level).

* accuracy, agreement (0/1 per example): McNemar's exact test, a two-sided binomial test on the discordant
  pairs (McNemar 1947; Edwards' exact form);
* sigma, ECE: a paired percentile bootstrap of the difference (examples resampled jointly for both runs);
  the change is real when the 95% interval excludes 0;
* unpaired fallback: z-test of the difference with standard errors from each run's own 95% interval
  (``(high - low) / (2 * 1.96)``) or, for a proportion, ``sqrt(p (1 - p) / n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from confkd.errors import DataError
from confkd.evaluation.bootstrap import bootstrap_indices

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Change:
    base: float
    head: float
    real: bool
    method: str  # "mcnemar" | "paired bootstrap" | "unpaired"
    p_value: float = math.nan
    low: float = math.nan  # 95% interval of head - base (bootstrap / unpaired)
    high: float = math.nan

    @property
    def delta(self) -> float:
        return self.head - self.base


def mcnemar(base_hits: np.ndarray, head_hits: np.ndarray, alpha: float = 0.05) -> Change:
    """McNemar's exact test on paired 0/1 outcomes ``[N]`` (e.g. correct / not). Only discordant pairs count:
    b = base right and head wrong, c = base wrong and head right; p = two-sided binomial test of c ~ Bin(b + c, 1/2)
    (p = 1 when b + c = 0)."""
    a, h = _pair(base_hits, head_hits)
    a, h = a.astype(bool), h.astype(bool)
    b, c = int(np.sum(a & ~h)), int(np.sum(~a & h))
    p = 1.0 if b + c == 0 else float(stats.binomtest(c, b + c, 0.5).pvalue)
    return Change(float(a.mean()), float(h.mean()), p < alpha, "mcnemar", p_value=p)


def paired_bootstrap(statistic: Callable[[np.ndarray], float], n: int, n_resamples: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> Change:
    """Paired bootstrap of ``statistic(idx) -> (base_value, head_value)`` over ``n`` examples: the 95% percentile
    interval of ``head - base`` over resampled index sets; real when it excludes 0."""
    base, head = statistic(np.arange(n))
    diffs = []
    for idx in bootstrap_indices(n, n_resamples, seed):
        b, h = statistic(idx)
        if math.isfinite(b) and math.isfinite(h):
            diffs.append(h - b)
    if not diffs:
        return Change(base, head, False, "paired bootstrap")
    low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Change(float(base), float(head), bool(low > 0 or high < 0), "paired bootstrap", low=float(low),
                  high=float(high))


def unpaired(base: float, head: float, base_se: float, head_se: float) -> Change:
    """z-test of ``head - base`` with independent standard errors; the 95% interval is ``delta +- 1.96 se``."""
    se = math.sqrt(base_se ** 2 + head_se ** 2)
    delta = head - base
    if se == 0:
        return Change(base, head, delta != 0, "unpaired", p_value=0.0 if delta else 1.0, low=delta, high=delta)
    p = float(2 * stats.norm.sf(abs(delta) / se))
    return Change(base, head, p < 0.05, "unpaired", p_value=p, low=delta - Z95 * se, high=delta + Z95 * se)


def se_from_interval(low: float | None, high: float | None) -> float:
    """Standard error implied by a 95% interval (``(high - low) / 3.92``); NaN when either end is missing."""
    if low is None or high is None:
        return math.nan
    return (high - low) / (2 * Z95)


def se_of_proportion(p: float, n: float) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise DataError(f"paired comparison needs two non-empty 1-D arrays of one length, got {a.shape} and {b.shape}")
    return a, b
