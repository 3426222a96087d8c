"""Gymnasium integration: Meta-World pixel environments as ``gymnasium.Env`` and a wrapper that
adds the Diffusion Reward.

* :class:`PixelGymEnv` (alias :class:`MetaWorldPixelEnv`) — a ``gymnasium.Env`` around
  :class:`~mmreward.robotics.envs.PixelEnv` (the data layer's Meta-World / Adroit environment, a
  plain class): observations are the uint8 ``[H, W, 3]`` frames (``[k, H, W, 3]`` with
  ``frame_stack=k``; the proprioceptive state is in ``info["state"]``), ``Box`` spaces, action
  repeat, seeding through ``reset(seed=...)``, ``truncated`` at the time limit, ``info["success"]``.
  Importing this module registers one id per Meta-World v3 task and per Adroit task::

      import gymnasium as gym
      env = gym.make("mmreward.robotics.wrappers:mmreward/MetaWorld-door-open-v3")   # imports + makes
      env = gym.make("mmreward/MetaWorld-door-open-v3", size=64, action_repeat=2)    # once imported
      env = gym.make("mmreward/Adroit-door", frame_stack=3)

* :class:`DiffusionRewardWrapper` — replaces (or adds to) the environment reward with the learned
  reward of the newest frame, computed online from a rolling history of frame tokens (each frame is
  tokenised once, when it arrives). The reward of step t is the reward of the frame observed after
  action t, exactly the window :meth:`DiffusionReward.__call__` uses for that frame, so
  :func:`relabel_episode` (the paper's way: a whole finished episode in one batch) gives the same
  numbers up to the chain's random draws (identical with ``noise=False`` in ``"entropy"`` mode; the
  likelihood modes, the shipped checkpoints' included, also draw the forward process's masks per batch,
  so there the two agree in distribution, not value by value).

Importing this module loads gymnasium (and Meta-World, to list the task ids); ``mmreward.robotics``
itself never imports it.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

ENV_ID_PREFIX = "mmreward/MetaWorld-"
ADROIT_ID_PREFIX = "mmreward/Adroit-"


class PixelGymEnv(gym.Env):
    """One Meta-World v3 or Adroit task as a pixel ``gymnasium.Env`` (frames as observations).

    Arguments are those of :func:`mmreward.robotics.envs.make_env`, plus ``frame_stack`` (k > 1 gives
    observations ``[k, H, W, 3]``, oldest first, the reset frame repeated at the start), with
    ``base_seed`` the ``seed`` make_env builds the environment with.

    ``reset(seed=base_seed + i)`` gives the task variant (object / goal placement) of episode ``i`` of
    ``collect --seed base_seed``, the episode whose manifest entry has ``base_seed`` and ``seed``
    ``base_seed + i``: a Meta-World scene depends on both (MT1 draws its 50 variants with the seed the
    environment is built with; the reset seed picks one), an Adroit one on the reset seed only. So with
    the default ``base_seed=0``, ``reset(seed=s)`` is episode ``s`` of ``collect --seed 0``, not
    episode 0 of ``collect --seed s``. ``reset()`` without a seed draws the next variant from the
    env's own generator."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 40}

    def __init__(self, task: str = "door-open-v3", *, size: Any = 64, camera: Optional[str] = None,
                 action_repeat: int = 2, max_steps: Optional[int] = None, flip: str = "auto",
                 frame_stack: int = 1, render_mode: Optional[str] = "rgb_array", base_seed: int = 0):
        from .envs import make_env

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        from .envs.base import whole

        whole("frame_stack", frame_stack, 1)  # 2.5 / "3" failed after the simulator started (never closed)
        if isinstance(base_seed, bool) or not isinstance(base_seed, (int, np.integer)) or base_seed < 0:
            raise ValueError(f"base_seed must be an integer >= 0 (collect's --seed), got {base_seed!r}")
        self.base_seed = int(base_seed)
        self._env = make_env(task, size=size, camera=camera, action_repeat=action_repeat, seed=self.base_seed,
                             max_steps=max_steps, flip=flip)
        self.task = self._env.task
        self.frame_stack = int(frame_stack)
        h, w = self._env.size
        shape = (h, w, 3) if frame_stack == 1 else (frame_stack, h, w, 3)
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        a = self._env.action_space
        self.action_space = spaces.Box(np.asarray(a.low, np.float32), np.asarray(a.high, np.float32), dtype=np.float32)
        self.render_mode = render_mode
        self.max_steps = self._env.max_steps
        self._frame: Optional[np.ndarray] = None
        self._stack: deque = deque(maxlen=self.frame_stack)

    def _obs(self) -> np.ndarray:
        return self._frame.copy() if self.frame_stack == 1 else np.stack(self._stack)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        ep_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2 ** 31 - 1))
        state, frame = self._env.reset(seed=ep_seed)
        self._frame = frame
        self._stack.extend([frame] * self.frame_stack)
        return self._obs(), {"state": np.asarray(state), "seed": ep_seed, "success": False}

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        st = self._env.step(np.asarray(action, dtype=np.float32))
        self._frame = st.frame
        self._stack.append(st.frame)
        info = {"state": np.asarray(st.obs), "success": bool(st.success)}
        return self._obs(), float(st.reward), False, bool(st.done), info

    def render(self):
        if self.render_mode is None:
            return None
        return None if self._frame is None else self._frame.copy()

    def close(self):
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


