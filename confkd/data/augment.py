"""Text augmentation for transfer sets (Tang et al. 2019, "Distilling Task-Specific Knowledge from
BERT into Simple Neural Networks"; also used by TinyBERT).

Each new example is derived from a source text: every word is, with probability ``p_mask``, replaced
by the mask token, else with probability ``p_substitute`` replaced by a word drawn from the corpus'
unigram distribution; then, with probability ``p_ngram``, only a random n-gram (n in 1..``ngram_max``)
of the result is kept. The teacher labels the new texts, so the student sees many more points of the
teacher's function than the labelled set alone offers -- the lever of Sparse Distillation.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from confkd.data.leakage import LeakIndex
from confkd.data.text import normalize_text


def target_size(cap: int, per_example: float, n_source: int) -> int:
    """How many augmented examples to generate: ``per_example`` per source text, at most ``cap``.

    The size follows the data (3 per text: ~50k for a 10k-example task with 6k unlabeled lines) while the
    cap bounds the labelling time on large data (150k for SST-2's 58.6k source texts)."""
    if cap < 0 or per_example <= 0 or n_source < 0:
        raise ValueError(f"cap >= 0, per_example > 0 and n_source >= 0 needed, got {cap}, {per_example}, {n_source}")
    return min(cap, int(round(per_example * n_source)))


def augment_texts(
    texts: list[str],
    size: int,
    seed: int,
    *,
    p_mask: float = 0.1,
    p_substitute: float = 0.1,
    p_ngram: float = 0.25,
    ngram_max: int = 5,
    min_words: int = 3,
    mask_token: str = "[MASK]",
    exclude: set[str] | None = None,
    leak_index: LeakIndex | None = None,
    max_tries_factor: int = 20,
) -> tuple[list[str], list[int], dict]:
    """Up to ``size`` new, distinct texts and the index of the source text of each.

    ``exclude`` holds normalised texts that must not be produced (the existing transfer set);
    ``leak_index`` rejects texts that would leak evaluation examples. Deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    words = [t.split() for t in texts]
    sources = np.array([i for i, w in enumerate(words) if len(w) >= min_words])
    stats = {"sources": int(len(sources)), "duplicates": 0, "leaks": 0, "attempts": 0}
    if size <= 0 or len(sources) == 0:
        return [], [], stats
    counts = Counter(w for ws in (words[i] for i in sources) for w in ws)
    vocab = np.array(list(counts))
    cdf = np.cumsum(np.array([counts[w] for w in vocab], dtype=np.float64))
    cdf /= cdf[-1]
    seen = set(exclude or ())
    out, origin = [], []
    max_tries = size * max_tries_factor
    order = rng.permutation(sources)
    pos = 0
    while len(out) < size and stats["attempts"] < max_tries:
        if pos == len(order):
            order, pos = rng.permutation(sources), 0
        src = int(order[pos])
        pos += 1
        stats["attempts"] += 1
        ws = list(words[src])
        u = rng.random(len(ws))
        subs = vocab[np.minimum(np.searchsorted(cdf, rng.random(len(ws))), len(vocab) - 1)]
        ws = [mask_token if r < p_mask else (str(s) if r < p_mask + p_substitute else w) for w, r, s in zip(ws, u, subs)]
        if rng.random() < p_ngram and len(ws) > 1:
            n = int(rng.integers(1, min(ngram_max, len(ws)) + 1))
            start = int(rng.integers(0, len(ws) - n + 1))
            ws = ws[start:start + n]
        text = " ".join(ws)
        norm = normalize_text(text)
        if not norm or norm in seen:
            stats["duplicates"] += 1
            continue
        if leak_index is not None and leak_index.reason(text) is not None:
            stats["leaks"] += 1
            continue
        seen.add(norm)
        out.append(text)
        origin.append(src)
    return out, origin, stats
