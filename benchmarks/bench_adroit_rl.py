"""Adroit visual RL, learned reward vs sparse, judged on held-out scenes: every seed's final agent of
each setting (``train-rl`` run folders, e.g. written by ``bench_rl_learning.py --task adroit/door``)
evaluated by ``eval-rl`` on the same held-out scenes, next to two reference policies on those
scenes: the shipped state-based expert and uniform random actions.

Per agent: success rate, the palm's closest and mean distance to the handle, the widest door opening and the
environment return (Gymnasium-Robotics' dense reward, whose approach term has the wrong sign on
1.4.2: not a progress measure, reported for completeness). Per setting: the mean over seeds with a
95 % t-interval over seeds, the successes pooled over seeds' episodes with a Wilson interval; per
learned setting, the paired difference to sparse per seed with a 95 % t-interval.

    python benchmarks/bench_adroit_rl.py --runs runs/rl_adroit --seeds 1 2 3 \\
        --json benchmarks/results/rl_adroit_door_heldout.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def reference_policy(kind: str, task: str, episodes: int, seed: int, action_repeat: int, episode_steps) -> dict:
    """``expert`` (the shipped state policy) or ``random`` on the held-out scenes of ``eval-rl``."""
    from mmreward.robotics.collect import _trained_experts, rollout
    from mmreward.robotics.envs import make_env
    from mmreward.robotics.envs.adroit import progress_measures
    from mmreward.robotics.rl.evaluate import progress_row
    from mmreward.robotics.rl.expert import HELDOUT_SEED_BASE

    env = make_env(task, size=32, action_repeat=action_repeat, seed=0, max_steps=episode_steps)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    expert = _trained_experts([task], "expert", None, action_repeat)[task][0] if kind == "expert" else None
    rows = []
    try:
        for i in range(episodes):
            seen = []  # the measures before each step, then after the last one

            def act(obs, t):
                seen.append(progress_measures(env, task))
                return expert.act(obs) if expert is not None else rng.uniform(low, high)

            s = (HELDOUT_SEED_BASE + 1000 * seed + i) % (2 ** 31 - 1)
            ep = rollout(env, act, seed=s)
            seen.append(progress_measures(env, task))
            row = {"seed": s, "success": bool(ep.success.any()), "episode_return": float(ep.rewards.sum()),
                   **progress_row(seen[0], seen[1:])}
            rows.append(row)
    finally:
        env.close()
    return {"policy": kind, "per_episode": rows}


def episode_means(rows: list[dict]) -> dict:
    keys = [k for k in ("success", "min_approach_distance", "mean_approach_distance", "max_door_angle",
                        "episode_return") if k in rows[0]]
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/rl_adroit", help="folder of seed<N>/<reward>/ run folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--learned", default="diffusion-progress", help="the learned setting's run name")
    p.add_argument("--episodes", type=int, default=20, help="held-out episodes per agent")
    p.add_argument("--scene-seed", type=int, default=0, help="held-out scene set (eval-rl --seed)")
    p.add_argument("--json", default=os.path.join(HERE, "results", "rl_adroit_door_heldout.json"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from mmreward.robotics.rl.evaluate import evaluate_run
    from mmreward.robotics.rl.expert import t_interval, wilson_interval

    t0 = time.time()
    settings = {"sparse": "sparse", "learned": args.learned}
    agents = {name: {} for name in settings}
    for name, folder in settings.items():
        for s in args.seeds:
            run = os.path.join(args.runs, f"seed{s}", folder)
            r = evaluate_run(run, episodes=args.episodes, seed=args.scene_seed)
            agents[name][s] = r
            print(f"{name} seed {s} (frame {r['frame']}): " + ", ".join(
                f"{k} {v:.3f}" for k, v in episode_means(r["per_episode"]).items()), flush=True)
    first = agents["sparse"][args.seeds[0]]
    with open(os.path.join(first["run"], "train_config.json")) as f:
        cfg = json.load(f)["config"]
    refs = {kind: reference_policy(kind, first["task"], args.episodes, args.scene_seed, cfg["action_repeat"],
                                   cfg["episode_steps"]) for kind in ("expert", "random")}
    for kind, r in refs.items():
        r.update(episode_means(r["per_episode"]))
        print(f"{kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in episode_means(r["per_episode"]).items()))
    summary = {}
    for name in settings:
        per_seed = {s: episode_means(agents[name][s]["per_episode"]) for s in args.seeds}
        k = sum(agents[name][s]["successes"] for s in args.seeds)
        n = args.episodes * len(args.seeds)
        summary[name] = {"per_seed": per_seed, "successes": k, "episodes": n,
                         "success_wilson95": list(wilson_interval(k, n)),
                         **{m: {"mean": float(np.mean([v[m] for v in per_seed.values()])),
                                "ci95_over_seeds": t_interval([v[m] for v in per_seed.values()])}
                            for m in per_seed[args.seeds[0]]}}
    paired = {}
    for m in summary["sparse"]["per_seed"][args.seeds[0]]:
        d = [summary["learned"]["per_seed"][s][m] - summary["sparse"]["per_seed"][s][m] for s in args.seeds]
        paired[m] = {"diffs": d, "mean": float(np.mean(d)), "ci95": t_interval(d)}
        print(f"learned − sparse, {m}: {np.mean(d):+.4f} [{paired[m]['ci95'][0]:+.4f}, {paired[m]['ci95'][1]:+.4f}]")
    doc = {"benchmark": "rl_adroit_heldout", "task": first["task"], "learned": args.learned, "seeds": args.seeds,
           "frames": {name: {s: agents[name][s]["frame"] for s in args.seeds} for name in settings},
           "episodes_per_agent": args.episodes, "scene_seeds": first["seeds"], "train_config": cfg,
           "summary": summary, "paired_learned_minus_sparse": paired,
           "references": {k: {m: v for m, v in r.items() if m != "per_episode"} for k, r in refs.items()},
           "agents": agents,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "wall_seconds": time.time() - t0}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
