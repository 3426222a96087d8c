"""Pieces every pixel environment shares: offscreen MuJoCo set-up, camera checks, frame orientation
and the action-repeat step loop.

Frames leave this module as uint8 ``[H, W, 3]`` arrays, the right way up.

Orientation. Gymnasium's MuJoCo renderer already turns OpenGL's bottom-up buffer into a top-down
image, so a camera whose own "up" axis points up gives an upright frame. Meta-World's ``corner*``
cameras are defined with their up axis pointing *down* (they were tuned for mujoco-py, which returned
the raw bottom-up buffer), so their frames come out upside down. ``flip="auto"`` looks at the camera's
orientation in the world after the first reset: when its image-up axis has a negative world-z
component the frame is rotated by 180° (the physically correct view: what stands on the left of the
robot stays on the left). ``"vertical"`` reproduces the mirrored view mujoco-py users got;
``"none"``, ``"horizontal"`` and ``"rot180"`` force one transform.
"""
from __future__ import annotations

import atexit
import difflib
import os
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

FLIPS = ("auto", "none", "vertical", "horizontal", "rot180")
# ``suite/`` prefixes a task id may carry (``train-rl --task adroit/door`` spells them so)
SUITE_PREFIXES = {"metaworld": "metaworld", "meta-world": "metaworld", "adroit": "adroit"}


class UnknownTaskError(ValueError):
    """A task id that no installed suite knows."""


def split_task(name: Any) -> tuple[Optional[str], str]:
    """``(suite or None, id)`` of a task name as a user wrote it: surrounding blanks dropped and a
    ``metaworld/`` / ``adroit/`` prefix split off. A non-string raises TypeError, an empty id
    :class:`UnknownTaskError` (both name the value), so no suite reports ``unknown task ''``."""
    if not isinstance(name, str):
        raise TypeError(f"task must be a task id string such as 'door-open-v3' or 'adroit-door', got "
                        f"{type(name).__name__} {name!r:.60}")
    n, suite = name.strip(), None
    head, sep, rest = n.partition("/")
    if sep and head.strip().lower() in SUITE_PREFIXES:
        suite, n = SUITE_PREFIXES[head.strip().lower()], rest.strip()
    if not n:
        raise UnknownTaskError(f"task id {name!r} is empty: give one such as door-open-v3 or adroit-door "
                               "(`mmreward robotics tasks` lists them)")
    return suite, n


def setup_mujoco_gl(default: str = "egl") -> str:
    """Pick the offscreen GL backend before mujoco is imported: ``MUJOCO_GL=egl`` unless the user set
    ``MUJOCO_GL`` already (then theirs is kept). Returns the backend in force. Also sets
    ``PYOPENGL_PLATFORM`` to match, as PyOpenGL reads it when mujoco creates the context."""
    backend = os.environ.setdefault("MUJOCO_GL", default)
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
        _load_triton_before_mesa()
    return backend


def _load_triton_before_mesa() -> None:
    """Software GL (Mesa llvmpipe, used by EGL / OSMesa without a GPU) loads its own LLVM; if triton's
    bundled LLVM is loaded *after* it (e.g. by a later torch.compile, which imports triton), the
    process segfaults. Loading triton first, when it is installed, avoids the clash."""
    import importlib.util
    import sys

    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            import triton  # noqa: F401
        except Exception:  # a broken triton install must not stop rendering
            pass


def offscreen_render_problem() -> Optional[str]:
    """``None`` when MuJoCo can render offscreen here, else why not (missing package, no EGL / OSMesa
    library, no GL device). Renders an empty 8×8 scene with the backend :func:`setup_mujoco_gl` picks."""
    backend = setup_mujoco_gl()
    try:
        import mujoco
    except ImportError as e:
        return f"mujoco is not installed ({e})"
    try:
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='0.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 8, 8)
        try:
            renderer.update_scene(mujoco.MjData(model))
            renderer.render()
        finally:
            renderer.close()
    except Exception as e:  # the GL layer raises many types (ImportError, RuntimeError, GLError …)
        return f"MuJoCo offscreen rendering with MUJOCO_GL={backend} fails here: {type(e).__name__}: {e}"
    return None


