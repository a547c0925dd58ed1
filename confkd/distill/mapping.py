"""Teacher-student layer mapping, declared as data.

Indexing (the same for teacher and student):

* transformer layers are numbered **1..N** (teacher) and **1..M** (student); layer **0** is the
  embedding layer (its output, before the first transformer block);
* HF ``output_hidden_states=True`` returns **N+1** tensors [B,L,D]: ``hidden_states[0]`` is the
  embedding output and ``hidden_states[l]`` the output of layer ``l``, so a hidden / embedding / cls
  match on layer ``l`` reads ``hidden_states[l]``;
* HF ``output_attentions=True`` returns **N** tensors [B,H,L,L]: ``attentions[l-1]`` belongs to
  layer ``l``, so an attention match on layer ``l`` (1-based, never 0) reads ``attentions[l-1]``.

``layer_map`` says which teacher layer each student layer learns from; ``build_matches`` turns a scheme
plus per-feature loss settings into a flat list of ``Match`` records (TextBrewer's
``intermediate_matches``), and ``validate_matches`` checks such a list against the two depths.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, get_args

from confkd.distill.losses import FEATURE_LOSSES, get_loss
from confkd.errors import ParamsError

log = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("uniform", "first", "last", "skip", "custom")
Feature = Literal["attention", "hidden", "embedding", "cls"]
FEATURES: tuple[str, ...] = get_args(Feature)
DEFAULT_LOSS: dict[str, str] = {
    "attention": "attention_mse",
    "hidden": "hidden_mse",
    "embedding": "embedding_mse",
    "cls": "cls_mse",
}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def layer_map(scheme: str, n_teacher: int, n_student: int, custom: Optional[list[int]] = None) -> list[int]:
    """Teacher layer (1..N) for each student layer m = 1..M, as a list of length M.

    * ``uniform``: ``ceil(m·N/M)`` (TinyBERT's ``m·N/M`` for any counts; the last student layer gets layer N);
    * ``first``: ``m`` (bottom layers); ``last``: ``N - M + m`` (top layers);
    * ``skip``: ``1 + (m-1)·s`` with ``s = max(1, (N-1)//(M-1))`` (``s = 1`` when M = 1), starting at layer 1;
    * ``custom``: the list ``custom`` itself (length M, values in 1..N; a non-monotonic list is logged as a warning).

    ``custom`` must be given for, and only for, the ``custom`` scheme. Raises ``ParamsError`` on bad input.
    """
    if scheme not in SCHEMES:
        raise ParamsError(f"unknown layer mapping scheme '{scheme}' (available: {', '.join(SCHEMES)})")
    if not _is_int(n_teacher) or n_teacher < 1:
        raise ParamsError(f"layer mapping '{scheme}': teacher layer count must be an integer >= 1, got {n_teacher!r}")
    if not _is_int(n_student) or n_student < 1:
        raise ParamsError(f"layer mapping '{scheme}': student layer count must be an integer >= 1, got {n_student!r}")
    n, m_count = n_teacher, n_student

    if scheme == "custom":
        if custom is None:
            raise ParamsError("layer mapping 'custom' needs a list of teacher layers, one per student layer")
        layers = list(custom)
        if len(layers) != m_count:
            raise ParamsError(
                f"layer mapping 'custom': got {len(layers)} teacher layers {layers} for a {m_count}-layer student "
                f"(need exactly {m_count})"
            )
        bad = [x for x in layers if not _is_int(x) or not 1 <= x <= n]
        if bad:
            raise ParamsError(
                f"layer mapping 'custom': teacher layers {bad} out of range 1..{n} "
                f"(layer 0 is the embedding layer; map it with the 'embedding' feature)"
            )
        if any(b < a for a, b in zip(layers, layers[1:])):
            log.warning("layer mapping 'custom' %s is not monotonic: a higher student layer learns from a lower teacher layer", layers)
        return layers

    if custom is not None:
        raise ParamsError(f"layer mapping '{scheme}' does not take a custom list (got {list(custom)}); use scheme 'custom'")
    if m_count > n:
        raise ParamsError(
            f"layer mapping '{scheme}': student has more layers ({m_count}) than the teacher ({n}); "
            "use scheme 'custom' to map several student layers to one teacher layer"
        )
    if scheme == "uniform":
        return [-(-(m * n) // m_count) for m in range(1, m_count + 1)]  # exact integer ceil(m·N/M)
    if scheme == "first":
        return list(range(1, m_count + 1))
    if scheme == "last":
        return [n - m_count + m for m in range(1, m_count + 1)]
    # skip
    step = max(1, (n - 1) // (m_count - 1)) if m_count > 1 else 1
    return [1 + (m - 1) * step for m in range(1, m_count + 1)]


@dataclass(frozen=True)
class Match:
    """One intermediate-layer distillation term: ``weight · loss(student feature, teacher feature)``.

    ``teacher_layer`` / ``student_layer`` use the indexing of the module docstring (0 = embeddings).
    ``projection``: learn a linear map from the student's width to the teacher's when they differ
    (hidden / embedding / cls only; ``build_matches`` sets it False for attention, where it is meaningless).
    """

    teacher_layer: int
    student_layer: int
    feature: Feature
    loss: str
    weight: float = 1.0
    projection: bool = True


_FEATURE_KEYS = {"loss", "weight", "projection"}
_EXTRA_REQUIRED = ("teacher_layer", "student_layer", "feature", "loss")
_EXTRA_KEYS = set(_EXTRA_REQUIRED) | {"weight", "projection"}


def _weight(where: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParamsError(f"{where}: weight must be a number, got {value!r}") from None


def _feature_settings(feature: str, cfg: Optional[dict]) -> tuple[str, float, bool]:
    if cfg is not None and not isinstance(cfg, dict):
        raise ParamsError(f"feature '{feature}': expected a mapping like {{'loss': ..., 'weight': ...}}, got {cfg!r}")
    cfg = dict(cfg or {})
    unknown = set(cfg) - _FEATURE_KEYS
    if unknown:
        raise ParamsError(f"feature '{feature}': unknown keys {sorted(unknown)} (allowed: {sorted(_FEATURE_KEYS)})")
    return (
        cfg.get("loss", DEFAULT_LOSS[feature]),
        _weight(f"feature '{feature}'", cfg.get("weight", 1.0)),
        bool(cfg.get("projection", feature != "attention")) and feature != "attention",
    )


def _extra_match(i: int, item: Any) -> Match:
    if isinstance(item, Match):
        return item
    if not isinstance(item, dict):
        raise ParamsError(f"extra match #{i}: expected a mapping, got {type(item).__name__}")
    missing = [k for k in _EXTRA_REQUIRED if k not in item]
    unknown = set(item) - _EXTRA_KEYS
    if missing or unknown:
        raise ParamsError(
            f"extra match #{i} {item}: "
            + (f"missing keys {missing}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unknown keys {sorted(unknown)}" if unknown else "")
        )
    feature = item["feature"]
    return Match(
        teacher_layer=item["teacher_layer"],
        student_layer=item["student_layer"],
        feature=feature,
        loss=item["loss"],
        weight=_weight(f"extra match #{i}", item.get("weight", 1.0)),
        projection=bool(item.get("projection", feature != "attention")) and feature != "attention",
    )


def build_matches(
    scheme: str,
    n_teacher: int,
    n_student: int,
    features: dict[str, Optional[dict]],
    custom: Optional[list[int]] = None,
    extra: Optional[list[dict]] = None,
) -> list[Match]:
    """Expand a mapping scheme and per-feature settings into a validated list of ``Match``.

    ``features`` maps a feature name to ``{"loss": ..., "weight": ..., "projection": ...}`` (all optional;
    defaults: the feature's ``DEFAULT_LOSS``, weight 1.0, projection True). Order of the result:
    the ``embedding`` match (teacher 0 ↔ student 0) first, then for each student layer m = 1..M and its
    teacher layer ``layer_map(...)[m-1]``: ``attention``, ``hidden``, ``cls`` (those requested), then
    ``extra`` (dicts with teacher_layer, student_layer, feature, loss[, weight, projection], or ``Match``).
    Matches with weight 0 are kept (callers may skip them).
    """
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ParamsError(f"unknown distillation features {sorted(unknown)} (available: {', '.join(FEATURES)})")
    teacher_of = layer_map(scheme, n_teacher, n_student, custom)
    settings = {f: _feature_settings(f, features[f]) for f in FEATURES if f in features}

    matches: list[Match] = []
    if "embedding" in settings:
        loss, weight, proj = settings["embedding"]
        matches.append(Match(0, 0, "embedding", loss, weight, proj))
    for m, t in enumerate(teacher_of, start=1):
        for feature in ("attention", "hidden", "cls"):
            if feature in settings:
                loss, weight, proj = settings[feature]
                matches.append(Match(t, m, feature, loss, weight, proj))
    matches.extend(_extra_match(i, item) for i, item in enumerate(extra or []))
    validate_matches(matches, n_teacher, n_student)
    return matches


def validate_matches(matches: list[Match], n_teacher: int, n_student: int) -> None:
    """Raise ``ParamsError`` if a match names a missing layer, an unknown or unfitting loss, or a negative weight.

    Layer ranges: attention 1..N / 1..M; hidden and cls 0..N / 0..M; embedding exactly 0 / 0.
    Duplicate matches are allowed but logged as a warning.
    """
    seen: set[Match] = set()
    for i, mt in enumerate(matches):
        where = f"match #{i} ({mt.feature}, teacher layer {mt.teacher_layer}, student layer {mt.student_layer})"
        if mt.feature not in FEATURES:
            raise ParamsError(f"{where}: unknown feature '{mt.feature}' (available: {', '.join(FEATURES)})")
        if not _is_int(mt.teacher_layer) or not _is_int(mt.student_layer):
            raise ParamsError(f"{where}: layer numbers must be integers")
        if mt.feature == "embedding":
            if (mt.teacher_layer, mt.student_layer) != (0, 0):
                raise ParamsError(f"{where}: an embedding match must use layer 0 on both sides (use 'hidden' for other layers)")
        else:
            lo = 1 if mt.feature == "attention" else 0
            why = " (layer 0 is the embedding layer and has no attention)" if mt.feature == "attention" else ""
            if not lo <= mt.teacher_layer <= n_teacher:
                raise ParamsError(f"{where}: teacher has no layer {mt.teacher_layer}; valid {lo}..{n_teacher}{why}")
            if not lo <= mt.student_layer <= n_student:
                raise ParamsError(f"{where}: student has no layer {mt.student_layer}; valid {lo}..{n_student}{why}")
        try:
            get_loss(mt.loss, mt.feature)
        except ParamsError as exc:
            raise ParamsError(f"{where}: {exc}") from None
        try:
            w = float(mt.weight)
        except (TypeError, ValueError):
            w = float("nan")
        if isinstance(mt.weight, bool) or not math.isfinite(w) or w < 0:
            raise ParamsError(f"{where}: weight must be a finite number >= 0, got {mt.weight!r}")
        if mt in seen:
            log.warning("%s is listed more than once; its loss will count several times", where)
        seen.add(mt)
