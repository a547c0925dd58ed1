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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Optional, get_args

from confkd.distill.loss_names import check_loss
from confkd.errors import ParamsError

if TYPE_CHECKING:  # the schema imports this module (SCHEMES); objects of its types arrive as arguments
    from confkd.config import LossTerm, MatchParams

log = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("uniform", "first", "last", "skip", "custom")
Feature = Literal["attention", "hidden", "embedding", "cls"]
FEATURES: tuple[str, ...] = get_args(Feature)

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


def build_matches(
    scheme: str,
    n_teacher: int,
    n_student: int,
    features: Mapping[str, LossTerm],
    custom: Optional[list[int]] = None,
    extra: Sequence[MatchParams | Match] = (),
) -> list[Match]:
    """Expand a mapping scheme and per-feature loss terms (the schema's objects, used as parsed) into a
    validated list of ``Match``.

    ``features`` maps a feature name to its :class:`~confkd.config.LossTerm` (loss name and weight); the
    width projection is on for every feature but attention. Order of the result: the ``embedding`` match
    (teacher 0 ↔ student 0) first, then for each student layer m = 1..M and its teacher layer
    ``layer_map(...)[m-1]``: ``attention``, ``hidden``, ``cls`` (those requested), then ``extra`` (explicit
    matches: :class:`~confkd.config.MatchParams` or ``Match``). Matches with weight 0 are kept (callers may
    skip them).
    """
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ParamsError(f"unknown distillation features {sorted(unknown)} (available: {', '.join(FEATURES)})")
    teacher_of = layer_map(scheme, n_teacher, n_student, custom)

    def match(t: int, s: int, feature: str) -> Match:
        term = features[feature]
        return Match(t, s, feature, term.loss, term.weight, feature != "attention")

    matches: list[Match] = [match(0, 0, "embedding")] if "embedding" in features else []
    for m, t in enumerate(teacher_of, start=1):
        matches.extend(match(t, m, feature) for feature in ("attention", "hidden", "cls") if feature in features)
    matches.extend(x if isinstance(x, Match) else Match(x.teacher_layer, x.student_layer, x.feature, x.loss, x.weight,
                                                        x.projection and x.feature != "attention") for x in extra)
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
            check_loss(mt.loss, mt.feature)
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
