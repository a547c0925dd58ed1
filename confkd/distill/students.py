"""Transformer students: a subset of the teacher's layers (DistilBERT/PKD style) or a smaller config.

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
    if student.init == "teacher_layers":
        if any(v is not None for v in (student.hidden_size, student.num_heads, student.intermediate_size)):
            raise ParamsError("student.hidden_size/num_heads/intermediate_size apply only to init: random "
                              "(a student copied from teacher layers has the teacher's width)")
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
