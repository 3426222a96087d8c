"""A trained state-based policy as a model folder: :class:`StatePolicy` (``model_type``
``state_policy``), the deterministic SAC actor of a task.

    policy = StatePolicy.from_pretrained("runs/expert-door/model")
    action = policy.act(obs)                                          # (obs_dim,) -> (A,) in [-1, 1]

The folder holds ``config.json`` (the task id, observation / action sizes, the action repeat the
policy was trained with) and the actor's weights. ``mmreward robotics collect --policy expert
--expert-model FOLDER`` drives Adroit episodes with it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mmreward.core.model import Pretrained

from .sac import GaussianActor


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class StatePolicyConfig:
    task: str = _help("task id the policy was trained on, e.g. adroit-door", default="")
    obs_dim: int = _help("size of the state observation", default=1)
    action_dim: int = _help("size of the action", default=1)
    hidden_dim: int = _help("width of the actor's two hidden layers", default=256)
    action_repeat: int = _help("environment steps per policy action during training", default=1)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "hidden_dim", "action_repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class StatePolicy(Pretrained, nn.Module):
    """The squashed-mean action of a SAC actor on state observations."""

    model_type = "state_policy"
    config_class = StatePolicyConfig

    def __init__(self, config: StatePolicyConfig):
        super().__init__()
        self.config = config
        self.actor = GaussianActor(config.obs_dim, config.action_dim, config.hidden_dim)

    @classmethod
    def from_actor(cls, actor: GaussianActor, config: StatePolicyConfig) -> "StatePolicy":
        """A policy holding a copy of ``actor``'s weights (the agent keeps training its own)."""
        policy = cls(config)
        policy.actor.load_state_dict(actor.state_dict())
        return policy.eval()

    @torch.no_grad()
    def act(self, obs: Any) -> np.ndarray:
        """Deterministic action(s) in ``[-1, 1]``: ``[obs_dim] → [A]`` or ``[B, obs_dim] → [B, A]`` (float32)."""
        x = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        if x.ndim not in (1, 2) or x.shape[-1] != self.config.obs_dim:
            raise ValueError(f"observation of shape {tuple(x.shape)} does not fit this {self.config.task} policy: it "
                             f"takes [{self.config.obs_dim}] or [B, {self.config.obs_dim}]")
        a = self.actor.mean_action(x.reshape(-1, self.config.obs_dim))  # (B, A)
        return a.reshape(*x.shape[:-1], self.config.action_dim).cpu().numpy()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def policy_folder(path: str) -> str:
    """A policy folder, or a train-expert run folder holding one in ``model/``."""
    inner = os.path.join(path, "model")
    if not os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(inner, "config.json")):
        return inner
    if not os.path.isfile(os.path.join(path, "config.json")):
        try:  # a train-rl run folder (a pixel agent) was "has no config.json: not a saved model folder"
            with open(os.path.join(path, "train_config.json"), encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and isinstance(saved.get("config"), dict) and "num_train_frames" in saved["config"]:
            raise ValueError(f"{path} is a train-rl run (a pixel DrQ-v2 agent), not a train-expert policy "
                             f"(`mmreward robotics eval-rl --run {path}` evaluates it)")
    return path
