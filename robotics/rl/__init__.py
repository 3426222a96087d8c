"""Visual RL with learned rewards: DrQ-v2 (:mod:`.drqv2`), episode replay with episode-level reward
relabelling (:mod:`.replay`), reward sources by name (:mod:`.rewards`), the training workspace
(:mod:`.workspace`), evaluation videos / curves (:mod:`.recording`) and held-out evaluation of a
trained agent (:mod:`.evaluate`). State-based Adroit experts:
SAC (:mod:`.sac`), its trainer (:mod:`.expert`) and the saved policy (:mod:`.policy`).

Importing this package loads no simulator; the workspace builds environments when it starts.
"""
from __future__ import annotations

from .drqv2 import DrQV2Agent, DrQV2Config
from .evaluate import evaluate_run
from .expert import ExpertConfig, evaluate_expert, train_expert
from .policy import StatePolicy, StatePolicyConfig
from .replay import EpisodeRecord, ReplayBuffer
from .rewards import REWARD_SOURCES, RewardSource, make_reward_source
from .sac import SACAgent, SACConfig
from .workspace import RLConfig, Workspace, parse_task, train_rl

__all__ = ["DrQV2Agent", "DrQV2Config", "EpisodeRecord", "ReplayBuffer", "REWARD_SOURCES", "RewardSource",
           "make_reward_source", "RLConfig", "Workspace", "parse_task", "train_rl", "ExpertConfig", "train_expert", "evaluate_expert",
           "evaluate_run", "StatePolicy", "StatePolicyConfig", "SACAgent", "SACConfig"]
