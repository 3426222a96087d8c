"""Transfer to unseen Meta-World tasks given goal frames: the Diffusion Reward goal distance and a
goal-conditioned progress ranker.

The quality benchmark (``bench_diffusion_reward_quality.py --split ml10``) shows that neither the
video model's terms nor the unconditioned progress ranker transfer to ML10's 5 test tasks: a reward
learned from the 10 training tasks cannot know what an unseen task's goal is (after drawer-close it
ranks drawer-*open* backwards). This benchmark gives the reward that information the way a user
can: the last frames of ``--goal-demos`` scripted demonstrations of each task, collected in scenes
(seed ``--goal-seed``) that neither training nor evaluation uses. Every reward and baseline that
uses them is marked; the other figures are the zero-shot ones.

1. Goal demonstrations: ``--goal-demos`` σ = 0 expert episodes per task (training and held-out tasks
   alike) in ``WORK/data/goal/TASK``; the successful ones give the goal frames.
2. A goal-conditioned :class:`ProgressModel` (``goal_conditioned=True``) trained on the 10 training
   tasks' expert videos (the quality run's data in ``WORK/data/train``; goals from other episodes of
   the same task, half the pairs played backwards with the first frame as goal), its statistics
   fitted on the same episodes.
3. Scores of the quality run's evaluation episodes (each evaluation set: its ``--dr-json``, whose
   per-episode Diffusion Reward scores are reused, so the video model is not rerun; episode scores
   are means of per-frame rewards, so sums of episode scores are the scores of summed rewards):

   * ``goal_tokens``: −G/s_G, the Diffusion Reward goal distance (``DiffusionReward.goal_distance``:
     share of the frame's codec tokens that differ from the nearest goal frame's) of ``--model``, its
     s_G fitted on the training episodes against their task's goals (``fit_goal_statistics``);
     ``KEY+goalγ``: a Diffusion Reward key of the JSON − γ·G/s_G (``goal_scale`` γ ∈ ``--goal-scales``);
   * ``goal_progress``: the goal-conditioned ranker's z-score against the task's goal frames (mean
     over them); ``KEY+goal_progress``: a key + β·goal_progress;
   * baselines with the same demonstrations: ``nn_goal_demos`` (−distance of each frame to its nearest
     frame of the task's demonstrations) and ``goal_pixels`` (−distance to the nearest goal frame),
     32×32 pooled pixels, next to the quality run's zero-shot ``nn_expert`` and ``progress``.
4. One JSON per evaluation set in the quality benchmark's format (``compare_reward_runs.py`` pools
   them with paired bootstrap intervals).

    python benchmarks/bench_goal_transfer.py --work runs/dr_ml10 \\
        --dr-json benchmarks/results/diffusion_reward_quality_ml10.json \\
        --dr-json benchmarks/results/diffusion_reward_quality_ml10_fresh3000.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusion_reward_quality import (NearestExpert, _collect_job, collect_all, load_jobs,  # noqa: E402
                                            load_probes, score_methods)

# Diffusion Reward rules of the quality JSON the goal terms are added to: the paper's, + motion deficit,
# and the rule runs/metaworld-ml10-64 saves (+ progress − 3·motion deficit)
DR_KEYS = ("dr_relative_likelihood", "dr_relative_likelihood+motion3", "dr_relative_likelihood+progress+motion3")


BASE_SCORES = ("goal_tokens", "goal_progress", "nn_goal_demos", "goal_pixels")  # what a rerun can reuse


def episode_key(e: dict) -> tuple:
    return (e["task"], e["file"]) if "file" in e else (e["task"], e["hold_after"], e["seed"])


def reusable_scores(path: str, settings: dict) -> dict:
    """Per-episode goal scores of an earlier output with the same settings (new γ values or baselines
    recombine them without scoring again); empty when there is none."""
    try:
        old = json.load(open(path))
    except (OSError, ValueError):
        return {}
    if old.get("settings") != settings:
        return {}
    rows = old["episodes"] + old.get("probe_episodes", [])
    return {episode_key(r): {k: r[k] for k in BASE_SCORES} for r in rows if all(k in r for k in BASE_SCORES)}


def rescoring_parser(doc: str, work_holds: str, suffix: str) -> argparse.ArgumentParser:
    """The arguments every benchmark that rescores earlier quality runs shares: the runs' cache folder,
    their JSONs (one per evaluation set) and the output suffix."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--work", default="runs/dr_ml10", help=f"the quality run's cache folder ({work_holds})")
    ap.add_argument("--dr-json", action="append", required=True,
                    help="a quality-benchmark JSON of one evaluation set (repeat for each set)")
    ap.add_argument("--out-suffix", default=suffix, help="each output JSON is the --dr-json path + this suffix")
    return ap