MetaWorldPixelEnv = PixelGymEnv  # the name this class had before Adroit was added


def env_id(task: str) -> str:
    """The gymnasium id of a task: ``door-open-v3`` → ``mmreward/MetaWorld-door-open-v3``,
    ``adroit-door`` → ``mmreward/Adroit-door`` (any name :func:`~mmreward.robotics.envs.resolve_task`
    accepts: ``door-open``, ``adroit/door`` …; unknown ones raise its error)."""
    from .envs import resolve_task

    task = resolve_task(task)
    if task.startswith("adroit-"):
        return ADROIT_ID_PREFIX + task[len("adroit-"):]
    return ENV_ID_PREFIX + task


def register_envs() -> list[str]:
    """Register ``mmreward/MetaWorld-<task>`` for every Meta-World v3 task and ``mmreward/Adroit-<task>``
    for the four Adroit tasks (idempotent); returns the ids (Meta-World's only when it is installed)."""
    from .envs.adroit import task_names as adroit_tasks

    try:
        from .envs.metaworld import task_names

        tasks = task_names()
    except ImportError:
        tasks = []
    ids = []
    for task in tasks + adroit_tasks():
        i = env_id(task)
        if i not in gym.registry:
            gym.register(i, entry_point="mmreward.robotics.wrappers:PixelGymEnv", kwargs={"task": task})
        ids.append(i)
    return ids


# ----------------------------------------------------------------------------- reward
def _frame_of(obs: Any, env: gym.Env, frame_fn: Optional[Callable]) -> np.ndarray:
    if frame_fn is not None:
        return _checked_frame(frame_fn(obs, env), "frame_fn(obs, env)")
    if isinstance(obs, np.ndarray) and obs.ndim == 3 and obs.shape[-1] == 3 and obs.dtype == np.uint8:
        return obs
    frame = env.render()
    if frame is None:
        raise ValueError("observations are not uint8 [H, W, 3] frames and env.render() returned None: pass "
                         "frame_fn=lambda obs, env: <uint8 frame> or make the env with render_mode='rgb_array'")
    return _checked_frame(frame, "env.render()")


