#!/usr/bin/env bash
# Builds the shipped Adroit hammer expert robotics/pretrained/experts/adroit-hammer: SAC on the hammer's state
# observation with DAPG's reward sign (as the door expert, scripts/make_checkpoint_adroit64.sh step 1), and its
# success rate on held-out scenes. docs/adroit.md gives the figures and the time it took.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MM=("$PY" -m mmreward.cli robotics)
EXPERT=runs/expert-hammer-dapg
# 1. 400k agent steps (~95 min on one core beside other jobs; run again to continue an interrupted run, resumes
#    are bit-identical). OUT/model: the policy of the best evaluation (20 fixed scenes), OUT/final_model: the last.
"${MM[@]}" train-expert --task adroit-hammer --out "$EXPERT" --steps 400000 --threads 1 --seed 1 \
    --reward dapg --eval-every 10000 --eval-episodes 20 --snapshot-every 10000 --quiet
# 2. the best-evaluated and the last policy on 50 validation scenes (seed 1); the winner ships
for m in model final_model; do "${MM[@]}" eval-expert --model "$EXPERT/$m" --episodes 50 --seed 1; done
WINNER=${WINNER:-model}
rm -rf robotics/pretrained/experts/adroit-hammer && mkdir -p robotics/pretrained/experts
cp -r "$EXPERT/$WINNER" robotics/pretrained/experts/adroit-hammer
# 3. its success rate on 50 further scenes (seed 0)
"${MM[@]}" eval-expert --model robotics/pretrained/experts/adroit-hammer --episodes 50 --seed 0 \
    --json benchmarks/results/adroit_hammer_expert.json
