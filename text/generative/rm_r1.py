"""RM-R1 (Chen et al., 2025, "RM-R1: Reward Modeling as Reasoning"): chain-of-rubrics judging.

The judge first classifies the task (``<type>Chat</type>`` or ``<type>Reasoning</type>``); for chat
it writes rubrics with justifications (``<rubric>…<justify>…</justify></rubric>``), for reasoning it
solves the problem itself (``<solution>…</solution>``); then it evaluates both responses against
that (``<eval>…</eval>``) and ends with ``<answer>[[A]]</answer>`` or ``<answer>[[B]]</answer>``.
The verdict is read from the tail of the output (:func:`mmreward.text.generative.parsing.parse_ab`);
the verifiable RL reward is +1 for the correct verdict and −1 otherwise (wrong, unparsable or missing).
``score([Comparison(prompt, first, second), ...])`` → P(first ≻ second) in the order given (RM-R1's
evaluation shows each pair once, in a random order).

Prompt protocols (``RMR1Config.template``): ``"mmreward"`` (a compact chain-of-rubrics system
prompt, the default), ``"paper"`` (the system prompt and user template of the released RM-R1
instruct models) and ``"paper-reasoning"`` (the single user prompt of the DeepSeek-distilled RM-R1
models), character for character from RM-R1-UIUC/RM-R1 (``demo/demo.ipynb``; the same strings in
``eval/reward-bench/rewardbench/generative.py``). The paper protocols read verdicts exactly as RM-R1's
harness does (:func:`~mmreward.text.generative.parsing.parse_ab_rm_r1`: the literal ``[[A]]`` / ``[[B]]``
anywhere in the output, both or neither is no verdict); the ``"mmreward"`` template reads the last
``<answer>…</answer>`` or a bare verdict in the final ``tail_chars`` characters (``parse_ab``).

:func:`rm_r1_reward` is RM-R1's RL reward (``rm_r1/verl/utils/reward_score/lm_as_judge.py``,
``answer_reward``): +1 iff the final 80 characters hold ``<answer>[[X]]</answer>`` for the label X and not
the other letter's tag, else −1.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence

import torch

from mmreward.core.inputs import Comparison
from mmreward.core.model import check_ranges

from .base import GenerativeJudge, check_sampling, text_field, text_lists
from .parsing import parse_ab, parse_ab_rm_r1
from .position import verdict_prob
from .runner import JudgeConfig, JudgeRunner, parse_metrics

__all__ = ["RMR1Config", "RMR1Judge", "RMR1Template", "RM_R1_TEMPLATES", "chain_of_rubrics_messages", "rm_r1_reward",
           "CHAIN_OF_RUBRICS", "RM_R1_PAPER_SYSTEM", "RM_R1_USER", "RM_R1_PAPER_REASONING_USER"]

CHAIN_OF_RUBRICS = (
    "Please act as an impartial judge and evaluate two AI chatbot responses to the client's question.\n"
    "First classify the task as <type>Chat</type> or <type>Reasoning</type>.\n"
    "If Chat: write rubrics for a good answer with their weights and justify them, inside "
    "<rubric>...<justify>...</justify></rubric>, then compare the two responses against the rubrics in <eval>...</eval>.\n"
    "If Reasoning: solve the problem yourself first inside <solution>...</solution>, then check both "
    "responses against your solution in <eval>...</eval>.\n"
    "Finish with your verdict: <answer>[[A]]</answer> if Chatbot A is better, <answer>[[B]]</answer> if Chatbot B is better."
)

# RM-R1-UIUC/RM-R1 demo/demo.ipynb, cell 1 (INSTRUCT_SYSTEM_PROMPT) = eval/reward-bench/rewardbench/generative.py
# lines 280-328 (RM_R1_INSTRUCT_SYSTEM_PROMPT)
RM_R1_PAPER_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI Chatbots to the "
    "Client's question displayed below.\n\n"
    "First, classify the task into one of two categories: <type>Reasoning</type> or <type>Chat</type>.\n"
    "- Use <type>Reasoning</type> for tasks that involve math, coding, or require domain knowledge, multi-step "
    "inference, logical deduction, or combining information to reach a conclusion.\n"
    "- Use <type>Chat</type> for tasks that involve open-ended or factual conversation, stylistic rewrites, safety "
    "questions, or general helpfulness requests without deep reasoning.\n\n"
    "If the task is Reasoning:\n"
    "1. Solve the Client's question yourself and present your final answer within <solution>...</solution> tags.\n"
    "2. Evaluate the two Chatbot responses based on correctness, completeness, and reasoning quality, referencing "
    "your own solution.\n"
    "3. Include your evaluation inside <eval>...</eval> tags, quoting or summarizing the Chatbots using the "
    "following tags:\n"
    "   - <quote_A>...</quote_A> for direct quotes from Chatbot A\n"
    "   - <summary_A>...</summary_A> for paraphrases of Chatbot A\n"
    "   - <quote_B>...</quote_B> for direct quotes from Chatbot B\n"
    "   - <summary_B>...</summary_B> for paraphrases of Chatbot B\n"
    "4. End with your final judgment in the format: <answer>[[A]]</answer> or <answer>[[B]]</answer>\n\n"
    "If the task is Chat:\n"
    "1. Generate evaluation criteria (rubric) tailored to the Client's question and context, enclosed in "
    "<rubric>...</rubric> tags.\n"
    "2. Assign weights to each rubric item based on their relative importance.\n"
    "3. Inside <rubric>, include a <justify>...</justify> section explaining why you chose those rubric criteria "
    "and weights.\n"
    "4. Compare both Chatbot responses according to the rubric.\n"
    "5. Provide your evaluation inside <eval>...</eval> tags, using <quote_A>, <summary_A>, <quote_B>, and "
    "<summary_B> as described above.\n"
    "6. End with your final judgment in the format: <answer>[[A]]</answer> or <answer>[[B]]</answer>\n\n"
    "Important Notes:\n"
    "- Be objective and base your evaluation only on the content of the responses.\n"
    "- Do not let response order, length, or Chatbot names affect your judgment.\n"
    "- Follow the response format strictly depending on the task type.\n\n"
    "Your output must follow one of the two formats below:\n\n"
    "For Reasoning:\n"
    "<type>Reasoning</type>\n\n"
    "<solution> your own solution for the problem </solution>\n\n"
    "<eval>\n"
    "  include direct comparisons supported by <quote_A>...</quote_A> or <summary_A>...</summary_A>, and "
    "<quote_B>...</quote_B>, or <summary_B>...</summary_B>\n"
    "</eval>\n\n"
    "<answer>[[A/B]]</answer>\n\n"
    "For Chat:\n"
    "<type>Chat</type>\n\n"
    "<rubric>\n"
    "  detailed rubric items\n"
    "  <justify> justification for the rubric </justify>\n"
    "</rubric>\n\n"
    "<eval>\n"
    "  include direct comparisons supported by <quote_A>...</quote_A> or <summary_A>...</summary_A>, and "
    "<quote_B>...</quote_B>, or <summary_B>...</summary_B> tags\n"
    "</eval>\n\n"
    "<answer>[[A/B]]</answer>"
)
# demo.ipynb cell 1 INSTRUCT_SINGLE_USER_PROMPT_TEMPLATE = generative.py lines 330-333; {question},
# {answer_a}, {answer_b} are {prompt}, {first}, {second} here
RM_R1_USER = (
    "[Client Question]\n"
    "{prompt}\n\n"
    "[The Start of Chatbot A's Response]\n"
    "{first}\n"
    "[The End of Chatbot A's Response]\n\n"
    "[The Start of Chatbot B's Response]\n"
    "{second}\n"
    "[The End of Chatbot B's Response]"
)
# demo.ipynb cell 1 REASONING_SINGLE_PROMPT_TEMPLATE = generative.py lines 340-346
RM_R1_PAPER_REASONING_USER = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI Chatbots to the "
    "Client question displayed below. \n\n"
    "[Client Question]\n"
    "{prompt}\n\n"
    "[The Start of Chatbot A's Response]\n"
    "{first}\n"
    "[The End of Chatbot A's Response]\n\n"
    "[The Start of Chatbot B's Response]\n"
    "{second}\n"
    "[The End of Chatbot B's Response]\n\n"
    "Output your final verdict at last by strictly following this format: '<answer>[[A]]</answer>' if Chatbot A is "
    "better, or '<answer>[[B]]</answer>' if Chatbot B is better."
)


@dataclass(frozen=True)
class RMR1Template:
    """One RM-R1 prompt protocol."""

    system: Optional[str]  # the system message (None: none)
    user: str  # the user message; placeholders {prompt}, {first}, {second}
    exclusive: bool = False  # verdicts read by RM-R1's harness rule (parse_ab_rm_r1): both letters anywhere is none


RM_R1_TEMPLATES = {
    "mmreward": RMR1Template(CHAIN_OF_RUBRICS, RM_R1_USER),
    "paper": RMR1Template(RM_R1_PAPER_SYSTEM, RM_R1_USER, exclusive=True),
    "paper-reasoning": RMR1Template(None, RM_R1_PAPER_REASONING_USER, exclusive=True),
}


@dataclass
class RMR1Config:
    template: str = field(default="mmreward", metadata={
        "help": "prompt protocol ('paper': RM-R1's instruct models, 'paper-reasoning': its DeepSeek-distilled ones)",
        "choices": tuple(RM_R1_TEMPLATES)})
    system_prompt: Optional[str] = field(default=None, metadata={
        "help": "replaces the template's system prompt (None: the template's)"})
    max_new_tokens: int = field(default=512, metadata={"help": "rubric + evaluation length limit"})
    tail_chars: int = field(default=400, metadata={
        "help": "window at the end of the output for a bare [[A]] / [[B]] ('mmreward' template; the paper templates "
                "read the whole output as RM-R1's harness does)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    num_samples: int = field(default=1, metadata={"help": "k sampled judgements (majority of parsed verdicts)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature when num_samples > 1"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    forced_verdict: bool = field(default=False, metadata={
        "help": "when no sample parses, append '<answer>[[' to the first output and read P(A) vs P(B) from the next token"})

    def __post_init__(self) -> None:
        check_ranges(self, counts=("max_new_tokens", "batch_size", "num_samples"), naturals=("tail_chars", "seed"),
                     weights=("temperature",))
        check_sampling(self, "num_samples")
        if self.template not in RM_R1_TEMPLATES:
            raise ValueError(f"RMR1Config.template must be one of {sorted(RM_R1_TEMPLATES)}, got {self.template!r}")
        default_tail = next(f.default for f in fields(self) if f.name == "tail_chars")
        if RM_R1_TEMPLATES[self.template].exclusive and self.tail_chars != default_tail:
            # it would be ignored: the paper protocols read the whole output, as RM-R1's harness does
            raise ValueError(f"RMR1Config.tail_chars={self.tail_chars} applies to template 'mmreward'; template "
                             f"{self.template!r} reads verdicts anywhere in the output (RM-R1's harness rule)")


def chain_of_rubrics_messages(prompt: str, a: str, b: str, system_prompt: Optional[str] = None,
                              template: str = "mmreward") -> list[dict]:
    """The judge's chat messages: ``template``'s system prompt (or ``system_prompt``) and user message."""
    t = RM_R1_TEMPLATES[template]
    system = t.system if system_prompt is None else system_prompt
    user = t.user.format(prompt=prompt, first=a, second=b)
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]


RM_R1_REWARD_TAIL = 80  # lm_as_judge.py answer_reward: pred = solution_str[-80:]


def rm_r1_reward(output: str, label: str, tail_chars: Optional[int] = None, exclusive: Optional[bool] = None, *,
                 rule: Optional[str] = None) -> float:
    """The RL reward: +1 for the right verdict, −1 otherwise (wrong, unparsable, missing or conflicting).

    ``rule="paper"`` (the default) is RM-R1's training reward exactly: the final 80 characters of ``output``
    contain ``<answer>[[label]]</answer>`` and not the other letter's ``<answer>[[…]]</answer>``.
    ``rule="parse"`` (implied when ``tail_chars`` or ``exclusive`` is given) is the verdict of
    :func:`parse_ab` (``tail_chars`` default 400) equal to ``label``."""
    if label not in ("A", "B"):
        raise ValueError(f"label must be 'A' or 'B', got {label!r}")
    if rule is None:
        rule = "paper" if tail_chars is None and exclusive is None else "parse"
    if rule == "paper":
        if tail_chars is not None or exclusive is not None:  # they would be ignored
            raise ValueError("rm_r1_reward: tail_chars / exclusive apply to rule='parse'; rule='paper' reads the "
                             f"final {RM_R1_REWARD_TAIL} characters as RM-R1's reward does")
        if not isinstance(output, str):
            return -1.0
        tail = output[-RM_R1_REWARD_TAIL:]
        other = "B" if label == "A" else "A"
        return 1.0 if f"<answer>[[{label}]]</answer>" in tail and f"<answer>[[{other}]]</answer>" not in tail else -1.0
    if rule != "parse":
        raise ValueError(f"rm_r1_reward: rule must be 'paper' or 'parse', got {rule!r}")
    p = parse_ab(output, 400 if tail_chars is None else tail_chars, bool(exclusive))
    return 1.0 if p.ok and p.value == label else -1.0


def _end_thinking(text: str) -> str:
    """``text`` with a ``<think>`` section it left open (cut off by ``max_new_tokens`` while reasoning) closed: the
    forced answer prefix then follows the reasoning, where a reasoning model writes its verdict, rather than
    continuing the reasoning as a draft."""
    return text + "\n</think>\n" if text.rfind("<think>") > text.rfind("</think>") else text


class RMR1Judge(GenerativeJudge):
    """``score`` on :class:`Comparison` inputs (and ``judge(prompts, first, second)``) → P(first ≻ second):
    the fraction of the k parsed verdicts for A (½ when nothing parsed, or with ``forced_verdict`` the
    forced A/B next-token probability). ``last_results`` keeps the raw texts and parses of the latest
    call, ``last_strict`` the parsed-only probabilities and ``last_forced`` which rows were forced."""

    model_type = "rm_r1"
    config_class = RMR1Config
    input_types = (Comparison,)

    def __init__(self, model: Any, tokenizer: Any, config: Optional[RMR1Config] = None):
        super().__init__(model, tokenizer, config or RMR1Config())
        c = self.config
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(
            max_new_tokens=c.max_new_tokens, num_samples=c.num_samples, do_sample=c.num_samples > 1,
            temperature=c.temperature, batch_size=c.batch_size, seed=c.seed))
        self.last_results: list = []
        self.last_strict = torch.zeros(0, dtype=torch.float32)
        self.last_forced = torch.zeros(0, dtype=torch.bool)

    def messages(self, prompt: str, first: str, second: str) -> list[dict]:
        return chain_of_rubrics_messages(prompt, first, second, self.config.system_prompt, self.config.template)

    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str],
              batch_size: Optional[int] = None) -> torch.Tensor:
        prompts, first, second = text_lists("RMR1Judge.judge", prompts=prompts, first=first, second=second)
        c = self.config
        # the paper protocols read verdicts as RM-R1's harness does; the compact one reads the answer tag / tail
        parse = parse_ab_rm_r1 if RM_R1_TEMPLATES[c.template].exclusive else (lambda t: parse_ab(t, c.tail_chars))
        msgs = [self.messages(p, a, b) for p, a, b in zip(prompts, first, second)]
        res = self.runner.run(msgs, parse, batch_size)
        self.last_results = res
        out = []
        for row in res:
            votes = [r.value for r in row if r.ok]
            out.append(float(verdict_prob(votes).mean()) if votes else 0.5)
        p = torch.tensor(out, dtype=torch.float32)  # float32, as every judge's output
        self.last_strict = p.clone()  # parsed verdicts only (½ where none parsed)
        missing = [i for i, row in enumerate(res) if not any(r.ok for r in row)]
        self.last_forced = torch.zeros(len(res), dtype=torch.bool)
        if c.forced_verdict and missing:
            # a verdict the model never wrote: force the answer prefix after its own judgement and read
            # the A/B next-token probabilities (reported apart from the parse rate)
            texts = [self.runner.render(msgs[i]) + _end_thinking(res[i][0].text) + "\n<answer>[[" for i in missing]
            try:
                with self.runner.numbered(missing):
                    pa = self.runner.choice_probs(texts, ["A", "B"], batch_size=batch_size)[:, 0].float().cpu()
            except ValueError as e:  # name what was read: not the input as given, but its judgement + the prefix
                raise ValueError(f"RMR1Judge forced verdict (the prompt + the model's judgement + '<answer>[['): {e}; "
                                 "lower max_new_tokens or set forced_verdict=False") from None
            p[missing] = pa
            self.last_forced[missing] = True
        return p

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        p, a, b = ([text_field(getattr(it, f), f"input {i}: field {f!r}") for i, it in enumerate(items)]
                   for f in ("prompt", "first", "second"))
        return self.judge(p, a, b, batch_size).float()

    def metrics(self) -> dict:
        return parse_metrics(self.last_results)
