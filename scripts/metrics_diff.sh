#!/usr/bin/env bash
# Markdown comparison of two git revisions' metrics and params, as posted on pull requests:
#   bash scripts/metrics_diff.sh main my-branch       # two committed revisions
#   bash scripts/metrics_diff.sh main                 # main vs the workspace
# Run from the repository root inside the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?usage: metrics_diff.sh BASE_REV [HEAD_REV]}
b=${2:-}
echo "## Metrics: \`$a\` → \`${b:-workspace}\`"
echo
dvc metrics diff "$a" $b --md --all --precision 4
echo
echo "## Params: \`$a\` → \`${b:-workspace}\`"
echo
dvc params diff "$a" $b --md
