"""A small, resumable training loop shared by teacher fine-tuning and distillation.

What it guarantees:
* warm-up + linear decay, gradient clipping, AdamW without decay on biases/LayerNorm;
* evaluation on a held-out split every ``eval_every_steps`` and at each epoch end, best-weights
  selection and early stopping on a chosen metric (never the test split);
* evaluation runs under a forked RNG, so it has no side effect on training randomness;
* optionally an exponential moving average of the weights (Polyak averaging): evaluation, selection
  and the returned weights use the average, which smooths the step-to-step noise of fine-tuning;
* a checkpoint (weights, optimiser, scheduler, scaler, RNG states, position in the epoch) every
  ``checkpoint_every_steps``: an interrupted run resumes where it stopped and ends with the same
  weights as an uninterrupted one; a checkpoint whose fingerprint differs is ignored;
* checkpoints hold only tensors and plain Python values (dict, list, tuple, str, int, float, bool,
  None), so they are read with ``torch.load(weights_only=True)``, which never runs pickled code; a
  checkpoint that cannot be read that way is ignored with a warning and the run starts afresh.
"""

from __future__ import annotations

import logging
import math
import pickle
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from confkd import distributed
from confkd.io import atomic_path
from confkd.runtime import progress, Precision

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"nll", "loss", "ece", "sigma"}


@dataclass
class LoopConfig:
    epochs: float = 1.0  # the budget, in passes over the training data (fractions allowed)
    max_steps: int | None = None  # optional cap on optimiser steps: the budget is the smaller of the two
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    eval_every_steps: int = 250
    early_stopping_patience: int = 4
    selection_metric: str = "accuracy"
    checkpoint_every_steps: int = 100
    restore_best: bool = True  # False: keep the last weights (phases whose dev metric is not the goal)
    ema_decay: float | None = None  # None: no weight averaging; else the EMA decay (e.g. 0.999)
    layerwise_lr_decay: float | None = None  # None: one learning rate; else LLRD (needs num_layers)
    num_layers: int | None = None  # encoder depth, for layerwise_lr_decay

    @classmethod
    def from_settings(cls, settings, **overrides) -> "LoopConfig":
        """The loop's knobs from a run's training settings (:class:`confkd.config.TrainSettings`: the teacher's or
        a distillation configuration's), every field of the same name copied, then ``overrides`` (a phase's
        budget, the selection metric, the encoder depth)."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        values = {n: getattr(settings, n) for n in names if hasattr(settings, n)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"LoopConfig has no field(s) {sorted(unknown)}")
        return cls(**{**values, **overrides})

    @property
    def higher_is_better(self) -> bool:
        return not any(self.selection_metric.endswith(k) for k in LOWER_IS_BETTER)


def step_budget(steps_per_epoch: int, epochs: float, max_steps: int | None = None) -> int:
    """Optimiser steps of a run: ``ceil(epochs * steps_per_epoch)``, capped at ``max_steps`` when given.

    Budgets are in epochs so they follow the data (2 epochs is 3,300 steps on SST-2's 53k phrases and
    560 on 9k tweets); the cap keeps a large dataset within a time budget. At least one step.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    steps = max(1, math.ceil(round(epochs * steps_per_epoch, 6)))
    return steps if max_steps is None else min(steps, max_steps)


@dataclass
class FitResult:
    best_metrics: dict[str, float]
    best_step: int
    steps: int
    epochs_run: float
    samples_seen: int
    train_seconds: float
    eval_seconds: float
    stopped_early: bool
    resumed_from_step: int
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else float("nan")


_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a parameter in an encoder: 0 embeddings, 1..L transformer layer, L + 1 the rest (pooler, head)."""
    if "embeddings" in name:
        return 0
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   layerwise_lr_decay: float | None = None, num_layers: int | None = None) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases/LayerNorm.

    With ``layerwise_lr_decay`` (LLRD, as in ELECTRA and Sun et al. 2019's fine-tuning study) a
    parameter at depth ``d`` (see :func:`layer_depth`) gets ``lr * decay ** (L + 1 - d)``: the head keeps
    ``lr``, lower layers and the embeddings move less, which guards what pre-training learned.
    """
    if layerwise_lr_decay is not None and not 0.0 < layerwise_lr_decay <= 1.0:
        raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {layerwise_lr_decay}")
    if layerwise_lr_decay is not None and num_layers is None:
        raise ValueError("layerwise_lr_decay needs num_layers")
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        if layerwise_lr_decay is not None:
            scale = layerwise_lr_decay ** (num_layers + 1 - layer_depth(name, num_layers))
        decays = not (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name)
        groups.setdefault((scale, decays), []).append(p)
    param_groups = [{"params": ps, "lr": lr * scale, "weight_decay": weight_decay if decays else 0.0}
                    for (scale, decays), ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))]
    return torch.optim.AdamW(param_groups, lr=lr)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """Exponential moving average of a model's floating-point weights and buffers.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average is
    not dominated by the initial weights in short runs (the schedule of TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._live = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in self._live.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [self._live[k] for k in keys], weight)
        self.updates += 1

    def averaged_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's full state dict with the averaged tensors in place of the live ones.

        The tensors are shared, not copied: ``load_state_dict`` copies them into the model anyway.
        """
        return {k: self.shadow.get(k, v) for k, v in model.state_dict().items()}

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


