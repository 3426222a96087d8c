"""Reward sources for visual RL, selectable by name.

A source relabels a finished episode in one batch: ``source(frames [T+1, H, W, 3] uint8,
env_rewards [T], success [T]) -> rewards [T]``, reward t belonging to the transition into frame t+1.
Some also learn online (``update(frames)`` on replay frames every ``update_interval`` agent steps).

The RND term ``α·r_RND`` is not stored with the episode: as in the official Diffusion Reward code
(``DrQV2Agent.update``: ``reward += rm.calc_expl_reward(obs, next_obs)``), :meth:`RewardSource.bonus`
gives it for the next observations of each sampled batch, with the RND predictor as it is at that
update, and the workspace adds it to the batch's n-step reward. A novelty paid once, when the episode
ended, would stay in the replay buffer at its first value however familiar the frames became.

=========================  =========================================================================
``sparse``                 the success indicator per step (the baseline of the Diffusion Reward paper)
``dense``                  the environment's own shaped reward (Meta-World's hand-designed reward)
``dapg``                   Adroit door / hammer / relocate: ``dense`` with DAPG's sign of the approach
                           term (the environment is stepped with it: see ``envs/adroit.py``)
``diffusion``              Diffusion Reward, entropy mode: (1−α)·z(−H) + α·RND + success (α = 0.95)
``diffusion-likelihood``   the same mixing with the likelihood bound of the observed frame
``diffusion-relative``     the same mixing with the relative likelihood (bound + entropy of the same
                           prediction; the shipped checkpoint's mode)
``diffusion-progress``     ``diffusion-relative`` plus β·z(progress) from the checkpoint's progress
                           ranker (:mod:`mmreward.robotics.reward.progress`; not in the paper): pays
                           for getting further through the task, not only for plausible frames
``diffusion-goal``         ``diffusion-progress`` − γ·goal distance (to the last frames of the task's
                           expert episodes) + δ·min(displacement from the first frame, cap), with
                           γ 1, δ 4, cap 3 unless given: frozen and hovering episodes score below
                           random exploration on every Meta-World task of the quality benchmark, and
                           RL learns as with ``diffusion-progress`` (not in the paper; needs experts)
``viper``                  VIPER-style: z(log-likelihood bound of the frame under the expert video
                           model) mixed with RND at α = 0.5 (the official VIPER config's weight) +
                           success. Uses our conditional VQ-Diffusion in place of VIPER's VideoGPT.
``rnd``                    RND novelty only (normalised) + success
callable                   any ``frames [T+1, H, W, 3] uint8 -> rewards [T+1] or [T]``
=========================  =========================================================================

The learned sources add the success reward like the paper (``use_sparse``, weighted by
``success_scale``); with ``shaping="potential"`` they pay their reward as a potential instead
(``γ·Φ(next frame) − Φ(frame)``, not in the paper), which cannot change which policy is optimal. All but
``diffusion-progress`` / ``diffusion-goal`` ignore a progress ranker the checkpoint may hold (the paper's rule). Missing expert statistics
for the chosen mode (e.g. likelihood with a checkpoint fitted for entropy) are fitted on expert
episodes: ``expert_data`` (an episode folder), else a few scripted-expert episodes collected here.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

REWARD_SOURCES = ("sparse", "dense", "dapg", "diffusion", "diffusion-likelihood", "diffusion-relative", "diffusion-progress",
                  "diffusion-goal", "viper", "rnd")
SHAPINGS = ("none", "potential")
ENV_REWARDS = ("dense", "dapg")  # sources that pay the environment's reward, each the env's reward option of that name
_REWARD_TYPE = {"diffusion": "entropy", "diffusion-relative": "relative_likelihood",
                "diffusion-progress": "relative_likelihood", "diffusion-goal": "relative_likelihood"}  # others: likelihood
# diffusion-goal's terms (γ, δ, cap) where the caller gives none: δ and the cap chosen on metaworld-64's split of
# the quality benchmark (its exploit check), γ the goal distance's best RL setting (docs/visual_rl.md)
GOAL_RULE = {"goal_scale": 1.0, "displacement_scale": 4.0, "displacement_cap": 3.0}


def env_reward_for(source: Any) -> str:
    """The reward the pixel environment steps with for reward source ``source``: ``"dapg"`` for the
    DAPG-signed Adroit reward, else the environment's own (``"dense"``)."""
    return "dapg" if source == "dapg" else "dense"


