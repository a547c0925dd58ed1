"""Run one named distillation configuration: build the student, train its phases, save and score it.

Teacher logits come from the teacher stage's cache; the teacher itself runs (under ``no_grad``) only
when a phase has intermediate losses, and returns attentions only when a match needs them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from confkd import distributed
from confkd.config import DistillConfig, Params, PhaseParams
from confkd.data.prepare import SPLITS
from confkd.data.splitting import sample_index
from confkd.distill.kinds import Built, StudentAdapter, trainer_of
from confkd.distill.losses import get_loss, hard_ce
from confkd.distill.mapping import Match
from confkd.errors import DataError, ParamsError
from confkd.evaluation.confidence import ConfidenceSpec, resolve_spec, teacher_student_scores
from confkd.evaluation.metrics import classification_metrics
from confkd.io import atomic_dir, fingerprint, provenance, read_jsonl, write_json, write_text
from confkd.layout import DistillPaths
from confkd.runtime import configure_threads, seed_everything, select_device, select_precision
from confkd.training.batching import length_grouped_batches, sorted_batches
from confkd.training.loop import FitResult, LoopConfig, fit
from confkd.training.teacher import load_logits, load_prepared, save_logits

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split as the trainer sees it: encoded inputs, gold labels (-1 = none), teacher logits."""

    inputs: list  # token ids (transformer) or n-gram ids (DAN) per example
    labels: torch.Tensor
    teacher_logits: torch.Tensor

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class PhaseRecord:
    name: str
    result: FitResult
    history: list[dict] = field(default_factory=list)


def _feature(out, feature: str, layer: int) -> torch.Tensor:
    if feature == "attention":
        return out.attentions[layer - 1]
    return out.hidden_states[layer]


class PhaseLoss:
    """``step_loss`` for one phase: weighted soft, hard and intermediate terms."""

    def __init__(self, phase: PhaseParams, cfg: DistillConfig, matches: list[tuple[int, Match]], adapter: StudentAdapter,
                 teacher, device):
        self.phase, self.cfg, self.matches, self.adapter = phase, cfg, matches, adapter
        self.teacher, self.device = teacher, device
        self.prediction = get_loss(cfg.prediction_loss, "prediction") if phase.prediction_weight > 0 else None
        self.fns = [get_loss(m.loss, m.feature) for _, m in matches]
        self.need_hidden = any(m.feature != "attention" for _, m in matches)
        self.need_attn = any(m.feature == "attention" for _, m in matches)

    def __call__(self, model, data: SplitData, idx) -> torch.Tensor:
        enc = self.adapter.collate([data.inputs[i] for i in idx], self.device)
        out = self.adapter.forward(model, enc, self.need_hidden, self.need_attn)
        logits = out.logits.float()
        loss = logits.new_zeros(())
        if self.prediction is not None:
            t_logits = data.teacher_logits[idx].to(self.device)
            loss = loss + self.phase.prediction_weight * self.prediction(logits, t_logits, self.cfg.temperature)
        if self.phase.hard_weight > 0:
            loss = loss + self.phase.hard_weight * hard_ce(logits, data.labels[idx].to(self.device))
        if self.matches and self.phase.intermediate_weight > 0:
            with torch.no_grad():
                t_out = self.teacher(**enc, output_hidden_states=self.need_hidden, output_attentions=self.need_attn)
            mask = enc["attention_mask"]
            for (i, m), fn in zip(self.matches, self.fns):
                s_feat = getattr(model, "module", model).project(i, _feature(out, m.feature, m.student_layer))
                loss = loss + self.phase.intermediate_weight * m.weight * fn(s_feat, _feature(t_out, m.feature, m.teacher_layer), mask)
        return loss


