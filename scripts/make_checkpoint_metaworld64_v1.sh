#!/usr/bin/env bash
# Rebuilds the Diffusion Reward checkpoint robotics/pretrained/metaworld-64-v1 (a small VQGAN + conditional
# VQ-Diffusion trained on 160 scripted-expert Meta-World videos, with its expert statistics) and its quality
# report benchmarks/results/diffusion_reward_quality.{json,png}. The RL runs in docs/visual_rl.md use this
# checkpoint; scripts/make_default_checkpoint.sh makes the default, metaworld-64.
#
# This is the exact command that produced the shipped files (about 1 h on 2 CPU cores alone, estimated
# from the measured stage rates: data + codec + 30 000 video steps ≈ 35 min, statistics and scoring
# the rest; every stage is cached under runs/diffusion_reward_quality_skip2, so an interrupted run
# continues). Collection is deterministic per
# seed; training uses fixed seeds, but CPU float reductions can differ between machines, so a rebuild
# elsewhere gives a close, not bit-identical, model.
#
# The same pipeline from the CLI (one code path with the Python API), for your own data:
#   mmreward robotics collect --tasks door-open-v3,drawer-open-v3,button-press-v3,window-open-v3 \
#       --episodes 40 --policy expert --size 64 --action-repeat 2 --max-steps 70 --out data/mw
#   mmreward robotics train-codec --data data/mw --out runs/codec --steps 400 --batch-size 16 \
#       --set channels=16,32,64,64 --set num_codes=128
#   mmreward robotics train-video --data data/mw --codec runs/codec --out runs/video --steps 30000 \
#       --batch-size 32 --warmup-steps 200 --set dim=96 --set depth=2 --set heads=4 --set context_dim=96 \
#       --set frame_skip=2 --reward-type relative_likelihood --entropy-estimator x0_entropy --reward-batch-size 128
#       # ^ writes runs/video/reward (statistics fitted on data/mw)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
COMMON=(--work runs/diffusion_reward_quality_skip2
    --train-tasks door-open-v3,drawer-open-v3,button-press-v3,window-open-v3
    --heldout-tasks drawer-close-v3
    --train-episodes 40 --eval-episodes 8 --max-steps 70 --size 64 --action-repeat 2
    --codec-steps 400 --codec-batch 16 --codec-channels 16,32,64,64 --num-codes 128
    --video-steps 30000 --video-batch 32 --video-dim 96 --video-depth 2 --video-heads 4 --video-frame-skip 2)
# 1. data, codec, video model; likelihood and entropy (vlb) rewards scored
"$PY" benchmarks/bench_diffusion_reward_quality.py "${COMMON[@]}" \
    --estimator likelihood --also-estimator vlb --workers 2 --threads 2 \
    --json benchmarks/results/diffusion_reward_quality.json \
    --plot benchmarks/results/diffusion_reward_quality.png "$@"
# 2. same (cached) models, relative likelihood scored; it is the best of the three and is shipped
"$PY" benchmarks/bench_diffusion_reward_quality.py "${COMMON[@]}" \
    --estimator relative_likelihood --also-estimator likelihood --workers 1 --threads 1 \
    --json benchmarks/results/diffusion_reward_quality_relative.json \
    --plot benchmarks/results/diffusion_reward_quality_relative.png \
    --save-pretrained robotics/pretrained/metaworld-64-v1 "$@"
# 3. a progress ranker of expert frame order (2000 steps on the same 160 expert episodes), scored alone
#    and added to the relative likelihood (β = 1), attached to the shipped model (its progress/ folder).
#    The shipped ranker was made with --work runs/drq_progress (data re-collected from the same seeds)
#    and is cached there as progress_2000; the CLI equivalent is
#      mmreward robotics train-progress --data data/mw --out runs/progress --steps 2000 --attach runs/video/reward
"$PY" benchmarks/bench_diffusion_reward_quality.py "${COMMON[@]}" \
    --pretrained robotics/pretrained/metaworld-64-v1 --progress-steps 2000 --progress-scale 1 \
    --estimator relative_likelihood --also-estimator '' --workers 2 --threads 2 \
    --json benchmarks/results/diffusion_reward_quality_progress.json \
    --plot benchmarks/results/diffusion_reward_quality_progress.png \
    --save-pretrained robotics/pretrained/metaworld-64-v1 "$@"
