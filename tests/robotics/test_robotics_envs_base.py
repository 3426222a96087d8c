"""Environment helpers that need no simulator: GL backend choice, flips, sizes, light imports."""
import subprocess
import sys

import numpy as np
import pytest

from mmreward.robotics.envs.base import apply_flip, auto_flip, parse_size, setup_mujoco_gl


def test_mujoco_gl_defaults_to_egl_but_keeps_the_users_choice(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert setup_mujoco_gl() == "egl"
    import os

    assert os.environ["MUJOCO_GL"] == "egl" and os.environ["PYOPENGL_PLATFORM"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert setup_mujoco_gl() == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_flips():
    f = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(apply_flip(f, "none"), f)
    assert np.array_equal(apply_flip(f, "vertical"), f[::-1])
    assert np.array_equal(apply_flip(f, "horizontal"), f[:, ::-1])
    assert np.array_equal(apply_flip(f, "rot180"), np.rot90(f, 2))
    assert apply_flip(f, "rot180").flags["C_CONTIGUOUS"]
    with pytest.raises(ValueError, match="unknown flip"):
        apply_flip(f, "sideways")


class _Data:
    def __init__(self, xmat):
        self.cam_xmat = np.asarray([np.asarray(xmat, float).reshape(9)])


def test_auto_flip_reads_the_camera_up_axis():
    # columns: camera x, y (image up), z (backwards) in world coordinates
    upright = np.column_stack([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    upside_down = np.column_stack([[-1, 0, 0], [0, 0, -1], [0, -1, 0]])
    looking_down = np.eye(3)  # Meta-World's topview: image up is world +y, horizontal
    assert auto_flip(_Data(upright), 0) == "none"
    assert auto_flip(_Data(upside_down), 0) == "rot180"
    assert auto_flip(_Data(looking_down), 0) == "none"


def test_parse_size():
    assert parse_size(64) == (64, 64) and parse_size((48, 64)) == (48, 64)
    with pytest.raises(ValueError):
        parse_size(0)


def test_robotics_import_stays_light():
    code = ("import sys, mmreward.robotics, mmreward.robotics.envs, mmreward.robotics.cli, mmreward.robotics.collect,"
            " mmreward.robotics.data;"
            "print([m for m in ('mujoco', 'metaworld', 'gymnasium', 'gymnasium_robotics', 'cv2', 'matplotlib')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_offscreen_render_probe_answers_without_raising():
    from mmreward.robotics.envs.base import offscreen_render_problem

    problem = offscreen_render_problem()
    assert problem is None or "MUJOCO_GL" in problem or "not installed" in problem


def test_actions_are_checked_before_the_simulator_steps():
    """Before: a NaN action reached MuJoCo (an unstable simulation, this episode ruined, then an error
    from deep inside Meta-World); a wrong length failed in the suite's own bare assert."""
    import types

    from mmreward.robotics.envs.base import PixelEnv

    class Sim:
        action_space = types.SimpleNamespace(shape=(4,))
        steps = []

        def step(self, action):
            self.steps.append(action)
            return np.zeros(3), 0.0, False, False, {}

    class Stub(PixelEnv):
        suite, task, camera = "stub", "t", "c"

        def render(self):
            return np.zeros((8, 8, 3), np.uint8)

    env = Stub(size=8, action_repeat=2, flip="none", max_steps=None, env_steps=10)
    env.env = Sim()
    for bad, msg in [(np.full(4, np.nan), "action holds NaN / inf values"), (np.zeros(3), r"shape \[4\] .* got \[3\]"),
                     (np.zeros((1, 4)), r"got \[1, 4\]"), ("abc", "action must be 4 numbers")]:
        with pytest.raises(ValueError, match=msg):
            env.step(bad)
    assert env.env.steps == [] and env._t == 0  # nothing reached the simulator
    assert env.step([0.1, 0, 0, 1]).done is False and len(env.env.steps) == 2
