"""The loss names, their kinds and the features each intermediate loss fits: the declaration that params are
checked against at parse time, without importing torch. ``losses.py`` implements each name; registering a loss
that is not declared here (or with another kind) fails at import, and a test checks that every declared name is
implemented, so the two cannot drift.

Adding a loss: declare it in ``LOSS_KINDS`` (and in ``FEATURE_LOSSES`` if it is an intermediate loss), then write
it in ``losses.py`` under ``@register_loss``.
"""

from __future__ import annotations

from typing import Optional

from confkd.errors import ParamsError

KINDS: tuple[str, ...] = ("prediction", "hard", "intermediate")

LOSS_KINDS: dict[str, str] = {
    "kl": "prediction",
    "soft_ce": "prediction",
    "mse_logits": "prediction",
    "hard_ce": "hard",
    "attention_mse": "intermediate",
    "attention_kl": "intermediate",
    "hidden_mse": "intermediate",
    "hidden_cosine": "intermediate",
    "embedding_mse": "intermediate",
    "cls_mse": "intermediate",
    "cls_cosine": "intermediate",
}

FEATURE_LOSSES: dict[str, frozenset[str]] = {
    "attention": frozenset({"attention_mse", "attention_kl"}),
    "hidden": frozenset({"hidden_mse", "hidden_cosine"}),
    "embedding": frozenset({"embedding_mse", "hidden_mse", "hidden_cosine"}),
    "cls": frozenset({"cls_mse", "cls_cosine"}),
}


def check_loss(name: str, kind: Optional[str] = None) -> None:
    """Raise ``ParamsError`` unless ``name`` is a declared loss that fits ``kind``.

    ``kind`` (optional) is what the caller will use it for: a loss kind (``"prediction"``, ``"hard"``,
    ``"intermediate"``) or a feature of ``FEATURE_LOSSES`` (``"attention"``, ``"hidden"``, ``"embedding"``,
    ``"cls"``).
    """
    declared = LOSS_KINDS.get(name) if isinstance(name, str) else None
    if declared is None:
        raise ParamsError(f"unknown loss '{name}' (available: {', '.join(sorted(LOSS_KINDS))})")
    if kind is None:
        return
    if kind in KINDS:
        if declared != kind:
            fitting = sorted(n for n, k in LOSS_KINDS.items() if k == kind)
            raise ParamsError(f"loss '{name}' is a {declared} loss, not a {kind} loss (use one of: {', '.join(fitting)})")
        return
    if kind in FEATURE_LOSSES:
        allowed = FEATURE_LOSSES[kind]
        if name not in allowed:
            raise ParamsError(
                f"loss '{name}' ({declared}) cannot be used for feature '{kind}' (allowed: {', '.join(sorted(allowed))})"
            )
        return
    raise ParamsError(f"unknown loss kind or feature '{kind}' (expected one of: {', '.join(KINDS + tuple(FEATURE_LOSSES))})")