def speed_up_offscreen(model: Any) -> None:
    """No shadows and no multisampling: 6-10x faster offscreen rendering of small frames. Must run
    before the first render (the GL context reads these when it is created)."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0


def camera_names(model: Any) -> list[str]:
    import mujoco

    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]


def check_camera(model: Any, camera: str, where: str) -> int:
    """The id of ``camera`` in ``model``; a clear error listing the model's cameras otherwise (MuJoCo
    itself silently falls back to a free camera for unknown names)."""
    names = camera_names(model)
    if camera not in names:
        close = difflib.get_close_matches(camera, names, n=3, cutoff=0.3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown camera {camera!r} for {where}: choose from {', '.join(names)}{hint}")
    return names.index(camera)


def auto_flip(data: Any, camera_id: int) -> str:
    """``"rot180"`` when the camera's image-up axis points down in the world, else ``"none"``.

    ``data.cam_xmat`` holds the camera frame's axes as columns (x right, y up, z backwards, in world
    coordinates); it is valid after ``mj_forward`` (any reset)."""
    up = np.asarray(data.cam_xmat[camera_id]).reshape(3, 3)[:, 1]
    return "rot180" if up[2] < 0 else "none"


def apply_flip(frame: np.ndarray, flip: str) -> np.ndarray:
    if flip == "none":
        out = frame
    elif flip == "vertical":
        out = frame[::-1]
    elif flip == "horizontal":
        out = frame[:, ::-1]
    elif flip == "rot180":
        out = frame[::-1, ::-1]
    else:
        raise ValueError(f"unknown flip {flip!r}; choose from {', '.join(FLIPS)}")
    return np.ascontiguousarray(out, dtype=np.uint8)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def whole(name: str, value: Any, least: int, most: Optional[int] = None) -> int:
    """``value`` as an int in ``[least, most]``; a float, bool or string is refused (``1.5`` was truncated
    to 1 while the manifest kept 1.5, ``"3"`` failed far from here)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r:.40}")
    if value < least or (most is not None and value > most):
        raise ValueError(f"{name} must be >= {least}, got {value}" if most is None else
                         f"{name} must be in [{least}, {'2**32 - 1' if most == 2 ** 32 - 1 else most}], got {value}")
    return int(value)


SEED_MAX = 2 ** 32 - 1  # Meta-World's (numpy's legacy) seed range; Gymnasium's reset takes any seed >= 0


def check_env_options(seed: Any, action_repeat: Any, max_steps: Any) -> None:
    """The integer options of a pixel env, checked before its simulator is built."""
    whole("seed", seed, 0, SEED_MAX)
    whole("action_repeat", action_repeat, 1)
    if max_steps is not None:
        whole("max_steps", max_steps, 1)


def parse_size(size: Any) -> tuple[int, int]:
    """``64`` or ``(height, width)`` -> ``(height, width)``; positive integers only. A string such as
    ``"64"`` is refused (it unpacked as the pair of its characters: 6x4 frames), as are floats and bools."""
    if _is_int(size):
        h = w = int(size)
    elif isinstance(size, (tuple, list, np.ndarray)) and len(size) == 2 and all(_is_int(v) for v in size):
        h, w = (int(v) for v in size)
    else:
        raise TypeError(f"frame size must be an integer or (height, width) integers, got {type(size).__name__} "
                        f"{size!r:.60}")
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {size!r}")
    return h, w


def repeat_action(env: Any, action: np.ndarray, repeat: int) -> tuple[np.ndarray, float, bool, bool, bool]:
    """Step a Gymnasium env ``repeat`` times with one action (fewer when the episode ends first).
    Returns the last observation, the summed reward, whether ``info["success"]`` was set at any of
    the steps, and the last step's ``terminated`` / ``truncated``."""
    action = np.asarray(action, dtype=np.float32)
    total, success, terminated, truncated = 0.0, False, False, False
    for _ in range(repeat):
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        success = success or bool(info.get("success", False))
        if terminated or truncated:
            break
    return obs, total, success, bool(terminated), bool(truncated)


@dataclass
class Step:
    """One agent step (after action repeat): observation, frame, summed reward, success during the
    repeated steps, and whether the episode ended (time limit or termination)."""

    obs: np.ndarray
    frame: np.ndarray
    reward: float
    success: bool
    done: bool