def distill(params: Params, name: str, paths: DistillPaths | None = None,
            on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> dict:
    """Train configuration ``name`` of ``params.distill.configs``; returns its flat metrics.

    ``on_evaluate(step, dev_metrics)`` is called at every dev evaluation of the phases that predict
    labels, with ``step`` counted across those phases (hyperparameter search prunes there).
    """
    paths = paths or DistillPaths(name)
    cfg = params.distill.resolve(name)
    if cfg.augmented_size != "all" and cfg.augmented_size > params.augment.size:
        raise ParamsError(f"distill.configs.{name}.augmented_size: {cfg.augmented_size} augmented examples wanted "
                          f"but augment.size is {params.augment.size}")
    seed = params.seed if cfg.seed is None else cfg.seed
    seed_everything(seed, params.runtime.deterministic)
    configure_threads(params.runtime.num_threads)
    device = distributed.init_from_env(select_device(params.runtime.device))
    kind = trainer_of(cfg.student.kind)
    if not kind.data_parallel and distributed.world_size() > 1:
        raise ParamsError(f"a {cfg.student.kind} student trains in one process (it is not data-parallel); run it without torchrun")
    precision = select_precision(device, params.runtime.mixed_precision if kind.mixed_precision else "no")

    labels, frames = load_prepared(paths.prepared_dir)
    spec = resolve_spec(params.evaluate.confidence, labels)
    teacher_logits = {s: load_logits(paths.teacher_logits_dir / f"{s}.npz", frames[s]["id"].tolist()) for s in SPLITS}
    teacher_acc = float(np.mean(teacher_logits["test"].argmax(1) == frames["test"]["label"].to_numpy()))
    if cfg.augmented_size:
        frames["transfer"], teacher_logits["transfer"] = _with_augmented(
            frames["transfer"], teacher_logits["transfer"], cfg.augmented_size, paths)

    built = kind.build(cfg, labels, frames["transfer"]["text"].tolist(), paths.teacher_dir, seed, device)
    model, adapter, phases = built.model, built.adapter, built.phases

    t0 = time.perf_counter()
    data = {}
    for split in SPLITS:
        if split == "transfer" and not any(p.data == "transfer" for p in phases):
            continue
        frame = frames[split]
        logits = teacher_logits[split]
        if cfg.max_train_examples and split in ("train", "transfer") and len(frame) > cfg.max_train_examples:
            keep = np.sort(np.random.default_rng(seed).permutation(len(frame))[:cfg.max_train_examples])
            frame, logits = frame.iloc[keep], logits[keep]
        data[split] = SplitData(adapter.encode(frame["text"].tolist()),
                                torch.tensor(frame["label"].to_numpy(), dtype=torch.long),
                                torch.as_tensor(logits))
    log.info("encoded %s in %.1fs", {k: len(v) for k, v in data.items()}, time.perf_counter() - t0)

    augmented = (paths.augmented_file, paths.augmented_logits) if cfg.augmented_size else ()
    base_fp = fingerprint(cfg.model_dump_json(), str(seed), repr(spec), paths.prepared_dir, paths.teacher_logits_dir,
                          *augmented)
    records: list[PhaseRecord] = []
    steps_before = 0  # steps of the label-predicting phases so far, so reported steps keep increasing
    for i, phase in enumerate(phases):
        report = None
        if on_evaluate is not None and (phase.prediction_weight > 0 or phase.hard_weight > 0):
            report = (lambda offset: lambda step, m: on_evaluate(offset + step, m))(steps_before)
        records.append(_run_phase(i, phase, cfg, built, data, device, precision, paths,
                                  fingerprint(base_fp, str(i)), seed, spec, report))
        if report is not None:
            steps_before += records[-1].result.steps

    # Final scores on dev and test from the selected weights.
    student_logits = {s: _predict(model, adapter, data[s], cfg.eval_batch_size, device, precision) for s in ("dev", "test")}
    metrics = _summarise(student_logits, teacher_logits, frames, teacher_acc, records, model, adapter, spec)
    # sigma(X^train) and beta: the student's logits on a seeded train sample shared by every configuration
    sample = sample_index(len(frames["train"]), params.evaluate.train_sample, params.seed)
    train_sample = SplitData(adapter.encode(frames["train"]["text"].iloc[sample].tolist()),
                             torch.as_tensor(frames["train"]["label"].to_numpy()[sample]),
                             torch.as_tensor(teacher_logits["train"][sample]))
    student_logits["train"] = _predict(model, adapter, train_sample, cfg.eval_batch_size, device, precision)
    metrics["train_kl_to_teacher"] = float(get_loss("kl", "prediction")(
        torch.as_tensor(student_logits["train"]), train_sample.teacher_logits.float(), 1.0))
    metrics["train_sample_size"] = len(sample)
    split_ids = {"dev": frames["dev"]["id"].tolist(), "test": frames["test"]["id"].tolist(),
                 "train": frames["train"]["id"].to_numpy()[sample].tolist()}
    if not distributed.is_main():  # under torchrun every rank holds the same student; rank 0 writes it
        return metrics
    adapter.save(model, paths.model_dir)
    with atomic_dir(paths.artifacts_dir) as tmp:
        for split, logits in student_logits.items():
            save_logits(tmp / f"{split}.npz", split_ids[split], logits)
    write_json(paths.metrics_path, {**provenance(paths.prepared_dir), **metrics})
    history = pd.DataFrame([{**h, "phase": r.name} for r in records for h in r.result.history])
    write_text(paths.history_path, history.to_csv(index=False))
    if not cfg.keep_checkpoints:
        shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)
    log.info("%s: test accuracy %.4f (%.1f%% of the teacher), agreement %.4f, sigma %.4f", name, metrics["accuracy"],
             100 * metrics["retention"], metrics["agreement"], metrics["sigma"])
    return metrics


