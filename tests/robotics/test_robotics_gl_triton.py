"""Regression: rendering with software GL (Mesa's LLVM) and then importing triton (as torch.compile
does) used to segfault the process. setup_mujoco_gl loads triton first when it is installed."""
import importlib.util
import subprocess
import sys

import pytest

from mmreward.robotics.envs.base import offscreen_render_problem

CODE = """
from mmreward.robotics.envs import make_env
env = make_env("door-open-v3", size=32)
env.reset(seed=0)
env.close()
import torch._dynamo  # imports triton
print("alive")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_render_then_triton_import_does_not_crash():
    problem = offscreen_render_problem()
    if problem:
        pytest.skip(problem)
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "alive" in proc.stdout
