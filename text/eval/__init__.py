"""Evaluation harnesses for text reward models; every evaluator takes any scorer — a callable
``(prompts, responses) -> Tensor[N]`` or a reward model scoring ``TextPair`` inputs — so it works for
every RM kind.

* :func:`evaluate_rmbench` — RM-Bench 3×3 style matrix → easy / normal / hard per domain;
* :func:`evaluate_rewardbench` — RewardBench per-subset accuracy, section scores, overall;
* :func:`evaluate_rewardbench2` — RewardBench 2 best-of-N accuracy per subset, the Ties score, overall;
* :func:`bias_probe` — accuracy split by chosen longer / shorter and markdown (in every result).

Names resolve lazily (no heavy imports at ``import mmreward.text.eval``).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "evaluate_rmbench": "mmreward.text.eval.rmbench",
    "load_rmbench": "mmreward.text.eval.rmbench",
    "accuracy_matrix": "mmreward.text.eval.rmbench",
    "summarize_matrix": "mmreward.text.eval.rmbench",
    "evaluate_rewardbench": "mmreward.text.eval.rewardbench",
    "evaluate_pairs": "mmreward.text.eval.rewardbench",
    "load_rewardbench": "mmreward.text.eval.rewardbench",
    "section_scores": "mmreward.text.eval.rewardbench",
    "evaluate_rewardbench2": "mmreward.text.eval.rewardbench2",
    "load_rewardbench2": "mmreward.text.eval.rewardbench2",
    "score_responses": "mmreward.text.eval.rewardbench",
    "as_scorer": "mmreward.text.eval.rewardbench",
    "bias_probe": "mmreward.text.eval.bias",
    "has_markdown": "mmreward.text.eval.bias",
    "EvalConfig": "mmreward.text.eval.cli",
    "run_eval": "mmreward.text.eval.cli",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmreward.text.eval' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
