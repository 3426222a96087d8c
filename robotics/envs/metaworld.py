"""Meta-World v3 tasks rendered from one camera, with their scripted expert policies.

Episodes are reproducible per seed. The environment is ``gym.make("Meta-World/MT1", env_name=task,
seed=seed)``: with that seed MT1 draws its 50 task variants (object / goal positions) the same way
every time. Each episode is then fixed by its own seed: :meth:`MetaWorldEnv.reset` seeds the
environment's generator with it, which picks the variant for that episode.

Default camera: ``corner`` for every task. It shows the robot arm and the task's object from the
front-left and fills a 64×64 frame better than ``corner2`` / ``corner3`` (which show more table and
less object); ``topview`` hides the gripper height and ``behindGripper`` moves with the arm. All
``corner*`` frames are turned right side up (see :mod:`mmreward.robotics.envs.base`).
"""
from __future__ import annotations

import difflib
import re
import warnings
from typing import Any, Optional

import numpy as np

from .base import PixelEnv, UnknownTaskError, check_env_options, parse_size, setup_mujoco_gl, split_task

DEFAULT_CAMERA = "corner"
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")

__all__ = ["MetaWorldEnv", "UnknownTaskError", "task_names", "resolve_task", "expert_policy_class", "CAMERAS",
           "DEFAULT_CAMERA"]


def _import_metaworld():
    setup_mujoco_gl()
    try:
        import gymnasium  # noqa: F401
        import metaworld
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            f"Meta-World tasks need the robotics extra: pip install 'mmreward[robotics]' ({e})"
        ) from e
    return metaworld


def task_names() -> list[str]:
    """Every Meta-World v3 task id (``door-open-v3`` …)."""
    _import_metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return list(ALL_V3_ENVIRONMENTS)


def resolve_task(name: str) -> str:
    """Canonical task id: exact ids pass, ``door-open`` / ``door_open`` / ``Door-Open-V3`` / ``door-open-v2``
    / ``DoorOpen`` / ``DoorOpenV3`` / ``metaworld/door-open-v3`` give ``door-open-v3`` (only v3 tasks are installed); anything else
    raises :class:`UnknownTaskError` listing the closest ids (Adroit's among them: ``pen`` ->
    ``adroit-pen``)."""
    from .adroit import TASKS as ADROIT_TASKS, is_adroit

    suite, n = split_task(name)
    if suite == "metaworld" and is_adroit(n):
        raise UnknownTaskError(f"{n!r} is an Adroit task, not a Meta-World one (drop the metaworld/ prefix)")
    names = task_names()
    if n in names:
        return n
    guess = n.lower().replace("_", "-")
    # CamelCase as Meta-World's own class names spell them (SawyerDoorOpenV3Policy): DoorOpen, DoorOpenV3
    camel = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", n.replace("_", "-")).lower()
    for base in dict.fromkeys((guess, camel)):
        for cand in (base, base + "-v3", re.sub(r"-v\d+$", "-v3", base)):
            if cand in names:
                return cand
    close = difflib.get_close_matches(guess, names, n=5, cutoff=0.5)
    adroit = "adroit-" + re.sub(r"-v\d+$", "", guess)  # pen, relocate, door: the Adroit task of that name
    if suite is None and adroit in ADROIT_TASKS:
        close = [adroit] + close[:4]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise UnknownTaskError(f"unknown Meta-World task {name!r}{hint} ({len(names)} Meta-World tasks, "
                           f"{len(ADROIT_TASKS)} Adroit tasks; `mmreward robotics tasks` lists them)")


def _key(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def expert_policy_class(task: str) -> type:
    """The scripted policy class for ``task`` from ``metaworld.policies`` (its own ``ENV_POLICY_MAP``
    where it has one, else matched by name: ``door-open-v3`` -> ``SawyerDoorOpenV3Policy``)."""
    _import_metaworld()
    import metaworld.policies as policies

    table = getattr(policies, "ENV_POLICY_MAP", None)
    if isinstance(table, dict) and task in table:
        return table[task]
    by_key = {_key(n[len("Sawyer"):-len("Policy")]): getattr(policies, n)
              for n in dir(policies) if n.startswith("Sawyer") and n.endswith("Policy")}
    key = _key(task).replace("peginsertside", "peginsertionside")
    if key not in by_key:
        raise UnknownTaskError(f"metaworld.policies has no scripted expert for {task!r}")
    return by_key[key]


class MetaWorldEnv(PixelEnv):
    """One Meta-World v3 task as a pixel environment.

    >>> env = MetaWorldEnv("door-open-v3", size=64, action_repeat=2)
    >>> obs, frame = env.reset(seed=0)          # frame: uint8 [64, 64, 3]
    >>> step = env.step(env.expert_action(obs))  # Step(obs, frame, reward, success, done)
    >>> env.close()

    ``max_steps`` caps the agent steps (default: the task's 500 environment steps / action_repeat).
    """

    suite = "metaworld"

    def __init__(self, task: str, *, size: Any = 64, camera: Optional[str] = None, action_repeat: int = 1,
                 seed: int = 0, max_steps: Optional[int] = None, flip: str = "auto"):
        self.env = None
        check_env_options(seed, action_repeat, max_steps)
        _import_metaworld()
        import gymnasium as gym

        self.task = resolve_task(task)
        self.camera = DEFAULT_CAMERA if camera is None else camera  # "" is checked as a name, not taken as the default
        self.seed = int(seed)
        height, width = parse_size(size)
        self.env = gym.make(
            "Meta-World/MT1", env_name=self.task, seed=self.seed, render_mode="rgb_array",
            width=int(width), height=int(height), camera_name=self.camera, disable_env_checker=True,
        )
        super().__init__(size=size, action_repeat=action_repeat, flip=flip, max_steps=max_steps,
                         env_steps=self.env.unwrapped.max_path_length)
        self._prepare_render()
        self._policy = None

    def _reseed(self, seed: int):
        # SawyerXYZEnv.reset ignores `seed`; its own seed() reseeds the generator that MT1's task
        # sampler (RandomTaskSelectWrapper) and the environment share.
        self.env.unwrapped.seed(seed)
        return self.env.reset()

    @property
    def has_expert(self) -> bool:
        return True

    def expert_action(self, obs: np.ndarray) -> np.ndarray:
        if self._policy is None:
            self._policy = expert_policy_class(self.task)()
        with warnings.catch_warnings():  # the scripted policies warn about their own gains every step
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            action = self._policy.get_action(np.array(obs, copy=True))
        return np.asarray(action, dtype=np.float32)
