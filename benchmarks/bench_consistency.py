"""The Diffusion Reward motion-consistency term on the evaluation sets of earlier quality runs, without
rerunning the video model.

The motion consistency C_i (``DiffusionReward.motion_consistency``: whether frame i's change goes on in
the direction of the change before it, on grey 16 × 16 images at the video model's frame skip) needs
only the frames, and it is added after the video model's terms, so an episode's score under
``KEY + κ·C/s_C`` is the quality run's per-episode score of ``KEY`` (a mean of per-frame rewards) plus
κ·mean(C)/s_C. This benchmark finds the quality run's cached episodes (``WORK/data``; collected again
with the same seeds when missing, each checked against the environment return its JSON recorded), fits
s_C on the training episodes' frames and writes, per evaluation set, the JSON's methods plus
``KEY+consκ`` for its Diffusion Reward keys and ``consistency`` alone (+C/s_C) in the quality
benchmark's format (``compare_reward_runs.py`` pools them). The JSON may be one this script or
``bench_displacement.py`` wrote (its ``KEY+dispδcapc`` keys are Diffusion Reward keys too).

    python benchmarks/bench_consistency.py --work runs/dr_ml10 \\
        --dr-json benchmarks/results/diffusion_reward_quality_ml10_cap.json \\
        --dr-json benchmarks/results/diffusion_reward_quality_ml10_fresh3000_cap.json
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusion_reward_quality import collect_all, load_jobs  # noqa: E402
from bench_displacement import rescore_sets  # noqa: E402
from bench_goal_transfer import quality_args, rescoring_parser  # noqa: E402


def main(argv=None) -> int:
    ap = rescoring_parser(__doc__, "data", "_consistency")
    ap.add_argument("--scales", default="1,1.5,2,3", help="κ values of the motion consistency added to the keys")
    ap.add_argument("--keys", default="dr_relative_likelihood+progress,dr_relative_likelihood+progress+disp4cap3",
                    help="Diffusion Reward keys of the JSON the consistency is added to")
    ap.add_argument("--grid", type=int, default=16, help="side of the grey grid (DiffusionRewardConfig.consistency_grid)")
    ap.add_argument("--frame-skip", type=int, default=0,
                    help="stride of the changes (default: the quality run's video frame skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.grid < 1 or args.frame_skip < 0:
        ap.error("--grid must be >= 1 and --frame-skip >= 0")
    import torch

    from mmreward.robotics.reward.diffusion_reward import DiffusionReward

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    sources = [json.load(open(p)) for p in args.dr_json]
    skip = args.frame_skip or int(sources[0]["setup"].get("video_frame_skip", 1))
    qa = quality_args(sources[0], args.work, args.workers)
    train_eps = load_jobs(collect_all(qa, args.work)["jobs"], ("train",))

    def consistency(frames: np.ndarray) -> torch.Tensor:  # C of each frame [T]
        return DiffusionReward.motion_consistency(torch.from_numpy(frames), skip, args.grid)

    train_c = torch.cat([consistency(e["frames"]) for e in train_eps])
    std = float(train_c.std())
    stats = {"consistency_std": std, "consistency_frames": train_c.numel(), "frame_skip": skip, "grid": args.grid}
    print(f"[statistics] {stats}", flush=True)
    scales = [float(k) for k in args.scales.split(",") if k]

    def add_terms(e: dict, row: dict, keys: list) -> list:
        c = float(consistency(e["frames"]).mean()) / std
        e["consistency"] = np.array([c])
        for k in keys:
            for kappa in scales:
                e[f"{k}+cons{kappa:g}"] = np.array([row[k] + kappa * c])
        return [f"{k}+cons{kappa:g}" for k in keys for kappa in scales] + ["consistency"]

    rescore_sets(sources, args.dr_json, args, add_terms, benchmark="consistency",
                 setup={"consistency_scales": scales, "consistency_grid": args.grid, "consistency_frame_skip": skip},
                 report={"statistics": stats}, t_all=t_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
