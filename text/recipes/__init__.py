"""Training recipes for text reward models (names resolve lazily):

* Skywork curation — :func:`curate`, :func:`select_top_by_margin`, :func:`filter_by_reference`,
  :func:`decontaminate` (:mod:`.skywork`);
* RRM augmentation — :func:`rrm_augment`, :func:`filter_augmented`, :func:`rrm_dataset` (:mod:`.rrm`);
* WARM weight averaging — :func:`warm_average`, :func:`average_state_dicts`, :func:`init_distances` (:mod:`.warm`);
* RAFT — :func:`raft`, :class:`RaftConfig` (:mod:`.raft`).
"""
from __future__ import annotations

import importlib
import sys
import types

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
    "RaftConfig": "mmreward.text.recipes.raft",
    "raft": "mmreward.text.recipes.raft",
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


class _Recipes(types.ModuleType):
    """The package. The function :func:`raft` shares its name with the submodule that defines it, and
    the import system binds a submodule to the package under its name once it has loaded (also while
    ``from mmreward.text.recipes import raft`` looks the name up): here the name keeps the function,
    so ``raft(...)`` is the recipe whichever import ran first."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Recipes
