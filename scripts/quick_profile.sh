#!/usr/bin/env bash
# The whole pipeline on a small subset, for a first look: a DVC experiment in a temporary
# directory (your workspace results are untouched). Compare with `dvc exp show`.
# Run from the repository root inside the project's environment (source .venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")/.."
dvc exp run --temp "$@" \
  -S prepare.max_train_examples=3000 \
  -S prepare.transfer.unlabeled_size=1000 \
  -S teacher.max_steps=150 -S teacher.eval_every_steps=50 \
  -S augment.size=3000 \
  -S distill.defaults.max_steps=100 -S distill.defaults.intermediate_steps=30 -S distill.defaults.eval_every_steps=50 \
  -S distill.configs.internal_pid.intermediate_steps=20 -S distill.configs.internal_sid.intermediate_steps=20 \
  -S distill.configs.kd_logits_2l_aug.max_steps=100 -S distill.configs.kd_logits_2l_aug.eval_every_steps=50 \
  -S distill.configs.kd_logits_2l_aug.augmented_size=3000 \
  -S distill.configs.sparse_dan.max_steps=400 -S distill.configs.sparse_dan.finetune_steps=150 \
  -S distill.configs.sparse_dan.augmented_size=3000 -S distill.configs.sparse_dan.student.max_features=20000 \
  -S distill.configs.sparse_dan.eval_every_steps=100 \
  -S distill.configs.sparse_dan_no_kd.max_steps=400 -S distill.configs.sparse_dan_no_kd.student.max_features=20000 \
  -S distill.configs.sparse_dan_no_kd.eval_every_steps=100 \
  -S tune.n_trials=4 -S tune.n_startup_trials=2 -S tune.timeout_minutes=4 \
  -S tune.budget.max_steps=60 -S tune.budget.eval_every_steps=30 -S tune.pruner.n_warmup_steps=30 \
  -S evaluate.n_resamples=200 -S evaluate.train_sample=1000 \
  -S export.latency.warmup=2 -S export.latency.repeats=5 -S export.min_int8_agreement=0.95
