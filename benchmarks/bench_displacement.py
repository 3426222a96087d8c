"""The Diffusion Reward displacement term on the evaluation sets of earlier quality runs, without
rerunning the video model.

The displacement P_i (``DiffusionReward.displacement``: the share of frame i's codec tokens that
differ from the episode's first frame's) needs only the codec's tokens, and it is added after the
video model's terms, so an episode's score under ``KEY + δ·P/s_P`` is the quality run's
per-episode score of ``KEY`` (a mean of per-frame rewards) plus δ·mean(P)/s_P. This benchmark

1. finds the quality run's cached episodes (``WORK/data``; collected again with the same seeds when
   missing) and checks each episode's environment return against the one its JSON recorded;
2. trains (or reuses) the codec with the quality run's settings in ``WORK/codec`` and checks that it
   reproduces the run's recorded codec metrics (the same seeds give the same codec on the same machine;
   ``--allow-codec-mismatch`` goes on with a warning);
3. fits s_P on the training episodes' frames and writes, per evaluation set, the quality JSON's
   methods plus ``KEY+dispδ`` for its Diffusion Reward keys and ``displacement`` alone (+P/s_P) in
   the quality benchmark's format (``compare_reward_runs.py`` pools them); with ``--caps``, also
   ``KEY+dispδcapc`` and ``displacement_capc`` (each frame's P/s_P bounded by c before the mean,
   ``DiffusionRewardConfig.displacement_cap``). ``--model`` takes the codec of a saved model (a
   quality run made with ``--pretrained``) instead of training one.

    python benchmarks/bench_displacement.py --work runs/dr_ml10 \\
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
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusion_reward_quality import (collect_all, load_jobs, load_probes, score_methods,  # noqa: E402
                                            train_codec)
from bench_goal_transfer import episode_key, quality_args, rescoring_parser  # noqa: E402

ZERO_SHOT = ("progress", "nn_expert", "frame_diff")  # baselines of the quality JSON, carried over


def main(argv=None) -> int:
    ap = rescoring_parser(__doc__, "data, codec", "_displacement")
    ap.add_argument("--scales", default="1,2,4", help="δ values of the displacement added to the keys")
    ap.add_argument("--keys", default="dr_relative_likelihood,dr_relative_likelihood+progress,"
                                      "dr_relative_likelihood+progress+motion2,dr_relative_likelihood+progress+motion3",
                    help="Diffusion Reward keys of the JSON the displacement is added to")
    ap.add_argument("--caps", default="", help="displacement_cap values c: also scores KEY+dispδcapc, "
                                              "δ·mean(min(P/s_P, c)) added (comma-separated; none by default)")
    ap.add_argument("--model", default="", help="take the codec of this saved Diffusion Reward model (a run "
                                                "made with --pretrained) instead of training one in WORK/codec")
    ap.add_argument("--allow-codec-mismatch", action="store_true",
                    help="go on when the codec does not reproduce the recorded metrics (figures then differ)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from mmreward.robotics.codec.vqgan import evaluate_vqgan
    from mmreward.robotics.reward.diffusion_reward import DiffusionReward

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    sources = [json.load(open(p)) for p in args.dr_json]
    qa = quality_args(sources[0], args.work, args.workers)
    train_eps = load_jobs(collect_all(qa, args.work)["jobs"], ("train",))
    train_frames = [e["frames"] for e in train_eps]
    if args.model:
        codec = DiffusionReward.from_pretrained(args.model).codec.eval()
    else:
        codec = train_codec(sources[0]["setup"], args.work, train_frames).eval()
    metrics = evaluate_vqgan(codec, train_frames[:8])
    recorded = sources[0].get("codec_metrics", {})
    if any(not math.isclose(metrics[k], recorded[k], rel_tol=1e-6) for k in recorded):
        msg = f"the codec does not reproduce the quality run's: {metrics} vs recorded {recorded}"
        if not args.allow_codec_mismatch:
            raise SystemExit(msg + " (--allow-codec-mismatch to go on)")
        print(f"[warning] {msg}", flush=True)
    print(f"[codec] {metrics}", flush=True)

    def frame_displacement(frames: np.ndarray) -> torch.Tensor:  # P of each frame [T]
        return DiffusionReward.displacement(codec.encode(torch.from_numpy(frames)).flatten(1))

    train_p = torch.cat([frame_displacement(f) for f in train_frames]).double()
    std = float(train_p.std())
    stats = {"displacement_std": std, "displacement_frames": train_p.numel()}
    print(f"[statistics] {stats}", flush=True)
    scales = [float(d) for d in args.scales.split(",") if d]
    caps = [float(c) for c in args.caps.split(",") if c]
    capped = [(d, c) for d in scales for c in caps]

    def add_terms(e: dict, row: dict, keys: list) -> list:
        moved = frame_displacement(e["frames"]).double() / std  # P/s_P per frame
        p = float(moved.mean())
        e["displacement"] = np.array([p])
        for c in caps:  # the cap bounds each frame's P/s_P, so it is applied before the episode mean
            e[f"displacement_cap{c:g}"] = np.array([float(moved.clamp(max=c).mean())])
        for k in keys:
            for d in scales:
                e[f"{k}+disp{d:g}"] = np.array([row[k] + d * p])
            for d, c in capped:
                e[f"{k}+disp{d:g}cap{c:g}"] = np.array([row[k] + d * float(e[f"displacement_cap{c:g}"][0])])
        return [f"{k}+disp{d:g}" for k in keys for d in scales] + \
            [f"{k}+disp{d:g}cap{c:g}" for k in keys for d, c in capped] + ["displacement"] + \
            [f"displacement_cap{c:g}" for c in caps]

    rescore_sets(sources, args.dr_json, args, add_terms, benchmark="displacement",
                 setup={"scales": scales, "caps": caps, "model": args.model or None},
                 report={"codec_metrics": metrics, "statistics": stats}, t_all=t_all)
    return 0


def rescore_sets(sources: list, paths: list, args: argparse.Namespace, add_terms: Callable, *, benchmark: str,
                 setup: dict, report: dict, t_all: float) -> None:
    """Adds terms computed from the frames to each evaluation set of earlier quality runs and scores them.

    For each quality JSON (``paths``, loaded as ``sources``): its cached episodes (``args.work``; collected
    again with the same seeds when missing, each checked against the environment return the JSON
    recorded), ``add_terms(episode, row, keys) -> new method names`` (``row``: the JSON's scores of the
    episode; ``keys``: the ``args.keys`` the JSON has, which the new terms may be added to), then every
    method scored by the quality benchmark's metrics into ``PATH`` + ``args.out_suffix`` and a table."""
    import torch

    for src, path in zip(sources, paths):
        t0 = time.perf_counter()
        qa = quality_args(src, args.work, args.workers)
        data = collect_all(qa, args.work)
        eval_eps = load_jobs(data["jobs"], ("eval", "exploit"))
        probe_eps = load_probes(data["probe_jobs"]) if src.get("probe_episodes") else []
        rows = {episode_key(r): r for r in src["episodes"] + src.get("probe_episodes", [])}
        keys = [k for k in args.keys.split(",") if k and k in src["episodes"][0]]
        carried = keys + [k for k in ZERO_SHOT if k in src["episodes"][0]]
        mismatched, added = 0, []
        for e in eval_eps + probe_eps:
            row = rows.get(episode_key(e))
            if row is None:
                raise SystemExit(f"{path} has no episode {episode_key(e)}: not the run whose data is in {args.work}")
            mismatched += not math.isclose(row["env_return"], e["env_return"], rel_tol=1e-5, abs_tol=1e-5)
            for k in carried:
                e[k] = np.array([row[k]])
            added = add_terms(e, row, keys)
        if mismatched:
            raise SystemExit(f"{mismatched} episodes of {path} have another environment return than recorded: "
                             f"the collected episodes differ from the quality run's")
        methods = keys + added + [k for k in ZERO_SHOT if k in carried]
        results = score_methods(methods, eval_eps, probe_eps, qa.train_tasks, qa.heldout_tasks)
        out = path.replace(".json", f"{args.out_suffix}.json")
        body = {
            "benchmark": benchmark,
            "setup": src["setup"] | {"dr_json": path} | setup,
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
            **report, "results": results,
            "episodes": [{k: e[k] for k in ("task", "policy", "noise", "file", "success", "env_return")}
                         | {m: float(np.mean(e[m])) for m in methods} for e in eval_eps],
            "probe_episodes": [{k: e[k] for k in ("task", "hold_after", "seed", "success", "env_return")}
                               | {m: float(np.mean(e[m])) for m in methods} for e in probe_eps],
            "timings": {"score_s": time.perf_counter() - t0, "total_s": time.perf_counter() - t_all},
        }
        with open(out, "w") as f:
            json.dump(body, f, indent=1)
        fmt = lambda x: "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:5.2f}"
        print(f"\nset seed {qa.eval_seed}: {'method':<46} ρ(σ) tr/ho   succAUC tr/ho  exp>rnd tr/ho  fwd>rev tr/ho  "
              f"rnd>frz tr/ho  rnd>hov tr/ho  exploits passed tr/ho")
        for key in methods:
            tr, ho = results[key]["train_tasks"], results[key]["heldout_tasks"]
            pair = lambda m: f"{fmt(tr[m])}/{fmt(ho[m])}"
            print(f"  {key:<52} {pair('spearman_noise_mean')}  {pair('success_auc_mean')}  "
                  f"{pair('expert_vs_random_auc_mean')}  {pair('forward_vs_reversed_auc_mean')}  "
                  f"{pair('random_vs_frozen_start_auc_mean')}  {pair('random_vs_hover_auc_mean')}  "
                  f"{pair('exploit_pass_frac')}")
        print(f"-> {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