class RewardSource:
    name = "?"
    update_interval = 0  # agent steps between online updates (0: none)
    model_digest: Optional[dict] = None  # the learned reward's checkpoint as loaded (run fingerprints)
    # the --expert-data episodes the reward's statistics / goal frames were taken from (their frames), when
    # it read any: part of a run's fingerprint (see expert_data_digest)
    expert_digest: Optional[dict] = None

    def __call__(self, frames: np.ndarray, env_rewards: np.ndarray, success: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(self, frames: torch.Tensor) -> dict[str, float]:
        return {}

    def bonus(self, frames: torch.Tensor) -> Optional[torch.Tensor]:
        """The exploration bonus ``[B]`` of next observations ``frames`` (uint8 ``[B, H, W, 3]``) that the
        agent adds to a sampled batch's reward, or None (no bonus)."""
        return None

    def state(self) -> dict:
        return {}

    def load(self, state: dict) -> None:
        pass


class SparseReward(RewardSource):
    name = "sparse"

    def __call__(self, frames, env_rewards, success):
        return np.asarray(success, dtype=np.float32)


class DenseReward(RewardSource):
    name = "dense"

    def __call__(self, frames, env_rewards, success):
        return np.array(env_rewards, dtype=np.float32)  # a copy: never the caller's array


class CallableReward(RewardSource):
    """Wraps ``fn(frames [T+1, H, W, 3]) -> [T+1] or [T]``; with T+1 values the first (reset frame)
    is dropped so reward t belongs to frame t+1."""

    name = "callable"

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, frames, env_rewards, success):
        out = self.fn(frames)
        t = len(env_rewards)
        try:
            r = (out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor)
                 else np.asarray(out, dtype=np.float32))
        except (TypeError, ValueError) as e:  # was numpy's "could not convert string to float", naming nothing
            raise TypeError(f"reward callable must return one number per frame ({t + 1}) or per step ({t}), "
                            f"got {type(out).__name__}: {e}") from None
        r = r.astype(np.float32, copy=False)
        if r.ndim > 1 and r.size == r.shape[0]:
            r = r.reshape(-1)  # [T, 1] is one value per step
        if r.ndim != 1:  # [T+1, 2] was flattened to 2(T+1) values and reported as a count mismatch
            raise ValueError(f"reward callable returned shape {list(r.shape)} for an episode of {t} steps: "
                             f"expected one value per frame [{t + 1}] or per step [{t}]")
        if r.shape[0] == t + 1:
            r = r[1:]
        if r.shape[0] != t:
            raise ValueError(f"reward callable returned {r.shape[0]} values for an episode of {t} steps "
                             f"(expected {t} or {t + 1})")
        bad = np.flatnonzero(~np.isfinite(r))
        if bad.size:  # one NaN in the replay buffer spreads through every critic update that samples it
            raise ValueError(f"reward callable returned NaN / inf rewards ({bad.size} of {t}, first at step {bad[0]})")
        return r


