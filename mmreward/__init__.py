"""mmreward: reward models of every modality on fused kernels.

`import mmreward` is light: it imports no heavy package, not even torch. Sub-packages load on first use:

    import mmreward
    rm = mmreward.load("runs/rm")                      # any saved / published reward model folder
    rm.score([{"prompt": "2+2?", "response": "4"}])    # Tensor[N], one reward per input
    mmreward.ops.pairwise_loss(r_chosen, r_rejected)   # fused ops (C++ / CUDA / Triton / reference)
    mmreward.text, mmreward.vision, mmreward.robotics  # domain packages (optional dependencies)

A package of an extra that is not installed is an ImportError naming the extra to install
(``pip install 'mmreward[text]'``, see :mod:`mmreward.core.extras`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = ("ops", "core", "text", "vision", "robotics", "env_report", "cli", "registry", "serve")
_REGISTRY_NAMES = ("load", "register_model", "register_layout")

if TYPE_CHECKING:  # pragma: no cover
    from . import core, ops, robotics, text, vision  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _REGISTRY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.registry"), name)
    raise AttributeError(f"module 'mmreward' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + list(_REGISTRY_NAMES))
