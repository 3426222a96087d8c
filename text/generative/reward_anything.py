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

``score([TextPair(prompt, response), ...])`` judges each response alone under ``config.principle``:
its 1–5 score, or 0 (below the scale) when the output gives none or a score off the scale.

Prompt protocols (``RewardAnythingConfig.template``): ``"mmreward"`` (a short system prompt, names
shuffled with ``seed + query index``, the default) and ``"paper"`` — the system prompt of
zhuohaoyu/RewardAnything's ``rewardanything/processing.py`` (PyPI ``rewardanything``) character for character, and its
masking: the names shuffled with ``random.seed(42)`` for every query.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from mmreward.core.inputs import TextPair
from mmreward.core.model import check_ranges

from .base import GenerativeJudge, text_field, text_list_lists, text_lists
from .parsing import Parsed, RankingParse, parse_ranking
from .runner import JudgeConfig, JudgeResult, JudgeRunner, parse_metrics

__all__ = ["RewardAnythingConfig", "RewardAnythingJudge", "RATemplate", "RA_TEMPLATES", "build_input",
           "accuracy_reward", "format_reward", "RA_INSTRUCTIONS", "RA_PAPER_SYSTEM"]

RA_INSTRUCTIONS = (
    "You evaluate responses by how well they follow the given principle. Read the JSON input, think "
    "briefly, then output only a JSON object: {\"scores\": {name: integer 1-5, ...}, "
    "\"best-to-worst\": [names from best to worst]} covering every response name."
)


# zhuohaoyu/RewardAnything (PyPI rewardanything) rewardanything/processing.py lines 12-32 (SYSTEM_PROMPT, leading and
# trailing newline included)
RA_PAPER_SYSTEM = (
    "\n"
    "You are an evaluator judging model responses based on a given **evaluation principle**. Your primary goal is "
    "to assess how well each response for the prompt adheres to the principle, placing this above typical general "
    "preferences, though you should not endorse harmful content.\n\n"
    "Your task:\n"
    "1. Read the principle, prompt, and all responses carefully and consider how each response aligns with the "
    "principle, **briefly in a concise thinking process**\n"
    "2. Score each response from 1-5:\n"
    "   - 5: Perfect adherence + excellent quality\n"
    "   - 4: Strong adherence with minor limitations\n"
    "   - 3: Basic adherence\n"
    "   - 2: Partial adherence with key omissions\n"
    "   - 1: Poor adherence or contradicts principle\n"
    "3. Sort responses from best to worst (distinguish between same scores)\n\n"
    "Use the scoring scale accurately based on merit - don't compress scores if responses show significant quality "
    "differences. If responses vary substantially in quality, utilize the full range (1-5) to reflect these "
    "differences.\n\n"
    "Output ONLY this JSON format:\n"
    "{\n"
    "  \"scores\": {\"model-1\": 2, \"model-2\": 4, ...},\n"
    "  \"best-to-worst\": [\"model-2\", \"model-1\", ...]\n"
    "}\n"
)


@dataclass(frozen=True)
class RATemplate:
    """One RewardAnything prompt protocol."""

    system: str  # the system prompt
    mask_seed: Optional[int]  # the names' shuffling seed for every query (None: config.seed + query index)


RA_TEMPLATES = {
    "mmreward": RATemplate(RA_INSTRUCTIONS, None),
    # processing.py make_masked_responses (lines 35-48): random.seed(42), then shuffle, for every query
    "paper": RATemplate(RA_PAPER_SYSTEM, 42),
}


