"""DrQ-v2 learning benchmark: the same agent, seeds and frame budget with different reward sources
(default: the shipped Diffusion Reward vs the sparse success reward) on one Meta-World task.

    python benchmarks/bench_rl_learning.py                       # CPU preset, both runs in parallel
    python benchmarks/bench_rl_learning.py --frames 1000000 --paper --device cuda   # paper-scale
    python benchmarks/bench_rl_learning.py --plot-only           # redraw from the runs' logs

Each run writes its own folder under ``--out`` (train/eval CSV, videos, snapshot; an interrupted
run continues where it stopped). The comparison — success rate and environment return at the same
frames — goes to ``<out>/comparison.png`` and ``benchmarks/results/rl_learning.json``.

The CPU preset keeps the paper's algorithm and settings (frame stack 1, action repeat 2, n = 3,
lr 1e-4, feature dim 50, τ 0.01, update every 2 steps, 4000 seed frames) but shrinks what a 2-core
CPU cannot afford: batch 256 → 64, hidden 1024 → 256, std schedule over the run's length.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_cmd(args, reward: str, out: str) -> list[str]:
    # the CPU preset's exploration noise decays over 80 % of the run; --schedule-frames keeps the
    # horizon of an earlier run so that it can be continued with a larger --frames
    steps = (args.schedule_frames or args.frames) // 2
    cmd = [sys.executable, "-m", "mmreward.cli", "robotics", "train-rl", "--task", args.task, "--reward", reward,
           "--out", out, "--seed", str(args.seed), "--num-train-frames", str(args.frames),
           "--eval-every-frames", str(args.eval_every), "--num-eval-episodes", str(args.eval_episodes),
           "--snapshot-every-frames", str(args.eval_every), "--threads", str(args.threads), "--device", args.device]
    if not args.paper:
        cmd += ["--batch-size", "64", "--hidden-dim", "256", "--stddev-schedule", f"linear(1.0,0.1,{int(steps * 0.8)})"]
    if args.episode_steps:
        cmd += ["--episode-steps", str(args.episode_steps)]
    if reward in ("sparse", "dense"):  # the flags below are the learned rewards'; train-rl refuses them here
        return cmd
    if args.checkpoint:
        cmd += ["--model", args.checkpoint]
    if args.expl_scale is not None:
        cmd += ["--expl-scale", str(args.expl_scale)]
    if args.reward_clip is not None:
        cmd += ["--clip-min", str(args.reward_clip)]
    if args.success_scale is not None:
        cmd += ["--success-scale", str(args.success_scale)]
    if getattr(args, "shaping", "none") != "none":
        cmd += ["--reward-shaping", args.shaping]
    if getattr(args, "motion_scale", None) is not None:
        cmd += ["--motion-scale", str(args.motion_scale)]
    if getattr(args, "goal_scale", None) is not None:
        cmd += ["--goal-scale", str(args.goal_scale)]
    if getattr(args, "displacement_scale", None) is not None:
        cmd += ["--displacement-scale", str(args.displacement_scale)]
    if getattr(args, "displacement_cap", None) is not None:
        cmd += ["--displacement-cap", str(args.displacement_cap)]
    if getattr(args, "consistency_scale", None) is not None:
        cmd += ["--consistency-scale", str(args.consistency_scale)]
    return cmd


def read_eval(folder: str) -> dict:
    path = os.path.join(folder, "eval", "eval.csv")
    out = {"frames": [], "success_rate": [], "episode_return": []}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for row in csv.DictReader(f):
            out["frames"].append(int(float(row["step"])))
            out["success_rate"].append(float(row["success_rate"]))
            out["episode_return"].append(float(row["episode_return"]))
    return out


def read_fps(folder: str) -> float:
    path = os.path.join(folder, "train.csv")
    if not os.path.exists(path):
        return float("nan")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    fps = [float(r["fps"]) for r in rows if r.get("fps")]
    return sum(fps) / len(fps) if fps else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="metaworld/door-open-v3")
    p.add_argument("--rewards", default="diffusion,sparse", help="comma-separated reward sources to compare")
    p.add_argument("--frames", type=int, default=24_000)
    p.add_argument("--schedule-frames", type=int, default=None,
                   help="frames the CPU preset's noise schedule is laid out for (default: --frames); give the "
                        "first run's --frames to continue its snapshot to more frames")
    p.add_argument("--eval-every", type=int, default=4000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None, help="Diffusion Reward folder (default: shipped)")
    p.add_argument("--episode-steps", type=int, default=None,
                   help="agent steps per episode (default: the task's time limit, 250 at action repeat 2)")
    p.add_argument("--expl-scale", type=float, default=None,
                   help="α, the RND weight of learned rewards (default: the source's, 0.95 for diffusion)")
    p.add_argument("--reward-clip", type=float, default=None,
                   help="lower bound on the learned reward's standardised term (default: none)")
    p.add_argument("--success-scale", type=float, default=None,
                   help="weight of the success reward the learned sources add (default: 1, the paper's)")
    p.add_argument("--motion-scale", type=float, default=None,
                   help="λ of the motion deficit learned rewards subtract (default: the checkpoint's, 0)")
    p.add_argument("--goal-scale", type=float, default=None,
                   help="γ of the goal distance learned rewards subtract (default: the checkpoint's, 0)")
    p.add_argument("--displacement-scale", type=float, default=None,
                   help="δ of the displacement learned rewards add (default: the checkpoint's, 0)")
    p.add_argument("--displacement-cap", type=float, default=None,
                   help="bound on that displacement in expert stds (default: the checkpoint's, none)")
    p.add_argument("--consistency-scale", type=float, default=None,
                   help="κ of the motion consistency learned rewards add (default: the checkpoint's, 0)")
    p.add_argument("--shaping", choices=("none", "potential"), default="none",
                   help="potential: learned rewards paid as γ·Φ(s') − Φ(s) + success (default: none, the paper's)")
    p.add_argument("--paper", action="store_true", help="paper-sized agent (batch 256, hidden 1024)")
    p.add_argument("--sequential", action="store_true", help="one run after the other instead of in parallel")
    p.add_argument("--out", default="runs/bench_rl")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--also", default="",
                   help="more finished runs to draw and report, as LABEL=FOLDER pairs separated by commas "
                        "(e.g. runs with other α / clip settings in their own --out folders)")
    p.add_argument("--json", default=os.path.join(HERE, "results", "rl_learning.json"))
    args = p.parse_args(argv)
    rewards = [r for r in args.rewards.split(",") if r]
    folders = {r: os.path.join(args.out, r.replace("/", "_")) for r in rewards}
    also = {}  # checked before any run starts: a typo should not surface hours later
    for pair in (x for x in args.also.split(",") if x):
        label, sep, folder = pair.rpartition("=")  # labels may hold "=" (α=0), folders rarely do
        if not sep or not os.path.isfile(os.path.join(folder, "eval", "eval.csv")):
            p.error(f"--also expects LABEL=FOLDER with FOLDER/eval/eval.csv, got {pair!r}")
        also[label] = folder
    t0 = time.time()
    if not args.plot_only:
        env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        procs = []
        os.makedirs(args.out, exist_ok=True)
        for r in rewards:
            log = open(folders[r] + ".log", "a")
            proc = subprocess.Popen(run_cmd(args, r, folders[r]), stdout=log, stderr=subprocess.STDOUT, env=env)
            procs.append((r, proc, log))
            if args.sequential:
                proc.wait()
        for r, proc, log in procs:
            if proc.wait() != 0:
                print(f"run {r} failed (exit {proc.returncode}); see {folders[r]}.log", file=sys.stderr)
            log.close()
    rewards += list(also)
    folders.update(also)
    runs = {r: read_eval(folders[r]) for r in rewards}
    from mmreward.robotics.rl.recording import plot_learning_curves

    png = plot_learning_curves(os.path.join(args.out, "comparison.png"), runs,
                               title=f"DrQ-v2 on {args.task}: reward sources at equal frames")
    result = {
        "benchmark": "rl_learning", "task": args.task, "frames": args.frames, "seed": args.seed,
        "schedule_frames": args.schedule_frames or args.frames,
        "preset": "paper" if args.paper else "cpu (batch 64, hidden 256)", "expl_scale": args.expl_scale,
        "reward_clip": args.reward_clip, "success_scale": args.success_scale, "shaping": args.shaping,
        "motion_scale": args.motion_scale, "goal_scale": args.goal_scale, "displacement_scale": args.displacement_scale,
        "displacement_cap": args.displacement_cap, "consistency_scale": args.consistency_scale,
        "episode_steps": args.episode_steps,
        "eval_episodes": args.eval_episodes,
        "checkpoint": args.checkpoint or "shipped metaworld-64",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads_per_run": args.threads},
        "wall_seconds": time.time() - t0,
        "runs": {r: {**runs[r], "mean_train_fps": read_fps(folders[r]), "folder": folders[r]} for r in rewards},
        "plot": png,
    }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    for r in rewards:
        fr, s, ret = runs[r]["frames"], runs[r]["success_rate"], runs[r]["episode_return"]
        print(f"{r:>22}: " + "  ".join(f"{a}:{b:.2f}/{c:.0f}" for a, b, c in zip(fr, s, ret)))
    print(f"plot: {png}\njson: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
