"""Text reward models (`mmreward.text`): scalar RMs on any transformers backbone, preference data,
pairwise training on the fused ops, recipes and evaluation harnesses.

`import mmreward.text` is light: transformers is imported when a model is built or loaded.

    from mmreward.text import RewardModel, RewardTrainConfig, train_reward_model, load_preference_pairs
    rm = mmreward.load("runs/rm")      # any text RM folder: ours, mmreward 0.1, a transformers classifier
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> submodule that defines it
_EXPORTS = {
    "RewardModel": "reward_model",
    "RewardModelConfig": "reward_model",
    "PreferencePair": "data",
    "PairCollator": "data",
    "TextEncoder": "data",
    "load_preference_pairs": "data",
    "pair_from_row": "data",
    "RewardTrainConfig": "train",
    "train_reward_model": "train",
    "evaluate_pairs": "train",
    # process reward models and PRM-guided search
    "ProcessRewardModel": "prm.model",
    "PRMConfig": "prm.model",
    "PRMTrainConfig": "prm.train",
    "train_prm": "prm.train",
    "evaluate_prm": "prm.train",
    "MCTS": "prm.search",
    "MCTSConfig": "prm.search",
    "best_of_n_search": "prm.search",
    "ProcessRewardFunction": "prm.refine",
    # generative judges
    "JudgeRunner": "generative",
    "JudgeConfig": "generative",
    "GenRM": "generative",
    "GRAM": "generative",
    "RMR1Judge": "generative",
    "GRMJudge": "generative",
    "RewardAnythingJudge": "generative",
    "CriticRM": "generative",
}
_SUBMODULES = ("reward_model", "layouts", "data", "train", "cli", "recipes", "eval", "prm", "generative")

if TYPE_CHECKING:  # pragma: no cover
    from .data import PairCollator, PreferencePair, TextEncoder, load_preference_pairs, pair_from_row  # noqa: F401
    from .reward_model import RewardModel, RewardModelConfig  # noqa: F401
    from .train import RewardTrainConfig, evaluate_pairs, train_reward_model  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'mmreward.text' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS) + list(_SUBMODULES))
