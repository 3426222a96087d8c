"""Reward serving for RL trainers: any model ``mmreward.load`` opens, over HTTP with dynamic batching.

    mmreward serve --model runs/rm                      # POST /score, POST /get_reward (OpenRLHF), /metrics
    from mmreward.serve import TRLRewardFunction        # GRPOTrainer(reward_funcs=[TRLRewardFunction(...)])
    from mmreward.serve import OpenRLHFRewardFunction   # reward_func for OpenRLHF's --remote_rm_url file.py
    from mmreward.serve import VerlRewardFunction       # verl's custom_reward_function (naive or batch manager)

Modules: :mod:`~mmreward.serve.batcher` (dynamic batching), :mod:`~mmreward.serve.protocol`
(request / response bodies), :mod:`~mmreward.serve.app` (FastAPI + uvicorn), :mod:`~mmreward.serve.adapters`
(TRL / OpenRLHF callables, HTTP client), :mod:`~mmreward.serve.ray` (Ray Serve scale-out),
:mod:`~mmreward.serve.metrics` (Prometheus text). Importing this package loads neither FastAPI nor Ray.
"""
from __future__ import annotations

import importlib

_NAMES = {
    "ServeConfig": "config", "RayServeConfig": "config",
    "DynamicBatcher": "batcher", "score_jobs": "batcher",
    "ModelSpec": "protocol", "RequestError": "protocol",
    "BackgroundServer": "app", "LocalBackend": "app", "create_app": "app", "serve": "app",
    "OpenRLHFRewardFunction": "adapters", "RewardClient": "adapters", "TRLRewardFunction": "adapters",
    "VerlRewardFunction": "adapters",
    "build_app": "ray", "serve_ray": "ray",
}


def __getattr__(name: str):
    if name in _NAMES:
        from mmreward.core.extras import needs_extra

        with needs_extra("serve-ray" if _NAMES[name] == "ray" else "serve", what=f"mmreward.serve.{name}"):
            return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NAMES))


__all__ = sorted(_NAMES)
