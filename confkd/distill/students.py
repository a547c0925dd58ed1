"""Transformer students: a subset of the teacher's layers (DistilBERT/PKD style), optionally with narrower
feed-forward blocks (structured pruning of the intermediate neurons by weight magnitude), or a smaller config.

Layer copying works on any HF encoder whose layers sit in ``base_model.encoder.layer`` (BERT,
RoBERTa, ELECTRA, ...) or ``base_model.transformer.layer`` (DistilBERT): the teacher is deep-copied
and its layer list replaced by the chosen layers, so embeddings, pooler and head come along.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from confkd.config import StudentParams
from confkd.distill.mapping import Match, layer_map
from confkd.errors import ParamsError

log = logging.getLogger(__name__)


def _layer_owner(model: nn.Module) -> tuple[nn.Module, str]:
    base = model.base_model
    for owner_name in ("encoder", "transformer"):
        owner = getattr(base, owner_name, None)
        if owner is not None and isinstance(getattr(owner, "layer", None), nn.ModuleList):
            return owner, "layer"
    raise ParamsError(f"cannot find the transformer layers of {type(model).__name__} (expected encoder.layer)")


def num_layers(model: nn.Module) -> int:
    owner, attr = _layer_owner(model)
    return len(getattr(owner, attr))


def hidden_size(model: nn.Module) -> int:
    cfg = model.config
    return getattr(cfg, "hidden_size", None) or getattr(cfg, "dim")


def init_layers_for(student: StudentParams, n_teacher: int) -> list[int]:
    """Teacher layers (1-based) copied into the student, in order."""
    if student.init_scheme == "custom":
        if not student.init_layers:
            raise ParamsError("student.init_scheme 'custom' needs student.init_layers")
        return layer_map("custom", n_teacher, student.num_layers, custom=student.init_layers)
    if student.init_layers:
        raise ParamsError("student.init_layers is only used with student.init_scheme: custom")
    return layer_map(student.init_scheme, n_teacher, student.num_layers)


def build_transformer_student(teacher: nn.Module, student: StudentParams, attn_implementation: str | None = None) -> nn.Module:
    """A new student model; the teacher is left untouched."""
    n_teacher = num_layers(teacher)
    if student.init == "teacher_layers":  # the schema has refused hidden_size/num_heads here
        chosen = init_layers_for(student, n_teacher)
        model = copy.deepcopy(teacher)
        owner, attr = _layer_owner(model)
        layers = getattr(owner, attr)
        # the copied model owns its layers already; only a layer chosen twice needs a second copy
        picked, used = [], set()
        for t in chosen:
            picked.append(copy.deepcopy(layers[t - 1]) if t in used else layers[t - 1])
            used.add(t)
        setattr(owner, attr, nn.ModuleList(picked))
        _set_num_layers(model.config, len(chosen))
        _share_config(model)
        for i, layer in enumerate(getattr(owner, attr)):  # keep per-layer indices consistent (KV-cache bookkeeping)
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = i
        log.info("student: %d layers copied from teacher layers %s", len(chosen), chosen)
        if student.intermediate_size is not None:
            prune_feed_forward(model, student.intermediate_size)
        return model
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(teacher.config)
    _set_num_layers(cfg, student.num_layers)
    if student.hidden_size is not None:
        cfg.hidden_size = student.hidden_size
    if student.num_heads is not None:
        cfg.num_attention_heads = student.num_heads
    if student.intermediate_size is not None:
        cfg.intermediate_size = student.intermediate_size
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ParamsError(f"student.hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_attention_heads}")
    if attn_implementation:
        cfg._attn_implementation = attn_implementation
    model = AutoModelForSequenceClassification.from_config(cfg)
    log.info("student: random init, %d layers, hidden %d, %d heads", student.num_layers, cfg.hidden_size,
             cfg.num_attention_heads)
    return model


# Where HF configs keep the feed-forward width (BERT, RoBERTa, ELECTRA, MPNet: intermediate_size; DistilBERT).
_FFN_WIDTH_KEYS = ("intermediate_size", "hidden_dim")


def _ffn_width_keys(cfg) -> list[str]:
    """The keys of ``cfg`` that hold the feed-forward width (an int); ParamsError when there is none."""
    keys = [key for key in _FFN_WIDTH_KEYS if isinstance(getattr(cfg, key, None), int)]
    if not keys:
        raise ParamsError(f"cannot find the feed-forward width of config {type(cfg).__name__} "
                          f"(expected one of {', '.join(_FFN_WIDTH_KEYS)})")
    return keys


def ffn_width(model: nn.Module) -> int:
    return getattr(model.config, _ffn_width_keys(model.config)[0])


def feed_forward_pair(layer: nn.Module, width: int, hidden: int) -> tuple[nn.Linear, nn.Linear]:
    """The feed-forward block of one transformer layer: ``(up, down)``, up ``[width, hidden]`` and down
    ``[hidden, width]`` (``nn.Linear`` weights), found by shape so any HF encoder layer works."""
    if width == hidden:
        raise ParamsError(f"the feed-forward width equals the hidden width ({hidden}): its block cannot be told "
                          "apart from the attention projections")
    linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
    ups = [m for m in linears if m.out_features == width and m.in_features == hidden]
    downs = [m for m in linears if m.in_features == width and m.out_features == hidden]
    if len(ups) != 1 or len(downs) != 1:
        raise ParamsError(f"cannot find one feed-forward block ({hidden} -> {width} -> {hidden}) in "
                          f"{type(layer).__name__}: found {len(ups)} up and {len(downs)} down projections")
    return ups[0], downs[0]


def ffn_importance(up: nn.Linear, down: nn.Linear) -> torch.Tensor:
    """``[width]``: neuron j's weight magnitude, ``||up.weight[j, :]|| * ||down.weight[:, j]||`` (L2 norms): the
    scale of what it reads times the scale of what it writes."""
    return up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0)


@torch.no_grad()
def prune_feed_forward(model: nn.Module, keep: int) -> list[list[int]]:
    """Keep ``keep`` neurons of every layer's feed-forward block, those of largest :func:`ffn_importance`, in their
    original order (structured pruning of the intermediate dimension), in place; the config follows. Returns the
    kept indices per layer. The teacher's width keeps every neuron (the model is unchanged)."""
    width, hidden = ffn_width(model), hidden_size(model)
    if not 1 <= keep <= width:
        raise ParamsError(f"student.intermediate_size {keep}: a student copied from teacher layers can keep 1 to "
                          f"{width} feed-forward neurons (the teacher's width)")
    owner, attr = _layer_owner(model)
    kept = []
    for layer in getattr(owner, attr):
        up, down = feed_forward_pair(layer, width, hidden)
        order = torch.argsort(ffn_importance(up, down), descending=True, stable=True)
        idx = torch.sort(order[:keep]).values
        up.weight = nn.Parameter(up.weight[idx].clone())
        if up.bias is not None:
            up.bias = nn.Parameter(up.bias[idx].clone())
        up.out_features = keep
        down.weight = nn.Parameter(down.weight[:, idx].clone())
        down.in_features = keep
        kept.append(idx.tolist())
    for key in _ffn_width_keys(model.config):
        setattr(model.config, key, keep)
    if keep < width:
        log.info("student: feed-forward blocks pruned from %d to %d neurons (weight magnitude)", width, keep)
    return kept