class LearnedReward(RewardSource):
    """A :class:`~mmreward.robotics.reward.DiffusionReward` (any mode, optional RND) relabelling
    whole episodes; its RND predictor, when present, trains online on replay frames."""

    def __init__(self, model, name: str, update_interval: int = 100, shaping: str = "none", discount: float = 0.99):
        self.model, self.name = model.eval(), name
        self.update_interval = update_interval if model.rnd is not None else 0
        self.shaping, self.discount = shaping, float(discount)

    def __call__(self, frames, env_rewards, success):
        from ..wrappers import relabel_episode

        use_sparse = self.model.config.use_sparse
        # without the RND term: bonus() pays it per sampled batch, with the predictor of that moment
        if self.shaping == "none":
            return relabel_episode(self.model, frames, np.asarray(success) if use_sparse else None, with_rnd=False)
        # potential-based shaping (Ng et al. 1999): Φ = the learned reward of a frame; a transition pays
        # γ·Φ(next) − Φ(frame) + success, which leaves the optimal policy that of the success reward alone
        with torch.no_grad():
            phi = self.model(torch.as_tensor(np.ascontiguousarray(frames)).to(self.model.device),
                             with_rnd=False).float().cpu()
        r = (self.discount * phi[1:] - phi[:-1]).numpy()  # [T]
        if use_sparse:
            r = r + self.model.config.success_scale * np.asarray(success, dtype=np.float32)
        return r.astype(np.float32)

    def update(self, frames: torch.Tensor) -> dict[str, float]:
        return self.model.update_rnd(frames.to(self.model.device))

    def bonus(self, frames: torch.Tensor) -> Optional[torch.Tensor]:
        """``α·r_RND`` of the frames (None without an RND module or with α = 0)."""
        if self.model.rnd is None or self.model.config.expl_scale == 0:
            return None
        return self.model.exploration_bonus(torch.as_tensor(frames).to(self.model.device)).float().cpu()

    def state(self) -> dict:
        if self.model.rnd is None:
            return {}
        opt = self.model.rnd._opt
        return {"rnd": {k: v.detach().clone() for k, v in self.model.rnd.state_dict().items()},
                "rnd_opt": opt.state_dict() if opt is not None else None}

    def load(self, state: dict) -> None:
        if "rnd" in state and self.model.rnd is not None:
            self.model.rnd.load_state_dict(state["rnd"])
            if state.get("rnd_opt") is not None:
                rnd = self.model.rnd
                rnd._opt = torch.optim.Adam(rnd.predictor.parameters(), lr=rnd.config.lr)
                rnd._opt.load_state_dict(state["rnd_opt"])


EXPERT_POLICIES = ("expert", "demo")  # the episodes of an --expert-data folder that count as expert behaviour


def _expert_tasks(expert_data: str) -> set:
    from ..data.episodes import read_manifest

    return {e["task"] for e in read_manifest(expert_data) if e.get("policy") in EXPERT_POLICIES}


def _expert_frames(task: str, expert_data: Optional[str], size: int, action_repeat: int, episodes: int,
                   max_steps: Optional[int]) -> list[np.ndarray]:
    if expert_data:
        from ..data.episodes import load_episode_folder

        # every expert (or imported demo) episode of the folder (not len(EpisodeDataset): that counts frame
        # windows, not episodes); the task's own when the folder has them: its last frames are the goal frames
        # of this task. Noisy / random episodes collected into the same folder were fitted on as experts.
        tasks = _expert_tasks(expert_data)
        if not tasks:  # was load_episode_folder's "--policies all uses every episode", a flag train-rl lacks
            from ..data.episodes import read_manifest

            have = sorted({str(e.get("policy")) for e in read_manifest(expert_data)})
            raise ValueError(f"--expert-data {expert_data} holds no expert episodes (policy "
                             f"{' / '.join(EXPERT_POLICIES)}; its episodes' policies: {', '.join(have) or 'none'}): "
                             "collect them with `collect --policy expert`, or import demonstrations with `import-videos` "
                             "(its default --policy demo)")
        has_task = task in tasks
        frames = [ep.frames for _, ep in load_episode_folder(expert_data, [task] if has_task else None, EXPERT_POLICIES)]
        other = sorted({tuple(f.shape[1:3]) for f in frames} - {(size, size)})
        if other:  # was "frames must be 64x64 pixels, got 32x32", naming neither the folder nor the fix
            h, w = other[0]
            raise ValueError(f"--expert-data {expert_data} holds {h}x{w} frames, but the reward model takes "
                             f"{size}x{size}: collect its episodes with --size {size}")
        return frames
    from ..collect import run_episode
    from ..envs import make_env

    out = []
    with make_env(task, size=size, action_repeat=action_repeat, seed=10_000, max_steps=max_steps) as env:
        if not env.has_expert:
            from ..pretrained import shipped_expert

            # was "pass expert_data=<episode folder>": neither the train-rl flag nor how to make one
            how = f"mmreward robotics collect --tasks {task} --policy expert --size {size} --out data/{task}-experts"
            if shipped_expert(task) is None:
                short = task.removeprefix("adroit-")
                how = (f"mmreward robotics train-expert --task {task} --out runs/expert-{short}`, then `{how} "
                       f"--expert-model runs/expert-{short}/model")
            raise ValueError(f"the reward's checkpoint has no expert statistics for this reward mode and {task} has no "
                             f"scripted expert to fit them on: pass expert_data=<episode folder> (--expert-data) of "
                             f"expert episodes of {task}, e.g. from `{how}`")
        failed = 0
        for i in range(episodes):
            ep = run_episode(env, policy="expert", noise=0.0, seed=10_000 + i, rng=np.random.default_rng(i))
            out.append(ep.frames)
            failed += not ep.succeeded
        if failed:  # `--episode-steps 10` cut the experts mid-task: their last frames were taken as the goal
            import warnings

            # more steps help only below the task's limit: at it, the expert fails the scene whatever it is given
            more = ("give more --episode-steps, or " if env.max_steps < env.max_env_steps // env.action_repeat
                    else "")
            warnings.warn(f"{failed} of {episodes} scripted expert episodes of {task} did not succeed within "
                          f"{env.max_steps} agent steps: the reward's expert statistics (and goal frames) come from "
                          f"unfinished demonstrations; {more}pass --expert-data of finished ones", stacklevel=2)
    return out


