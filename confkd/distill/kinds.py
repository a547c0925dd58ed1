"""What differs per student kind in training: building the student and the adapter the trainer drives (encode,
collate, forward, optimisers, save). Looked up by ``student.kind``; the kinds themselves are declared in
:mod:`confkd.student_kinds`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from confkd import student_kinds
from confkd.errors import ParamsError

log = logging.getLogger("confkd.distill.trainer")


@dataclass
class Built:
    """What the trainer needs of a freshly built student."""

    model: torch.nn.Module  # a DistillationModule wrapping the student (and any width projections)
    adapter: "StudentAdapter"
    phases: list  # PhaseParams, from the method preset
    matches: list = field(default_factory=list)  # intermediate Match records (transformers only)
    teacher: torch.nn.Module | None = None  # the teacher, when a phase needs its intermediate features
    num_layers: int | None = None  # the student's depth (layer-wise learning-rate decay)


class StudentAdapter:
    """The trainer's view of a student: encoding, batching, forward, optimisers, saving."""

    def encode(self, texts: list[str]) -> list: ...
    def collate(self, items: list, device) -> dict: ...
    def forward(self, model, enc: dict, hidden: bool, attentions: bool): ...
    def optimizers(self, model, lr: float) -> tuple[list, list] | tuple[None, None]:
        return None, None
    def save(self, model, directory: Path) -> None: ...


class KindTrainer:
    mixed_precision = True  # may train under autocast
    data_parallel = True  # may train under torchrun

    def build(self, cfg, labels: list[str], transfer_texts: list[str], teacher_dir: Path, seed: int, device) -> Built:
        raise NotImplementedError


class TransformerAdapter(StudentAdapter):
    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def encode(self, texts):
        from confkd.training.batching import tokenize

        return tokenize(self.tokenizer, texts, self.max_length)

    def collate(self, items, device):
        from confkd.training.batching import pad_batch

        return {k: v.to(device) for k, v in pad_batch(items, self.tokenizer.pad_token_id).items()}

    def forward(self, model, enc, hidden, attentions):
        return model(**enc, output_hidden_states=hidden, output_attentions=attentions)

    def save(self, model, directory):
        from confkd.io import atomic_dir

        with atomic_dir(directory) as tmp:
            model.student.save_pretrained(tmp)  # projections are training-only and not saved
            self.tokenizer.save_pretrained(tmp)


class Transformer(KindTrainer):
    def build(self, cfg, labels, transfer_texts, teacher_dir, seed, device) -> Built:
        from confkd import distributed
        from confkd.distill.mapping import build_matches
        from confkd.distill.methods import expand_phases, intermediate_features
        from confkd.distill.students import DistillationModule, build_transformer_student, hidden_size, num_layers
        from confkd.models.hf import load_saved_classifier

        teacher, tokenizer = load_saved_classifier(teacher_dir, " (run the teacher stage first)")
        student = build_transformer_student(teacher, cfg.student)
        n_t, n_s = num_layers(teacher), num_layers(student)
        phases = expand_phases(cfg, n_s)
        matches = []
        if any(p.intermediate_weight > 0 for p in phases):
            inter = cfg.intermediate
            matches = build_matches(inter.scheme, n_t, n_s, intermediate_features(cfg), custom=inter.custom,
                                    extra=inter.matches)
        if any(m.feature == "attention" for m in matches):
            teacher.set_attn_implementation("eager")  # sdpa kernels do not return attention maps
            student.set_attn_implementation("eager")
        model = DistillationModule(student, matches, hidden_size(student), hidden_size(teacher)).to(device)
        if len(model.projections) and distributed.world_size() > 1:
            raise ParamsError("width-changing projections are not data-parallel yet; run this configuration "
                              "without torchrun (or with a student as wide as the teacher)")
        teacher = teacher.to(device).eval().requires_grad_(False) if matches else None
        return Built(model, TransformerAdapter(tokenizer, cfg.max_length), phases, matches, teacher, n_s)


class DANAdapter(StudentAdapter):
    def __init__(self, dan_student, sparse_lr: float, weight_decay: float):
        self.dan, self.sparse_lr, self.weight_decay = dan_student, sparse_lr, weight_decay

    def encode(self, texts):
        out = []
        for start in range(0, len(texts), 4096):
            indices, offsets = self.dan.featurizer.transform(texts[start:start + 4096])
            bounds = offsets.tolist() + [len(indices)]
            out.extend(indices[bounds[i]:bounds[i + 1]] for i in range(len(offsets)))
        return out

    def collate(self, items, device):
        lengths = torch.tensor([len(x) for x in items])
        offsets = torch.zeros(len(items), dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)[:-1]
        indices = torch.cat(items) if items else torch.zeros(0, dtype=torch.long)
        return {"indices": indices.to(device), "offsets": offsets.to(device)}

    def forward(self, model, enc, hidden, attentions):
        return _Logits(model.student(enc["indices"], enc["offsets"]))

    def optimizers(self, model, lr):
        from confkd.models.dan import make_dan_optimizers

        opts = make_dan_optimizers(model.student, self.sparse_lr, lr, self.weight_decay)
        return opts, list(model.student.dense_parameters())

    def save(self, model, directory):
        self.dan.save_pretrained(directory)


@dataclass
class _Logits:
    logits: torch.Tensor


class DAN(KindTrainer):
    mixed_precision = False  # sparse embedding bags train in fp32
    data_parallel = False  # its sparse embedding updates are not data-parallel

    def build(self, cfg, labels, transfer_texts, teacher_dir, seed, device) -> Built:
        from confkd.distill.methods import expand_phases
        from confkd.distill.students import DistillationModule
        from confkd.models.dan import DANConfig, DANStudent

        s = cfg.student
        dan_cfg = DANConfig(max_features=s.max_features, embed_dim=s.embed_dim, hidden_dims=tuple(s.hidden_dims),
                            dropout=s.dropout, ngram_range=(1, s.max_ngram))
        dan = DANStudent.from_texts(transfer_texts, labels, dan_cfg, seed=seed)
        log.info(
            "DAN student: %d n-grams x %d dims, %.1fM parameters", dan.featurizer.vocab_size, s.embed_dim,
            dan.num_parameters() / 1e6)
        model = DistillationModule(dan.model, [], 0, 0).to(device)
        return Built(model, DANAdapter(dan, cfg.sparse_learning_rate, cfg.weight_decay), expand_phases(cfg, 0))


TRAINERS: dict[str, KindTrainer] = {student_kinds.TRANSFORMER.name: Transformer(), student_kinds.DAN.name: DAN()}


def trainer_of(kind: str) -> KindTrainer:
    try:
        return TRAINERS[kind]
    except KeyError:
        raise ParamsError(f"student kind '{kind}' has no trainer (trainable kinds: {', '.join(TRAINERS)})") from None