@dataclass
class RewardAnythingConfig:
    template: str = field(default="mmreward", metadata={
        "help": "prompt protocol ('paper': RewardAnything's published prompt)", "choices": tuple(RA_TEMPLATES)})
    principle: str = field(default="Prefer the response that is more helpful, correct and honest.",
                           metadata={"help": "default evaluation principle"})
    instructions: Optional[str] = field(default=None, metadata={
        "help": "replaces the template's system prompt (None: the template's)"})
    max_new_tokens: int = field(default=256, metadata={"help": "output length limit"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    seed: int = field(default=0, metadata={"help": "name-shuffling ('mmreward' template) and sampling seed"})

    def __post_init__(self) -> None:
        check_ranges(self, counts=("max_new_tokens", "batch_size"), naturals=("seed",))
        if self.template not in RA_TEMPLATES:
            raise ValueError(f"RewardAnythingConfig.template must be one of {sorted(RA_TEMPLATES)}, "
                             f"got {self.template!r}")
        _check_principle(self.principle, "RewardAnythingConfig.principle")


def _check_principle(principle: str, where: str) -> None:
    """A principle is what the responses are judged by: an empty one leaves the judge nothing to follow."""
    if not isinstance(principle, str) or not principle.strip():
        raise ValueError(f"{where} must be a non-empty principle to judge the responses by, got {principle!r}")


SCALE = (1.0, 5.0)  # the scores the prompts ask for


def _on_scale(v: torch.Tensor) -> torch.Tensor:
    """``v`` with scores off the 1–5 scale (7, 100, -2) as NaN: no score on it, like none — not a reward above any
    answer's (``score`` gives them 0, the pairwise ``judge`` a tie, as it does a missing score)."""
    return torch.where((v >= SCALE[0]) & (v <= SCALE[1]), v, torch.full_like(v, float("nan")))


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


def _finite(value: Any) -> Optional[float]:
    """``value`` as a finite float (a Python / NumPy number or a one-element tensor), else None."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def accuracy_reward(pred: Mapping[Any, float], gt: Mapping[Any, float]) -> float:
    """``1 − Σ penalty / Σ weight`` over pairs with gt_a ≠ gt_b (see the module docstring). A name missing
    from ``pred``, or whose predicted score is not a finite number (NaN: unscored), counts as a full-penalty
    error in all its pairs."""
    keys = list(gt)
    if not keys:
        raise ValueError("accuracy_reward: empty ground truth")
    truth = {}
    for k in keys:
        truth[k] = _finite(gt[k])
        if truth[k] is None:
            raise ValueError(f"accuracy_reward: ground-truth score of {k!r} must be a finite number, got {gt[k]!r}")
    # a predicted score that is not a finite number (NaN: a name the judge left unscored) is no prediction: it
    # would compare neither below, above nor equal, and its pairs would count as right
    guess = {k: _finite(pred[k]) for k in keys if k in pred}
    scored = {k for k, v in guess.items() if v is not None}
    total = pen = 0.0
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            ga, gb = truth[a], truth[b]
            if ga == gb:
                continue
            w = 1.0 + abs(ga - gb)
            total += w
            if a not in scored or b not in scored:
                pen += w
                continue
            d = (guess[a] - guess[b]) * (ga - gb)
            pen += w if d < 0 else (w / 2 if d == 0 else 0.0)
    return 1.0 if total == 0 else 1.0 - pen / total


def format_reward(parsed: Parsed) -> float:
    """Mean of the four format components of a :func:`parse_ranking` result; −1 without a JSON object."""
    rp = parsed.value
    if not isinstance(rp, RankingParse):
        return -1.0
    parts = [rp.is_json, rp.all_scored, rp.ranking_complete, rp.consistent]
    return sum(map(float, parts)) / len(parts)


class RewardAnythingJudge(GenerativeJudge):
    """``judge_lists(prompts, responses, principles)`` → per query (n,) scores in the original order
    (NaN for unscored names; the scores as the judge wrote them, off-scale ones included);
    ``judge(prompts, first, second)`` → P(first ≻ second) ∈ {0, ½, 1} (½: a score missing or off the 1–5 scale);
    ``score`` on :class:`TextPair` inputs → each response's score alone (0 without one)."""

    model_type = "reward_anything"
    config_class = RewardAnythingConfig
    input_types = (TextPair,)

    def __init__(self, model: Any, tokenizer: Any, config: Optional[RewardAnythingConfig] = None):
        super().__init__(model, tokenizer, config or RewardAnythingConfig())
        c = self.config
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(max_new_tokens=c.max_new_tokens, batch_size=c.batch_size,
                                                                seed=c.seed))
        self.last_results: list = []
        self.last_names: list = []  # per query, the masked name of each response (original order)

    def messages(self, principle: str, prompt: str, responses: Sequence[str], index: int = 0) -> tuple[list, list]:
        """``(chat messages, masked names)`` for query number ``index``."""
        t = RA_TEMPLATES[self.config.template]
        seed = self.config.seed + index if t.mask_seed is None else t.mask_seed
        text, names = build_input(principle, prompt, responses, seed=seed)
        system = t.system if self.config.instructions is None else self.config.instructions
        return [{"role": "system", "content": system}, {"role": "user", "content": text}], names

    def judge_lists(self, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                    principles: Optional[Sequence[str]] = None, batch_size: Optional[int] = None) -> list[torch.Tensor]:
        prompts, responses = text_list_lists("RewardAnythingJudge", prompts, responses)
        if principles is None:
            principles = [self.config.principle] * len(prompts)
        else:  # one per query: a shorter list would drop the queries past its end
            (principles, _) = text_lists("RewardAnythingJudge", principles=principles, prompts=prompts)
            for i, pr in enumerate(principles):
                _check_principle(pr, f"RewardAnythingJudge: principles[{i}]")
        msgs, all_names = [], []
        for i, (p, rs, pr) in enumerate(zip(prompts, responses, principles)):
            m, names = self.messages(pr, p, rs, i)
            msgs.append(m)
            all_names.append(names)
        texts = self.runner.generate(msgs, batch_size)
        res, out = [], []
        for i, (row, names) in enumerate(zip(texts, all_names)):
            p = parse_ranking(row[0], names)
            res.append([JudgeResult(i, 0, row[0], p.value, p.reason)])
            sc = p.value.scores if isinstance(p.value, RankingParse) else {}
            out.append(torch.tensor([sc.get(n, float("nan")) for n in names], dtype=torch.float32))  # as every judge
        self.last_results, self.last_names = res, all_names
        return out

    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        prompts, first, second = text_lists("RewardAnythingJudge.judge", prompts=prompts, first=first, second=second)
        v = [_on_scale(s) for s in self.judge_lists(prompts, [[a, b] for a, b in zip(first, second)])]
        return torch.tensor([0.5 if torch.isnan(s).any() or s[0] == s[1] else float(s[0] > s[1]) for s in v],
                            dtype=torch.float32)

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        prompts = [text_field(it.prompt, f"input {i}: field 'prompt'") for i, it in enumerate(items)]
        responses = [[text_field(it.response, f"input {i}: field 'response'")] for i, it in enumerate(items)]
        v = _on_scale(torch.cat(self.judge_lists(prompts, responses, batch_size=batch_size)))  # (N,), NaN: no score
        return torch.nan_to_num(v, nan=0.0).float()

    def metrics(self) -> dict:
        m = parse_metrics(self.last_results)
        m["format_reward"] = sum(format_reward(Parsed(r.value, r.reason)) for row in self.last_results
                                 for r in row) / max(1, m["n"])
        return m
