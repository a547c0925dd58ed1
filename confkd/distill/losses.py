"""Distillation losses as small pure functions, looked up by name (like TextBrewer's ``losses.py``).

Three kinds, each with one call signature:

* ``"prediction"``: ``fn(student_logits [B,K], teacher_logits [B,K], temperature=1.0) -> scalar``
  (soft targets from the teacher's output layer);
* ``"hard"``: ``fn(student_logits [B,K], labels [B] long) -> scalar`` (gold labels; ``-1`` = unlabeled row);
* ``"intermediate"``: ``fn(student, teacher, mask [B,L]) -> scalar`` (attention maps or hidden states;
  ``mask`` is 1 for a real token, 0 for padding; ``None`` means every position is real).

Conventions shared by every function here:

* the result is a 0-dim **float32** tensor; float16 / bfloat16 inputs are upcast to float32 first;
* reductions are means (never sums), so a loss does not grow with batch size or sequence length:
  see each docstring for exactly what is averaged over;
* intermediate losses compare tensors of equal width: a student narrower than its teacher needs a
  projection applied by the caller first (see ``mapping.Match.projection``);
* when nothing is left to average over (all rows unlabeled, an all-padding mask) the result is a zero
  that is still connected to the student's graph, so ``backward()`` works and yields zero gradients.

Names, kinds and which intermediate losses fit which feature (``FEATURE_LOSSES``) are declared in
``loss_names.py``, which params are checked against without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F

from confkd.distill.loss_names import FEATURE_LOSSES, KINDS, LOSS_KINDS, check_loss  # noqa: F401 (re-exported)
from confkd.errors import ParamsError

LossKind = Literal["prediction", "hard", "intermediate"]

_EPS = 1e-12  # clamp for log() of attention probabilities


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its name, its function and the kind (call signature) it has."""

    name: str
    fn: Callable[..., torch.Tensor]
    kind: str


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, kind: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` under ``name`` with ``kind`` in ``LOSSES``; returns ``fn`` unchanged."""
    if kind not in KINDS:
        raise ValueError(f"loss kind must be one of {KINDS}, got '{kind}'")

    def deco(fn: Callable) -> Callable:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is already registered")
        if LOSS_KINDS.get(name) != kind:
            raise ValueError(f"loss '{name}' ({kind}) is not declared as such in confkd/distill/loss_names.py")
        LOSSES[name] = LossSpec(name, fn, kind)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# helpers


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype != torch.float32 else x


def _mask_f32(mask: Optional[torch.Tensor], batch: int, length: int, device) -> torch.Tensor:
    """Mask as float32 [B,L] (1 = real token). ``None`` = all positions real."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.float32, device=device)
    if mask.shape != (batch, length):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected [B,L] = {[batch, length]}")
    return mask.to(device=device, dtype=torch.float32)


def _same_shape(s: torch.Tensor, t: torch.Tensor, what: str) -> None:
    if s.shape != t.shape:
        raise ParamsError(
            f"{what}: student shape {tuple(s.shape)} != teacher shape {tuple(t.shape)}; "
            "hidden widths must match (enable the match's projection when student and teacher widths differ)"
        )


def _align_heads(s: torch.Tensor, t: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention maps [B,H,L,L]. When head counts differ both are replaced by their head average [B,1,L,L]."""
    if s.dim() != 4 or t.dim() != 4:
        raise ValueError(f"{what}: attention maps must be [B,H,L,L], got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
    if s.shape != t.shape:
        raise ValueError(f"{what}: student {tuple(s.shape)} and teacher {tuple(t.shape)} attention maps differ in B or L")
    return s, t


# ---------------------------------------------------------------------------------------------
# prediction layer


@register_loss("kl", "prediction")
def kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton KD loss ``τ² · KL(p_T^τ || p_S^τ)``, ``batchmean`` (sum over K, mean over B).

    ``student_logits``, ``teacher_logits``: [B,K]; ``p^τ = softmax(logits / τ)``. The teacher is the target
    distribution. Multiplying by ``τ²`` keeps gradient magnitudes comparable across temperatures.
    """
    tau = float(temperature)
    log_ps = F.log_softmax(_f32(student_logits) / tau, dim=-1)
    log_pt = F.log_softmax(_f32(teacher_logits) / tau, dim=-1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * tau**2


@register_loss("soft_ce", "prediction")
def soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy ``τ² · mean_b( -Σ_k p_T^τ log p_S^τ )``.

    ``student_logits``, ``teacher_logits``: [B,K]. Equals ``kl`` plus ``τ²`` times the teacher's (softened)
    entropy, a constant w.r.t. the student: same gradients as ``kl``, different value.
    """
    tau = float(temperature)
    log_ps = F.log_softmax(_f32(student_logits) / tau, dim=-1)
    pt = F.softmax(_f32(teacher_logits) / tau, dim=-1)
    return -(pt * log_ps).sum(dim=-1).mean() * tau**2


@register_loss("mse_logits", "prediction")
def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean squared error between raw logits [B,K], mean over B and K. ``temperature`` is ignored."""
    return F.mse_loss(_f32(student_logits), _f32(teacher_logits), reduction="mean")


# ---------------------------------------------------------------------------------------------
# gold labels


@register_loss("hard_ce", "hard")
def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with gold labels, mean over the labelled rows.

    ``student_logits``: [B,K]; ``labels``: [B] long, ``-1`` = unlabeled (transfer-set) row, ignored.
    If every row is ``-1`` the result is ``0`` (still attached to ``student_logits``'s graph).
    """
    logits = _f32(student_logits)
    labels = labels.to(device=logits.device, dtype=torch.long)
    if not bool((labels != -1).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=-1, reduction="mean")


# ---------------------------------------------------------------------------------------------
# intermediate layers: attention maps


@register_loss("attention_mse", "intermediate")
def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE between attention maps [B,H,L,L] over real (query, key) pairs.

    Only entries whose query AND key are real tokens count; the result is the mean over those entries and
    the heads (``Σ err² / (n_real_pairs · H)``). If student and teacher head counts differ, the
    head-averaged maps [B,1,L,L] are compared instead. ``mask``: [B,L], 1 = real token.
    """
    s, t = _align_heads(_f32(student), _f32(teacher), "attention_mse")
    b, h, length, _ = s.shape
    m = _mask_f32(mask, b, length, s.device)
    pair = m[:, None, :, None] * m[:, None, None, :]  # [B,1,L,L]
    err = (s - t).pow(2) * pair
    denom = (pair.sum() * h).clamp_min(1.0)
    return err.sum() / denom


@register_loss("attention_kl", "intermediate")
def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Row-wise ``KL(t_row || s_row)`` of attention distributions [B,H,L,L] (Aguilar et al. 2020).

    Each (head, query) row is a distribution over keys; the KL sums over the real keys only (padded keys
    carry ~0 probability in HF attention outputs, and whatever they hold is ignored), with probabilities
    clamped at 1e-12 inside the logs. The result is the mean over real query rows and heads. If head
    counts differ, the head-averaged maps are compared. ``mask``: [B,L], 1 = real token.
    """
    s, t = _align_heads(_f32(student), _f32(teacher), "attention_kl")
    b, h, length, _ = s.shape
    m = _mask_f32(mask, b, length, s.device)
    key = m[:, None, None, :]  # [B,1,1,L]
    query = m[:, None, :]  # [B,1,L]
    terms = t * (t.clamp_min(_EPS).log() - s.clamp_min(_EPS).log()) * key
    row_kl = terms.sum(dim=-1)  # [B,H,L]
    denom = (query.sum() * h).clamp_min(1.0)
    return (row_kl * query).sum() / denom


# ---------------------------------------------------------------------------------------------
# intermediate layers: hidden states


def _token_states(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor],
                  what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher hidden states [B,L,D] in fp32 (same shape, else ``what`` is named) and the token
    mask [B,L] in fp32 (all ones without ``mask``)."""
    s, t = _f32(student), _f32(teacher)
    _same_shape(s, t, what)
    return s, t, _mask_f32(mask, s.shape[0], s.shape[1], s.device)


@register_loss("hidden_mse", "intermediate")
def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE between hidden states [B,L,D], mean over real tokens and the D dims. ``mask``: [B,L]."""
    s, t, m = _token_states(student, teacher, mask, "hidden_mse")
    d = s.shape[-1]
    err = (s - t).pow(2).sum(dim=-1) * m  # [B,L]
    return err.sum() / (m.sum() * d).clamp_min(1.0)


@register_loss("hidden_cosine", "intermediate")
def hidden_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over real tokens of ``1 - cos(s_tok, t_tok)``; hidden states [B,L,D], ``mask`` [B,L]. Range [0, 2]."""
    s, t, m = _token_states(student, teacher, mask, "hidden_cosine")
    dist = (1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)) * m  # [B,L]
    return dist.sum() / m.sum().clamp_min(1.0)


@register_loss("embedding_mse", "intermediate")
def embedding_mse(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``hidden_mse`` applied to the embedding output (``hidden_states[0]``), [B,L,D]."""
    return hidden_mse(student, teacher, mask)


@register_loss("cls_mse", "intermediate")
def cls_mse(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE between the position-0 ([CLS]) vectors of hidden states [B,L,D], mean over B and D. ``mask`` unused."""
    s, t = _f32(student), _f32(teacher)
    _same_shape(s, t, "cls_mse")
    return F.mse_loss(s[:, 0], t[:, 0], reduction="mean")


@register_loss("cls_cosine", "intermediate")
def cls_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over B of ``1 - cos`` between position-0 ([CLS]) vectors of hidden states [B,L,D]. ``mask`` unused."""
    s, t = _f32(student), _f32(teacher)
    _same_shape(s, t, "cls_cosine")
    return (1.0 - F.cosine_similarity(s[:, 0], t[:, 0], dim=-1, eps=1e-8)).mean()


# ---------------------------------------------------------------------------------------------
# lookup

def get_loss(name: str, kind: Optional[str] = None) -> Callable[..., torch.Tensor]:
    """Return the loss function registered as ``name``.

    ``kind`` (optional) is what the caller will use it for: a loss kind (``"prediction"``, ``"hard"``,
    ``"intermediate"``) or a feature of ``FEATURE_LOSSES`` (``"attention"``, ``"hidden"``, ``"embedding"``,
    ``"cls"``). Raises ``ParamsError`` for an unknown name or a loss that does not fit ``kind``.
    """
    check_loss(name, kind)
    return LOSSES[name].fn
