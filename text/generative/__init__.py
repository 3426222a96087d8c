"""Generative reward models and judges (`mmreward.text.generative`) on any HF causal LM with a chat template.

    from mmreward.text.generative import JudgeRunner, JudgeConfig, GenRM, GRAM, RMR1Judge, GRMJudge
    from mmreward.text.generative import RewardAnythingJudge, CriticRM, both_orders

Every judge is a :class:`mmreward.core.model.RewardScorer` (``score`` / ``save_pretrained`` /
``from_pretrained``; ``mmreward.load`` opens a saved judge). Importing this package is light:
transformers is imported when a model / tokenizer is built.
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it
_EXPORTS = {
    # runner + parsing + position bias
    "JudgeConfig": "runner", "JudgeResult": "runner", "JudgeRunner": "runner", "parse_metrics": "runner",
    "render_prompt": "runner",
    "Parsed": "parsing", "parse_yes_no": "parsing", "parse_ab": "parsing", "parse_scores": "parsing",
    "parse_score": "parsing", "parse_json_object": "parsing", "parse_ranking": "parsing",
    "parse_ab_rm_r1": "parsing", "rewardanything_json": "parsing",
    "order_averaged": "position", "both_orders": "position", "swap_consistency": "position",
    "verdict_prob": "position", "pairwise_judge_accuracy": "position", "evaluate_pairs_with_judge": "position",
    "rmbench_with_judge": "position", "judge_from_scores": "position",
    "sft_batch": "sft", "lm_loss": "sft", "ScalarHeadLM": "heads",
    "GenerativeJudge": "base", "text_pairs": "base",
    "word_tokenizer": "tiny", "tiny_llama": "tiny",
    # methods
    "GenRM": "genrm", "GenRMConfig": "genrm", "genrm_loss": "genrm", "verification_batch": "genrm",
    "calibration": "genrm", "train_genrm": "genrm", "evaluate_genrm": "genrm",
    "GRAM": "gram", "GRAMConfig": "gram", "GRAM_TEMPLATES": "gram", "stage1_example": "gram", "stage1_batch": "gram", "gram_stage2_loss": "gram",
    "train_gram": "gram", "evaluate_gram": "gram",
    "RMR1Judge": "rm_r1", "RMR1Config": "rm_r1", "RM_R1_TEMPLATES": "rm_r1", "rm_r1_reward": "rm_r1",
    "chain_of_rubrics_messages": "rm_r1",
    "GRMJudge": "grm", "GRMConfig": "grm", "vote": "grm", "spct_rule_reward": "grm", "meta_rm_loss": "grm",
    "meta_rm_batch": "grm", "grm_messages": "grm", "train_meta_rm": "grm", "build_meta_rm_rows": "grm",
    "evaluate_meta_rm": "grm",
    "RewardAnythingJudge": "reward_anything", "RewardAnythingConfig": "reward_anything", "RA_TEMPLATES": "reward_anything",
    "build_input": "reward_anything", "accuracy_reward": "reward_anything", "format_reward": "reward_anything",
    "CriticRM": "critic_rm", "CriticRMConfig": "critic_rm", "sample_critiques": "critic_rm",
    "consistency_filter": "critic_rm", "critique_weight": "critic_rm", "build_critique_rows": "critic_rm",
    "train_critic_rm": "critic_rm", "evaluate_critic_rm": "critic_rm",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mmreward.text.generative' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