def _with_augmented(transfer: pd.DataFrame, logits: np.ndarray, size: int | str, paths: DistillPaths):
    """The transfer set plus the first ``size`` teacher-labelled augmented examples (``"all"``: every one)."""
    aug = read_jsonl(paths.augmented_file)
    size = len(aug) if size == "all" else size
    if len(aug) < size:
        raise DataError(f"augmented_size {size} but {paths.augmented_file} has only {len(aug)} examples "
                        f"(raise augment.size and re-run the augment stage)")
    aug = aug.iloc[:size]
    aug_logits = load_logits(paths.augmented_logits)[:size]
    log.info("transfer set: %d rows + %d augmented", len(transfer), size)
    cols = ["id", "text", "label", "origin"]
    return pd.concat([transfer[cols], aug[cols]], ignore_index=True), np.concatenate([logits, aug_logits])


def _run_phase(i, phase: PhaseParams, cfg: DistillConfig, built: Built, data, device, precision,
               paths: DistillPaths, fingerprint: str, seed: int, spec: ConfidenceSpec, on_evaluate=None) -> PhaseRecord:
    model, adapter, teacher, matches = built.model, built.adapter, built.teacher, built.matches
    phase_matches = [(j, m) for j, m in enumerate(matches)
                     if phase.student_layers is None or m.student_layer in phase.student_layers]
    if phase.intermediate_weight > 0 and not phase_matches:
        log.warning("phase %s has intermediate_weight > 0 but no intermediate match applies", phase.name)
    step_loss = PhaseLoss(phase, cfg, phase_matches if phase.intermediate_weight > 0 else [], adapter, teacher, device)
    train = data[phase.data]
    lengths = np.array([len(x) for x in train.inputs])
    dev = data["dev"]
    intermediate_only = phase.prediction_weight == 0 and phase.hard_weight == 0
    selection = "dev_loss" if intermediate_only else f"dev_{cfg.selection_metric}"

    def evaluate(m) -> dict[str, float]:
        if intermediate_only:
            with torch.no_grad():
                batches = sorted_batches(np.array([len(x) for x in dev.inputs]), cfg.eval_batch_size)
                total = sum(step_loss(m, dev, b).item() * len(b) for b in batches)
            return {"dev_loss": total / max(1, len(dev))}
        logits = _predict(m, adapter, dev, cfg.eval_batch_size, device, precision)
        return dev_scores(dev.teacher_logits.numpy(), logits, dev.labels.numpy(), spec, empty_subset="inf")

    optimizers, clip = adapter.optimizers(model, phase.learning_rate or cfg.learning_rate)
    loop_cfg = LoopConfig.from_settings(
        cfg, epochs=phase.epochs, max_steps=phase.max_steps, learning_rate=phase.learning_rate or cfg.learning_rate,
        early_stopping_patience=cfg.early_stopping_patience if phase.select else 10**9,
        selection_metric=selection, restore_best=phase.select,
        num_layers=built.num_layers,
    )
    log.info("phase %d/%s on %s (%d examples): soft %.2f, hard %.2f, intermediate %.2f x %d matches", i, phase.name,
             phase.data, len(train), phase.prediction_weight, phase.hard_weight, phase.intermediate_weight,
             len(step_loss.matches))
    result = fit(
        model,
        batches_for_epoch=lambda e: length_grouped_batches(lengths, cfg.batch_size, seed + i, e, cfg.length_group_factor),
        step_loss=lambda m, idx: step_loss(m, train, idx),
        batch_size_of=len, evaluate=evaluate, cfg=loop_cfg, precision=precision,
        checkpoint_dir=paths.checkpoint_dir / f"phase{i}", fingerprint=fingerprint, desc=f"{paths.name}:{phase.name}",
        optimizers=optimizers, clip_parameters=clip, on_evaluate=on_evaluate,
    )
    return PhaseRecord(phase.name, result)


