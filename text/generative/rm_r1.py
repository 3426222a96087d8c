"""RM-R1 (Chen et al., 2025, "RM-R1: Reward Modeling as Reasoning"): chain-of-rubrics judging.

The judge first classifies the task (``<type>Chat</type>`` or ``<type>Reasoning</type>``); for chat
it writes rubrics with justifications (``<rubric>…<justify>…</justify></rubric>``), for reasoning it
solves the problem itself (``<solution>…</solution>``); then it evaluates both responses against
that (``<eval>…</eval>``) and ends with ``<answer>[[A]]</answer>`` or ``<answer>[[B]]</answer>``.
The verdict is read from the tail of the output (:func:`mmreward.text.generative.parsing.parse_ab`);
the verifiable RL reward is +1 for the correct verdict and −1 otherwise (wrong, unparsable or missing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from .parsing import parse_ab
from .position import verdict_prob
from .runner import JudgeConfig, JudgeRunner, parse_metrics

__all__ = ["RMR1Config", "RMR1Judge", "chain_of_rubrics_messages", "rm_r1_reward", "CHAIN_OF_RUBRICS"]

CHAIN_OF_RUBRICS = (
    "Please act as an impartial judge and evaluate two AI chatbot responses to the client's question.\n"
    "First classify the task as <type>Chat</type> or <type>Reasoning</type>.\n"
    "If Chat: write rubrics for a good answer with their weights and justify them, inside "
    "<rubric>...<justify>...</justify></rubric>, then compare the two responses against the rubrics in <eval>...</eval>.\n"
    "If Reasoning: solve the problem yourself first inside <solution>...</solution>, then check both "
    "responses against your solution in <eval>...</eval>.\n"
    "Finish with your verdict: <answer>[[A]]</answer> if Chatbot A is better, <answer>[[B]]</answer> if Chatbot B is better."
)


@dataclass
class RMR1Config:
    system_prompt: str = field(default=CHAIN_OF_RUBRICS, metadata={"help": "chain-of-rubrics instructions"})
    max_new_tokens: int = field(default=512, metadata={"help": "rubric + evaluation length limit"})
    tail_chars: int = field(default=400, metadata={"help": "verdict search window at the end of the output"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    num_samples: int = field(default=1, metadata={"help": "k sampled judgements (majority of parsed verdicts)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature when num_samples > 1"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    forced_verdict: bool = field(default=False, metadata={
        "help": "when no sample parses, append '<answer>[[' to the first output and read P(A) vs P(B) from the next token"})


def chain_of_rubrics_messages(prompt: str, a: str, b: str, system_prompt: str = CHAIN_OF_RUBRICS) -> list[dict]:
    user = (f"[Client Question]\n{prompt}\n\n[The Start of Chatbot A's Response]\n{a}\n[The End of Chatbot A's Response]\n\n"
            f"[The Start of Chatbot B's Response]\n{b}\n[The End of Chatbot B's Response]")
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def rm_r1_reward(output: str, label: str, tail_chars: Optional[int] = 400) -> float:
    """The RL reward: +1 if the parsed verdict equals ``label`` (``"A"`` / ``"B"``), else −1."""
    if label not in ("A", "B"):
        raise ValueError(f"label must be 'A' or 'B', got {label!r}")
    p = parse_ab(output, tail_chars)
    return 1.0 if p.ok and p.value == label else -1.0


class RMR1Judge:
    """``judge(prompts, first, second)`` → P(first ≻ second): the fraction of the k parsed verdicts for A
    (½ when nothing parsed, or with ``forced_verdict`` the forced A/B next-token probability).
    ``last_results`` keeps the raw texts and parses of the latest call, ``last_strict`` the parsed-only
    probabilities and ``last_forced`` which rows were forced."""

    def __init__(self, model: Any, tokenizer: Any, config: Optional[RMR1Config] = None):
        self.config = c = config or RMR1Config()
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(
            max_new_tokens=c.max_new_tokens, num_samples=c.num_samples, do_sample=c.num_samples > 1,
            temperature=c.temperature, batch_size=c.batch_size, seed=c.seed))
        self.last_results: list = []
        self.last_strict = torch.zeros(0, dtype=torch.float64)
        self.last_forced = torch.zeros(0, dtype=torch.bool)

    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        if not (len(prompts) == len(first) == len(second)) or not prompts:
            raise ValueError("RMR1Judge.judge: prompts / first / second must be non-empty and equally long")
        msgs = [chain_of_rubrics_messages(p, a, b, self.config.system_prompt) for p, a, b in zip(prompts, first, second)]
        res = self.runner.run(msgs, lambda t: parse_ab(t, self.config.tail_chars))
        self.last_results = res
        out = []
        for row in res:
            votes = [r.value for r in row if r.ok]
            out.append(float(verdict_prob(votes).mean()) if votes else 0.5)
        p = torch.tensor(out, dtype=torch.float64)
        self.last_strict = p.clone()  # parsed verdicts only (½ where none parsed)
        missing = [i for i, row in enumerate(res) if not any(r.ok for r in row)]
        self.last_forced = torch.zeros(len(res), dtype=torch.bool)
        if self.config.forced_verdict and missing:
            # a verdict the model never wrote: force the answer prefix after its own judgement and read
            # the A/B next-token probabilities (reported apart from the parse rate)
            texts = [self.runner.render(msgs[i]) + res[i][0].text + "\n<answer>[[" for i in missing]
            pa = self.runner.choice_probs(texts, ["A", "B"])[:, 0].double()
            p[missing] = pa
            self.last_forced[missing] = True
        return p

    __call__ = judge

    def metrics(self) -> dict:
        return parse_metrics(self.last_results)
