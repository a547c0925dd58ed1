"""Method presets: each named method expands into training phases (the declarative recipe).

* ``ft_only``: gold labels only (the no-KD baseline).
* ``kd_logits``: Hinton soft-label KD, ``alpha * CE(gold) + (1 - alpha) * T^2 KL(teacher || student)``.
* ``tinybert`` (Jiao et al. 2019): optional general distillation (intermediate losses over the transfer
  set's unlabeled text), then task distillation: intermediate layers first (embedding + attention +
  hidden MSE on the mapped layers), then the prediction layer (soft CE with temperature).
  Our general pass uses the fine-tuned teacher, not the pre-trained one (no pre-training corpus here).
* ``internal_pid`` / ``internal_sid`` (Aguilar et al. 2020): attention KL + [CLS] cosine on the mapped
  layers, scheduled bottom-up one student layer at a time (progressive) or cumulatively (stacked),
  then soft labels.
* ``sparse_dan`` (Ye et al. 2022): the DAN trained on teacher logits over the transfer set, then
  fine-tuned on gold labels (KD+FT); ``sparse_dan_no_kd``: gold labels only.
* ``custom``: the ``phases`` list as written.
"""

from __future__ import annotations

from confkd.config import DistillConfig, IntermediateParams, LossTerm, PhaseParams

# Intermediate losses a method uses when the configuration does not name any.
METHOD_FEATURES: dict[str, dict[str, LossTerm]] = {
    "tinybert": {"embedding": LossTerm(loss="embedding_mse"), "attention": LossTerm(loss="attention_mse"),
                 "hidden": LossTerm(loss="hidden_mse")},
    "internal_pid": {"attention": LossTerm(loss="attention_kl"), "cls": LossTerm(loss="cls_cosine")},
    "internal_sid": {"attention": LossTerm(loss="attention_kl"), "cls": LossTerm(loss="cls_cosine")},
}


def intermediate_features(cfg: DistillConfig) -> dict[str, LossTerm]:
    """Feature -> its loss term from the config, or the method's defaults when none are set."""
    inter: IntermediateParams = cfg.intermediate
    given = {f: getattr(inter, f) for f in ("attention", "hidden", "embedding", "cls") if getattr(inter, f) is not None}
    return given or dict(METHOD_FEATURES.get(cfg.method, {}))


def expand_phases(cfg: DistillConfig, n_student_layers: int) -> list[PhaseParams]:
    if cfg.phases:
        return list(cfg.phases)
    soft = dict(prediction_weight=1.0 - cfg.alpha, hard_weight=cfg.alpha)
    predict = PhaseParams(name="prediction", data=cfg.kd_data, epochs=cfg.epochs, max_steps=cfg.max_steps, **soft)
    inter = dict(data=cfg.kd_data, epochs=cfg.intermediate_epochs or cfg.epochs, max_steps=cfg.intermediate_steps, intermediate_weight=1.0,
                 learning_rate=cfg.intermediate_learning_rate, select=False)
    m = cfg.method
    if m in ("ft_only", "sparse_dan_no_kd"):
        return [PhaseParams(name="finetune", data="train", epochs=cfg.epochs, max_steps=cfg.max_steps, hard_weight=1.0)]
    if m == "kd_logits":
        return [predict.model_copy(update={"name": "kd"})]
    if m == "tinybert":
        phases = [PhaseParams(name="general", **{**inter, "data": "transfer"})] if cfg.general_distillation else []
        return phases + [PhaseParams(name="intermediate", **inter), predict]
    if m in ("internal_pid", "internal_sid"):
        phases = []
        for layer in range(1, n_student_layers + 1):
            layers = [layer] if m == "internal_pid" else list(range(1, layer + 1))
            phases.append(PhaseParams(name=f"layer{layer}" if m == "internal_pid" else f"layers1-{layer}",
                                      student_layers=layers, **inter))
        return phases + [predict]
    if m == "sparse_dan":
        return [PhaseParams(name="kd", data="transfer", epochs=cfg.epochs, max_steps=cfg.max_steps, prediction_weight=1.0),
                PhaseParams(name="finetune", data="train", epochs=cfg.finetune_epochs or cfg.epochs,
                            max_steps=cfg.finetune_steps or cfg.max_steps, hard_weight=1.0)]
    raise ValueError(f"unknown method {m!r}")  # pragma: no cover - the schema restricts methods
