"""Adroit hand tasks (gymnasium-robotics ``AdroitHand{Door,Hammer,Pen,Relocate}-v1``) rendered in
the same frame format as Meta-World: uint8 ``[H, W, 3]``, right side up, with action repeat.

Task ids: ``adroit-door``, ``adroit-hammer``, ``adroit-pen``, ``adroit-relocate`` (the Gymnasium ids
``AdroitHandDoor-v1`` … are accepted too). Default camera: ``vil_camera``, which shows the whole
table, hand and object for all four tasks (``fixed`` is closer and crops the door / hammer nail).

No scripted expert ships for Adroit and the original demonstrations are not part of any package, so
expert data comes from a **state-based expert you train** (``mmreward robotics train-expert --task
adroit-door --out runs/expert-door``, SAC on :class:`AdroitStateEnv`; then ``collect --policy expert
--expert-model runs/expert-door/model``) or from **your own videos**: ``mmreward robotics
import-videos demos/adroit-door --task adroit-door --out data/adroit``
(:func:`mmreward.robotics.collect.import_videos` describes the layout). Random-policy episodes can be
collected directly (``mmreward robotics collect --tasks adroit-door --policy random``).
"""
from __future__ import annotations

import difflib
from typing import Any, NamedTuple, Optional

import numpy as np

from .base import PixelEnv, UnknownTaskError, check_env_options, parse_size, repeat_action, setup_mujoco_gl, split_task

TASKS = {
    "adroit-door": "AdroitHandDoor-v1",
    "adroit-hammer": "AdroitHandHammer-v1",
    "adroit-pen": "AdroitHandPen-v1",
    "adroit-relocate": "AdroitHandRelocate-v1",
}
DEFAULT_CAMERA = "vil_camera"
EPISODE_STEPS = 200  # the Gymnasium registration's max_episode_steps for all four tasks


def task_names() -> list[str]:
    return list(TASKS)


# the cameras of each task's model (gymnasium-robotics 1.2-1.4); collect checks a --camera shared by
# several tasks against these before the first episode (each env checks its own model's list anyway)
CAMERAS = {task: ("fixed", "vil_camera") for task in TASKS}
CAMERAS["adroit-pen"] = ("fixed", "vil_camera", "view_1", "view_2", "view_3", "view_4", "view_5")


def is_adroit(name: str) -> bool:
    """Whether ``name`` names an Adroit task (``adroit-door``, ``adroit/door``, ``AdroitHandDoor-v1`` …);
    a ``metaworld/`` prefix makes it a Meta-World name whatever follows."""
    suite, n = split_task(name)
    if suite is not None:
        return suite == "adroit"
    return n in TASKS or n in TASKS.values() or n.lower().startswith("adroit")


def resolve_task(name: str) -> str:
    """``adroit-door`` for ``adroit-door`` / ``Adroit-Door`` / ``adroit_door`` / ``adroit-door-v1`` /
    ``adroit/door`` / ``AdroitHandDoor-v1``; :class:`UnknownTaskError` with the close ids otherwise."""
    suite, n = split_task(name)
    if suite == "metaworld":
        raise UnknownTaskError(f"{name!r} names a Meta-World task, not an Adroit one; Adroit tasks: {', '.join(TASKS)}")
    low = n.lower().replace("_", "-")
    if suite == "adroit" and not low.startswith("adroit"):  # adroit/door
        low = "adroit-" + low
    if low in TASKS:
        return low
    for short, gym_id in TASKS.items():
        if low in (gym_id.lower(), short + "-v1"):
            return short
    shown = {**{t: t for t in TASKS}, **{g.lower(): g for g in TASKS.values()}}
    close = [shown[c] for c in difflib.get_close_matches(low, list(shown), n=3, cutoff=0.4)]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise UnknownTaskError(f"unknown Adroit task {name!r}{hint}; Adroit tasks: {', '.join(TASKS)}")


def _import_robotics():
    setup_mujoco_gl()
    try:
        import gymnasium as gym
        import gymnasium_robotics
    except ImportError as e:
        raise ImportError(
            f"Adroit tasks need gymnasium-robotics: pip install 'mmreward[robotics]' ({e})"
        ) from e
    gym.register_envs(gymnasium_robotics)
    return gym


class AdroitEnv(PixelEnv):
    """One Adroit task as a pixel environment (same interface as ``MetaWorldEnv``; no expert).

    Episodes are reproducible per seed: :meth:`reset` calls Gymnasium's ``reset(seed=seed)``.
    Success is the environment's own ``info["success"]`` (door opened, nail driven, pen aligned,
    ball at target). ``reward``: ``"dense"``, the installed environment's reward, or ``"dapg"``, the
    same with DAPG's sign of the approach term (as :class:`AdroitStateEnv`'s).
    """

    suite = "adroit"

    def __init__(self, task: str, *, size: Any = 64, camera: Optional[str] = None, action_repeat: int = 1,
                 seed: int = 0, max_steps: Optional[int] = None, flip: str = "auto", reward: str = "dense"):
        self.env = None
        check_env_options(seed, action_repeat, max_steps)
        if reward not in STATE_REWARDS:
            raise ValueError(f"unknown Adroit reward {reward!r}; choose from {', '.join(STATE_REWARDS)}")
        gym = _import_robotics()
        self.task = resolve_task(task)
        self.reward = reward
        self.camera = DEFAULT_CAMERA if camera is None else camera  # "" is checked as a name, not taken as the default
        self.seed = int(seed)
        height, width = parse_size(size)
        self.env = gym.make(
            TASKS[self.task], render_mode="rgb_array", width=int(width), height=int(height),
            camera_name=self.camera, disable_env_checker=True,
        )
        steps = self.env.spec.max_episode_steps or EPISODE_STEPS
        super().__init__(size=size, action_repeat=action_repeat, flip=flip, max_steps=max_steps, env_steps=steps)
        self._prepare_render()
        if reward == "dapg":
            self._reward_env = _DAPGReward(self.env, self.task)

    def _reseed(self, seed: int):
        return self.env.reset(seed=seed)

    def hold_action(self) -> np.ndarray:
        """The hand's actuators are position servos fed ``act_mean + a·act_rng``: aiming each one at
        its current length (joint angle or slide position) holds the pose."""
        u = self.env.unwrapped
        a = (u.data.actuator_length - u.act_mean) / u.act_rng
        return np.clip(a, -1.0, 1.0).astype(np.float32)



