"""Dev split grouped by parent sentence.

SST-2's training set consists of phrases cut from ~6.9k sentences. A random dev split puts
phrases of the same sentence on both sides, so dev accuracy reads 92-93% while test reads lower
and checkpoint selection on dev is weak. We group every text with the longest text that contains
it (its "root") and split by group.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from confkd.data.text import word_tokens


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return n == 0
    first = needle[0]
    for i in range(len(haystack) - n + 1):
        if haystack[i] == first and haystack[i : i + n] == needle:
            return True
    return False


def parent_groups(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Assign each text to the group of the longest text (word-level) that contains it.

    Returns ``(group, is_root)``: ``group[i]`` is the index of the root text of text ``i``;
    ``is_root[i]`` is True when no longer text contains text ``i``. Texts are processed longest
    first; candidates are the roots that contain the text's rarest word, so the cost stays near
    linear for phrase datasets.
    """
    toks = [word_tokens(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-len(toks[i]), i))
    group = np.arange(len(texts))
    is_root = np.zeros(len(texts), dtype=bool)
    roots_by_word: dict[str, list[int]] = defaultdict(list)
    exact_root: dict[tuple[str, ...], int] = {}
    for i in order:
        t = toks[i]
        if t in exact_root:
            group[i] = exact_root[t]
            continue
        found = -1
        if t:
            rarest = min(set(t), key=lambda w: len(roots_by_word.get(w, ())))
            for r in roots_by_word.get(rarest, ()):
                if _contains(toks[r], t):
                    found = r
                    break
        if found >= 0:
            group[i] = group[found]
        else:
            is_root[i] = True
            exact_root[t] = i
            for w in set(t):
                roots_by_word[w].append(i)
    return group, is_root


def grouped_dev_split(
    df: pd.DataFrame,
    dev_fraction: float,
    seed: int,
    group_by_parent: bool = True,
    keep: str = "roots",
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Split ``df`` into train/dev by whole groups (seeded).

    ``keep='roots'`` keeps only the root sentence of each dev group (closest to full-sentence test
    data); the other phrases of dev groups are dropped from both sides so nothing leaks.
    """
    texts = df["text"].tolist()
    if group_by_parent:
        group, is_root = parent_groups(texts)
    else:
        group, is_root = np.arange(len(texts)), np.ones(len(texts), dtype=bool)
    unique_groups = np.unique(group)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(unique_groups)
    # Size dev by examples rather than groups, so huge groups do not skew the fraction.
    sizes = pd.Series(group).value_counts()
    target = dev_fraction * len(df)
    dev_groups, total = [], 0
    for g in shuffled:
        if total >= target:
            break
        dev_groups.append(g)
        total += int(sizes[g])
    in_dev_group = np.isin(group, np.array(dev_groups))
    dev_mask = in_dev_group & (is_root if keep == "roots" else True)
    train_df = df[~in_dev_group].copy()
    dev_df = df[dev_mask].copy()
    train_df["group"] = group[~in_dev_group]
    dev_df["group"] = group[dev_mask]
    info = {
        "groups": int(len(unique_groups)),
        "dev_groups": int(len(dev_groups)),
        "dev_examples": int(dev_mask.sum()),
        "dropped_dev_group_non_roots": int((in_dev_group & ~dev_mask).sum()),
    }
    return train_df.reset_index(drop=True), dev_df.reset_index(drop=True), info


def sample_index(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of ``min(size, n)`` rows out of ``n`` (all rows when ``size >= n``).

    The same ``(n, size, seed)`` always gives the same rows, so every model is measured on the same sample.
    """
    if n < 0 or size < 1:
        raise ValueError(f"sample_index needs n >= 0 and size >= 1, got n={n}, size={size}")
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])
