"""Frames per second of the whole DrQ-v2 training loop (render, act, update every 2 steps, replay
sampling, episode relabelling) with and without the learned reward.

    python benchmarks/bench_rl_throughput.py             # paper-sized agent and the CPU preset
    python benchmarks/bench_rl_throughput.py --quick     # CPU preset only, short episodes

The first episode fills the replay buffer (no updates yet) and is not counted; the timed episodes
run with updates, exactly as training after the seed phase does. Results:
``benchmarks/results/rl_throughput_<device>.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

PRESETS = {
    "paper": dict(batch_size=256, hidden_dim=1024),
    "cpu": dict(batch_size=64, hidden_dim=256),
}


def measure(task: str, reward: str, preset: str, episodes: int, episode_steps, device: str) -> dict:
    import torch

    from mmreward.robotics.rl import DrQV2Config, RLConfig, train_rl

    p = PRESETS[preset]
    with tempfile.TemporaryDirectory() as out:
        steps = episode_steps or 250
        cfg = RLConfig(task=task, reward=reward, out=out, num_train_frames=2 * steps * (episodes + 1),
                       num_seed_frames=0, eval_every_frames=10 ** 9, num_eval_episodes=1, snapshot_every_frames=0,
                       save_video=False, tensorboard=False, quiet=True, batch_size=p["batch_size"],
                       episode_steps=episode_steps, device=device, resume=False)
        t0 = time.time()
        train_rl(cfg, DrQV2Config(hidden_dim=p["hidden_dim"], num_expl_steps=0))
        wall = time.time() - t0
        with open(os.path.join(out, "train.csv")) as f:
            rows = list(csv.DictReader(f))[1:]  # skip the episode that only filled the buffer
    fps = [float(r["fps"]) for r in rows]
    relabel = [float(r["relabel_seconds"]) for r in rows]
    return {"task": task, "reward": reward, "preset": preset, "batch_size": p["batch_size"],
            "hidden_dim": p["hidden_dim"], "episodes_timed": len(rows), "frames_per_episode": 2 * steps,
            "fps": sum(fps) / len(fps), "relabel_seconds_per_episode": sum(relabel) / len(relabel),
            "buffer_mb": float(rows[-1]["buffer_mb"]), "wall_seconds": wall, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="metaworld/door-open-v3")
    ap.add_argument("--episodes", type=int, default=2, help="timed episodes per setting")
    ap.add_argument("--episode-steps", type=int, default=None, help="agent steps per episode (default: 250)")
    ap.add_argument("--presets", default="cpu,paper")
    ap.add_argument("--rewards", default="sparse,diffusion")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="CPU preset, 1 timed episode of 100 steps")
    ap.add_argument("--json", default=None,
                    help="write the results here (default: benchmarks/results/rl_throughput_<device>.json; "
                         "a --quick run writes only where --json says)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")
    presets = ["cpu"] if args.quick else [p for p in args.presets.split(",") if p]
    episodes, steps = (1, 100) if args.quick else (args.episodes, args.episode_steps)
    sys.path.insert(0, HERE)
    from machine_info import machine

    machine_before = machine(device=args.device)
    results = []
    for preset in presets:
        for reward in [r for r in args.rewards.split(",") if r]:
            r = measure(args.task, reward, preset, episodes, steps, args.device)
            results.append(r)
            print(f"{preset:>6} {reward:>10}: {r['fps']:6.1f} frames/s  (relabel {r['relabel_seconds_per_episode']:.2f} "
                  f"s / {r['frames_per_episode']}-frame episode, batch {r['batch_size']}, hidden {r['hidden_dim']})",
                  flush=True)
    by = {(r["preset"], r["reward"]): r["fps"] for r in results}
    for preset in presets:
        if (preset, "sparse") in by and (preset, "diffusion") in by:
            print(f"{preset:>6} learned-reward cost: {by[(preset, 'diffusion')] / by[(preset, 'sparse')]:.2f}x "
                  "the sparse-reward loop's frames/s")
    out = {"benchmark": "rl_throughput", "quick": args.quick,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": args.device,
                       **machine_before},
           "load_average_after": machine()["load_average"],
           "settings": {"task": args.task, "episodes": episodes, "episode_steps": steps, "presets": presets,
                        "rewards": [r for r in args.rewards.split(",") if r], "threads": torch.get_num_threads(),
                        "order": "one setting after the other (not interleaved)"},
           "results": results}
    path = args.json or (None if args.quick else os.path.join(HERE, "results", f"rl_throughput_{args.device}.json"))
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
