"""Progress probe of trained Diffusion Reward checkpoints (no training: any saved reward folder).

Does a reward learned from expert videos pay for *getting further* in a task, or only for frames
that look plausible? On held-out Meta-World scenes (seeds 2000…), the scripted expert acts for
k ∈ {0, 10, 20, 30, 45, 70} agent steps and the arm then holds still to the end of the episode.
Per task and checkpoint it reports the mean standardised reward per k and Spearman ρ(k, episode
score). An RL agent climbs this reward only if ρ > 0: with ρ ≈ 0 stopping after 10 expert-like
steps pays as much as finishing the task, which is the hovering seen in the CPU RL runs.

    python benchmarks/bench_diffusion_reward_probe.py                      # the shipped checkpoint
    python benchmarks/bench_diffusion_reward_probe.py --checkpoints runs/a/reward_relative_likelihood,shipped
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _quality_bench():
    spec = importlib.util.spec_from_file_location("bench_dr_quality", os.path.join(HERE, "bench_diffusion_reward_quality.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", default="shipped", help="comma-separated reward folders ('shipped': the default)")
    ap.add_argument("--tasks", default="door-open-v3,drawer-open-v3,button-press-v3,window-open-v3")
    ap.add_argument("--seeds", type=int, default=2, help="scenes per task")
    ap.add_argument("--max-steps", type=int, default=70)
    ap.add_argument("--work", default="runs/diffusion_reward_probe", help="cache for the probe episodes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/diffusion_reward_probe.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(args.threads)
    from mmreward.robotics.reward.diffusion_reward import DiffusionReward

    qb = _quality_bench()
    t0 = time.perf_counter()
    tasks = [t for t in args.tasks.split(",") if t]
    jobs = [dict(kind="probe", task=t, seeds=list(range(2000, 2000 + args.seeds)), size=64, action_repeat=2,
                 max_steps=args.max_steps, out=os.path.join(args.work, t)) for t in tasks]
    for j in jobs:
        qb._probe_job(j)
    probes = qb.load_probes(jobs)
    collect_s = time.perf_counter() - t0
    results = {}
    for ck in [c for c in args.checkpoints.split(",") if c]:
        if ck == "shipped":
            from mmreward.robotics.pretrained import load_pretrained

            model = load_pretrained()
        else:
            model = DiffusionReward.from_pretrained(ck)
        t1 = time.perf_counter()
        for e in probes:
            e[ck] = model.standardize(model.raw_reward(torch.from_numpy(e["frames"]))).numpy()  # z only: no RND / success
        per_task = {}
        for t in tasks:
            eps = [e for e in probes if e["task"] == t]
            per_task[t] = qb.score_progress(eps, ck) | {
                "mean_reward_by_k": {str(k): float(np.mean([np.mean(e[ck]) for e in eps if e["hold_after"] == k]))
                                     for k in qb.HOLD_STEPS}}
        results[ck] = {"per_task": per_task, "progress_spearman_mean": qb.nanmean(
            [r["progress_spearman"] for r in per_task.values()]), "score_s": time.perf_counter() - t1,
            "reward_type": model.config.reward_type}
        print(f"\n{ck} ({model.config.reward_type}): progress ρ mean {results[ck]['progress_spearman_mean']:.2f}")
        print(f"  {'task':<18} {'ρ(k)':>6} " + " ".join(f"{'k=' + str(k):>7}" for k in qb.HOLD_STEPS))
        for t, r in per_task.items():
            print(f"  {t:<18} {r['progress_spearman']:6.2f} " +
                  " ".join(f"{r['mean_reward_by_k'][str(k)]:7.2f}" for k in qb.HOLD_STEPS))
    success = {t: {str(k): float(np.mean([e["success"] for e in probes if e["task"] == t and e["hold_after"] == k]))
                   for k in qb.HOLD_STEPS} for t in tasks}
    report = {"benchmark": "diffusion_reward_probe", "machine": {"platform": platform.platform(),
                                                                  "torch": torch.__version__, "threads": args.threads},
              "setup": vars(args), "hold_steps": list(qb.HOLD_STEPS), "success_rate_by_k": success,
              "collect_s": collect_s, "results": results}
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
