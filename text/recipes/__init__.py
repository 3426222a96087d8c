"""Training recipes for text reward models (names resolve lazily):

* Skywork curation — :func:`curate`, :func:`select_top_by_margin`, :func:`filter_by_reference`,
  :func:`decontaminate` (:mod:`.skywork`);
* RRM augmentation — :func:`rrm_augment`, :func:`filter_augmented`, :func:`rrm_dataset` (:mod:`.rrm`);
* WARM weight averaging — :func:`warm_average`, :func:`average_state_dicts`, :func:`init_distances` (:mod:`.warm`);
* RAFT — :func:`raft`, :class:`RaftConfig` (:mod:`.reward_ranked`: Reward rAnked FineTuning; a module
  name of its own, so that ``recipes.raft`` is the function in every import order).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "CurationConfig": "mmreward.text.recipes.skywork",
    "curate": "mmreward.text.recipes.skywork",
    "pair_margins": "mmreward.text.recipes.skywork",
    "select_top_by_margin": "mmreward.text.recipes.skywork",
    "filter_by_reference": "mmreward.text.recipes.skywork",
    "decontaminate": "mmreward.text.recipes.skywork",
    "word_ngrams": "mmreward.text.recipes.skywork",
    "RRMConfig": "mmreward.text.recipes.rrm",
    "rrm_augment": "mmreward.text.recipes.rrm",
    "filter_augmented": "mmreward.text.recipes.rrm",
    "rrm_dataset": "mmreward.text.recipes.rrm",
    "WARMInitError": "mmreward.text.recipes.warm",
    "warm_average": "mmreward.text.recipes.warm",
    "average_state_dicts": "mmreward.text.recipes.warm",
    "init_distances": "mmreward.text.recipes.warm",
    "check_compatible": "mmreward.text.recipes.warm",
    "check_same_inputs": "mmreward.text.recipes.warm",
    "RaftConfig": "mmreward.text.recipes.reward_ranked",
    "raft": "mmreward.text.recipes.reward_ranked",
    "MergeConfig": "mmreward.text.recipes.cli",
    "merge": "mmreward.text.recipes.cli",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmreward.text.recipes' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