# options only the learned (video-model) reward sources read, with the flag train-rl gives each
LEARNED_OPTIONS = {"checkpoint": "--model", "expert_data": "--expert-data", "expl_scale": "--expl-scale",
                   "reward_clip": "--clip-min", "success_scale": "--success-scale", "motion_scale": "--motion-scale",
                   "goal_scale": "--goal-scale", "displacement_scale": "--displacement-scale",
                   "displacement_cap": "--displacement-cap", "consistency_scale": "--consistency-scale"}
# of those, what 'rnd' (novelty + success, no video model) reads; its α is 1 by definition
RND_OPTIONS = ("checkpoint", "success_scale")


def check_reward_options(spec: Any, **options: Any) -> None:
    """Refuse learned-reward options (``LEARNED_OPTIONS``, None: not given) that the reward ``spec``
    would ignore: a sparse, dense, dapg or callable reward reads none of them, 'rnd' only
    ``checkpoint`` and ``success_scale`` (and ``expl_scale`` 1, its fixed weight)."""
    learned = not (isinstance(spec, RewardSource) or callable(spec) or spec in ("sparse",) + ENV_REWARDS)
    if not learned:
        ignored = [k for k in LEARNED_OPTIONS if options.get(k) is not None]
    elif spec == "rnd":
        ignored = [k for k in LEARNED_OPTIONS if k not in RND_OPTIONS and options.get(k) is not None
                   and not (k == "expl_scale" and float(options[k]) == 1.0)]
    else:
        return
    if ignored:
        what = f"reward {spec!r}" if isinstance(spec, str) else f"a {type(spec).__name__} reward"
        flags = ", ".join(f"{k} ({LEARNED_OPTIONS[k]})" for k in ignored)
        raise ValueError(f"{what} does not use {flags}: these options apply to the learned reward sources"
                         + ("; 'rnd' pays RND novelty (weight 1) + success" if spec == "rnd" else "")
                         + "; leave them out")