def quality_args(src: dict, work: str, workers: int) -> argparse.Namespace:
    """The quality run's data settings (from its JSON), to find its cached episodes."""
    s = src["setup"]
    return argparse.Namespace(train_tasks=s["train_tasks"], heldout_tasks=s["heldout_tasks"], expert_model="",
                              train_episodes=s["train_episodes"], eval_episodes=s["eval_episodes"],
                              eval_seed=s.get("eval_seed", 1000), size=s["size"], action_repeat=s["action_repeat"],
                              max_steps=s["max_steps"], workers=workers,
                              probe_seeds=len({e["seed"] for e in src.get("probe_episodes", [])}))


def main(argv=None) -> int:
    ap = rescoring_parser(__doc__, "data, runs", "_goal")
    ap.add_argument("--goal-demos", type=int, default=5, help="demonstrations per task whose last frames are the goal")
    ap.add_argument("--goal-seed", type=int, default=500, help="scene seed of the goal demonstrations")
    ap.add_argument("--steps", type=int, default=2000, help="ranker training steps")
    ap.add_argument("--reverse-prob", type=float, default=0.5, help="share of training pairs played backwards")
    ap.add_argument("--scale", type=float, default=1.0, help="β of goal_progress added to the Diffusion Reward keys")
    ap.add_argument("--model", default="runs/metaworld-ml10-64", help="Diffusion Reward model whose codec gives the goal distance")
    ap.add_argument("--goal-scales", default="1,2,4,8", help="γ values of the goal distance added to the keys")
    ap.add_argument("--keys", default=",".join(DR_KEYS),
                    help="Diffusion Reward keys of the --dr-json the goal terms are added to (those it has)")
    ap.add_argument("--all-demos", action="store_true",
                    help="use failed demonstrations' last frames too (smoke runs, whose episodes are too short to succeed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from mmreward.robotics.reward.diffusion_reward import DiffusionReward
    from mmreward.robotics.reward.progress import ProgressConfig, ProgressModel, group_goals, train_progress

    torch.set_num_threads(args.threads)
    t_all, timings = time.perf_counter(), {}
    sources = [json.load(open(p)) for p in args.dr_json]
    qa = quality_args(sources[0], args.work, args.workers)
    tasks = qa.train_tasks + qa.heldout_tasks

    # 1. goal demonstrations (cached)
    t0 = time.perf_counter()
    goal_jobs = [dict(kind="goal", task=t, policy="expert", noise=0.0, episodes=args.goal_demos, seed=args.goal_seed,
                      out=os.path.join(args.work, "data", "goal", t), size=qa.size, action_repeat=qa.action_repeat,
                      max_steps=qa.max_steps) for t in tasks]
    if args.workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            list(ex.map(_collect_job, goal_jobs))
    else:
        for j in goal_jobs:
            _collect_job(j)
    demos = {}  # successful demonstrations only: a failed one's last frame is not the goal
    loaded = load_jobs(goal_jobs, ("goal",))
    for e in loaded:
        if e["success"] or args.all_demos:
            demos.setdefault(e["task"], []).append(e)
    missing = [t for t in tasks if t not in demos]
    if missing:
        raise SystemExit(f"no successful goal demonstration of {missing}: raise --goal-demos")
    goal_frames = {t: torch.from_numpy(np.stack([e["frames"][-1] for e in demos[t]])) for t in tasks}
    timings["goal_demos_s"] = time.perf_counter() - t0
    print(f"[goal] {args.goal_demos} demonstrations per task, {sum(not e['success'] for e in loaded)} failed "
          f"({'used' if args.all_demos else 'not used'}); goal frames per task: {min(map(len, demos.values()))}-{max(map(len, demos.values()))}", flush=True)

    # 2. the goal-conditioned ranker on the training tasks' expert videos
    t0 = time.perf_counter()
    train_eps = load_jobs(collect_all(qa, args.work)["jobs"], ("train",))
    pdir = os.path.join(args.work, f"goal_progress_{args.steps}")
    if os.path.isfile(os.path.join(pdir, "model", "model.safetensors")):
        ranker = ProgressModel.from_pretrained(os.path.join(pdir, "model"))
        pmetrics = json.load(open(os.path.join(pdir, "metrics.json")))
    else:
        cfg = ProgressConfig(image_size=qa.size, goal_conditioned=True, reverse_prob=args.reverse_prob)
        ranker, pmetrics = train_progress([e["frames"] for e in train_eps], cfg, pdir, steps=args.steps,
                                          groups=[e["task"] for e in train_eps])
    timings["ranker_s"] = time.perf_counter() - t0
    print(f"[ranker] {pmetrics}", flush=True)

    # 2b. the goal distance of the Diffusion Reward model: s_G on the training episodes (goals: the last
    #     frames of up to 5 other episodes of the same task)
    t0 = time.perf_counter()
    dr = DiffusionReward.from_pretrained(args.model)
    train_frames, train_tasks = [torch.from_numpy(e["frames"]) for e in train_eps], [e["task"] for e in train_eps]
    gstats = dr.fit_goal_statistics(train_frames, [group_goals(train_frames, train_tasks, k) for k in range(len(train_frames))])
    goal_std = gstats["goal_std"]
    gammas = [float(g) for g in args.goal_scales.split(",") if g]
    timings["goal_statistics_s"] = time.perf_counter() - t0
    print(f"[goal statistics] {gstats}", flush=True)

    # 3. each evaluation set
    settings = {"goal_demos": args.goal_demos, "goal_seed": args.goal_seed, "all_demos": args.all_demos,
                "ranker_steps": args.steps, "reverse_prob": args.reverse_prob, "model": os.path.abspath(args.model),
                "goal_std": goal_std}
    for src, path in zip(sources, args.dr_json):
        t0 = time.perf_counter()
        qa = quality_args(src, args.work, args.workers)
        data = collect_all(qa, args.work)  # cached: finds the set's episode folders
        eval_eps = load_jobs(data["jobs"], ("eval", "exploit"))
        probe_eps = load_probes(data["probe_jobs"]) if src.get("probe_episodes") else []
        dr_by_file = {(e["task"], e["file"]): e for e in src["episodes"]}
        dr_by_probe = {(e["task"], e["hold_after"], e["seed"]): e for e in src.get("probe_episodes", [])}
        nn_demo = {t: NearestExpert([e["frames"] for e in demos[t]]) for t in tasks}
        nn_goal = {t: NearestExpert([goal_frames[t].numpy()]) for t in tasks}  # −distance to the nearest goal frame
        keys = [k for k in args.keys.split(",") if k and k in src["episodes"][0]]
        zero_shot = [k for k in ("progress", "nn_expert", "frame_diff") if k in src["episodes"][0]]  # DR keys: above
        goal_tokens = {t: dr.tokenize(goal_frames[t]) for t in tasks}
        out = path.replace(".json", f"{args.out_suffix}.json")
        cached = reusable_scores(out, settings)  # this set's goal scores from an earlier run with these settings
        for e in eval_eps + probe_eps:
            row = dr_by_file[(e["task"], e["file"])] if "file" in e else dr_by_probe[(e["task"], e["hold_after"], e["seed"])]
            old = cached.get(episode_key(e))
            if old is not None:
                gd, gp = old["goal_tokens"], old["goal_progress"]
                e["nn_goal_demos"], e["goal_pixels"] = np.array([old["nn_goal_demos"]]), np.array([old["goal_pixels"]])
            else:
                frames = torch.from_numpy(e["frames"])
                ranker.set_goal(goal_frames[e["task"]])
                gp = float(ranker(frames).mean())
                gd = -float(dr.goal_distance(dr.tokenize(frames), goal_tokens[e["task"]]).mean()) / goal_std
                e["nn_goal_demos"] = nn_demo[e["task"]](e["frames"])
                e["goal_pixels"] = nn_goal[e["task"]](e["frames"])
            e["goal_tokens"], e["goal_progress"] = np.array([gd]), np.array([gp])
            for k in keys + zero_shot:
                e[k] = np.array([row[k]])
            for k in keys:
                for g in gammas:
                    e[f"{k}+goal{g:g}"] = np.array([row[k] + g * gd])
                e[f"{k}+goal_progress"] = np.array([row[k] + args.scale * gp])
        methods = (keys + [f"{k}+goal{g:g}" for k in keys for g in gammas] + [f"{k}+goal_progress" for k in keys]
                   + ["goal_tokens", "goal_progress", "goal_pixels", "nn_goal_demos"] + zero_shot)
        results = score_methods(methods, eval_eps, probe_eps, qa.train_tasks, qa.heldout_tasks)
        report = {
            "benchmark": "goal_transfer", "settings": settings,
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
            "setup": src["setup"] | {"goal_demos": args.goal_demos, "goal_seed": args.goal_seed, "ranker_steps": args.steps,
                                     "reverse_prob": args.reverse_prob, "scale": args.scale, "dr_json": path},
            "ranker_metrics": pmetrics, "goal_statistics": gstats, "results": results,
            "episodes": [{k: e[k] for k in ("task", "policy", "noise", "file", "success", "env_return")}
                         | {m: float(np.mean(e[m])) for m in methods} for e in eval_eps],
            "probe_episodes": [{k: e[k] for k in ("task", "hold_after", "seed", "success", "env_return")}
                               | {m: float(np.mean(e[m])) for m in methods} for e in probe_eps],
            "timings": timings | {"score_s": time.perf_counter() - t0, "total_s": time.perf_counter() - t_all},
        }
        with open(out, "w") as f:
            json.dump(report, f, indent=1)
        fmt = lambda x: "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:5.2f}"
        print(f"\nset seed {qa.eval_seed}: {'method':<40} ρ(σ) tr/ho   succAUC tr/ho  exp>rnd tr/ho  fwd>rev  rnd>frz  rnd>hov  ρ(k)")
        for key in methods:
            tr, ho = results[key]["train_tasks"], results[key]["heldout_tasks"]
            print(f"  {key:<50} {fmt(tr['spearman_noise_mean'])}/{fmt(ho['spearman_noise_mean'])}  "
                  f"{fmt(tr['success_auc_mean'])}/{fmt(ho['success_auc_mean'])}  "
                  f"{fmt(tr['expert_vs_random_auc_mean'])}/{fmt(ho['expert_vs_random_auc_mean'])}  "
                  f"{fmt(ho['forward_vs_reversed_auc_mean'])}  {fmt(ho['random_vs_frozen_start_auc_mean'])}  "
                  f"{fmt(ho['random_vs_hover_auc_mean'])}  {fmt(ho['progress_spearman_mean'])}")
        print(f"-> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
