"""Adroit hand tasks (gymnasium-robotics ``AdroitHand{Door,Hammer,Pen,Relocate}-v1``) rendered in
the same frame format as Meta-World: uint8 ``[H, W, 3]``, right side up, with action repeat.

Task ids: ``adroit-door``, ``adroit-hammer``, ``adroit-pen``, ``adroit-relocate`` (the Gymnasium ids
``AdroitHandDoor-v1`` … are accepted too). Default camera: ``vil_camera``, which shows the whole
table, hand and object for all four tasks (``fixed`` is closer and crops the door / hammer nail).

No scripted expert ships for Adroit and the original demonstrations are not part of any package, so
expert data comes from **your own videos**: ``mmreward robotics import-videos demos/adroit-door --task
adroit-door --out data/adroit`` (:func:`mmreward.robotics.collect.import_videos` describes the layout).
Random-policy episodes can be collected directly (``mmreward robotics collect --tasks adroit-door
--policy random``).
"""
from __future__ import annotations

import difflib
from typing import Any, Optional

import numpy as np

from .base import PixelEnv, setup_mujoco_gl

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


def is_adroit(name: str) -> bool:
    n = name.strip()
    return n in TASKS or n in TASKS.values() or n.lower().startswith("adroit")


def resolve_task(name: str) -> str:
    n = name.strip()
    if n in TASKS:
        return n
    for short, gym_id in TASKS.items():
        if n == gym_id or n.lower() in (gym_id.lower(), short.replace("adroit-", "adroit_"), short + "-v1"):
            return short
    from .metaworld import UnknownTaskError

    close = difflib.get_close_matches(n.lower(), list(TASKS) + [v.lower() for v in TASKS.values()], n=3, cutoff=0.4)
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
    ball at target).
    """

    suite = "adroit"

    def __init__(self, task: str, *, size: Any = 64, camera: Optional[str] = None, action_repeat: int = 1,
                 seed: int = 0, max_steps: Optional[int] = None, flip: str = "auto"):
        self.env = None
        gym = _import_robotics()
        self.task = resolve_task(task)
        self.camera = camera or DEFAULT_CAMERA
        self.seed = int(seed)
        height, width = (size, size) if isinstance(size, (int, np.integer)) else size
        self.env = gym.make(
            TASKS[self.task], render_mode="rgb_array", width=int(width), height=int(height),
            camera_name=self.camera, disable_env_checker=True,
        )
        steps = self.env.spec.max_episode_steps or EPISODE_STEPS
        super().__init__(size=size, action_repeat=action_repeat, flip=flip, max_steps=max_steps, env_steps=steps)
        self._prepare_render()

    def _reseed(self, seed: int):
        return self.env.reset(seed=seed)

