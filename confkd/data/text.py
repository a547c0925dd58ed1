"""Text normalisation shared by de-duplication, leakage checks and validation."""

from __future__ import annotations

import re

_NON_ALNUM = re.compile(r"[\W_]+", flags=re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower-case and collapse every run of non-alphanumerics to one space.

    SST-2 is tokenised ("it 's") while raw review text is not ("it's"); both normalise to "it s",
    so duplicates and leaks are found across differently pre-processed sources.
    """
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def word_tokens(text: str) -> tuple[str, ...]:
    """Normalised word tokens, as a tuple (hashable, for n-gram sets)."""
    norm = normalize_text(text)
    return tuple(norm.split()) if norm else ()
