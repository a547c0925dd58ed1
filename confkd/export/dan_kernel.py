"""The DAN's n-gram bags, compiled with numba: one pass over a batch's token ids, no temporaries.

:class:`confkd.export.dan_runtime.NgramTable` finds a batch's n-grams with numpy (a few whole-array
operations per n-gram order, then a gather and a segmented sum). At serving sizes those calls are
dominated by their own overhead and by the temporaries they allocate. Here the same walk is one
compiled loop per text: for each position, the unigram's row, then one token at a time while the
longer n-gram is in the vocabulary (a prefix-closed vocabulary makes this the complete bag), adding
each row's embedding to a float64 accumulator.

The vocabulary's n-grams of order >= 2 live in one open-addressing hash table keyed
``parent_row * width + token_id`` (as in ``NgramTable``), stored as ``[size, 2]`` int64 (key, row)
pairs so that a probe touches one cache line; ``size`` is a power of two at most half full, and an
empty slot holds key -1 (keys are non-negative).

Numba is imported by this module only; :mod:`confkd.export.dan_runtime` falls back to numpy when it
is missing. Compiled functions are cached on disk (``cache=True``), so only the first process after a
change pays the compilation (a few seconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: multiply, keep high bits
_SHIFT = np.uint64(32)


@njit(cache=True, inline="always")
def _slot(key: int, mask: int) -> int:
    return np.int64((np.uint64(key) * _GOLDEN >> _SHIFT) & np.uint64(mask))


@njit(cache=True)
def build_hash(keys: np.ndarray, rows: np.ndarray, bits: int) -> np.ndarray:
    """``[2**bits, 2]`` int64 (key, row) slots holding every ``keys[i] -> rows[i]`` (keys distinct, >= 0)."""
    size = 1 << bits
    mask = size - 1
    table = np.full((size, 2), -1, dtype=np.int64)
    for i in range(keys.size):
        s = _slot(keys[i], mask)
        while table[s, 0] != -1:
            s = (s + 1) & mask
        table[s, 0] = keys[i]
        table[s, 1] = rows[i]
    return table


@njit(cache=True, inline="always")
def _find(table: np.ndarray, key: int, mask: int) -> int:
    s = _slot(key, mask)
    while True:
        k = table[s, 0]
        if k == key:
            return table[s, 1]
        if k == -1:
            return -1
        s = (s + 1) & mask


@njit(cache=True, nogil=True)
def bag_means(ids: np.ndarray, lengths: np.ndarray, unigram: np.ndarray, width: int, table: np.ndarray,
              max_n: int, embedding: np.ndarray, binary: bool) -> np.ndarray:
    """``[len(lengths), d]`` float32: each text's mean n-gram embedding (zeros for an empty bag).

    ``ids`` [N] int64: the batch's token ids, text after text (``lengths`` [B] of them each);
    ``unigram`` [n_tokens + 1]: token id -> embedding row of the unigram, -1 when it has none;
    ``table``: :func:`build_hash` of the longer n-grams; ``embedding`` [V, d] float32. With ``binary``
    a row counts once per text. Equal to ``EmbeddingBag(mode="mean")`` over
    ``NgramFeaturizer.transform``'s bags up to float rounding (the sum is taken in float64).
    """
    n_texts = lengths.size
    dim = embedding.shape[1]
    mask = table.shape[0] - 1
    out = np.zeros((n_texts, dim), dtype=np.float32)
    acc = np.zeros(dim, dtype=np.float64)
    seen = np.zeros(embedding.shape[0] if binary else 1, dtype=np.bool_)
    picked = np.empty(ids.size * max_n if binary else 1, dtype=np.int64)
    start = 0
    for i in range(n_texts):
        end = start + lengths[i]
        count = 0
        n_picked = 0
        acc[:] = 0.0
        for k in range(start, end):
            row = unigram[ids[k]]
            nxt = k + 1
            last = min(k + max_n, end)
            while row >= 0:
                take = True
                if binary:  # a row counts once per text: remember it, to reset after the text
                    take = not seen[row]
                    if take:
                        seen[row] = True
                        picked[n_picked] = row
                        n_picked += 1
                if take:
                    count += 1
                    for c in range(dim):
                        acc[c] += embedding[row, c]
                if nxt >= last:
                    break
                row = _find(table, row * width + ids[nxt], mask)
                nxt += 1
        for p in range(n_picked):
            seen[picked[p]] = False
        if count:
            for c in range(dim):
                out[i, c] = acc[c] / count
        start = end
    return out