def _rng_state() -> dict:
    """The state of every RNG training draws from, as tensors and plain Python values.

    ``torch.load(weights_only=True)`` refuses numpy arrays, so the numpy Mersenne Twister key is kept
    as a list of ints; :func:`_set_rng_state` restores all of them exactly.
    """
    version, internal, gauss_next = random.getstate()
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": [version, list(internal), gauss_next],
             "numpy": {"bit_generator": bit_generator, "key": key.tolist(), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    """Restore the RNG states captured by :func:`_rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state((np_state["bit_generator"], np.array(np_state["key"], dtype=np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays (e.g. metrics in the history) turned into Python numbers and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):  # exact types: a named tuple is left as it is
        return type(obj)(_plain(v) for v in obj)
    return obj


def _load_checkpoint(path: Path) -> dict | None:
    """Read a checkpoint with ``weights_only=True``; None (and a warning) when it cannot be read that way.

    A file holding anything but tensors and plain values (say, a pickled object of some class, or a
    checkpoint from a version that stored numpy arrays) is refused by the restricted unpickler before
    any of it runs.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        text = " ".join(str(err).split())
        _, found, detail = text.partition("WeightsUnpickler error:")
        reason = detail.split(". ")[0].strip() if found else text[:200]
        log.warning("ignoring unreadable checkpoint %s (%s); starting afresh", path, reason)
        return None
    if not isinstance(saved, dict):
        log.warning("ignoring checkpoint %s: not a checkpoint dictionary; starting afresh", path)
        return None
    return saved


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def fit(
    model: torch.nn.Module,
    *,
    batches_for_epoch: Callable[[int], Sequence[Any]],
    step_loss: Callable[[torch.nn.Module, Any], torch.Tensor],
    batch_size_of: Callable[[Any], int],
    evaluate: Callable[[torch.nn.Module], dict[str, float]],
    cfg: LoopConfig,
    precision: Precision,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    desc: str = "train",
    optimizers: Sequence[torch.optim.Optimizer] | None = None,
    clip_parameters: Sequence[torch.nn.Parameter] | None = None,
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best weights seen on the held-out split.

    ``optimizers`` defaults to one AdamW over every trainable parameter; each optimiser gets its own
    warm-up/decay schedule. Gradient clipping applies to ``clip_parameters`` (default: all; sparse
    embedding gradients cannot be clipped and must be left out). ``on_evaluate(step, metrics)`` is
    called after every evaluation (hyperparameter search reports there; it may raise to stop the run).
    """
    steps_per_epoch = len(batches_for_epoch(0))
    if steps_per_epoch == 0:
        raise ValueError("no training batches: the training set is empty")
    total_steps = step_budget(steps_per_epoch, cfg.epochs, cfg.max_steps)
    epochs_needed = math.ceil(total_steps / steps_per_epoch)
    optimizers = list(optimizers) if optimizers else [make_optimizer(
        model, cfg.learning_rate, cfg.weight_decay, cfg.layerwise_lr_decay, cfg.num_layers)]
    schedulers = [linear_warmup_decay(o, int(cfg.warmup_ratio * total_steps), total_steps) for o in optimizers]
    clip_parameters = list(clip_parameters) if clip_parameters is not None else [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(enabled=precision.needs_grad_scaler)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay is not None else None

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_score": None, "best_step": 0,
             "bad_evals": 0, "history": [], "samples_seen": 0, "train_seconds": 0.0, "eval_seconds": 0.0,
             "stopped_early": False}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ckpt_path = best_path = None
    resumed_from = 0
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        ckpt_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
        saved = _load_checkpoint(ckpt_path) if ckpt_path.exists() else None
        if saved is not None:
            if saved.get("fingerprint") == fingerprint and best_path.exists():
                model.load_state_dict(saved["model"])
                for o, o_state in zip(optimizers, saved["optimizers"]):
                    o.load_state_dict(o_state)
                for sch, sch_state in zip(schedulers, saved["schedulers"]):
                    sch.load_state_dict(sch_state)
                scaler.load_state_dict(saved["scaler"])
                if ema is not None:
                    ema.load_state_dict(saved["ema"])
                state = saved["loop"]
                _set_rng_state(saved["rng"])
                best_state = torch.load(best_path, map_location="cpu", weights_only=True)
                resumed_from = state["step"]
                log.info("resuming from checkpoint at step %d (epoch %d)", state["step"], state["epoch"])
            else:
                log.info("ignoring checkpoint in %s: it belongs to a different configuration", checkpoint_dir)

    device = next(model.parameters()).device
    train_model = distributed.wrap(model)  # DDP under torchrun; the model itself otherwise

    def checkpoint() -> None:
        if ckpt_path is None or not distributed.is_main():
            return
        _save({"fingerprint": fingerprint, "model": model.state_dict(),
               "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
               "scaler": scaler.state_dict(), "loop": _plain(state), "rng": _rng_state(),
               "ema": ema.state_dict() if ema is not None else None}, ckpt_path)

    def run_eval() -> bool:
        """Evaluate, track the best weights; returns True when early stopping triggers."""
        nonlocal best_state
        t0 = time.perf_counter()
        live = None
        if ema is not None:  # evaluate (and select) the averaged weights, then put the live ones back
            live = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema.averaged_state(model))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            metrics = evaluate(model)
        model.train()
        state["eval_seconds"] += time.perf_counter() - t0
        score = metrics[cfg.selection_metric]
        record = {"step": state["step"], "epoch": state["step"] / steps_per_epoch, **metrics}
        state["history"].append(record)
        better = state["best_score"] is None or (
            score > state["best_score"] if cfg.higher_is_better else score < state["best_score"])
        if better:
            state["best_score"], state["best_step"], state["bad_evals"] = score, state["step"], 0
            best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            if best_path is not None and distributed.is_main():
                _save(best_state, best_path)
        else:
            state["bad_evals"] += 1
        if live is not None:
            model.load_state_dict(live)
        log.info("step %d: %s%s", state["step"], ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
                 " (best)" if better else "")
        if on_evaluate is not None:
            on_evaluate(state["step"], metrics)
        return state["bad_evals"] >= cfg.early_stopping_patience

    model.train()
    bar = progress(total=total_steps, initial=state["step"], desc=desc, unit="step")
    done = state["step"] >= total_steps or state["stopped_early"]
    while not done and state["epoch"] < epochs_needed:
        batches = batches_for_epoch(state["epoch"])
        for b in range(state["batch_in_epoch"], len(batches)):
            t0 = time.perf_counter()
            batch = batches[b]
            with precision.autocast():
                loss = step_loss(train_model, distributed.shard(batch))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {state['step']}: {loss.item()}")
            scaler.scale(loss).backward()
            for o in optimizers:
                scaler.unscale_(o)
            if clip_parameters:
                torch.nn.utils.clip_grad_norm_(clip_parameters, cfg.max_grad_norm)
            for o in optimizers:
                scaler.step(o)
            scaler.update()
            for sch in schedulers:
                sch.step()
            if ema is not None:
                ema.update()
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch_in_epoch"] = b + 1
            state["samples_seen"] += batch_size_of(batch)
            state["train_seconds"] += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            last_of_epoch = b + 1 == len(batches)
            stop = False
            if state["step"] % cfg.eval_every_steps == 0 or last_of_epoch or state["step"] >= total_steps:
                stop = run_eval()
            if last_of_epoch:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
            if stop:
                state["stopped_early"] = True
                log.info("early stopping at step %d: no improvement in %s for %d evaluations",
                         state["step"], cfg.selection_metric, cfg.early_stopping_patience)
            if stop or state["step"] >= total_steps or state["step"] % cfg.checkpoint_every_steps == 0:
                checkpoint()
            if stop or state["step"] >= total_steps:
                done = True
                break
    bar.close()
    if cfg.restore_best:
        model.load_state_dict(best_state)
    elif ema is not None:
        model.load_state_dict(ema.averaged_state(model))
    distributed.check_identical(model)
    best = next((h for h in state["history"] if h["step"] == state["best_step"]), {})
    return FitResult(
        best_metrics={k: v for k, v in best.items() if k not in ("step", "epoch")},
        best_step=state["best_step"],
        steps=state["step"],
        epochs_run=state["step"] / steps_per_epoch,
        samples_seen=state["samples_seen"],
        train_seconds=state["train_seconds"],
        eval_seconds=state["eval_seconds"],
        stopped_early=state["stopped_early"],
        resumed_from_step=resumed_from,
        history=state["history"],
    )
