"""Pixel environments: Meta-World v3 (:mod:`.metaworld`) and Adroit (:mod:`.adroit`), one interface.

Importing this package loads no simulator; each suite imports mujoco / gymnasium when an
environment is built.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .base import FLIPS, PixelEnv, Step, apply_flip, auto_flip, setup_mujoco_gl

__all__ = ["FLIPS", "PixelEnv", "Step", "apply_flip", "auto_flip", "setup_mujoco_gl", "make_env", "resolve_task",
           "suite_of", "list_tasks", "time_limit", "check_max_steps", "UnknownTaskError"]


def __getattr__(name: str):
    if name == "UnknownTaskError":
        from .base import UnknownTaskError

        return UnknownTaskError
    raise AttributeError(name)


def suite_of(task: str) -> str:
    from .adroit import is_adroit

    return "adroit" if is_adroit(task) else "metaworld"


def resolve_task(task: str) -> str:
    """Canonical task id in its suite (``door-open`` -> ``door-open-v3``, ``AdroitHandDoor-v1`` ->
    ``adroit-door``); unknown ids raise ``UnknownTaskError`` with the close matches."""
    if suite_of(task) == "adroit":
        from .adroit import resolve_task as adroit_resolve

        return adroit_resolve(task)
    from .metaworld import resolve_task as mw_resolve

    return mw_resolve(task)


def list_tasks() -> dict[str, list[str]]:
    """``{"metaworld": [...], "adroit": [...]}`` (a suite whose package is missing lists nothing)."""
    from . import adroit

    out: dict[str, list[str]] = {}
    try:
        from .metaworld import task_names

        out["metaworld"] = task_names()
    except ImportError:
        out["metaworld"] = []
    out["adroit"] = adroit.task_names()
    return out


def time_limit(task: str) -> int:
    """Environment steps per episode of ``task`` (a canonical id), read from its registration without
    building the environment (no renderer): Meta-World's ``max_path_length``, Adroit's ``max_episode_steps``."""
    if suite_of(task) == "adroit":
        from .adroit import EPISODE_STEPS, TASKS, _import_robotics

        return int(_import_robotics().spec(TASKS[task]).max_episode_steps or EPISODE_STEPS)
    from .metaworld import _import_metaworld

    _import_metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return int(ALL_V3_ENVIRONMENTS[task].max_path_length)


def check_max_steps(tasks: Sequence[str], max_steps: Optional[int], action_repeat: int, flag: str = "--max-steps"):
    """Refuse ``max_steps`` agent steps past any task's time limit (the environment would cut the episodes
    there without a word), for every task before any of them is collected."""
    if max_steps is None:
        return
    for task in tasks:
        env_steps = time_limit(task)
        if int(max_steps) > env_steps // int(action_repeat):
            raise ValueError(f"{flag} {max_steps} is longer than {task} allows: {env_steps // int(action_repeat)} "
                             f"agent steps ({env_steps} environment steps at --action-repeat {action_repeat}); use "
                             f"{flag} <= {env_steps // int(action_repeat)}")


def make_env(task: str, *, size: Any = 64, camera: Optional[str] = None, action_repeat: int = 1, seed: int = 0,
             max_steps: Optional[int] = None, flip: str = "auto", reward: str = "dense") -> PixelEnv:
    """Build the pixel environment for ``task`` (Meta-World id like ``door-open-v3`` or Adroit id
    like ``adroit-door``). Close it (or use it as a context manager) to free the EGL context.
    ``reward``: ``"dense"`` (the environment's own) or, on Adroit, ``"dapg"`` (see :class:`.adroit.AdroitEnv`)."""
    kw = dict(size=size, camera=camera, action_repeat=action_repeat, seed=seed, max_steps=max_steps, flip=flip)
    if suite_of(task) == "adroit":
        from .adroit import AdroitEnv

        return AdroitEnv(task, reward=reward, **kw)
    if reward != "dense":
        raise ValueError(f"the {reward!r} reward applies to Adroit tasks; {task} is a Meta-World task")
    from .metaworld import MetaWorldEnv

    return MetaWorldEnv(task, **kw)
