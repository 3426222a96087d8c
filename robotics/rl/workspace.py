"""The visual-RL workspace: one object owns the environments, the DrQ-v2 agent, the replay buffer,
the reward source and the logs (the drqv2 code base's layout).

    from mmreward.robotics.rl import RLConfig, train_rl
    summary = train_rl(RLConfig(task="metaworld/drawer-open-v3", reward="diffusion", out="runs/rl"))

Frames count environment steps (agent steps × action repeat), as in DrQ-v2. Episodes are relabelled
by the reward source when they end, then stored; a learned reward's RND term (α·r_RND) is not stored
but added to each sampled batch's n-step reward, for the batch's next observations with the RND
predictor of that update (the official Diffusion Reward agent's ``calc_expl_reward``). Evaluation
(deterministic actions, ``success`` = any step succeeds) runs before training, every
``eval_every_frames`` and at the end; its first episode is written as an mp4 with the training reward
(without the RND term) drawn on it.

Snapshots are taken at episode boundaries as ``<out>/checkpoint-<frame>/`` folders (agent,
optimizers, replay position, reward source, RNGs and counters in one state file plus a manifest),
each swapped into place as one unit; the newest two are kept (with the replay episodes both use),
and a resumed run continues exactly as an uninterrupted one would. Starting follows
:func:`mmreward.core.checkpoint.start_run`: ``resume`` continues a run of the same settings from its
newest readable snapshot, a folder holding a run is refused without it, ``overwrite`` starts again.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, Optional

import numpy as np
import torch

from mmreward.core.checkpoint import fingerprint_text, remove_leftovers, start_run, unlock_run_folder, write_run_config
from mmreward.core.device import resolve_device
from mmreward.core.logging import MetricLogger
from mmreward.core.train import rng_state, seed_everything, set_rng_state

from .drqv2 import MIN_FRAME_SIZE, DrQV2Agent, DrQV2Config
from .recording import plot_learning_curves, write_eval_video
from .replay import EpisodeRecord, ReplayBuffer, stack_frames
from .rewards import LEARNED_OPTIONS, SHAPINGS, RewardSource, check_reward_options, env_reward_for, make_reward_source


# what a run leaves in its folder besides its snapshots and train_config.json
RUN_FILES = ("train.csv", "tb", "eval", "eval_videos", "replay", "curves.png")
# RLConfig fields a resumed run must share with the run it continues, besides those _fingerprint names
# itself; the others (frames to train for, evaluation and snapshot schedule, logging, device) may change
RESUME_SETTINGS = ("nstep", "batch_size", "replay_buffer_size", "update_every_steps", "rnd_update_interval")


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class RLConfig:
    """A training run (defaults: the Diffusion Reward paper's settings; sizes for a GPU)."""

    task: str = _help("'metaworld/<task>' (e.g. metaworld/drawer-open-v3) or 'adroit/<door|hammer|pen|relocate>'",
                      default="metaworld/drawer-open-v3")
    reward: str = _help("sparse | dense | dapg (Adroit) | diffusion | diffusion-likelihood | diffusion-relative | diffusion-progress | "
                        "diffusion-goal | viper | rnd", default="diffusion")
    checkpoint: Optional[str] = _help("Diffusion Reward folder (default: the shipped metaworld-64)", default=None)
    expert_data: Optional[str] = _help("expert episode folder for reward statistics a checkpoint lacks", default=None)
    out: str = _help("output folder (logs, snapshots, videos, curves)", default="runs/rl")
    seed: int = _help("seed of the agent, replay sampling and environment variants", default=1)
    device: str = _help("torch device", default="cpu")
    num_train_frames: int = _help("environment frames to train for", default=1_000_000)
    num_seed_frames: int = _help("frames collected before the first update", default=4000)
    eval_every_frames: int = _help("frames between evaluations (0: only before training and at the end)",
                                   default=20_000)
    num_eval_episodes: int = _help("episodes per evaluation", default=10)
    snapshot_every_frames: int = _help("frames between snapshots (0: only at the end)", default=20_000)
    save_video: bool = _help("write the first evaluation episode as an annotated mp4", default=True)
    resume: bool = _help("continue the run in --out from its newest snapshot (without: a folder holding a run is "
                         "refused)", default=True)
    overwrite: bool = _help("start again in an --out that holds a run: its snapshots, replay episodes and logs are "
                            "removed first", default=False)
    size: int = _help("frame height = width in pixels", default=64)
    camera: Optional[str] = _help("camera name (default: the suite's default camera)", default=None)
    action_repeat: int = _help("environment steps per agent action", default=2)
    frame_stack: int = _help("frames stacked into one observation", default=1)
    episode_steps: Optional[int] = _help("agent steps per episode (default: the task's time limit)", default=None)
    replay_buffer_size: int = _help("transitions kept in the replay buffer", default=1_000_000)
    nstep: int = _help("n of the n-step return", default=3)
    batch_size: int = _help("replay batch size", default=256)
    update_every_steps: int = _help("agent steps between updates", default=2)
    rnd_update_interval: int = _help("RND predictor step at the agent updates whose agent step is a multiple of this (1: every update, as the official Meta-World runs)", default=100)
    expl_scale: Optional[float] = _help("α, the RND weight of learned rewards (default: 0.95 diffusion, 0.5 viper)",
                                        default=None)
    reward_clip: Optional[float] = _help("lower bound on the learned reward's standardised term (default: none; "
                                         "the likelihood modes have a long lower tail)", default=None)
    success_scale: Optional[float] = _help("weight of the success reward that learned rewards add (default: 1, the "
                                           "paper's)", default=None)
    motion_scale: Optional[float] = _help("λ of the motion deficit learned rewards subtract (default: the "
                                          "checkpoint's; 0: off)", default=None)
    goal_scale: Optional[float] = _help("γ of the goal distance learned rewards subtract, against the last frames "
                                        "of expert episodes of the task (default: the checkpoint's; 0: off)",
                                        default=None)
    displacement_scale: Optional[float] = _help("δ of the displacement from the episode's first frame learned "
                                                "rewards add (default: the checkpoint's; 0: off)", default=None)
    displacement_cap: Optional[float] = _help("bound on that displacement in expert stds before δ (default: the "
                                              "checkpoint's; none: unbounded)", default=None)
    consistency_scale: Optional[float] = _help("κ of the motion consistency learned rewards add (default: the "
                                               "checkpoint's; 0: off)", default=None)
    reward_shaping: str = _help("'none' (the paper's) or 'potential': learned rewards paid as γ·Φ(s') − Φ(s) + "
                                "success, Φ = the learned reward (keeps the success reward's optimal policy)",
                                default="none")
    tensorboard: bool = _help("also log to TensorBoard", default=True)
    quiet: bool = _help("no console line per episode", default=False)

    def validate(self) -> None:
        if not isinstance(self.out, (str, os.PathLike)) or not os.fspath(self.out).strip():
            # "" was the current folder, whose train.csv, tb/, eval/, replay/ … overwrite=True removed
            raise ValueError(f"out must name the run's output folder, got {self.out!r}")
        counts = ("num_train_frames", "num_eval_episodes", "size", "action_repeat", "frame_stack", "nstep",
                  "batch_size", "update_every_steps", "replay_buffer_size")
        naturals = ("num_seed_frames", "eval_every_frames", "snapshot_every_frames", "rnd_update_interval")
        for name in counts + naturals + ("seed",) + (("episode_steps",) if self.episode_steps is not None else ()):
            v = getattr(self, name)  # nstep=2.5 was used as is, "3" failed in a comparison naming nothing
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in naturals:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.size < MIN_FRAME_SIZE:
            raise ValueError(f"size must be >= {MIN_FRAME_SIZE} (DrQ-v2's encoder), got {self.size}")
        if self.episode_steps is not None and self.episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {self.episode_steps}")
        if not 0 <= self.seed < 2 ** 32:  # numpy's and the environments' seed range
            raise ValueError(f"seed must be in [0, 2**32 - 1], got {self.seed}")
        if self.reward_shaping not in SHAPINGS:  # was "shaping must be ...", after the environments had started
            raise ValueError(f"reward_shaping must be one of {', '.join(SHAPINGS)}, got {self.reward_shaping!r}")


# the settings only each command's train_config.json "config" holds
_RUN_KINDS = {"train-rl": ("num_train_frames",), "train-expert": ("steps", "eval_every")}


def check_run_folder(out: str, command: str = "train-rl") -> None:
    """Refuse an ``out`` that holds an episode folder, a saved model or another command's run (``command``:
    the one starting here): the run's logs and snapshots were written among them (``--overwrite`` would
    leave them there), or the refusal listed setting differences between unrelated agents."""
    out = os.fspath(out)
    for name, what in (("manifest.json", "an episode folder (collect / import-videos) or a saved model"),
                       ("config.json", "a saved model")):
        if os.path.isfile(os.path.join(out, name)):
            raise ValueError(f"out {out!r} holds {what} ({name}), not a {command} run: give the run a folder of "
                             "its own (--out)")
    try:
        with open(os.path.join(out, "train_config.json"), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return  # none, or damaged: start_run names it
    if not isinstance(saved, dict):
        return
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    kind = next((k for k, keys in _RUN_KINDS.items() if all(key in config for key in keys)), None)
    other = saved.get("config_class") if isinstance(saved.get("config_class"), str) else kind
    if other is not None and other != command:
        raise ValueError(f"out {out!r} holds a run of {other}, not of {command} (its train_config.json): give the "
                         "run a folder of its own (--out)")


def parse_task(task: str) -> str:
    """``metaworld/door-open-v3`` → ``door-open-v3``; ``adroit/door`` → ``adroit-door``; ids without a
    suite prefix pass through (unknown ids raise the env layer's error with close matches)."""
    from ..envs import resolve_task, suite_of

    if not isinstance(task, str):
        return resolve_task(task)  # its TypeError names the value
    parts = [t.strip() for t in task.split(",") if t.strip()]
    if len(parts) > 1:  # `--tasks reach-v3,push-v3` as collect takes them: was "unknown Meta-World task 'reach-v3,push-v3'"
        raise ValueError(f"task {task!r} names several tasks: an agent trains on one task, so run the command once "
                         f"per task (--task {parts[0]}, then --task {parts[1]} with another --out)")
    if len(parts) == 1 and "," in task:  # "reach-v3," is one task, as collect reads it
        task = parts[0]
    suite, _, name = task.strip().partition("/")  # "  adroit/door" from a config file: the suite is "adroit"
    suite, name = suite.strip().lower(), name.strip()
    if not name:
        return resolve_task(task)
    if suite == "metaworld":
        if suite_of(name) == "adroit":  # resolve_task would silently pick the Adroit task
            short = resolve_task(name).removeprefix("adroit-")
            raise ValueError(f"{name!r} is a task of the adroit suite, not metaworld (use adroit/{short})")
        return resolve_task(name)
    if suite == "adroit":
        return resolve_task(name if name.startswith("adroit") or name.startswith("Adroit") else f"adroit-{name}")
    raise ValueError(f"unknown suite {suite!r} in task {task!r}: use metaworld/<task> or adroit/<task>")


class Workspace:
    def __init__(self, config: RLConfig, agent_config: Optional[DrQV2Config] = None, reward: Any = None):
        config.validate()
        # paths as strings: a pathlib.Path out failed only at the end of the run, when the snapshot (which
        # records the settings) was written: "cannot checkpoint a value of type PosixPath", the run lost
        config = replace(config, **{k: os.fspath(getattr(config, k)) for k in ("out", "checkpoint", "expert_data")
                                    if isinstance(getattr(config, k), os.PathLike)})
        resolve_device(config.device)  # a device this torch cannot use is a clear error before any env starts
        check_run_folder(config.out)
        if reward is not None and not (isinstance(reward, str) and reward == config.reward):
            # the reward the run is paid by, as train_config.json, the curves and eval-rl name it: a callable
            # passed beside RLConfig's default reward="diffusion" was recorded and plotted as "diffusion"
            label = reward if isinstance(reward, str) else getattr(reward, "name", None)
            config = replace(config, reward=label if isinstance(label, str) and label != "?" else "callable")
        self.cfg, self.agent_cfg = config, agent_config or DrQV2Config()
        self.agent_cfg.validate()  # before any environment starts, as the run's own settings
        seed_everything(config.seed)
        self.task = parse_task(config.task)
        spec = reward if reward is not None else config.reward
        # options this reward would ignore are refused before the environments start
        check_reward_options(spec, **{k: getattr(config, k) for k in LEARNED_OPTIONS})
        env_kw = dict(size=config.size, camera=config.camera, action_repeat=config.action_repeat,
                      max_steps=config.episode_steps, reward=env_reward_for(spec))
        # close() must work from here on: a failure after make_env (a reward that fails to build, a run folder
        # refused) would otherwise leak the environments' rendering contexts
        self.train_env = self.eval_env = None
        try:
            self._build(config, spec, env_kw)
        except BaseException:
            self.close()
            raise

    def _build(self, config: RLConfig, spec: Any, env_kw: dict) -> None:
        from ..envs import make_env

        self.train_env = make_env(self.task, seed=config.seed, **env_kw)
        self.eval_env = make_env(self.task, seed=config.seed, **env_kw)
        episode = self.train_env.max_steps
        if config.episode_steps is not None and config.episode_steps > episode:
            # the environment caps its episodes at the task's time limit: 300 ran 250-step episodes while
            # train_config.json, the fingerprint and the user said 300
            limit = getattr(self.train_env, "max_env_steps", None)
            within = f" ({limit} environment steps at action_repeat {config.action_repeat})" if limit else ""
            raise ValueError(f"episode_steps ({config.episode_steps}) is longer than {self.task} allows: "
                             f"{episode} agent steps{within}; use --episode-steps <= {episode} (a run that recorded a longer "
                             "value ran the task's limit: start it again with --overwrite)")
        if config.nstep > episode:  # no n-step return could ever be sampled: the agent would never update
            raise ValueError(f"nstep ({config.nstep}) is longer than an episode of {self.task} ({episode} agent steps): "
                             f"the agent would never update; use --nstep <= {episode} or longer --episode-steps")
        space = self.train_env.action_space
        self._low, self._high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        obs_shape = (3 * config.frame_stack, config.size, config.size)
        self.agent = DrQV2Agent(obs_shape, self.train_env.action_dim, self.agent_cfg).to(config.device)
        # each finished episode goes to <out>/replay once; snapshots list the live ones instead of carrying them
        self.replay = ReplayBuffer(config.replay_buffer_size, frame_stack=config.frame_stack, nstep=config.nstep,
                                   discount=self.agent_cfg.discount, seed=config.seed,
                                   store_dir=os.path.join(config.out, "replay"))
        self.reward = make_reward_source(
            spec, task=self.task, checkpoint=config.checkpoint,
            device=config.device, size=config.size, action_repeat=config.action_repeat,
            expert_data=config.expert_data, max_steps=config.episode_steps,
            rnd_update_interval=config.rnd_update_interval, expl_scale=config.expl_scale,
            reward_clip=config.reward_clip, success_scale=config.success_scale, motion_scale=config.motion_scale,
            goal_scale=config.goal_scale, displacement_scale=config.displacement_scale,
            displacement_cap=config.displacement_cap, consistency_scale=config.consistency_scale,
            shaping=config.reward_shaping, discount=self.agent_cfg.discount)
        self.global_step = self.global_episode = 0
        self.last_eval_frame = self.last_snapshot_frame = None
        self.train_time = 0.0
        self._snapshot_replay_first: Optional[int] = None  # replay.first_serial of the newest snapshot
        # the replay settings a fingerprint holds only when not the default, named with their value when refused
        defaults = {name: RLConfig.__dataclass_fields__[name].default for name in RESUME_SETTINGS}
        self.snapshots, state = start_run(config.out, self._fingerprint(), resume=config.resume,
                                          overwrite=config.overwrite, run_files=RUN_FILES, defaults=defaults)
        replay_floor = None if state is None else self._restore(state)
        if state is not None:
            self._check_seed_frames(state, config)
        episode_frames = episode * config.action_repeat
        if state is not None and self.global_frame - episode_frames >= config.num_train_frames:
            # a run already past this target (by a whole episode: a run stops at the first episode end at or
            # after it): it returned as is, re-plotting its curves and reporting frames it was not asked for
            raise ValueError(f"out {config.out!r} holds a run already at frame {self.global_frame}, past num_train_frames "
                             f"{config.num_train_frames}: pass --num-train-frames >= "
                             f"{self.global_frame - episode_frames + 1} to continue it (or evaluate it with "
                             f"`mmreward robotics eval-rl --run {config.out}`), or --overwrite to start again")
        reward_model = getattr(self.reward, "model", None)  # the learned reward's effective terms (γ, δ, …), after
        # the reward source's and the checkpoint's defaults: None in `config` means "theirs"
        reward_cfg = asdict(reward_model.config) if is_dataclass(getattr(reward_model, "config", None)) else None
        write_run_config(config.out, self._fingerprint(), {"config": asdict(config), "agent": asdict(self.agent_cfg),
                                                           "reward_model": reward_cfg, "resumed_at_frame": self.global_frame})
        for sub in ("replay", "eval", "eval_videos"):
            remove_leftovers(os.path.join(config.out, sub))
        # videos of evaluations after the snapshot (a killed run's, whose eval.csv rows are cut below): with
        # another evaluation schedule they stayed without a row, from a timeline this run does not continue
        drop_videos_after(config.out, self.global_frame if state is not None else -1)
        # drop files of episodes no kept snapshot lists: written after the snapshot resumed from, or a
        # killed run's before its first snapshot
        self.replay.prune_store(keep_from=replay_floor)
        # rows after the snapshot are cut (all rows, the frame-0 evaluation included, without one)
        log_kw = dict(tensorboard=config.tensorboard, resume_step=self.global_frame if state is not None else -1,
                      quiet=True)
        self.train_log = MetricLogger(config.out, filename="train.csv", **log_kw)
        self.eval_log = MetricLogger(os.path.join(config.out, "eval"), filename="eval.csv", **log_kw)

    @property
    def global_frame(self) -> int:
        return self.global_step * self.cfg.action_repeat

    def _env_action(self, action: torch.Tensor) -> np.ndarray:  # [-1, 1]^A -> the env's box
        a = action.numpy().astype(np.float32)
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    def _episode_seed(self, index: int, eval_mode: bool) -> int:
        return (1_000_003 * self.cfg.seed + index + (500_000_000 if eval_mode else 0)) % (2 ** 31 - 1)

    def run_episode(self, env, seed: int, eval_mode: bool, on_step=None) -> EpisodeRecord:
        _, frame = env.reset(seed=seed)
        frames, actions, env_rewards, success = [frame], [], [], []
        while True:
            obs = stack_frames(frames, len(frames) - 1, self.cfg.frame_stack)
            action = self.agent.act(obs, self.global_step, eval_mode=eval_mode)
            if on_step is not None:
                on_step()
            st = env.step(self._env_action(action))
            frames.append(st.frame)
            actions.append(action.numpy().astype(np.float32))
            env_rewards.append(st.reward)
            success.append(st.success)
            if not eval_mode:
                self.global_step += 1
            if st.done:
                break
        n = len(actions)
        return EpisodeRecord(frames=np.stack(frames), actions=np.stack(actions), rewards=np.zeros(n, np.float32),
                             env_rewards=np.asarray(env_rewards, np.float32), success=np.asarray(success, bool))

    def _train_step_hook(self) -> None:
        """Runs before each environment step of a training episode: agent and RND updates."""
        cfg, step = self.cfg, self.global_step
        if self.global_frame >= cfg.num_seed_frames and step % cfg.update_every_steps == 0 and self.replay.can_sample():
            # as the official Diffusion Reward workspace: at an agent update (after the seed frames), the reward's
            # online part (RND) first takes a step when the agent step is a multiple of its interval, so
            # `update_interval` 1 is one RND step per agent update, as the official `expl_update_interval` 1
            iv = self.reward.update_interval
            if iv and step % iv == 0:
                self._last_metrics.update(self.reward.update(self.replay.sample_frames(cfg.batch_size)))
            batch = self.replay.sample(cfg.batch_size)
            # the exploration bonus (α·RND) of the n-step next observations with the predictor as it is now,
            # added to the stored n-step reward: the official Diffusion Reward agent's update
            bonus = self.reward.bonus(next_frames(batch["next_obs"]))
            if bonus is not None:
                batch["reward"] = batch["reward"] + bonus.to(batch["reward"].dtype)
                self._last_metrics["rnd_bonus"] = float(bonus.mean())
            self._last_metrics.update(self.agent.update(batch, step))

    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.time()
        successes, returns = [], []
        for i in range(cfg.num_eval_episodes):
            ep = self.run_episode(self.eval_env, self._episode_seed(i, True), eval_mode=True)
            successes.append(float(ep.success.any()))
            returns.append(float(ep.env_rewards.sum()))
            if i == 0 and cfg.save_video:
                r = self.reward(ep.frames, ep.env_rewards, ep.success)
                path = os.path.join(cfg.out, "eval_videos", f"frame_{self.global_frame:09d}.mp4")
                write_eval_video(path, ep.frames, r, ep.success, label=self.reward.name)
        out = {"success_rate": float(np.mean(successes)), "episode_return": float(np.mean(returns)),
               "eval_seconds": time.time() - t0}
        self.eval_log.log(self.global_frame, episode=self.global_episode, **out)
        self.last_eval_frame = self.global_frame
        if not cfg.quiet:
            print(f"[eval] frame {self.global_frame}: success {out['success_rate']:.2f} "
                  f"return {out['episode_return']:.1f} ({out['eval_seconds']:.1f}s)", flush=True)
        return out

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.last_eval_frame is None:
            self.evaluate()
        self._last_metrics: dict[str, float] = {}
        while self.global_frame < cfg.num_train_frames:
            t0 = time.time()
            ep = self.run_episode(self.train_env, self._episode_seed(self.global_episode, False), eval_mode=False,
                                  on_step=self._train_step_hook)
            t_env = time.time() - t0
            ep.rewards = np.asarray(self.reward(ep.frames, ep.env_rewards, ep.success), np.float32)
            self.replay.add(ep)
            self.global_episode += 1
            dt = time.time() - t0
            self.train_time += dt
            row = {"episode": self.global_episode, "episode_reward": float(ep.rewards.sum()),
                   "episode_env_return": float(ep.env_rewards.sum()), "episode_success": float(ep.success.any()),
                   "fps": len(ep) * cfg.action_repeat / dt, "relabel_seconds": dt - t_env,
                   "buffer_transitions": len(self.replay), "buffer_mb": self.replay.nbytes() / 2 ** 20,
                   **self._last_metrics}
            self.train_log.log(self.global_frame, **row)
            if not cfg.quiet:
                print(f"[train] frame {self.global_frame:>8} ep {self.global_episode:>4} | reward {row['episode_reward']:8.2f}"
                      f" | env {row['episode_env_return']:7.1f} | success {int(row['episode_success'])} | "
                      f"{row['fps']:5.1f} fps | buffer {len(self.replay)} ({row['buffer_mb']:.0f} MB)", flush=True)
            if self.global_frame >= cfg.num_train_frames or (
                    cfg.eval_every_frames and self.global_frame - self.last_eval_frame >= cfg.eval_every_frames):
                self.evaluate()
            last_snap = self.last_snapshot_frame or 0
            if self.global_frame >= cfg.num_train_frames or (
                    cfg.snapshot_every_frames and self.global_frame - last_snap >= cfg.snapshot_every_frames):
                self.save_snapshot()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        frames, succ = self.eval_log.series("success_rate")
        _, ret = self.eval_log.series("episode_return")
        plot_learning_curves(os.path.join(self.cfg.out, "curves.png"),
                             {self.cfg.reward: {"frames": frames, "success_rate": succ, "episode_return": ret}},
                             title=f"{self.task} · reward: {self.cfg.reward}")
        self.train_log.close()
        self.eval_log.close()
        return {"frames": self.global_frame, "episodes": self.global_episode, "eval_frames": frames,
                "success_rate": succ, "episode_return": ret, "train_seconds": self.train_time,
                "fps": self.global_frame / self.train_time if self.train_time else float("nan")}

    # ------------------------------------------------------------------ snapshots
    def _fingerprint(self) -> dict:
        """Settings a resumed run must share with the run it continues."""
        c = self.cfg
        fp = {"task": self.task, "reward": self.reward.name, "seed": c.seed, "size": c.size,
              "frame_stack": c.frame_stack, "action_repeat": c.action_repeat, "agent": asdict(self.agent_cfg)}
        # what the frames show, how long episodes are and how they are paid: a resume with others would mix
        # them in one replay buffer. Added only when not the defaults, so runs that never set them keep
        # their fingerprint.
        camera = getattr(self.train_env, "camera", c.camera)
        default = getattr(sys.modules.get(type(self.train_env).__module__), "DEFAULT_CAMERA", None)
        if camera is not None and camera != default:
            fp["camera"] = camera
        if c.episode_steps is not None:
            fp["episode_steps"] = c.episode_steps
        options = {k: getattr(c, k) for k in LEARNED_OPTIONS if k not in ("checkpoint", "expert_data")
                   and getattr(c, k) is not None}
        if c.reward_shaping != "none":
            options["reward_shaping"] = c.reward_shaping
        model = getattr(self.reward, "model", None)
        if (getattr(model, "rnd", None) is not None and getattr(model.config, "expl_scale", 0) > 0
                and type(self.reward).bonus is not RewardSource.bonus):
            # the RND term is paid per sampled batch (RewardSource.bonus), not stored with the episodes as before:
            # a run whose replay episodes hold it is not continued under this rule (with α = 0 nothing changed)
            fp["rnd_bonus"] = "per_batch"
        if options:
            fp["reward_options"] = options
        # how the replay buffer is kept and sampled: a resume with others would train on a differently
        # defined return / batch than the run it continues (added only when not the defaults, as above)
        for name in RESUME_SETTINGS:
            if name == "rnd_update_interval" and getattr(getattr(self.reward, "model", None), "rnd", None) is None:
                continue  # a reward without an RND never reads it
            if getattr(c, name) != RLConfig.__dataclass_fields__[name].default:
                fp[name] = getattr(c, name)
        # the reward model the run was paid by (--model): its content, not its path, so a moved or copied
        # folder still resumes
        if c.checkpoint is not None and getattr(self.reward, "model_digest", None) is not None:
            fp["reward_model"] = self.reward.model_digest
        # the expert episodes (--expert-data) the reward's statistics / goal frames came from, when it read
        # any: their frames' digest, not the fitted statistics (floats that may differ in the last bits on
        # another machine) nor the folder's path (a moved copy of the same episodes still resumes)
        if getattr(self.reward, "expert_digest", None) is not None:
            fp["expert_data"] = self.reward.expert_digest
        return fp

    def save_snapshot(self) -> None:
        """``<out>/checkpoint-<frame>`` as one unit; then the replay episodes neither kept snapshot lists
        are deleted."""
        self.last_snapshot_frame = self.global_frame
        # the previous snapshot stays (the newest two are kept): keep the episodes it lists too
        floor = self.replay.first_serial if self._snapshot_replay_first is None else self._snapshot_replay_first
        self.snapshots.save(self.global_frame, {
            "fingerprint": fingerprint_text(self._fingerprint()), "config": asdict(self.cfg),
            "agent": self.agent.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.agent.optimizers().items()},
            "replay": self.replay.state(), "replay_floor": floor, "reward": self.reward.state(), "rng": rng_state(),
            "counters": {"step": self.global_step, "episode": self.global_episode,
                         "last_eval_frame": self.last_eval_frame, "last_snapshot_frame": self.last_snapshot_frame,
                         "train_time": self.train_time},
        })
        self._snapshot_replay_first = self.replay.first_serial
        self.replay.prune_store(keep_from=floor)  # only now: the snapshots on disk no longer list the others

    def _restore(self, st: dict) -> int:
        """Load a snapshot's state; returns the first replay serial the kept snapshots list."""
        self.agent.load_state_dict(st["agent"])
        for k, o in self.agent.optimizers().items():
            o.load_state_dict(st["optimizers"][k])
        self.replay.load(st["replay"])
        self.reward.load(st["reward"])
        set_rng_state(st["rng"])
        c = st["counters"]
        self.global_step, self.global_episode = c["step"], c["episode"]
        self.last_eval_frame, self.last_snapshot_frame, self.train_time = (
            c["last_eval_frame"], c["last_snapshot_frame"], c["train_time"])
        self._snapshot_replay_first = self.replay.first_serial
        return int(st["replay_floor"])

    def _check_seed_frames(self, state: dict, config: RLConfig) -> None:
        """Refuse another ``num_seed_frames`` when it moves the first agent update of the frames still to come: the
        run would then update where the straight run does not (or not where it does). Not in the fingerprint: once
        the run is past both values it changes nothing, and may be given either."""
        saved = state.get("config", {}).get("num_seed_frames") if isinstance(state.get("config"), dict) else None
        if not isinstance(saved, int) or saved == config.num_seed_frames:
            return
        if max(saved, config.num_seed_frames) > self.global_frame:
            raise ValueError(f"{self.snapshots.path(self.global_frame)} was written by a run with other settings "
                             f"(num_seed_frames: saved {saved}, now {config.num_seed_frames}; the run is at frame "
                             f"{self.global_frame}, so its agent updates would start elsewhere): rerun with the saved "
                             "value to continue it, use another output folder, or --overwrite to start again there")

    def close(self) -> None:
        for env in (self.train_env, self.eval_env):
            if env is not None:  # None: construction failed before it was made
                env.close()
        unlock_run_folder(self.cfg.out)  # the run folder's lock (start_run): another process may continue it


def drop_videos_after(out: str, frame: int) -> None:
    """Remove ``<out>/eval_videos/frame_<N>.mp4`` for every N > ``frame``."""
    folder = os.path.join(out, "eval_videos")
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext == ".mp4" and stem.startswith("frame_") and stem[6:].isdigit() and int(stem[6:]) > frame:
            os.remove(os.path.join(folder, name))


def next_frames(next_obs: torch.Tensor) -> torch.Tensor:
    """The newest frame of each stacked observation of a batch: uint8 ``[B, 3·k, H, W]`` → ``[B, H, W, 3]``."""
    return next_obs[:, -3:].permute(0, 2, 3, 1)


def train_rl(config: RLConfig, agent_config: Optional[DrQV2Config] = None, reward: Any = None) -> dict[str, Any]:
    """Train DrQ-v2 with the chosen reward; returns a summary (evaluation curve, frames/s)."""
    ws = Workspace(config, agent_config, reward)
    try:
        return ws.train()
    finally:
        ws.close()
