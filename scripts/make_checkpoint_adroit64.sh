#!/usr/bin/env bash
# Builds the shipped Adroit Diffusion Reward robotics/pretrained/adroit-64 (a small VQGAN + conditional
# VQ-Diffusion + progress ranker trained on videos of a state-based SAC expert opening the door) and its
# quality report (noise-graded ρ, success AUC, expert-vs-random, time reversal, frozen / hovering hand,
# against the nearest-neighbour and frame-difference baselines). docs/adroit.md gives the figures and
# the times each step took. Every step caches its output and resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MM=("$PY" -m mmreward.cli robotics)
EXPERT=runs/expert-door-dapg
R=benchmarks/results/diffusion_reward_quality_adroit64
# 1. the expert: SAC on the door's state observation and DAPG's reward, 260k agent steps (~70 min on one
#    core; run again to continue an interrupted run, resumes are bit-identical). OUT/model: the policy of
#    the best evaluation (170k, 0.95 of 20), OUT/final_model: the last one.
"${MM[@]}" train-expert --task adroit-door --out "$EXPERT" --steps 260000 --threads 1 --seed 1 \
    --reward dapg --eval-every 10000 --eval-episodes 20 --snapshot-every 10000 --quiet
# 2. the shipped expert: the last policy won on 50 validation scenes (seed 1: 43 against 42 of 50); its
#    success rate on 50 further scenes (seed 0)
for m in model final_model; do "${MM[@]}" eval-expert --model "$EXPERT/$m" --episodes 50 --seed 1; done
rm -rf robotics/pretrained/experts/adroit-door && mkdir -p robotics/pretrained/experts
cp -r "$EXPERT/final_model" robotics/pretrained/experts/adroit-door
"${MM[@]}" eval-expert --model robotics/pretrained/experts/adroit-door --episodes 50 --seed 0 \
    --json benchmarks/results/adroit_door_expert.json
# 3. expert videos (80 episodes, seeds 0-79), codec, video model, ranker, statistics, the quality report on
#    evaluation seed 1000 (8 episodes per group), and the shipped copy (λ = 2 saved: the report scores
#    λ = 0…4 side by side). One torch thread: the expert run or other jobs may hold the second core.
COMMON=(--work runs/dr_adroit --train-tasks adroit-door --heldout-tasks '' --expert-model runs/adroit_door_expert/model
    --train-episodes 80 --max-steps 100 --size 64 --action-repeat 2
    --codec-steps 400 --codec-batch 16 --codec-channels 16,32,64,64 --num-codes 128
    --video-steps 12000 --video-batch 32 --video-dim 96 --video-depth 2 --video-heads 4 --video-frame-skip 2
    --estimator relative_likelihood --also-estimator '' --progress-steps 2000 --progress-scale 1
    --eval-episodes 8 --threads 1 --workers 1)
mkdir -p runs/adroit_door_expert && rm -rf runs/adroit_door_expert/model
cp -r "$EXPERT/final_model" runs/adroit_door_expert/model   # the expert frozen while its run may go on
"$PY" benchmarks/bench_diffusion_reward_quality.py "${COMMON[@]}" --json "$R.json" --plot "$R.png" \
    --save-pretrained robotics/pretrained/adroit-64 --motion-scale 2 "$@"
# 4. a second, disjoint evaluation set (seed 3000) with the saved models
"$PY" benchmarks/bench_diffusion_reward_quality.py "${COMMON[@]}" --pretrained runs/dr_adroit/reward_relative_likelihood \
    --eval-seed 3000 --json "${R}_fresh3000.json" --plot "${R}_fresh3000.png" "$@"
# 5. both sets pooled, paired bootstrap intervals against the nearest-neighbour baseline
"$PY" benchmarks/compare_reward_runs.py "$R.json" "${R}_fresh3000.json" --bootstrap 500 \
    --methods dr_relative_likelihood,dr_relative_likelihood+progress,dr_relative_likelihood+progress+motion2,dr_relative_likelihood+progress+motion4,progress,frame_diff,nn_expert \
    --save benchmarks/results/diffusion_reward_pooled_adroit64.json