def make_reward_source(spec: Any, *, task: str = "door-open-v3", checkpoint: Optional[str] = None,
                       device: Any = "cpu", size: int = 64, action_repeat: int = 2,
                       expert_data: Optional[str] = None, stats_episodes: int = 3,
                       max_steps: Optional[int] = None, rnd_update_interval: int = 100,
                       expl_scale: Optional[float] = None, reward_clip: Optional[float] = None,
                       success_scale: Optional[float] = None, motion_scale: Optional[float] = None,
                       goal_scale: Optional[float] = None, displacement_scale: Optional[float] = None,
                       displacement_cap: Optional[float] = None, consistency_scale: Optional[float] = None,
                       shaping: str = "none",
                       discount: float = 0.99) -> RewardSource:
    """The reward source ``spec`` (a name from :data:`REWARD_SOURCES`, a callable, or a source).
    ``expl_scale`` overrides α, the RND weight of the learned sources (default: the checkpoint's,
    0.95 as in the paper, for ``diffusion`` / ``diffusion-likelihood``; 0.5 for ``viper``);
    ``reward_clip`` bounds their standardised term below (``DiffusionRewardConfig.clip_min``);
    ``success_scale`` weights the success reward they add (default 1, the paper's); ``motion_scale`` sets λ of
    the motion deficit they subtract (default: the checkpoint's); ``goal_scale`` γ of the goal distance they
    subtract, against the last frames of the expert episodes (``expert_data``, else ``stats_episodes``
    scripted ones; the goal statistics are fitted on them when the checkpoint has none); ``displacement_scale``
    δ of the displacement from the episode's first frame they add (default: the checkpoint's; its statistics
    fitted on the same experts when the checkpoint has none) and ``displacement_cap`` its bound in expert stds
    (default: the checkpoint's); ``consistency_scale`` κ of the motion consistency they add (default: the
    checkpoint's; its statistics fitted on the same experts when the checkpoint has none). ``shaping="potential"``
    pays them as a potential instead, ``γ·Φ(s') − Φ(s) + success`` with Φ the learned reward of a frame and
    γ = ``discount`` (the agent's), so that the optimal policy is the success reward's. ``checkpoint``: a
    Diffusion Reward folder (or a trainer's run folder holding one) or a shipped name; ``device`` is checked
    against this machine (:class:`~mmreward.core.device.DeviceError`)."""
    from mmreward.core.device import resolve_device

    device = resolve_device(device)
    check_reward_options(spec, checkpoint=checkpoint, expert_data=expert_data, expl_scale=expl_scale,
                         reward_clip=reward_clip, success_scale=success_scale, motion_scale=motion_scale,
                         goal_scale=goal_scale, displacement_scale=displacement_scale, displacement_cap=displacement_cap,
                         consistency_scale=consistency_scale)
    if shaping not in SHAPINGS:
        raise ValueError(f"shaping must be one of {', '.join(SHAPINGS)}, got {shaping!r}")
    if shaping != "none" and (isinstance(spec, RewardSource) or callable(spec) or spec in ("sparse",) + ENV_REWARDS):
        raise ValueError(f"shaping={shaping!r} applies to the learned reward sources, not to {spec!r}")
    if not 0.0 < float(discount) <= 1.0:
        raise ValueError(f"discount must be in (0, 1], got {discount}")
    if expl_scale is not None and not 0.0 <= float(expl_scale) <= 1.0:
        raise ValueError(f"expl_scale must be in [0, 1], got {expl_scale}")
    if isinstance(spec, RewardSource):
        return spec
    if callable(spec):
        return CallableReward(spec)
    if spec == "sparse":
        return SparseReward()
    if spec in ENV_REWARDS:  # "dapg": the environment steps with that reward (env_reward_for), paid as it comes
        if spec == "dapg" and not task.startswith("adroit-"):
            raise ValueError(f"the dapg reward applies to Adroit tasks; {task} is not one")
        source = DenseReward()
        source.name = spec
        return source
    if spec not in REWARD_SOURCES:
        raise ValueError(f"unknown reward source {spec!r}: choose from {', '.join(REWARD_SOURCES)} or pass a callable")
    from ..pretrained import DEFAULT, model_folder
    from ..reward.diffusion_reward import DiffusionReward
    from ..reward.rnd import RND, RNDConfig

    model = DiffusionReward.from_pretrained(model_folder(checkpoint or DEFAULT, ("diffusion_reward",)), device)
    digest = checkpoint_digest(model)  # before any statistic is fitted or option set: what the folder holds
    image = model.codec.config.image_size
    if image != size:
        raise ValueError(f"the reward model takes {image}x{image} frames but the environment renders {size}x{size}: "
                         f"use --size {image} or a checkpoint trained at {size}")
    cfg = model.config
    if spec in ("diffusion-progress", "diffusion-goal"):
        if model.progress is None:
            raise ValueError(f"reward {spec!r} needs a checkpoint with a progress ranker; "
                             f"{checkpoint or 'the shipped model'} has none (add one with `mmreward robotics "
                             "train-progress --attach ...`)")
    else:
        model.set_progress(None)
    if model.rnd is None:
        model.rnd = RND(RNDConfig(image_size=image)).to(device)
    if spec == "rnd":
        if shaping != "none":
            raise ValueError("shaping applies to the video-model rewards, not to 'rnd'")
        cfg.use_std, cfg.expl_scale = False, 1.0
        source = _RNDOnly(model, spec, rnd_update_interval)
        source.model_digest = digest
        return source
    want = _REWARD_TYPE.get(spec, "likelihood")
    if spec == "viper":
        cfg.expl_scale = 0.5
    overrides = {"expl_scale": expl_scale, "clip_min": reward_clip, "success_scale": success_scale,
                 "motion_scale": motion_scale, "goal_scale": goal_scale, "displacement_scale": displacement_scale,
                 "displacement_cap": displacement_cap, "consistency_scale": consistency_scale}  # None: the checkpoint's
    if spec == "diffusion-goal":
        overrides.update({k: v for k, v in GOAL_RULE.items() if overrides[k] is None})
    for field, value in overrides.items():
        if value is not None:
            setattr(cfg, field, float(value))
    cfg.validate()
    experts: list = []

    used: dict = {}

    def expert_frames() -> list:  # collected (or loaded) once, when a statistic or the goal needs them
        if not experts:
            experts.extend(_expert_frames(task, expert_data, size, action_repeat, stats_episodes, max_steps))
            if expert_data:  # the user's episodes (scripted ones are the code's, seeded: nothing to record)
                used["digest"] = expert_data_digest(experts)
        return experts

    unfitted_motion = cfg.motion_scale > 0 and int(model.motion_statistics[1]) == 0
    if cfg.reward_type != want or int(model.statistics[2]) == 0 or unfitted_motion:
        if want == "relative_likelihood" and cfg.reward_type != want:
            cfg.entropy_estimator = "x0_entropy"  # the lower-variance entropy term
        cfg.reward_type = want
        model.fit_statistics(expert_frames())
    if cfg.goal_scale > 0:
        from ..reward.progress import group_goals

        tasks = _expert_tasks(expert_data) if expert_data else {task}
        if task not in tasks and len(tasks) > 1:  # the last frames of other tasks were taken as this task's goals
            raise ValueError(f"--expert-data {expert_data} holds no expert episodes of {task} (its expert tasks: "
                             f"{', '.join(sorted(tasks))}): the goal distance needs this task's final frames")

        demos = [torch.from_numpy(np.ascontiguousarray(f)) for f in expert_frames()]
        if int(model.goal_statistics[1]) == 0:
            model.fit_goal_statistics(demos, [group_goals(demos, [0] * len(demos), k) for k in range(len(demos))])
        model.set_goal(torch.stack([d[-1] for d in demos]).to(model.device))
    for term in ("displacement", "consistency"):  # terms fitted from expert frames alone
        if getattr(cfg, f"{term}_scale") > 0 and int(getattr(model, f"{term}_statistics")[1]) == 0:
            getattr(model, f"fit_{term}_statistics")(expert_frames())
    source = LearnedReward(model, spec, rnd_update_interval, shaping=shaping, discount=discount)
    source.model_digest = digest
    source.expert_digest = used.get("digest")
    return source