STATE_REWARDS = ("dense", "dapg")


def approach_distance(env: Any, task: str) -> Optional[float]:
    """‖palm − object‖ of the dense reward's approach term (the door handle, the hammer, the ball);
    None for the pen, whose reward has no such term. ``env`` is the unwrapped Gymnasium env."""
    d = env.data
    if task == "adroit-door":
        palm, target = d.site_xpos[env.grasp_site_id], d.site_xpos[env.handle_site_id]
    elif task in ("adroit-hammer", "adroit-relocate"):
        palm, target = d.site_xpos[env.S_grasp_site_id], d.xpos[env.obj_body_id]
    else:
        return None
    return float(np.linalg.norm(palm - target))


class _DAPGReward:
    """Gymnasium-Robotics' ``AdroitHand{Door,Hammer,Relocate}-v1`` (up to 1.4.2) pay the approach
    term as ``+0.1·‖palm − object‖``, rewarding the hand for staying away; DAPG's reward, which these
    environments port, pays ``−0.1·‖palm − object‖``. This wrapper subtracts ``0.2·‖palm − object‖``
    from each step's reward, which gives DAPG's sign."""

    def __init__(self, env: Any, task: str):
        self.env, self.task = env, task

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        dist = approach_distance(self.env.unwrapped, self.task)  # None for the pen: its reward is DAPG's already
        return obs, reward if dist is None else reward - 0.2 * dist, terminated, truncated, info


class StateStep(NamedTuple):
    """One agent step of a state environment (after action repeat)."""

    obs: np.ndarray  # (obs_dim,) float32
    reward: float  # summed over the repeated steps
    success: bool  # info["success"] at any of the repeated steps
    terminal: bool  # the task ended the episode (no bootstrapping); Adroit tasks never do
    done: bool  # terminal, or the time limit / step budget is reached


class AdroitStateEnv:
    """One Adroit task with its state observation (hand joint angles + object / target positions,
    Gymnasium's ``_get_obs``) and no renderer: thousands of steps per second on one core, for
    state-based RL. Dense reward (the environment's own), success = ``info["success"]``.

    Actions are in ``[-1, 1]^A``: Adroit's own action space, mapped by the task onto the actuator
    ranges. ``max_steps`` counts agent steps (each ``action_repeat`` environment steps), as in
    :class:`~mmreward.robotics.envs.base.PixelEnv`; episodes are reproducible per reset seed.

    ``reward``: ``"dense"``, the installed environment's reward, or ``"dapg"``, the same with the
    approach term's sign of DAPG's reward (door, hammer, relocate; the pen's is unchanged; see
    :class:`_DAPGReward`).
    """

    suite = "adroit"

    def __init__(self, task: str, *, action_repeat: int = 1, max_steps: Optional[int] = None,
                 reward: str = "dense"):
        self.env = None
        if reward not in STATE_REWARDS:
            raise ValueError(f"unknown Adroit reward {reward!r}; choose from {', '.join(STATE_REWARDS)}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        gym = _import_robotics()
        self.task = resolve_task(task)
        self.env = gym.make(TASKS[self.task], disable_env_checker=True)
        self.reward = reward
        self._stepper = _DAPGReward(self.env, self.task) if reward == "dapg" else self.env
        box = self.env.action_space
        if not (np.all(box.low == -1.0) and np.all(box.high == 1.0)):  # the policy's tanh range is the env's
            raise ValueError(f"{self.task}: expected the action space [-1, 1]^A, got "
                             f"[{box.low.min()}, {box.high.max()}]")
        self.action_repeat = int(action_repeat)
        limit = (self.env.spec.max_episode_steps or EPISODE_STEPS) // self.action_repeat
        self.max_steps = limit if max_steps is None else min(int(max_steps), limit)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.action_dim = int(np.prod(box.shape))
        self._t = 0

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self.env.reset(seed=int(seed))
        self._t = 0
        return np.asarray(obs, np.float32)

    def step(self, action: np.ndarray) -> StateStep:
        if self._t >= self.max_steps:
            raise RuntimeError(f"episode already has {self.max_steps} steps; call reset()")
        obs, reward, success, terminated, truncated = repeat_action(self._stepper, action, self.action_repeat)
        self._t += 1
        return StateStep(np.asarray(obs, np.float32), reward, success, terminated,
                         terminated or truncated or self._t >= self.max_steps)

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_measures(env: Any, task: str) -> dict[str, float]:
    """Progress of an Adroit pixel env (:class:`AdroitEnv`) now: ``approach_distance`` (door, hammer,
    relocate: ‖palm − object‖, see :func:`approach_distance`) and ``door_angle`` (door: the hinge
    angle in radians; success from 1.35). Empty for other suites and the pen."""
    if getattr(env, "suite", None) != "adroit":
        return {}
    u = env.env.unwrapped
    out = {}
    dist = approach_distance(u, task)
    if dist is not None:
        out["approach_distance"] = dist
    if task == "adroit-door":
        out["door_angle"] = float(np.asarray(u.data.qpos[u.door_hinge_addrs]).reshape(-1)[0])
    return out
