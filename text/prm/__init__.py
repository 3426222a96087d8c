"""mmreward.text.prm — process reward models (PRMs) and PRM-guided search.

* :mod:`.model` — :class:`ProcessRewardModel` (a ``RewardScorer`` on ``StepSolution``): per-step scores
  from any HF backbone, with a two-label-token LM head (Math-Shepherd), a scalar value head (TRL PRM /
  ReST-MCTS* / rStar PPM / Skywork-PRM) or Qwen2.5-Math-PRM's 2-class MLP head;
* :mod:`.published` — the published Math-Shepherd, Qwen2.5-Math-PRM, Skywork-o1-Open-PRM and RLHFlow
  PRM folders, read by ``mmreward.load``;
* :mod:`.data` — TRL stepwise, Math-Shepherd (``ки`` + ``+``/``-``), PRM800K (−1/0/+1), ProcessBench
  (as released) and PPM-pair readers;
* :mod:`.labels` — Monte-Carlo step labels, ReST-MCTS* value targets, rStar-Math PPM pairs, search trees;
* :mod:`.train` — BCE / value-MSE / PPM training on the shared core Trainer;
* :mod:`.search` — MCTS and Best-of-N over reasoning steps, self-training data export;
* :mod:`.refine` — Clip / Delta refined PRM rewards for PPO / GRPO;
* :mod:`.eval` — the ProcessBench protocol (per-subset table) and step macro-F1;
* :mod:`.synthetic` — exactly-labelled arithmetic chains and a noisy step policy.

Importing this package loads nothing heavy; names resolve lazily.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "PRMConfig": "model", "ProcessRewardModel": "model", "AGGREGATIONS": "model", "aggregate_steps": "model",
    "load_math_shepherd": "published", "load_qwen_prm": "published", "load_skywork_prm": "published",
    "load_rlhflow_prm": "published",
    "StepExample": "data", "PairExample": "data", "read_step_examples": "data", "read_pair_examples": "data",
    "parse_row": "data", "StepCollator": "data", "PairCollator": "data",
    "monte_carlo_labels": "labels", "rest_mcts_values": "labels", "trace_value_targets": "labels",
    "SearchTree": "labels", "TreeNode": "labels", "tree_value_targets": "labels", "ppm_pairs": "labels",
    "PRMTrainConfig": "train", "train_prm": "train", "evaluate_prm": "train", "step_metrics": "train",
    "MCTS": "search", "MCTSConfig": "search", "SearchResult": "search", "best_of_n_search": "search",
    "HFStepPolicy": "search", "self_training_records": "search", "write_jsonl": "search", "compare_search": "search",
    "RefineConfig": "refine", "ProcessRewardFunction": "refine",
    "processbench_f1": "eval", "processbench_sweep": "eval", "processbench_report": "eval",
    "predict_first_error": "eval", "step_macro_f1": "eval",
    "make_dataset": "synthetic", "make_problems": "synthetic", "NoisyStepPolicy": "synthetic",
    "ArithmeticTask": "synthetic", "NoisyStepJudge": "synthetic", "char_tokenizer": "synthetic",
    "make_pairs": "synthetic", "tiny_llama": "synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
