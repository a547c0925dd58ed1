#!/usr/bin/env bash
# The full run of the embedded default that the README's results come from, with its log kept: `dvc repro`,
# then the benchmarks that read that run (its stage times, and which students keep phi_cnf).
#
#     bash benchmarks/run_default.sh sst2_default     # ~2 h on a 2-core CPU; run it on an otherwise idle machine
#
# The log goes to benchmarks/results/logs/repro_<name>_part<N>.log (progress bars redrawn at most once a minute,
# so the log stays small enough to commit). An interrupted run resumes with the same command: DVC skips the
# finished stages, the new part's log is the next N, and the stage times are summed over every part.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: bash benchmarks/run_default.sh NAME (e.g. sst2_default)}
logs=benchmarks/results/logs
mkdir -p "$logs"
part=1
while [ -e "$logs/repro_${name}_part${part}.log" ]; do part=$((part + 1)); done
export TQDM_MININTERVAL=60
dvc repro 2>&1 | tee "$logs/repro_${name}_part${part}.log"
mapfile -t parts < <(ls "$logs"/repro_"${name}"_part*.log | sort -V)   # in the order they ran
python benchmarks/bench_repro_times.py "${parts[@]}" --name "$name"
python benchmarks/bench_confidence_preservation.py
