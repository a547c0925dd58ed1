#!/usr/bin/env bash
# The whole pipeline on a small share of the data, for a first look: a DVC experiment in a temporary
# directory (your workspace results are untouched). Compare with `dvc exp show`.
# Budgets are epochs, so shrinking the data shrinks every stage: only data shares, the tuning budget and
# the set of configurations are overridden here, never step counts, so the profile fits any task.
# One student of each kind stays: tinybert (transformer distillation), kd_logits_2l (soft labels, the
# tuned base) and sparse_dan (the n-gram DAN); `~key` removes a configuration (Hydra override syntax).
# Run from the repository root inside the project's environment (source .venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")/.."
dvc exp run --temp "$@" \
  -S prepare.train_fraction=0.02 \
  -S prepare.transfer.unlabeled_size=500 \
  -S augment.size=500 \
  -S '~distill.configs.kd_logits' -S '~distill.configs.internal_pid' -S '~distill.configs.sparse_dan_no_kd' \
  -S '~distill.configs.kd_logits_2l_ffn' \
  -S 'export.models=[teacher,tinybert,sparse_dan]' \
  -S tune.n_trials=2 -S tune.n_startup_trials=2 \
  -S tune.budget.eval_every_steps=20 -S tune.pruner.n_warmup_steps=20 \
  -S evaluate.n_resamples=200 -S evaluate.train_sample=500 \
  -S export.parity_split=dev -S 'export.latency.batch_sizes=[32]' -S export.latency.warmup=2 \
  -S export.latency.repeats=5 \
  -S export.min_int8_agreement=0.95