class PixelEnv:
    """A Gymnasium MuJoCo environment seen through one camera, with action repeat.

    Subclasses build ``self.env`` (a Gymnasium env with ``render_mode="rgb_array"``) and implement
    :meth:`_reseed`; this class handles frames, action repeat and the step budget.
    ``max_steps`` counts agent steps (each one ``action_repeat`` environment steps).
    """

    suite = "?"
    env: Any
    task: str
    camera: str

    _reward_env: Any = None  # a wrapper of self.env that steps it with another reward (Adroit's DAPG sign)

    def __init__(self, *, size: Any, action_repeat: int, flip: str, max_steps: Optional[int], env_steps: int):
        whole("action_repeat", action_repeat, 1)
        if max_steps is not None:
            whole("max_steps", max_steps, 1)
        if flip not in FLIPS:
            raise ValueError(f"unknown flip {flip!r}; choose from {', '.join(FLIPS)}")
        self.size = parse_size(size)
        self.action_repeat = int(action_repeat)
        self.flip_request = flip
        self.flip: Optional[str] = None if flip == "auto" else flip
        self.max_env_steps = int(env_steps)
        limit = self.max_env_steps // self.action_repeat
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = limit if max_steps is None else min(int(max_steps), limit)
        self._t = 0
        self._camera_id = -1
        _LIVE_ENVS.add(self)

    # -------------------------------------------------------------- set-up shared by subclasses
    def _prepare_render(self) -> None:
        u = self.env.unwrapped
        self._camera_id = check_camera(u.model, self.camera, f"{self.suite} task {self.task}")
        speed_up_offscreen(u.model)

    # -------------------------------------------------------------- public API
    @property
    def action_space(self):
        return self.env.action_space

    @property
    def action_dim(self) -> int:
        return int(np.prod(self.env.action_space.shape))

    def _reseed(self, seed: int) -> tuple[np.ndarray, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Reset to the initial state defined by ``seed``; returns ``(obs, frame)``."""
        obs, _ = self._reseed(whole("seed", seed, 0))
        self._t = 0
        if self.flip is None:
            self.flip = auto_flip(self.env.unwrapped.data, self._camera_id)
        return obs, self.render()

    def raw_render(self) -> np.ndarray:
        """The renderer's frame before any orientation fix."""
        # Gymnasium's offscreen viewer renders into whichever GL context is current: with several envs
        # in one process that is the newest one's, or none once another env has closed (black frames)
        viewer = _offscreen_viewer(self.env)
        if viewer is not None:
            viewer.make_context_current()
        frame = self.env.render()
        if viewer is None:  # this render made the env's GL context (and maybe the process's GL display)
            _close_live_envs_first_at_exit()
        if frame is None or frame.shape[:2] != self.size:
            raise RuntimeError(f"renderer returned {None if frame is None else frame.shape}, expected {self.size}")
        return frame

    def render(self) -> np.ndarray:
        return apply_flip(self.raw_render(), self.flip or "none")

    def step(self, action: np.ndarray) -> Step:
        if self._t >= self.max_steps:
            raise RuntimeError(f"episode already has {self.max_steps} steps; call reset()")
        action = self._checked_action(action)
        obs, total, success, terminated, truncated = repeat_action(self._reward_env or self.env, action, self.action_repeat)
        self._t += 1
        done = terminated or truncated or self._t >= self.max_steps
        return Step(obs=obs, frame=self.render(), reward=total, success=success, done=done)

    def _checked_action(self, action: Any) -> np.ndarray:
        """``action`` as float32 of the action space's shape, checked before the simulator sees it: a NaN
        action made the simulation unstable (and this episode unusable) before any error, a wrong
        length failed in the suite's own assert."""
        shape = tuple(self.env.action_space.shape)
        try:
            a = np.asarray(action, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"action must be {shape[0] if len(shape) == 1 else list(shape)} numbers for "
                             f"{self.suite} task {self.task}, got {type(action).__name__} {action!r:.60}") from None
        if a.shape != shape:
            raise ValueError(f"action must have shape {list(shape)} for {self.suite} task {self.task}, "
                             f"got {list(a.shape)}")
        if not np.isfinite(a).all():
            raise ValueError(f"action holds NaN / inf values ({a.tolist()}); the episode is unchanged")
        return a

    def expert_action(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"no scripted expert ships for {self.suite} task {self.task}")

    @property
    def has_expert(self) -> bool:
        return False

    def hold_action(self) -> np.ndarray:
        """The action that keeps the robot where it is now. Here: zeros, what holds a robot under
        delta (mocap) control such as Meta-World's arm; position-controlled suites override it."""
        return np.zeros(self.env.action_space.shape, np.float32)

    def close(self) -> None:
        env, self.env = getattr(self, "env", None), None
        if env is None:
            return
        viewer = _offscreen_viewer(env)
        if viewer is not None and getattr(viewer, "con", None) is not None:
            # free MuJoCo's GL objects in their own context now: freed later by the garbage collector,
            # they are freed in whatever context is current then, deleting another env's objects
            viewer.make_context_current()
            viewer.con.free()
        env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Pixel envs not closed by their user (gym.make(...) in a script that just ends) are closed at exit while
# the GL display is still up: freed later by the garbage collector during interpreter shutdown, after
# mujoco's own exit hook has terminated the EGL display, each one printed two "Exception ignored in
# ... __del__" tracebacks. The hook is (re-)registered after each env's first render, so it runs before
# mujoco's, which is registered when the first GL context is made (exit hooks run last-in, first-out).
_LIVE_ENVS: "weakref.WeakSet[PixelEnv]" = weakref.WeakSet()


def _close_live_envs() -> None:
    for env in list(_LIVE_ENVS):
        try:
            env.close()
        except Exception:  # best effort at exit: one env's broken GL state must not keep the others open
            pass


def _close_live_envs_first_at_exit() -> None:
    atexit.unregister(_close_live_envs)
    atexit.register(_close_live_envs)


def _offscreen_viewer(env: Any) -> Any:
    """Gymnasium's offscreen viewer of ``env`` once it has rendered (None before, or for other renderers)."""
    viewer = getattr(getattr(env.unwrapped, "mujoco_renderer", None), "viewer", None)
    return viewer if hasattr(viewer, "make_context_current") else None
