#!/usr/bin/env bash
# The main job on embedded defaults: set up .venv and build the kernels, print the environment
# report, then run every op family's benchmark in smoke mode (side-by-side ratios vs eager PyTorch).
# Grows with each capability; stays a few minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=${MMREWARD_VENV:-.venv}/bin/python
echo; echo "== environment =="
"$PY" -m mmreward.env_report
for bench in benchmarks/bench_*.py; do
  echo; echo "== $bench --quick =="
  "$PY" "$bench" --quick
done
