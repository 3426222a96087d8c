#!/usr/bin/env bash
# The main job on embedded defaults, a few minutes on a 2-core CPU:
#   1. set up .venv (torch 2.13.0, mmreward + C++ kernels, robotics extra), print the environment report;
#   2. every op family's benchmark in smoke mode (side-by-side ratios vs eager PyTorch);
#   3. Diffusion Reward end to end on Meta-World: collect expert and random door-open episodes,
#      score them with the shipped checkpoint (robotics/pretrained/metaworld-64), plot per-step rewards;
#      Adroit: the shipped door expert's held-out success, one expert and one random episode scored
#      with robotics/pretrained/adroit-64;
#   4. the Diffusion Reward speed benchmark in smoke mode (ours vs the official computation);
#   5. DrQ-v2 from pixels with the shipped Diffusion Reward (a short run: trains, evaluates, writes an
#      annotated evaluation video, learning curves and a snapshot), and the RL loop's throughput;
#   6. vision: an ImageReward-style scorer trained from scratch on rendered shapes, then `mmreward score`;
#   7. text: the real pretrained MiniLM fine-tuned as a reward model on RM-Bench (held-out prompts),
#      when the RM-Bench files are present ($MMREWARD_RM_BENCH, ../shared/data/rm-bench).
# Outputs go to runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
MMREWARD_EXTRAS=${MMREWARD_EXTRAS:-dev,robotics,text,vision} bash scripts/setup_env.sh
BIN=${MMREWARD_VENV:-.venv}/bin
OUT=runs/demo
mkdir -p "$OUT"
echo; echo "== environment =="
"$BIN/python" -m mmreward.env_report
for bench in pairwise step_reward codebook; do
  echo; echo "== benchmarks/bench_$bench.py --quick =="
  "$BIN/python" "benchmarks/bench_$bench.py" --quick
done
echo; echo "== Diffusion Reward: collect door-open-v3 episodes (expert, random) =="
rm -rf "$OUT/episodes"
"$BIN/mmreward" robotics collect --tasks door-open-v3 --episodes 2 --policy expert --max-steps 70 --out "$OUT/episodes" --seed 100
"$BIN/mmreward" robotics collect --tasks door-open-v3 --episodes 2 --policy random --max-steps 70 --out "$OUT/episodes" --seed 200
echo; echo "== Diffusion Reward: score them with the shipped checkpoint =="
"$BIN/mmreward" robotics score "$OUT"/episodes/*.npz --plot "$OUT/rewards.png" --out "$OUT/rewards.json"
echo; echo "== Adroit: the shipped door expert on held-out scenes, its rendered episodes scored with adroit-64 =="
"$BIN/mmreward" robotics eval-expert --model robotics/pretrained/experts/adroit-door --episodes 10
rm -rf "$OUT/adroit"
"$BIN/mmreward" robotics collect --tasks adroit-door --episodes 1 --policy expert --out "$OUT/adroit" --seed 100
"$BIN/mmreward" robotics collect --tasks adroit-door --episodes 1 --policy random --out "$OUT/adroit" --seed 200
"$BIN/mmreward" robotics score --model adroit-64 "$OUT"/adroit/*.npz --plot "$OUT/adroit_rewards.png" \
  --out "$OUT/adroit_rewards.json"
echo; echo "== benchmarks/bench_diffusion_reward_speed.py --quick =="
"$BIN/python" benchmarks/bench_diffusion_reward_speed.py --quick
echo; echo "== DrQ-v2 with the learned reward (short run; paper-scale runs need a GPU) =="
rm -rf "$OUT/rl"
"$BIN/mmreward" robotics train-rl --task metaworld/door-open-v3 --reward diffusion-relative --out "$OUT/rl" \
  --num-train-frames 400 --num-seed-frames 200 --episode-steps 50 --eval-every-frames 200 --num-eval-episodes 1 \
  --batch-size 32 --hidden-dim 256 --threads 2
echo; echo "== benchmarks/bench_rl_throughput.py --quick =="
"$BIN/python" benchmarks/bench_rl_throughput.py --quick
echo; echo "== vision: train a scorer on rendered shapes (exact labels), then score two images =="
rm -rf "$OUT/vision"
OMP_NUM_THREADS=1 "$BIN/mmreward" vision train --data synthetic --n-train 6400 --embed-dim 32 --no-head-dropout \
  --out "$OUT/vision/run" --max-steps 400 --batch-size 16 --lr 4e-3 --warmup-steps 20 --no-progress --log-every 100
"$BIN/python" - "$OUT/vision" <<'PY'
import sys, numpy as np
from PIL import Image
from mmreward.vision.synthetic import Scene, render
out = sys.argv[1]
Image.fromarray(render(Scene("red", "circle", 2, "left"), rng=np.random.default_rng(0))).save(f"{out}/match.png")
Image.fromarray(render(Scene("blue", "square", 1, "right"), rng=np.random.default_rng(0))).save(f"{out}/other.png")
PY
"$BIN/mmreward" score --model "$OUT/vision/run" --prompt "two red circles on the left" "$OUT/vision/match.png" "$OUT/vision/other.png"
RMB=$("$BIN/python" -c "from mmreward.text.eval.rmbench import default_rmbench_dir as d; print(d())")
if [ -d "$RMB" ]; then
  echo; echo "== text: pretrained MiniLM reward model on RM-Bench, held-out prompts (short run) =="
  "$BIN/python" benchmarks/bench_text_rm_minilm.py --data "$RMB" --steps 20 --out "$OUT/text_rm_minilm.json"
else
  echo; echo "(text RM demo skipped: no RM-Bench files at $RMB; set MMREWARD_RM_BENCH)"
fi
echo; echo "demo outputs in $OUT/"