def dev_scores(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: np.ndarray,
               spec: ConfidenceSpec, prefix: str = "dev_", empty_subset: str = "raise") -> dict[str, float]:
    """What model selection, early stopping and the tuning objective read at each evaluation: the
    classification metrics and the teacher-relative scores (sigma under ``spec``, the evaluate stage's
    definition), prefixed. Logits ``[N, K]``, labels ``[N]``. ``empty_subset`` as in
    :func:`confkd.evaluation.confidence.teacher_student_scores` (``"inf"`` during training)."""
    out = classification_metrics(student_logits, labels, prefix=prefix)
    out.update(teacher_student_scores(teacher_logits, student_logits, labels, spec, prefix=prefix,
                                      empty_subset=empty_subset))
    return out


@torch.inference_mode()
def _predict(model, adapter: StudentAdapter, data: SplitData, batch_size: int, device, precision) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = np.zeros((len(data), data.teacher_logits.shape[1]), dtype=np.float32)
    for idx in sorted_batches(np.array([len(x) for x in data.inputs]), batch_size):
        enc = adapter.collate([data.inputs[i] for i in idx], device)
        with precision.autocast():
            out[idx] = adapter.forward(model, enc, False, False).logits.float().cpu().numpy()
    model.train(was_training)
    return out


def _summarise(student_logits, teacher_logits, frames, teacher_acc, records: list[PhaseRecord], model, adapter,
               spec: ConfidenceSpec) -> dict:
    test_labels = frames["test"]["label"].to_numpy()
    m = dev_scores(teacher_logits["test"], student_logits["test"], test_labels, spec, prefix="")
    t_pred = teacher_logits["test"].argmax(1)
    s_pred = student_logits["test"].argmax(1)
    wrong = t_pred != test_labels
    m["agreement_on_teacher_errors"] = float(np.mean(s_pred[wrong] == t_pred[wrong])) if wrong.any() else float("nan")
    m["teacher_accuracy"] = teacher_acc
    m["retention"] = m["accuracy"] / teacher_acc if teacher_acc > 0 else float("nan")
    m.update(dev_scores(teacher_logits["dev"], student_logits["dev"], frames["dev"]["label"].to_numpy(), spec))
    student = model.student
    m["parameters"] = int(sum(p.numel() for p in student.parameters()))
    if hasattr(student, "active_parameters_per_example"):
        lengths = [len(x) for x in adapter.encode(frames["test"]["text"].tolist())]
        m["active_parameters_per_example"] = int(np.mean([student.active_parameters_per_example(n) for n in lengths]))
    m["train_seconds"] = round(sum(r.result.train_seconds for r in records), 2)
    samples = sum(r.result.samples_seen for r in records)
    m["train_samples_per_second"] = round(samples / m["train_seconds"], 2) if m["train_seconds"] else 0.0
    m["steps"] = int(sum(r.result.steps for r in records))
    m["phases"] = len(records)
    return m
