"""RewardAnything (Yu et al., 2025, "RewardAnything: Generalizable Principle-Following Reward Models").

Listwise, principle-following judging. Input is JSON ``{"principle", "prompt", "responses": {name: text}}``
where the names are masked (``model-1`` …) and shuffled with a seed, so the judge cannot key on
position or identity; output is JSON ``{"scores": {name: s}, "best-to-worst": [names]}``, mapped back to
the original response order.

RL rewards (:func:`accuracy_reward`, :func:`format_reward`):

* accuracy — over every response pair with different ground-truth scores, weight
  ``w = 1 + |gt_a − gt_b|``; a reversed predicted order costs ``w``, a predicted tie ``w / 2``;
  ``R_acc = 1 − Σ penalty / Σ w`` (1 when the ground truth has no strict pair);
* format — components checked on the parsed output (valid JSON object; a numeric score for every
  name and no unknown names; best-to-worst a permutation of the names; ranking consistent with the
  scores); ``R_format`` = mean of the components, −1 when no JSON object parses.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from .parsing import Parsed, RankingParse, parse_ranking
from .runner import JudgeConfig, JudgeResult, JudgeRunner, parse_metrics

__all__ = ["RewardAnythingConfig", "RewardAnythingJudge", "build_input", "accuracy_reward", "format_reward",
           "RA_INSTRUCTIONS"]

RA_INSTRUCTIONS = (
    "You evaluate responses by how well they follow the given principle. Read the JSON input, think "
    "briefly, then output only a JSON object: {\"scores\": {name: integer 1-5, ...}, "
    "\"best-to-worst\": [names from best to worst]} covering every response name."
)


@dataclass
class RewardAnythingConfig:
    principle: str = field(default="Prefer the response that is more helpful, correct and honest.",
                           metadata={"help": "default evaluation principle"})
    instructions: str = field(default=RA_INSTRUCTIONS, metadata={"help": "system prompt"})
    max_new_tokens: int = field(default=256, metadata={"help": "output length limit"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    seed: int = field(default=0, metadata={"help": "name-shuffling and sampling seed"})


def build_input(principle: str, prompt: str, responses: Sequence[str], seed: int = 0) -> tuple[str, list[str]]:
    """``(input JSON, names)``: ``names[i]`` is the masked name of ``responses[i]``; the JSON lists the
    responses in a seeded random order."""
    if not responses:
        raise ValueError("build_input: no responses")
    for i, r in enumerate(responses):
        if not isinstance(r, str):
            raise TypeError(f"build_input: responses[{i}] is {type(r).__name__}, not str")
    rng = random.Random(seed)
    order = list(range(len(responses)))
    rng.shuffle(order)
    names = [""] * len(responses)
    for slot, i in enumerate(order):
        names[i] = f"model-{slot + 1}"
    shown = {names[i]: responses[i] for i in order}
    return json.dumps({"principle": principle, "prompt": prompt, "responses": shown}, ensure_ascii=False), names


def accuracy_reward(pred: Mapping[Any, float], gt: Mapping[Any, float]) -> float:
    """``1 − Σ penalty / Σ weight`` over pairs with gt_a ≠ gt_b (see the module docstring). A name missing
    from ``pred`` counts as a full-penalty error in all its pairs."""
    keys = list(gt)
    if not keys:
        raise ValueError("accuracy_reward: empty ground truth")
    total = pen = 0.0
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            ga, gb = float(gt[a]), float(gt[b])
            if ga == gb:
                continue
            w = 1.0 + abs(ga - gb)
            total += w
            if a not in pred or b not in pred:
                pen += w
                continue
            d = (float(pred[a]) - float(pred[b])) * (ga - gb)
            pen += w if d < 0 else (w / 2 if d == 0 else 0.0)
    return 1.0 if total == 0 else 1.0 - pen / total


def format_reward(parsed: Parsed) -> float:
    """Mean of the four format components of a :func:`parse_ranking` result; −1 without a JSON object."""
    rp = parsed.value
    if not isinstance(rp, RankingParse):
        return -1.0
    parts = [rp.is_json, rp.all_scored, rp.ranking_complete, rp.consistent]
    return sum(map(float, parts)) / len(parts)


class RewardAnythingJudge:
    """``judge_lists(prompts, responses, principles)`` → per query (n,) scores in the original order
    (NaN for unscored names); ``judge(prompts, first, second)`` → P(first ≻ second) ∈ {0, ½, 1}."""

    def __init__(self, model: Any, tokenizer: Any, config: Optional[RewardAnythingConfig] = None):
        self.config = c = config or RewardAnythingConfig()
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(max_new_tokens=c.max_new_tokens, batch_size=c.batch_size,
                                                                seed=c.seed))
        self.last_results: list = []
        self.last_names: list = []  # per query, the masked name of each response (original order)

    def judge_lists(self, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                    principles: Optional[Sequence[str]] = None) -> list[torch.Tensor]:
        if len(prompts) != len(responses) or not prompts:
            raise ValueError("RewardAnythingJudge: prompts and responses must be non-empty and equally long")
        principles = principles or [self.config.principle] * len(prompts)
        msgs, all_names = [], []
        for i, (p, rs, pr) in enumerate(zip(prompts, responses, principles)):
            text, names = build_input(pr, p, rs, seed=self.config.seed + i)
            msgs.append([{"role": "system", "content": self.config.instructions}, {"role": "user", "content": text}])
            all_names.append(names)
        texts = self.runner.generate(msgs)
        res, out = [], []
        for i, (row, names) in enumerate(zip(texts, all_names)):
            p = parse_ranking(row[0], names)
            res.append([JudgeResult(i, 0, row[0], p.value, p.reason)])
            sc = p.value.scores if isinstance(p.value, RankingParse) else {}
            out.append(torch.tensor([sc.get(n, float("nan")) for n in names], dtype=torch.float64))
        self.last_results, self.last_names = res, all_names
        return out

    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        v = self.judge_lists(prompts, [[a, b] for a, b in zip(first, second)])
        return torch.tensor([0.5 if torch.isnan(s).any() or s[0] == s[1] else float(s[0] > s[1]) for s in v],
                            dtype=torch.float64)

    __call__ = judge

    def metrics(self) -> dict:
        m = parse_metrics(self.last_results)
        m["format_reward"] = sum(format_reward(Parsed(r.value, r.reason)) for row in self.last_results
                                 for r in row) / max(1, m["n"])
        return m