def expert_data_digest(frames: list) -> dict:
    """``{"episodes": n, "sha256": ...}`` over the expert episodes' frames (dtype, shape, uint8 bytes) in the
    order they were used: what the user's ``--expert-data`` gave the reward, not the statistics fitted on it
    (floats that may differ in their last bits across machines) nor the folder's path (a moved or copied
    folder holding the same episodes still resumes)."""
    from mmreward.core.checkpoint import data_digest

    return data_digest((np.ascontiguousarray(f) for f in frames), unit="episodes")


def checkpoint_digest(model) -> dict:
    """``{"tensors": n, "sha256": ...}`` over a reward model's config and weights (names, dtypes, shapes,
    bytes): the same checkpoint gives the same digest wherever its folder lies."""
    from dataclasses import asdict, is_dataclass

    from mmreward.core.checkpoint import data_digest

    cfg = asdict(model.config) if is_dataclass(getattr(model, "config", None)) else None
    state = sorted(model.state_dict().items())
    return data_digest([cfg, *(x for name, t in state for x in (name, t))], unit="items")


class _RNDOnly(LearnedReward):
    """RND novelty (weight 1, paid per sampled batch by :meth:`bonus`) + success (relabelled), without
    running the video model."""

    def __call__(self, frames, env_rewards, success):
        return (self.model.config.success_scale * np.asarray(success, dtype=np.float32)).astype(np.float32)


__all__ = ["REWARD_SOURCES", "SHAPINGS", "RewardSource", "SparseReward", "DenseReward", "CallableReward", "LearnedReward",
           "check_reward_options", "make_reward_source"]
