"""Reward-quality benchmark of Diffusion Reward on Meta-World (and the run that makes the shipped
default checkpoint).

1. **Data.** Scripted-expert episodes of the training tasks (seeds 0…); held-out evaluation
   episodes (seeds 1000…, or ``--eval-seed``) of the training tasks and of one task left out of training: noisy experts
   with action-noise σ ∈ {0, 0.3, 0.6, 1.0} and uniform-random policies. 64×64 frames, ``corner``
   camera, action repeat 2, ``--max-steps`` agent steps per episode.
2. **Models.** A small VQGAN and conditional VQ-Diffusion trained on the expert frames only, the
   expert statistics fitted on the same episodes → :class:`DiffusionReward` (no RND, no success
   bonus: only the learned term is judged).
3. **Scores.** Episode score = mean per-frame reward. Per task:

   * Spearman ρ between episode score and σ over the four noisy-expert groups (random excluded);
     goal: mean ≤ −0.6 over training tasks, no task above −0.3;
   * success ROC-AUC: how well the score separates successful from failed noisy-expert episodes
     (goal: mean ≥ 0.8; undefined where all episodes succeed or all fail);
   * expert-vs-random ROC-AUC (σ = 0 episodes against random ones);
   * the same on the held-out task;
   * progress ρ (a diagnostic, not an issue goal): ``--probe-seeds`` scenes per task where the
     scripted expert acts for k ∈ {0, 10, 20, 30, 45, 70} steps and the arm then holds still;
     Spearman ρ between k and the episode score. RL needs it > 0 (going further must pay more than
     stopping early); a per-frame plausibility score can rank every k alike.

   * **time reversal**: each σ = 0 expert episode played backwards; AUC of forward over reversed
     scores (a reward that learned dynamics ranks the forward episodes higher);
   * **exploits**: ``frozen_start`` (the expert episode's first frame repeated: a robot that never
     moves), ``frozen_final`` (its last frame repeated: holding the end pose) and ``hover`` (small
     random motion around the start pose, env-simulated); AUC of random-policy scores over
     frozen-start and over hovering ones (goal: > 0.5 on every task, i.e. exploring pays more than
     freezing or hovering).

   The Diffusion Reward rules are scored side by side: the paper's (the estimator's z-score), with the
   progress ranker, minus the motion deficit (λ ∈ ``MOTION_SCALES``), plus the displacement from the
   episode's first frame (δ ∈ ``DISPLACEMENT_SCALES``).

   ``--split ml10`` trains on Meta-World ML10's 10 training tasks and holds out its 5 test tasks
   (Yu et al., 2019), a split fixed before any model was trained here.

   ``--skip-step`` / ``--compute-dtype`` score with another fast chain / compute dtype than the
   official 11 calls in float32 (the expert statistics are fitted for that setting).

   Two training-free baselines get the same scores: ``frame_diff`` (minus the mean absolute
   difference of consecutive frames, i.e. smooth motion scores high) and ``nn_expert`` (minus the
   distance of each frame to its nearest training-expert frame, 32×32 average-pooled pixels).
4. **Outputs.** ``--json`` (default ``benchmarks/results/diffusion_reward_quality.json``), a PNG of
   per-step reward curves (expert / noisy / random), the trained reward models in
   ``WORK/reward_<estimator>`` and, with
   ``--save-pretrained DIR``, a copy there (the shipped checkpoint: ``scripts/make_default_checkpoint.sh``).

Every stage caches its output in ``--work`` (collected episodes, the codec / video runs — which
resume —, rewards), so an interrupted run continues where it stopped.

    python benchmarks/bench_diffusion_reward_quality.py                 # ~23 min on 2 CPU cores
    python benchmarks/bench_diffusion_reward_quality.py --quick         # minutes: tiny everything
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

NOISES = (0.0, 0.3, 0.6, 1.0)
# Meta-World ML10 (Yu et al., 2019): meta-training and meta-test tasks (v3 ids)
ML10_TRAIN = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "button-press-topdown-v3",
              "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3")
ML10_TEST = ("drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3")
EXPLOITS = ("frozen_start", "frozen_final", "hover")  # scored next to the expert and random groups
MOTION_SCALES = (1.0, 2.0, 3.0, 4.0)  # λ of the motion-deficit term, scored side by side
DISPLACEMENT_SCALES = (1.0, 2.0, 4.0)  # δ of the displacement term (added to the rules with the ranker)


# ----------------------------------------------------------------------------- statistics
def rankdata(x) -> np.ndarray:
    """Average ranks (1-based), ties share their mean rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _finite_pair(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` as float arrays of one length with no NaN: rankdata would rank a NaN above every number
    (a NaN episode score would pass for the best one), so one is an error, not a silently shifted figure."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{what}: {len(x)} values against {len(y)}: they must pair up one to one")
    for name, v in (("first", x), ("second", y)):
        if np.isnan(v).any():
            raise ValueError(f"{what}: the {name} argument holds {int(np.isnan(v).sum())} NaN value(s) of {len(v)}; "
                             "a NaN cannot be ranked")
    return x, y


def spearman(x, y) -> float:
    """Spearman ρ as scipy.stats.spearmanr computes it: Pearson correlation of the average ranks (ties
    share their mean rank); NaN (undefined) when either side is constant; a NaN input is an error."""
    x, y = _finite_pair(x, y, "spearman")
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def roc_auc(scores, labels) -> float:
    """P(score of a positive > score of a negative), ties counted ½ (sklearn's roc_auc_score: the
    Mann–Whitney U over average ranks); NaN without both classes; a NaN score is an error."""
    s, lab = _finite_pair(scores, np.asarray(labels, bool), "roc_auc")
    lab = lab.astype(bool)
    npos, nneg = int(lab.sum()), int((~lab).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[lab].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def nanmean(xs) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


# ----------------------------------------------------------------------------- data
def _collect_job(job: dict) -> str:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    from mmreward.robotics.collect import collect_episodes
    from mmreward.robotics.data.episodes import read_manifest

    out = job["out"]
    try:
        if len(read_manifest(out)) >= job["episodes"]:
            return out
    except Exception:
        pass
    collect_episodes([job["task"]], out, episodes=job["episodes"], policy=job["policy"], noise=job["noise"],
                     expert_model=job.get("expert_model") if job["policy"] != "random" else None,
                     size=job["size"], action_repeat=job["action_repeat"], seed=job["seed"],
                     max_steps=job["max_steps"], progress=False)
    return out


HOLD_STEPS = (0, 10, 20, 30, 45, 70)


def _expert_act(env, expert_model):
    """The task's expert as ``obs -> action``: the env's scripted one, else the trained policy."""
    if env.has_expert:
        return env.expert_action
    from mmreward.robotics.collect import _trained_experts

    return _trained_experts([env.task], "expert", expert_model, env.action_repeat)[env.task][0].act


def _probe_job(job: dict) -> str:
    """Progress-probe episodes: the expert for k agent steps, then the env's hold action (the robot
    holds still) to ``max_steps``; one file per (k, seed) in ``job["out"]``."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    from mmreward.robotics.collect import rollout
    from mmreward.robotics.data.episodes import save_episode
    from mmreward.robotics.envs import make_env

    out = job["out"]
    names = [f"hold{k}_seed{s}.npz" for s in job["seeds"] for k in HOLD_STEPS]
    if all(os.path.isfile(os.path.join(out, n)) for n in names):
        return out
    os.makedirs(out, exist_ok=True)
    env = make_env(job["task"], size=job["size"], action_repeat=job["action_repeat"], seed=job["seeds"][0],
                   max_steps=job["max_steps"])
    try:
        expert = _expert_act(env, job.get("expert_model"))
        for seed in job["seeds"]:
            for k in HOLD_STEPS:
                held = {}

                def act(obs, t, k=k, held=held):
                    if t < k:
                        return expert(obs)
                    return held.setdefault("a", env.hold_action())  # the pose where the expert stopped

                episode = rollout(env, act, seed=seed, max_steps=job["max_steps"])
                save_episode(os.path.join(out, f"hold{k}_seed{seed}.npz"), episode)
    finally:
        env.close()
    return out


def _hover_action(env, obs: np.ndarray, start: dict, rng: np.random.Generator) -> np.ndarray:
    """Small random motion around the start pose. Meta-World (delta control; ``obs[:3]`` is the hand
    position, actions move it by ~1 cm per unit): a pull back to the start hand position plus Gaussian
    jitter and a random gripper. Position-controlled hands (Adroit): the servo targets of the start
    pose plus Gaussian jitter of 0.1 (actions span [−1, 1])."""
    if env.suite == "adroit":
        a0 = start.setdefault("hold", env.hold_action())
        return a0 + 0.1 * rng.standard_normal(a0.shape)
    hand0 = start.setdefault("hand", obs[:3].copy())  # the pose at reset
    xyz = 10.0 * (hand0 - obs[:3]) + 0.3 * rng.standard_normal(3)
    return np.concatenate([xyz, rng.uniform(-1, 1, 1)])


def _exploit_job(job: dict) -> str:
    """Exploit and time-reversal episodes of one task in ``job["out"]`` (with a manifest): ``hover``
    (env-simulated, the evaluation seeds) and, from the task's σ = 0 expert evaluation episodes,
    ``frozen_start`` / ``frozen_final`` (first / last frame repeated) and ``reversed`` (played backwards)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    from mmreward.robotics.collect import episode_file, rollout
    from mmreward.robotics.data.episodes import (Episode, episode_entry, load_episode_folder, read_manifest,
                                                 save_episode, update_manifest)
    from mmreward.robotics.envs import make_env

    out, task, seed = job["out"], job["task"], job["seed"]
    try:
        if len(read_manifest(out)) >= job["episodes"] * (len(EXPLOITS) + 1):
            return out
    except Exception:
        pass
    os.makedirs(out, exist_ok=True)
    entries = []

    def put(name: str, ep, policy: str, i: int) -> None:
        save_episode(os.path.join(out, name), ep)
        entries.append(episode_entry(name, ep, task=task, policy=policy, noise=0.0, seed=seed + i, index=i))

    env = make_env(task, size=job["size"], action_repeat=job["action_repeat"], seed=seed, max_steps=job["max_steps"])
    try:
        for i in range(job["episodes"]):
            rng, start = np.random.default_rng([seed + i, 7]), {}

            def hover(obs, t, rng=rng, start=start):
                return _hover_action(env, obs, start, rng)

            episode = rollout(env, hover, seed=seed + i, max_steps=job["max_steps"])
            put(episode_file(task, "hover", 0.0, seed, i), episode, "hover", i)
    finally:
        env.close()
    experts = load_episode_folder(job["expert_dir"], None, ["all"])[:job["episodes"]]
    for i, (_, ep) in enumerate(experts):
        n = len(ep.frames) - 1
        derived = {"frozen_start": np.repeat(ep.frames[:1], n + 1, 0), "frozen_final": np.repeat(ep.frames[-1:], n + 1, 0),
                   "reversed": ep.frames[::-1].copy()}
        for policy, frames in derived.items():
            put(episode_file(task, policy, 0.0, seed, i), Episode(
                frames=frames, actions=np.zeros((n,) + ep.actions.shape[1:], np.float32),
                rewards=np.zeros(n, np.float32), success=np.zeros(n, bool)), policy, i)
    update_manifest(out, entries)
    return out


def parse_expert_models(spec: str, tasks: list) -> dict:
    """``--expert-model``: ``FOLDER`` (every task without a scripted expert) or ``TASK=FOLDER,...``."""
    from mmreward.robotics.envs import resolve_task, suite_of

    if not spec:
        return {}
    if "=" not in spec:
        return {t: spec for t in tasks if suite_of(resolve_task(t)) == "adroit"}
    out = {}
    for item in spec.split(","):
        task, sep, folder = item.partition("=")
        if not sep or not folder:
            raise ValueError(f"--expert-model: expected TASK=FOLDER items, got {item!r}")
        out[task.strip()] = folder.strip()
    return out


def collect_all(args, work: str) -> dict:
    jobs = []
    experts = parse_expert_models(args.expert_model, args.train_tasks + args.heldout_tasks)

    def common(task):
        return dict(size=args.size, action_repeat=args.action_repeat, max_steps=args.max_steps,
                    expert_model=experts.get(task))

    for task in args.train_tasks:
        jobs.append(dict(kind="train", task=task, policy="expert", noise=0.0, episodes=args.train_episodes,
                         seed=0, out=os.path.join(work, "data", "train", task), **common(task)))
    seed, tag = args.eval_seed, ("" if args.eval_seed == 1000 else f"_seed{args.eval_seed}")  # a fresh eval set
    for task in args.train_tasks + args.heldout_tasks:
        for noise in NOISES:
            jobs.append(dict(kind="eval", task=task, policy="noisy", noise=noise, episodes=args.eval_episodes,
                             seed=seed, out=os.path.join(work, "data", "eval", f"{task}_noisy{noise:g}{tag}"),
                             **common(task)))
        jobs.append(dict(kind="eval", task=task, policy="random", noise=0.0, episodes=args.eval_episodes, seed=seed,
                         out=os.path.join(work, "data", "eval", f"{task}_random{tag}"), **common(task)))
    exploit_jobs = [dict(kind="exploit", task=task, policy="exploit", noise=0.0, episodes=args.eval_episodes, seed=seed,
                         expert_dir=os.path.join(work, "data", "eval", f"{task}_noisy0{tag}"),
                         out=os.path.join(work, "data", "eval", f"{task}_exploit{tag}"), **common(task))
                    for task in args.train_tasks + args.heldout_tasks]
    probe_jobs = [dict(kind="probe", task=task, seeds=list(range(2000, 2000 + args.probe_seeds)),
                       out=os.path.join(work, "data", "probe", task), **common(task))
                  for task in args.train_tasks + args.heldout_tasks] if args.probe_seeds > 0 else []
    t0 = time.perf_counter()
    if args.workers > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            list(ex.map(_collect_job, jobs))
            list(ex.map(_exploit_job, exploit_jobs))  # after the experts they are derived from
            list(ex.map(_probe_job, probe_jobs))
    else:
        for j in jobs:
            _collect_job(j)
        for j in exploit_jobs:
            _exploit_job(j)
        for j in probe_jobs:
            _probe_job(j)
    print(f"[data] {len(jobs)} collection + {len(exploit_jobs)} exploit + {len(probe_jobs)} probe jobs done in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"jobs": jobs + exploit_jobs, "probe_jobs": probe_jobs, "seconds": time.perf_counter() - t0}


def load_jobs(jobs: list, kinds: tuple) -> list[dict]:
    from mmreward.robotics.data.episodes import load_episode_folder

    out = []
    for j in jobs:
        if j["kind"] not in kinds:
            continue
        for entry, ep in load_episode_folder(j["out"], None, ["all"]):
            out.append({"task": j["task"], "policy": entry.get("policy", j["policy"]), "noise": j["noise"], "file": entry["file"],
                        "path": os.path.join(j["out"], entry["file"]),
                        "frames": ep.frames, "success": bool(ep.success.any()), "env_return": float(ep.rewards.sum())})
    return out


def load_probes(jobs: list) -> list[dict]:
    from mmreward.robotics.data.episodes import load_episode

    out = []
    for j in jobs:
        for seed in j["seeds"]:
            for k in HOLD_STEPS:
                path = os.path.join(j["out"], f"hold{k}_seed{seed}.npz")
                ep = load_episode(path)
                out.append({"task": j["task"], "policy": "hold", "hold_after": k, "seed": seed, "path": path,
                            "frames": ep.frames, "success": bool(ep.success.any()),
                            "env_return": float(ep.rewards.sum())})
    return out


def _score_job(job) -> dict:
    """Diffusion Rewards of episode files with the saved models (one process, one thread)."""
    import torch

    torch.set_num_threads(1)
    from mmreward.robotics.data.episodes import load_episode
    from mmreward.robotics.reward.diffusion_reward import DiffusionReward

    folders, paths = job
    models = {est: DiffusionReward.from_pretrained(f) for est, f in folders.items()}
    out = {}
    for path in paths:
        fr = torch.from_numpy(load_episode(path).frames)
        out[path] = {}
        for est, m in models.items():
            tok = m.tokenize(fr)
            expected, observed = m.change_windows(tok)
            # z(raw) (the saved models have no RND, ranker or clip) and the motion deficit in expert std units
            out[path][est] = {"z": m.standardize(m.raw_reward_windows(tok)).numpy(),
                              "deficit": m.motion_deficit(expected, observed).numpy(),
                              "displacement": (m.displacement(tok) / float(m.displacement_statistics[0])).numpy(),
                              "expected": expected.numpy(), "observed": observed.numpy()}
    return out


# ----------------------------------------------------------------------------- baselines
def frame_diff_rewards(frames: np.ndarray) -> np.ndarray:
    """−mean |f_t − f_{t−1}| per frame (frame 0 gets frame 1's value)."""
    f = frames.astype(np.float32) / 255.0
    d = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))
    return -np.concatenate([d[:1], d]) if len(d) else np.zeros(1)


def _pool32(frames: np.ndarray):
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return F.avg_pool2d(x, 2).flatten(1)


class NearestExpert:
    """−distance to the nearest reference (training-expert) frame, 32×32 average-pooled pixels."""

    def __init__(self, expert_frames: list):
        import torch

        self.ref = torch.cat([_pool32(f) for f in expert_frames])
        self.ref_sq = self.ref.pow(2).sum(1)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch

        q = _pool32(frames)
        d2 = q.pow(2).sum(1, keepdim=True) - 2 * q @ self.ref.t() + self.ref_sq[None]
        return -torch.sqrt(d2.min(1).values.clamp_min(0)).numpy() / math.sqrt(q.shape[1])


# ----------------------------------------------------------------------------- scoring
def score_task(eps: list[dict], key: str) -> dict:
    noisy = [e for e in eps if e["policy"] == "noisy"]
    rand = [e for e in eps if e["policy"] == "random"]
    expert = [e for e in noisy if e["noise"] == 0.0]
    s = lambda es: [float(np.mean(e[key])) for e in es]
    group = lambda p: [e for e in eps if e["policy"] == p]
    above = lambda hi, lo: roc_auc(s(hi) + s(lo), [True] * len(hi) + [False] * len(lo))  # P(score hi > score lo)
    group_means = {f"noisy{n:g}": float(np.mean(s([e for e in noisy if e["noise"] == n]))) for n in NOISES}
    for p in ("random", "reversed") + EXPLOITS:
        group_means[p] = float(np.mean(s(group(p)))) if group(p) else float("nan")
    return {
        "spearman_noise": spearman(s(noisy), [e["noise"] for e in noisy]),
        "success_auc": roc_auc(s(noisy), [e["success"] for e in noisy]),
        "expert_vs_random_auc": above(expert, rand),
        "forward_vs_reversed_auc": above(expert, group("reversed")),
        "random_vs_frozen_start_auc": above(rand, group("frozen_start")),
        "random_vs_hover_auc": above(rand, group("hover")),
        "success_rate": float(np.mean([e["success"] for e in noisy])),
        "group_mean_score": group_means,
    }


def score_progress(probes: list[dict], key: str) -> dict:
    """Spearman ρ between the episode score and k over the progress probes (expert for k steps, then
    holding still): does the reward pay more for getting further, or as much for holding still early?
    A reward that shapes RL towards the task needs ρ > 0; per-frame plausibility scores can have ρ ≈ 0."""
    if not probes:
        return {"progress_spearman": float("nan")}
    return {"progress_spearman": spearman([float(np.mean(e[key])) for e in probes], [e["hold_after"] for e in probes])}


def summarise(per_task: dict, tasks: list) -> dict:
    rows = [per_task[t] for t in tasks if t in per_task]
    return {
        "spearman_noise_mean": nanmean([r["spearman_noise"] for r in rows]),
        "progress_spearman_mean": nanmean([r.get("progress_spearman") for r in rows]),
        "spearman_noise_max": float(np.nanmax([r["spearman_noise"] for r in rows])) if rows else float("nan"),
        "success_auc_mean": nanmean([r["success_auc"] for r in rows]),
        "expert_vs_random_auc_mean": nanmean([r["expert_vs_random_auc"] for r in rows]),
        "forward_vs_reversed_auc_mean": nanmean([r.get("forward_vs_reversed_auc") for r in rows]),
        "random_vs_frozen_start_auc_mean": nanmean([r.get("random_vs_frozen_start_auc") for r in rows]),
        "random_vs_hover_auc_mean": nanmean([r.get("random_vs_hover_auc") for r in rows]),
        # tasks where exploring beats both freezing and hovering on average (the exploit goal: all of them)
        "exploit_pass_frac": nanmean([float(p) for p in (exploit_passed(r.get("group_mean_score", {})) for r in rows)
                                      if p is not None]),
    }


def exploit_passed(group_means: dict) -> Optional[bool]:
    """The exploit check on one task's mean scores per group: random exploration above both a frozen start
    and hovering (None: the task has no exploit episodes)."""
    if math.isnan(group_means.get("hover", math.nan)) or math.isnan(group_means.get("frozen_start", math.nan)):
        return None
    return group_means["random"] > max(group_means["frozen_start"], group_means["hover"])


def train_codec(setup: dict, work: str, train_frames: list):
    """The run's VQGAN in ``WORK/codec`` (``setup``: the run's size / codec settings, as its JSON records
    them); a finished run there is loaded, an interrupted one continues."""
    from mmreward.robotics.codec.vqgan import VQGANConfig, train_vqgan

    cfg = VQGANConfig(image_size=setup["size"], channels=tuple(int(c) for c in setup["codec_channels"].split(",")),
                      num_codes=setup["num_codes"])
    return train_vqgan(train_frames, cfg, os.path.join(work, "codec"), steps=setup["codec_steps"],
                       batch_size=setup["codec_batch"], ckpt_every=200)


def score_methods(methods: list, eval_eps: list[dict], probe_eps: list[dict], train_tasks: list,
                  heldout_tasks: list) -> dict:
    """Per-task figures and their train / held-out summaries for each episode-score key of ``methods``."""
    results = {}
    for key in methods:
        per_task = {t: score_task([e for e in eval_eps if e["task"] == t], key)
                    | score_progress([e for e in probe_eps if e["task"] == t], key) for t in train_tasks + heldout_tasks}
        results[key] = {"per_task": per_task, "train_tasks": summarise(per_task, train_tasks),
                        "heldout_tasks": summarise(per_task, heldout_tasks)}
    return results


def plot_rewards(path: str, eps: list[dict], task: str, methods: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("expert", lambda e: e["policy"] == "noisy" and e["noise"] == 0.0)]
    groups += [(f"noisy σ={n:g}", (lambda n: lambda e: e["policy"] == "noisy" and e["noise"] == n)(n)) for n in NOISES[1:]]
    groups += [("random", lambda e: e["policy"] == "random")]
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.8), dpi=110, squeeze=False)
    colors = ["tab:green", "tab:olive", "tab:orange", "tab:red", "tab:gray"]
    for ax, (key, title) in zip(axes[0], methods):
        for (name, pred), c in zip(groups, colors):
            rs = [np.asarray(e[key]) for e in eps if e["task"] == task and pred(e)]
            if not rs:
                continue
            n = min(len(r) for r in rs)
            m = np.mean([r[:n] for r in rs], 0)
            k = 5
            sm = np.convolve(m, np.ones(k) / k, mode="valid") if n > k else m
            ax.plot(np.arange(len(sm)) + (k - 1) / 2 if n > k else np.arange(n), sm, color=c, label=name)
        ax.set_title(f"{title} — {task}")
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reward (mean over episodes, 5-frame smoothing)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def pretrained_setup(path, codec, video) -> dict:
    """With --pretrained, the scored model's own sizes replace the (unused) training flags in the report."""
    if not path:
        return {}
    v, c = video.config, codec.config
    return {"pretrained": path, "codec_channels": ",".join(map(str, c.channels)), "num_codes": c.num_codes,
            "video_dim": v.dim, "video_depth": v.depth, "video_heads": v.heads, "video_frame_skip": v.frame_skip,
            "video_history": v.num_history, "codec_steps": None, "video_steps": None}


def quick_outputs(args: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """``--quick``: the work folder, JSON and plot get a ``_quick`` suffix; the default JSON and plot go
    into that work folder, so a smoke run's figures stay out of benchmarks/results (what the docs cite)."""
    args.work = args.work.rstrip("/") + "_quick"
    for key, ext in (("json", ".json"), ("plot", ".png")):
        path = getattr(args, key)
        if path == ap.get_default(key):
            path = os.path.join(args.work, os.path.basename(path))
        setattr(args, key, path[:-len(ext)] + "_quick" + ext if path.endswith(ext) else path)


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Task lists → canonical ids, and the sizes, checked before any collection: a misspelt held-out task
    failed inside a collection worker after the training tasks' episodes were collected, ``door-open``
    collected a second cache next to ``door-open-v3``'s, and a task in both lists was summarised as held out."""
    from mmreward.robotics.envs import resolve_task

    lists = {}
    for flag in ("train_tasks", "heldout_tasks"):
        opt = "--" + flag.replace("_", "-")
        out = []
        for t in (x.strip() for x in getattr(args, flag).split(",")):
            if not t:
                continue
            try:
                task = resolve_task(t)
            except (ValueError, TypeError) as e:
                ap.error(f"{opt}: {e}")
            if task in out:
                ap.error(f"{opt}: {task} is listed twice")
            out.append(task)
        lists[flag] = out
    args.train_tasks, args.heldout_tasks = lists["train_tasks"], lists["heldout_tasks"]
    if not args.train_tasks:
        ap.error("--train-tasks is empty: the models are trained (or, with --pretrained, the codec checked) on "
                 "these tasks' expert episodes; give at least one")
    both = [t for t in args.heldout_tasks if t in args.train_tasks]
    if both:
        ap.error(f"--heldout-tasks: {', '.join(both)} is also in --train-tasks; a held-out task must be one the "
                 "models were not trained on")
    for name in ("train_episodes", "eval_episodes", "max_steps", "size", "action_repeat", "workers", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not getattr(args, "quick", False):  # --quick caps the episodes at 12 steps
        from mmreward.robotics.envs import check_max_steps

        try:  # the collection workers' environments cut longer episodes at the limit without a word
            check_max_steps(args.train_tasks + args.heldout_tasks, args.max_steps, args.action_repeat)
        except (ValueError, ImportError) as e:
            ap.error(str(e))
    args.pretrained_folder = None
    if args.pretrained:  # was read after every episode had been collected: a typo cost the whole collection
        from mmreward.robotics.pretrained import model_folder

        try:  # a shipped name (metaworld-64) as the CLI's --model takes it, or a folder
            # the folder aside: the report names the model as given (metaworld-64), not this machine's path
            args.pretrained_folder = model_folder(args.pretrained, ("diffusion_reward",))
            with open(os.path.join(args.pretrained_folder, "codec", "config.json"), encoding="utf-8") as f:
                size = json.load(f)["config"]["image_size"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--pretrained {args.pretrained!r}: {e}")
        if size != args.size:
            ap.error(f"--pretrained {args.pretrained} takes {size}x{size} frames, but --size is {args.size}: "
                     f"use --size {size}")
    if args.expert_model and "=" in args.expert_model:  # TASK=FOLDER keys spelt as the task lists may be
        items = []
        for item in args.expert_model.split(","):
            task, sep, folder = item.partition("=")
            if sep and task.strip():
                try:
                    task = resolve_task(task.strip())
                except (ValueError, TypeError) as e:
                    ap.error(f"--expert-model: {e}")
                if task not in args.train_tasks + args.heldout_tasks:
                    ap.error(f"--expert-model: {task} is in neither --train-tasks nor --heldout-tasks")
            items.append(f"{task}{sep}{folder}")
        args.expert_model = ",".join(items)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/diffusion_reward_quality", help="cache folder for data, runs, rewards")
    ap.add_argument("--json", default="benchmarks/results/diffusion_reward_quality.json")
    ap.add_argument("--plot", default="benchmarks/results/diffusion_reward_quality.png")
    ap.add_argument("--save-pretrained", default=None,
                    help="copy the trained reward model here (with the progress ranker attached, if trained)")
    ap.add_argument("--train-tasks", default="door-open-v3,drawer-open-v3,button-press-v3,window-open-v3")
    ap.add_argument("--heldout-tasks", default="drawer-close-v3")
    ap.add_argument("--expert-model", default="",
                    help="trained expert policies for tasks without a scripted one (Adroit): a policy folder "
                         "(train-expert's model/) for every such task, or TASK=FOLDER,...")
    ap.add_argument("--split", choices=("custom", "ml10"), default="custom",
                    help="ml10: Meta-World ML10's 10 training / 5 test tasks as training / held-out tasks "
                         "(replaces --train-tasks / --heldout-tasks)")
    ap.add_argument("--train-episodes", type=int, default=40, help="expert episodes per training task")
    ap.add_argument("--eval-episodes", type=int, default=8, help="per task and policy group")
    ap.add_argument("--eval-seed", type=int, default=1000,
                    help="first scene seed of the evaluation episodes (1000; another value gives a fresh, disjoint set)")
    ap.add_argument("--max-steps", type=int, default=70, help="agent steps per episode")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--action-repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="collection / scoring processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training / scoring")
    ap.add_argument("--codec-steps", type=int, default=400)
    ap.add_argument("--codec-batch", type=int, default=16)
    ap.add_argument("--codec-channels", default="16,32,64,64")
    ap.add_argument("--num-codes", type=int, default=128)
    ap.add_argument("--video-steps", type=int, default=12000)
    ap.add_argument("--video-batch", type=int, default=32)
    ap.add_argument("--video-dim", type=int, default=96)
    ap.add_argument("--video-depth", type=int, default=2)
    ap.add_argument("--video-heads", type=int, default=4)
    ap.add_argument("--video-frame-skip", type=int, default=1,
                    help="frames between the video model's history frames and the target (official: 1)")
    ap.add_argument("--video-history", type=int, default=2, help="history frames the video model conditions on (official: 2)")
    ap.add_argument("--estimator", default="likelihood", choices=("vlb", "x0_entropy", "likelihood", "relative_likelihood"),
                    help="reward of the saved model: an entropy estimator ('vlb', 'x0_entropy'), 'likelihood' "
                         "(the bound on log p of the observed frame) or 'relative_likelihood' (that + the entropy)")
    ap.add_argument("--also-estimator", default="vlb",
                    help="also score with this estimator (same models; '' to skip)")
    ap.add_argument("--reward-batch", type=int, default=128)
    ap.add_argument("--skip-step", type=int, default=9,
                    help="fast-chain stride of the scored rewards (9: 11 denoising calls, 19: 6)")
    ap.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="DiffusionRewardConfig.compute_dtype of the scored rewards")
    ap.add_argument("--probe-seeds", type=int, default=2,
                    help="progress-probe scenes per task (expert for k steps, then holding still; 0: skip)")
    ap.add_argument("--pretrained", default=None,
                    help="score this saved DiffusionReward (its codec + video model) instead of training new ones")
    ap.add_argument("--progress-steps", type=int, default=0,
                    help="also train a progress ranker on the expert frames for this many steps (0: skip) and score "
                         "it alone and added to the Diffusion Reward term (β = --progress-scale)")
    ap.add_argument("--progress-scale", type=float, default=1.0, help="β of the progress ranker's z-score")
    ap.add_argument("--motion-scale", type=float, default=0.0,
                    help="λ of the motion deficit in the model --save-pretrained writes (the scores try several)")
    ap.add_argument("--displacement-scale", type=float, default=0.0,
                    help="δ of the displacement in the model --save-pretrained writes (the scores try several)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    args = ap.parse_args(argv)
    if args.split == "ml10":
        args.train_tasks, args.heldout_tasks = ",".join(ML10_TRAIN), ",".join(ML10_TEST)
    check_args(ap, args)
    if args.quick:
        args.train_tasks, args.heldout_tasks = args.train_tasks[:2], args.heldout_tasks[:1]
        args.train_episodes, args.eval_episodes, args.max_steps, args.probe_seeds = 2, 2, 12, 1
        args.codec_steps, args.video_steps, args.video_dim, args.video_depth = 20, 20, 32, 1
        quick_outputs(args, ap)
    import torch

    torch.set_num_threads(args.threads)
    work = args.work
    os.makedirs(work, exist_ok=True)
    timings = {}
    t_all = time.perf_counter()

    # 1. data
    data = collect_all(args, work)
    timings["collect_s"] = data["seconds"]
    train_eps = load_jobs(data["jobs"], ("train",))
    eval_eps = load_jobs(data["jobs"], ("eval", "exploit"))
    probe_eps = load_probes(data["probe_jobs"])
    train_frames = [e["frames"] for e in train_eps]
    print(f"[data] train: {len(train_eps)} expert episodes ({sum(len(f) for f in train_frames)} frames, "
          f"success {np.mean([e['success'] for e in train_eps]):.2f}); eval: {len(eval_eps)} episodes", flush=True)

    # 2. models (same functions the CLI calls; each run resumes from its newest snapshot)
    from mmreward.robotics.codec.vqgan import evaluate_vqgan
    from mmreward.robotics.reward.diffusion_reward import DiffusionReward, DiffusionRewardConfig
    from mmreward.robotics.video.vq_diffusion import VQDiffusionConfig, train_video_model

    t0 = time.perf_counter()
    pretrained = DiffusionReward.from_pretrained(args.pretrained_folder) if args.pretrained else None
    if pretrained is not None:  # score a saved model: its codec and video model, no training
        pretrained.set_progress(None)  # its own ranker, if any, is not scored: --progress-steps trains one
        codec, video = pretrained.codec, pretrained.video
        print(f"[pretrained] {args.pretrained}: reward_type {pretrained.config.reward_type}", flush=True)
    else:
        codec = train_codec(vars(args), work, train_frames)
        timings["codec_train_s"] = time.perf_counter() - t0
    codec_metrics = evaluate_vqgan(codec, train_frames[:8])
    print(f"[codec] {time.perf_counter() - t0:.0f} s: {codec_metrics}", flush=True)
    if pretrained is None:
        t0 = time.perf_counter()
        s = codec.config.latent_size
        vcfg = VQDiffusionConfig(num_codes=args.num_codes, token_shape=(s, s), dim=args.video_dim,
                                 depth=args.video_depth, heads=args.video_heads, context_dim=args.video_dim,
                                 frame_skip=args.video_frame_skip, num_history=args.video_history)
        video = train_video_model(train_frames, vcfg, os.path.join(work, "video"), codec=codec,
                                  steps=args.video_steps, batch_size=args.video_batch,
                                  warmup_steps=min(200, args.video_steps // 10), ckpt_every=250)
        timings["video_train_s"] = time.perf_counter() - t0
        print(f"[video] {timings['video_train_s']:.0f} s", flush=True)
    ranker = None
    if args.progress_steps > 0:
        from mmreward.robotics.reward.progress import ProgressConfig, ProgressModel, train_progress

        t0 = time.perf_counter()
        pdir = os.path.join(work, f"progress_{args.progress_steps}")
        if os.path.isfile(os.path.join(pdir, "model", "model.safetensors")):
            ranker = ProgressModel.from_pretrained(os.path.join(pdir, "model"))
            pmetrics = json.load(open(os.path.join(pdir, "metrics.json")))
        else:
            torch.manual_seed(0)
            ranker, pmetrics = train_progress(train_frames, ProgressConfig(image_size=args.size), pdir,
                                              steps=args.progress_steps)
        timings["progress_train_s"] = time.perf_counter() - t0
        print(f"[progress] {pmetrics}", flush=True)

    # 3. rewards
    t0 = time.perf_counter()
    estimators = [args.estimator] + ([args.also_estimator] if args.also_estimator and
                                     args.also_estimator != args.estimator else [])
    models = {}
    chain = dict(batch_size=args.reward_batch, skip_step=args.skip_step, compute_dtype=args.compute_dtype)
    for est in estimators:
        if est == "likelihood":
            rcfg = DiffusionRewardConfig(reward_type=est, **chain)
        elif est == "relative_likelihood":  # + the lower-variance x0 entropy estimator
            rcfg = DiffusionRewardConfig(reward_type=est, entropy_estimator="x0_entropy", **chain)
        else:
            rcfg = DiffusionRewardConfig(entropy_estimator=est, **chain)

        def same(c) -> bool:  # statistics fitted for this reward: same estimator, chain and compute dtype
            return (c.reward_type, c.entropy_estimator, c.skip_step, c.compute_dtype) == (
                rcfg.reward_type, rcfg.entropy_estimator, rcfg.skip_step, rcfg.compute_dtype)

        out = os.path.join(work, f"reward_{est}")
        cached = DiffusionReward.from_pretrained(out) if os.path.isfile(os.path.join(out, "config.json")) else None
        if cached is None and pretrained is not None and int(pretrained.statistics[2]) > 0 and same(
                pretrained.config):  # the saved model's own statistics
            pretrained.config.batch_size = rcfg.batch_size
            pretrained.save_pretrained(out)
            cached = DiffusionReward.from_pretrained(out)
        if cached is not None and same(cached.config) and int(cached.motion_statistics[1]) > 0:
            models[est] = cached
            stats = dict(zip(("mean", "std", "frames"), models[est].statistics.tolist()))
            stats["motion_std"] = float(models[est].motion_statistics[0])
            if int(cached.displacement_statistics[1]) == 0:  # saved before the displacement term: tokens only
                cached.fit_displacement_statistics(train_frames)
                cached.save_pretrained(out)
            stats["displacement_std"] = float(models[est].displacement_statistics[0])
        else:  # also for a saved model without motion statistics (saved before the motion term)
            models[est] = DiffusionReward(codec, video, rcfg)
            stats = models[est].fit_statistics(train_frames)
            models[est].save_pretrained(out)
        print(f"[stats] {est}: {stats}", flush=True)
    timings["fit_stats_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    nn_ref = NearestExpert(train_frames)
    main_key = f"dr_{args.estimator}"
    methods = [(f"dr_{est}", f"Diffusion Reward ({est})") for est in estimators]
    methods += [(f"{main_key}+motion{lam:g}", f"Diffusion Reward ({args.estimator}) − {lam:g}·motion deficit")
                for lam in MOTION_SCALES]
    if ranker is not None:
        methods += [(f"{main_key}+progress", f"Diffusion Reward ({args.estimator}) + {args.progress_scale:g}·progress")]
        methods += [(f"{main_key}+progress+motion{lam:g}",
                     f"Diffusion Reward ({args.estimator}) + {args.progress_scale:g}·progress − {lam:g}·motion deficit")
                    for lam in MOTION_SCALES]
        methods += [(f"{main_key}+progress{m}+disp{d:g}", f"Diffusion Reward ({args.estimator}) + "
                     f"{args.progress_scale:g}·progress{f' − {lam:g}·motion deficit' if lam else ''} + {d:g}·displacement")
                    for lam, m in [(0, "")] + [(lam, f"+motion{lam:g}") for lam in MOTION_SCALES]
                    for d in DISPLACEMENT_SCALES]
        methods += [("progress", "progress ranker")]
    methods += [("frame_diff", "−|frame difference|"), ("nn_expert", "−NN distance to expert frames")]
    folders = {est: os.path.join(work, f"reward_{est}") for est in estimators}
    scored_eps = eval_eps + probe_eps
    jobs = [(folders, [(e["path"]) for e in scored_eps[i::args.workers]]) for i in range(args.workers)]
    if args.workers > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as ex:
            parts = list(ex.map(_score_job, jobs))
    else:
        parts = [_score_job(jobs[0])]
    scored = {}
    for part in parts:
        scored.update(part)
    for e in scored_eps:  # the sums DiffusionReward.combine forms (no RND, no clip here)
        for est in estimators:
            e[f"dr_{est}"] = scored[e["path"]][est]["z"]
        deficit = scored[e["path"]][args.estimator]["deficit"]
        e["motion_deficit"] = deficit
        for lam in MOTION_SCALES:
            e[f"{main_key}+motion{lam:g}"] = e[main_key] - lam * deficit
        if ranker is not None:
            e["progress"] = ranker(torch.from_numpy(e["frames"])).numpy()
            e[f"{main_key}+progress"] = e[main_key] + args.progress_scale * e["progress"]
            for lam in MOTION_SCALES:
                e[f"{main_key}+progress+motion{lam:g}"] = e[f"{main_key}+progress"] - lam * deficit
            displacement = scored[e["path"]][args.estimator]["displacement"]
            for m in [""] + [f"+motion{lam:g}" for lam in MOTION_SCALES]:
                for d in DISPLACEMENT_SCALES:
                    e[f"{main_key}+progress{m}+disp{d:g}"] = e[f"{main_key}+progress{m}"] + d * displacement
        e["frame_diff"] = frame_diff_rewards(e["frames"])
        e["nn_expert"] = nn_ref(e["frames"])
    timings["score_s"] = time.perf_counter() - t0

    # 4. metrics
    tasks = args.train_tasks + args.heldout_tasks
    results = score_methods([k for k, _ in methods], eval_eps, probe_eps, args.train_tasks, args.heldout_tasks)
    for key, title in methods:
        results[key] = {"title": title} | results[key]
    goal_keys = [k for k, _ in methods if k.startswith(main_key)]
    goals, beats = {}, {}
    for key in goal_keys:  # the goals and baseline comparison, for each learned reward
        tr = results[key]["train_tasks"]
        ho = results[key]["heldout_tasks"]
        goals[key] = {
            "spearman_mean_le_-0.6": tr["spearman_noise_mean"] <= -0.6,
            "no_task_spearman_above_-0.3": tr["spearman_noise_max"] <= -0.3,
            "success_auc_mean_ge_0.8": tr["success_auc_mean"] >= 0.8,
            "exploits_below_random_every_task": min(tr.get("exploit_pass_frac", 0), ho.get("exploit_pass_frac", 1)) == 1.0,
        }
        if args.heldout_tasks:  # the transfer goals need held-out tasks
            goals[key]["heldout_spearman_mean_le_-0.4"] = ho.get("spearman_noise_mean", math.nan) <= -0.4
            goals[key]["heldout_expert_vs_random_ge_0.85"] = ho.get("expert_vs_random_auc_mean", math.nan) >= 0.85
        beats[key] = {}
        for b in ("frame_diff", "nn_expert"):
            bt = results[b]["train_tasks"]
            beats[key][b] = {"spearman": tr["spearman_noise_mean"] < bt["spearman_noise_mean"],
                             "success_auc": tr["success_auc_mean"] > bt["success_auc_mean"],
                             "expert_vs_random_auc": tr["expert_vs_random_auc_mean"] > bt["expert_vs_random_auc_mean"]}
    timings["total_s"] = time.perf_counter() - t_all

    os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
    plot_rewards(args.plot, eval_eps, args.train_tasks[0], [methods[0], methods[-2], methods[-1]])
    if args.save_pretrained:
        src = folders[args.estimator]
        tmp = args.save_pretrained.rstrip("/") + ".tmp"  # built aside, then swapped in
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        saved = DiffusionReward.from_pretrained(src)
        saved.config.motion_scale, saved.config.displacement_scale = args.motion_scale, args.displacement_scale
        from mmreward.robotics.reward.progress import group_goals

        tasks_of = [e["task"] for e in train_eps]  # goal statistics: each episode against others of its task
        saved.fit_goal_statistics([torch.from_numpy(f) for f in train_frames],
                                  [group_goals(train_frames, tasks_of, k) for k in range(len(train_frames))])
        if ranker is not None:  # the saved reward model with the ranker attached (β = --progress-scale)
            saved.set_progress(ranker)
            saved.config.progress_scale = args.progress_scale
        saved.save_pretrained(tmp)
        if os.path.exists(args.save_pretrained):
            shutil.rmtree(args.save_pretrained)
        os.replace(tmp, args.save_pretrained)
        print(f"[save] {src}{' + progress ranker' if ranker is not None else ''}, motion scale {args.motion_scale:g} "
              f"-> {args.save_pretrained}")
    report = {
        "benchmark": "diffusion_reward_quality", "quick": args.quick,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "setup": {k: getattr(args, k) for k in ("train_tasks", "heldout_tasks", "train_episodes", "eval_episodes", "eval_seed",
                                                "max_steps", "size", "action_repeat", "codec_steps", "codec_batch",
                                                "codec_channels", "num_codes", "video_steps", "video_batch",
                                                "video_dim", "video_depth", "video_heads", "video_frame_skip", "video_history",
                                                "estimator", "skip_step", "compute_dtype")}
                 | pretrained_setup(args.pretrained, codec, video),
        "noises": list(NOISES), "codec_metrics": codec_metrics,
        "statistics": {est: dict(zip(("mean", "std", "frames"), m.statistics.tolist())) for est, m in models.items()},
        "results": results, "goals": goals, "beats_baselines": beats, "timings": timings,
        "episodes": [{k: (v if not isinstance(v, np.ndarray) else None) for k, v in e.items()
                      if k in ("task", "policy", "noise", "file", "success", "env_return")}
                     | {m: float(np.mean(e[m])) for m, _ in methods} for e in eval_eps],
        "motion_deficit_by_group": {f"{t}/{p}": float(np.mean([np.mean(e["motion_deficit"]) for e in eval_eps
                                                                  if e["task"] == t and e["policy"] == p]))
                                    for t in tasks for p in sorted({e["policy"] for e in eval_eps if e["task"] == t})},
        "probe_episodes": [{k: e[k] for k in ("task", "hold_after", "seed", "success", "env_return")}
                           | {m: float(np.mean(e[m])) for m, _ in methods} for e in probe_eps],
    }
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print_table(results, methods, args)
    for key in goal_keys:
        print(f"goals (training tasks, {key}):", json.dumps(goals[key]), "| beats baselines:", json.dumps(beats[key]))
    print(f"timings: {json.dumps({k: round(v) for k, v in timings.items()})}")
    print(f"-> {args.json}, {args.plot}")
    return 0


def print_table(results: dict, methods: list, args) -> None:
    tasks = args.train_tasks + args.heldout_tasks
    f = lambda x: "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.2f}"
    print(f"\n{'method':<34} {'task':<28} {'ρ(σ)':>6} {'succAUC':>7} {'exp>rnd':>7} {'succ%':>6} {'ρ(k)':>6} "
          f"{'fwd>rev':>7} {'rnd>frz':>7} {'rnd>hov':>7}")
    for key, _ in methods:
        for t in tasks:
            r = results[key]["per_task"][t]
            tag = t + (" (held out)" if t in args.heldout_tasks else "")
            print(f"{key:<34} {tag:<28} {f(r['spearman_noise'])} {f(r['success_auc']):>7} "
                  f"{f(r['expert_vs_random_auc']):>7} {f(r['success_rate']):>6} {f(r.get('progress_spearman'))} "
                  f"{f(r['forward_vs_reversed_auc']):>7} {f(r['random_vs_frozen_start_auc']):>7} {f(r['random_vs_hover_auc']):>7}")
        for which in ("train_tasks", "heldout_tasks"):
            s = results[key][which]
            if not s:
                continue
            print(f"{key:<34} {'MEAN (' + which.split('_')[0] + ')':<28} {f(s['spearman_noise_mean'])} "
                  f"{f(s['success_auc_mean']):>7} {f(s['expert_vs_random_auc_mean']):>7} {'':>6} "
                  f"{f(s['progress_spearman_mean'])} {f(s['forward_vs_reversed_auc_mean']):>7} "
                  f"{f(s['random_vs_frozen_start_auc_mean']):>7} {f(s['random_vs_hover_auc_mean']):>7}")


if __name__ == "__main__":
    sys.exit(main())