def _checked_frame(frame: Any, where: str) -> np.ndarray:
    """One uint8 ``[H, W, 3]`` frame, or an error naming where it came from: float frames are refused,
    never cast (a [0, 1] image cast to uint8 is all 0 / 1, and its rewards would be silently wrong)."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise TypeError(f"{where} must give a uint8 frame [H, W, 3] (0..255), got {frame.dtype} "
                        f"{list(frame.shape)}; convert float images first, e.g. (x * 255).round().astype(np.uint8) "
                        "for values in [0, 1]")
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"{where} must give one uint8 frame [H, W, 3], got shape {list(frame.shape)}")
    return frame


class DiffusionRewardWrapper(gym.Wrapper):
    """Adds the Diffusion Reward of each new frame to a gymnasium environment.

    ``reward_model``: a :class:`~mmreward.robotics.reward.DiffusionReward` (e.g.
    :func:`mmreward.robotics.pretrained.load_pretrained`). Frames come from the observation when it
    is a uint8 ``[H, W, 3]`` image, else from ``env.render()``, or from ``frame_fn(obs, env)``.

    ``mode="replace"`` returns the learned reward, ``"add"`` returns
    ``env_reward_scale · env reward + learned reward``. ``use_success`` adds ``info["success"]`` as
    the sparse term (the model's ``use_sparse`` must be on). ``info`` gains ``diffusion_reward`` and
    ``env_reward``. Cost per step: one VQGAN encoding of the new frame and one fast chain (11 calls of
    the video model) for one window."""

    def __init__(self, env: gym.Env, reward_model, *, mode: str = "replace", env_reward_scale: float = 1.0,
                 use_success: bool = False, frame_fn: Optional[Callable] = None):
        super().__init__(env)
        if mode not in ("replace", "add"):
            raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
        if isinstance(env_reward_scale, bool) or not isinstance(env_reward_scale, (int, float, np.number)) or \
                not np.isfinite(env_reward_scale):  # NaN made every "add" reward NaN without a word
            raise ValueError(f"env_reward_scale must be a finite number, got {env_reward_scale!r}")
        from .reward.diffusion_reward import DiffusionReward

        if not isinstance(reward_model, DiffusionReward):  # a ranker / RND has no video model to window
            raise TypeError(f"reward_model must be a DiffusionReward (e.g. mmreward.load('metaworld-64')), got "
                            f"{type(reward_model).__name__}")
        if use_success and not getattr(reward_model.config, "use_sparse", True):
            raise ValueError("use_success=True adds info['success'] as the sparse term, but the reward model has "
                             "use_sparse=False and would ignore it: set reward_model.config.use_sparse = True or "
                             "use_success=False")
        if getattr(reward_model.config, "consistency_scale", 0) > 0:
            raise ValueError("consistency_scale > 0 normalises by the whole episode's motion, which a per-step "
                             "wrapper does not have: relabel finished episodes (train-rl's reward sources) or "
                             "set consistency_scale=0")
        self.reward_model = reward_model.eval()
        self.mode, self.env_reward_scale, self.use_success = mode, float(env_reward_scale), bool(use_success)
        self.frame_fn = frame_fn
        vcfg = reward_model.video.config
        self._span = vcfg.num_history * vcfg.frame_skip + 1  # frames a window can reach back
        self._tokens: deque = deque(maxlen=self._span)
        self._frames: deque = deque(maxlen=self._span)
        self._start: Optional[torch.Tensor] = None
        self._t = 0

    def _push(self, frame: np.ndarray) -> None:
        size = self.reward_model.image_size
        if frame.shape[:2] != (size, size):
            raise ValueError(f"the environment's frames are {frame.shape[0]}x{frame.shape[1]} but the reward model "
                             f"takes {size}x{size}: make the env with size={size} or resize in frame_fn")
        f = torch.from_numpy(np.ascontiguousarray(frame))[None]
        self._tokens.append(self.reward_model.tokenize(f.to(self.reward_model.device))[0])
        self._frames.append(f)

    @torch.no_grad()
    def current_reward(self, success: Optional[bool] = None) -> float:
        """Reward of the newest frame given the frames before it in this episode."""
        model = self.reward_model
        tok = torch.stack(list(self._tokens))
        newest = torch.tensor([tok.shape[0] - 1])
        raw = model.raw_reward_windows(tok, newest)
        change = model.change_windows(tok, newest) if model.config.motion_scale > 0 else None
        goal = model.goal_distance(tok[-1:]) if model.config.goal_scale > 0 else None
        moved = model.displacement(tok[-1:], self._start) if model.config.displacement_scale > 0 else None
        s = None if success is None else torch.tensor([float(success)])
        return float(model.combine(raw, self._frames[-1], s, change, goal, moved)[0])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._tokens.clear()
        self._frames.clear()
        self._push(_frame_of(obs, self.env, self.frame_fn))
        self._start = self._tokens[0]  # the displacement is measured from the reset frame
        self._t = 0
        return obs, info

    def step(self, action):
        if self._start is None:  # no reset frame: the window and the displacement would have no start
            raise RuntimeError("call reset() before step(): the reward needs the episode's reset frame")
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        self._push(_frame_of(obs, self.env, self.frame_fn))
        self._t += 1
        success = bool(info.get("success", False)) if self.use_success else None
        r = self.current_reward(success)
        info = dict(info)
        info["diffusion_reward"], info["env_reward"] = r, float(env_reward)
        reward = r if self.mode == "replace" else self.env_reward_scale * float(env_reward) + r
        return obs, reward, terminated, truncated, info


@torch.no_grad()
def relabel_episode(reward_model, frames, success=None, *, with_rnd: bool = True) -> np.ndarray:
    """Rewards of a finished episode's transitions in one batch (the paper's relabelling):
    ``frames`` uint8 ``[T+1, H, W, 3]`` (the reset frame, then one per step) → ``[T]`` float32,
    reward t for the frame after action t — what :class:`DiffusionRewardWrapper` returns at step t.
    ``success`` (``[T]``, per transition) adds the sparse term. ``with_rnd=False`` leaves out the RND
    term ``α·r_RND``, as the official code's relabelling does (its RL loop adds the bonus of the
    current RND predictor to each sampled batch: ``DiffusionReward.exploration_bonus``)."""
    from .data.inputs import as_success

    f = torch.as_tensor(np.ascontiguousarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if f.dtype != torch.uint8 or f.dim() != 4 or f.shape[-1] != 3 or f.shape[0] < 1:
        raise TypeError(f"frames must be uint8 [T+1, H, W, 3] (the reset frame, then one per step), got {f.dtype} "
                        f"{list(f.shape)}")
    s = None
    if success is not None:
        steps = f.shape[0] - 1
        flags = success.detach().cpu() if isinstance(success, torch.Tensor) else success
        try:
            n = len(flags)
        except TypeError:  # a number, or a 0-d array
            n = None
        if n != steps:  # checked as transitions: the reset frame's flag is added here, not by the caller
            raise ValueError(f"success must have one flag per transition ({steps} for {steps + 1} frames), got "
                             f"{n if n is not None else type(success).__name__}")
        s = torch.cat([torch.zeros(1), as_success(flags, steps, "success")])
    kw = {} if with_rnd else {"with_rnd": False}  # other scorers (a ranker, an RND) take no such option
    r = reward_model(f.to(reward_model.device), success=s, **kw)
    return r[1:].cpu().numpy().astype(np.float32)


register_envs()

__all__ = ["PixelGymEnv", "MetaWorldPixelEnv", "DiffusionRewardWrapper", "relabel_episode", "register_envs", "env_id",
           "ENV_ID_PREFIX", "ADROIT_ID_PREFIX"]