def _share_config(model: nn.Module) -> None:
    """Point every submodule at the model's config, so later changes (e.g. attention kernel) reach all layers."""
    from transformers import PretrainedConfig

    for module in model.modules():
        if module is not model and isinstance(getattr(module, "config", None), PretrainedConfig):
            module.config = model.config


def _set_num_layers(cfg, n: int) -> None:
    if hasattr(cfg, "num_hidden_layers"):
        cfg.num_hidden_layers = n
    elif hasattr(cfg, "n_layers"):
        cfg.n_layers = n
    else:  # pragma: no cover - exotic configs
        raise ParamsError(f"cannot set the layer count of config {type(cfg).__name__}")


class DistillationModule(nn.Module):
    """The student plus training-only projections (student width -> teacher width), one per match.

    Only ``student`` is saved and exported; the projections exist for the intermediate losses.
    """

    def __init__(self, student: nn.Module, matches: list[Match], student_width: int, teacher_width: int):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict()
        for i, m in enumerate(matches):
            if m.projection and m.feature != "attention" and student_width != teacher_width:
                self.projections[str(i)] = nn.Linear(student_width, teacher_width)
        needs = [m for m in matches if m.feature != "attention" and not m.projection]
        if needs and student_width != teacher_width:
            raise ParamsError(f"student width {student_width} differs from the teacher's {teacher_width}, but "
                              f"{len(needs)} match(es) have projection: false (a width mismatch needs a projection)")

    def project(self, match_index: int, feature: torch.Tensor) -> torch.Tensor:
        proj = self.projections[str(match_index)] if str(match_index) in self.projections else None
        return proj(feature) if proj is not None else feature

    def forward(self, **kwargs):
        return self.student(**kwargs)
