"""GRAM (Wang et al., 2025, "GRAM: A Generative Foundation Reward Model for Reward Generalization").

* stage 1 — unlabelled pair SFT: the LM learns to generate both responses of a pair from the prompt
  (``prompt → "[A] a [B] b"``), no preference label needed (:func:`stage1_batch` + ``sft.lm_loss``);
* stage 2 — a judge prompt shows both responses and the next token must be ``A`` or ``B``; the two
  token logits are the pair's rewards and the loss is the label-smoothed pairwise loss
  (``mmreward.ops.pairwise_loss(z_chosen, z_rejected, label_smoothing=ε)``; the paper shows label
  smoothing on this two-way softmax is a regularised Bradley–Terry objective);
* scoring — P(A) from the two-token softmax, averaged over both presentation orders:
  ``score([Comparison(prompt, first, second), ...])`` → P(first ≻ second);
* :func:`train_gram` runs either stage on the shared core Trainer (snapshots, exact resume, logs).

Prompt protocols (``GRAMConfig.template``): ``"mmreward"`` (compact, the default) and ``"paper"`` —
the judge prompt of NiuTrans/GRAM's evaluation script (``evaluation/gram_eval.py``, ending
``#Preferred: ``, rendered with ``enable_thinking=False``) and the stage-1 format of its README.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.inputs import Comparison
from mmreward.core.model import check_batch_size, check_ranges, eval_while_scoring
from mmreward.ops import pairwise_loss_and_accuracy

from .base import GenerativeJudge, judge_trainer, text_field, text_lists
from .heads import last_token_logits
from .position import both_orders
from .runner import JudgeConfig, JudgeRunner, progress_begins, progress_expect, progress_read
from .sft import sft_batch

__all__ = ["GRAMConfig", "GRAM", "GRAMTemplate", "GRAM_TEMPLATES", "stage1_example", "stage1_batch", "gram_stage2_loss",
           "train_gram", "evaluate_gram"]


@dataclass(frozen=True)
class GRAMTemplate:
    """One GRAM prompt protocol. Placeholders: ``{prompt}``, ``{first}``, ``{second}``, ``{instruction}``."""

    judge: str  # the stage-2 judge's user message
    stage1_user: str  # stage 1: the user message ...
    stage1_target: str  # ... and the target holding both responses
    chat_template_kwargs: dict = field(default_factory=dict)  # variables for the tokenizer's chat template


_ANSWER_A = "[The Start of Assistant A's Answer]\n{first}\n[The End of Assistant A's Answer]"
_ANSWER_B = "[The Start of Assistant B's Answer]\n{second}\n[The End of Assistant B's Answer]"
GRAM_TEMPLATES = {
    "mmreward": GRAMTemplate(judge="Question: {prompt}\n[A] {first}\n[B] {second}\n{instruction}",
                             stage1_user="{prompt}", stage1_target="[A] {first}\n[B] {second}"),
    # NiuTrans/GRAM evaluation/gram_eval.py (the judge prompt, lines 23-38; chat template with
    # enable_thinking=False, line 71) and README.md "Datasets" (the stage-1 pre-training format)
    "paper": GRAMTemplate(
        judge=("Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
               "assistants to the user question displayed below. You should choose the assistant that follows the "
               "user's instructions and answers the user's question better.\n"
               "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, "
               "creativity, and level of detail of their responses. Avoid any position biases and ensure that the "
               "order in which the responses were presented does not influence your decision. Do not allow the "
               "length of the responses to influence your evaluation. Do not favor certain names of the assistants. "
               "Be as objective as possible.\n"
               'Please directly output your final verdict by strictly following this format: "A" if assistant A is '
               'better, "B" if assistant B is better.\n\n'
               "[User Question]\n{prompt}\n\n" + _ANSWER_A + "\n\n" + _ANSWER_B + "\n\n#Preferred: "),
        stage1_user="[User Question]\n{prompt}\n\n", stage1_target=_ANSWER_A + "\n\n" + _ANSWER_B,
        chat_template_kwargs={"enable_thinking": False}),
}


@dataclass
class GRAMConfig:
    template: str = field(default="mmreward", metadata={
        "help": "prompt protocol ('paper': NiuTrans/GRAM's evaluation prompt)", "choices": tuple(GRAM_TEMPLATES)})
    instruction: str = field(default="Which response is better? Answer A or B.",
                             metadata={"help": "judge question of the 'mmreward' template"})
    token_a: str = field(default="A", metadata={"help": "verdict token for the first response"})
    token_b: str = field(default="B", metadata={"help": "verdict token for the second response"})
    label_smoothing: float = field(default=0.1, metadata={"help": "ε of the stage-2 pairwise loss"})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward"})

    def __post_init__(self) -> None:
        check_ranges(self, counts=("batch_size",), fractions=("label_smoothing",))
        if self.template not in GRAM_TEMPLATES:
            raise ValueError(f"GRAMConfig.template must be one of {sorted(GRAM_TEMPLATES)}, got {self.template!r}")
        # refused with the config (as GenRMConfig's yes / no), not after the model has loaded
        for name in ("token_a", "token_b"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"GRAMConfig.{name} must be a non-empty verdict token, got {getattr(self, name)!r}")
        if self.token_a.strip() == self.token_b.strip():  # P(A) would be ½ for every pair
            raise ValueError(f"GRAMConfig: token_a and token_b must be different tokens, got {self.token_a!r} and {self.token_b!r}")


def stage1_example(prompt: str, first: str, second: str, template: str = "mmreward") -> tuple[list[dict], str]:
    """One stage-1 example in ``template``'s format: ``(chat messages, target holding both responses)``."""
    t = GRAM_TEMPLATES[template]
    return [{"role": "user", "content": t.stage1_user.format(prompt=prompt)}], t.stage1_target.format(first=first,
                                                                                                       second=second)


def stage1_batch(tokenizer: Any, prompts: Sequence[str], a: Sequence[str], b: Sequence[str],
                 template: str = "mmreward", **kw) -> dict:
    """Stage-1 SFT batch: prompt → both responses (no label), in ``template``'s format."""
    if not (len(prompts) == len(a) == len(b)):
        raise ValueError(f"stage1_batch: {len(prompts)} prompts, {len(a)} a, {len(b)} b")
    msgs, targets = zip(*(stage1_example(p, x, y, template) for p, x, y in zip(prompts, a, b)))
    return sft_batch(tokenizer, list(msgs), list(targets),
                     chat_template_kwargs=GRAM_TEMPLATES[template].chat_template_kwargs, **kw)


class GRAM(GenerativeJudge):
    """Stage-2 judge over a causal LM: ``score`` on :class:`Comparison` inputs → order-averaged
    P(first ≻ second); ``judge(prompts, first, second)`` → the same in one order."""

    model_type = "gram"
    config_class = GRAMConfig
    input_types = (Comparison,)

    def __init__(self, model: Any, tokenizer: Any, config: Optional[GRAMConfig] = None):
        super().__init__(model, tokenizer, config or GRAMConfig())
        self.template = GRAM_TEMPLATES[self.config.template]
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(
            batch_size=self.config.batch_size, chat_template_kwargs=dict(self.template.chat_template_kwargs)))
        self.ab_ids = torch.tensor(self.runner.token_ids([self.config.token_a, self.config.token_b]))

    def messages(self, prompt: str, first: str, second: str) -> list[dict]:
        """The judge's chat messages for one presentation order."""
        return [{"role": "user", "content": self.template.judge.format(
            prompt=prompt, first=first, second=second, instruction=self.config.instruction)}]

    def _encode(self, prompts, first, second, first_index: int = 0) -> dict:
        prompts, first, second = text_lists("GRAM", prompts=prompts, first=first, second=second)
        texts = [self.runner.render(self.messages(p, x, y)) for p, x, y in zip(prompts, first, second)]
        return self.runner.encode(texts, first_index)

    def logits(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str],
               first_index: int = 0) -> torch.Tensor:
        """(N, 2) logits of the A / B tokens (differentiable); errors name the rows from ``first_index``."""
        enc = self._encode(prompts, first, second, first_index)
        return last_token_logits(self.model, enc["input_ids"], enc["attention_mask"], self.ab_ids.to(enc["input_ids"].device))

    @torch.no_grad()
    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str],
              batch_size: Optional[int] = None) -> torch.Tensor:
        """(N,) P(first ≻ second) in one order."""
        prompts, first, second = text_lists("GRAM.judge", prompts=prompts, first=first, second=second)
        bs = self.config.batch_size if batch_size is None else check_batch_size(batch_size)
        progress_begins(len(prompts))
        out = []
        with eval_while_scoring(self.model):  # threads share one eval period; submodule modes kept
            for s in range(0, len(prompts), bs):
                logits = self.logits(prompts[s:s + bs], first[s:s + bs], second[s:s + bs], s)
                out.append(torch.softmax(logits, -1)[:, 0])
                progress_read(len(out[-1]))
        return torch.cat(out).float().cpu()  # float32 on the CPU, as every judge's output (a bf16 LM gives bf16)

    def score_pair(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> dict:
        """Order-averaged P(a ≻ b) with both single-order probabilities and the swap consistency."""
        return both_orders(self.judge, prompts, a, b)

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        p, a, b = ([text_field(getattr(it, f), f"input {i}: field {f!r}") for i, it in enumerate(items)]
                   for f in ("prompt", "first", "second"))
        with progress_expect(2 * len(items)):  # both orders: one progress bar's worth
            return both_orders(lambda *x: self.judge(*x, batch_size=batch_size), p, a, b)["p"].float().cpu()


def gram_stage2_loss(gram: GRAM, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
                     chosen_first: Sequence[bool]) -> tuple[torch.Tensor, dict]:
    """Label-smoothed pairwise loss on the A / B token logits: the chosen response's token logit is
    r_chosen, the other token's is r_rejected. ``chosen_first[i]`` says whether chosen is shown as A
    (train on both orders so the judge cannot learn a position prior)."""
    if len(chosen_first) != len(prompts):
        raise ValueError(f"chosen_first has {len(chosen_first)} entries for {len(prompts)} pairs")
    first = [c if f else r for c, r, f in zip(chosen, rejected, chosen_first)]
    second = [r if f else c for c, r, f in zip(chosen, rejected, chosen_first)]
    return _stage2_loss(gram.logits(prompts, first, second), chosen_first, gram.config.label_smoothing)


def _stage2_loss(z: torch.Tensor, chosen_first: Any, label_smoothing: float) -> tuple[torch.Tensor, dict]:
    """``z`` (B, 2) A / B logits → the smoothed pairwise loss with the chosen response's token as r_chosen."""
    cf = torch.as_tensor(chosen_first, dtype=torch.bool, device=z.device)
    z_c = torch.where(cf, z[:, 0], z[:, 1])
    z_r = torch.where(cf, z[:, 1], z[:, 0])
    loss, acc = pairwise_loss_and_accuracy(z_c, z_r, label_smoothing=label_smoothing)
    return loss, {"accuracy": float(acc)}


# ------------------------------------------------------------------ training with the core Trainer
def _pair_rows(rows: Sequence[Any], what: str) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"{what} row {i}: needs str 'prompt', 'chosen' and 'rejected'")
        out.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
    if not out:
        raise ValueError(f"{what}: no rows")
    return out


def evaluate_gram(gram: GRAM, rows: Sequence[dict]) -> dict:
    """Stage-2 judge metrics: order-averaged accuracy (P(chosen ≻ rejected) > ½), swap consistency, and
    the stage-1 pair-SFT loss of the rows (shown chosen first)."""
    from .sft import lm_loss

    rows = _pair_rows(rows, "evaluate_gram")
    p, c, r = ([x[k] for x in rows] for k in ("prompt", "chosen", "rejected"))
    res = gram.score_pair(p, c, r)
    with torch.no_grad(), eval_while_scoring(gram.model):
        sft = float(lm_loss(gram.model, stage1_batch(gram.tokenizer, p, c, r, gram.config.template)))
    return {"accuracy": float((res["p"] > 0.5).double().mean()), "consistency": float(res["consistency"]),
            "stage1_loss": sft}


def train_gram(gram: GRAM, rows: Sequence[dict], config: Any, stage: int = 2,
               eval_rows: Optional[Sequence[dict]] = None) -> list[dict]:
    """Run GRAM's stage 1 (pair SFT: prompt → both responses, order drawn at random per row, labels
    unused) or stage 2 (the A / B judge, each pair shown in a random order) with
    :class:`mmreward.core.trainer.Trainer` (``config``: its ``TrainConfig``) on ``{"prompt", "chosen",
    "rejected"}`` rows. Returns the Trainer's history (``eval_*`` from :func:`evaluate_gram`)."""
    from .heads import last_token_logits
    from .sft import lm_loss

    if stage not in (1, 2):
        raise ValueError(f"train_gram: stage must be 1 or 2, got {stage!r}")
    rows = _pair_rows(rows, "train_gram")
    eval_rows = _pair_rows(eval_rows, "train_gram eval") if eval_rows else None

    def collate(batch: Sequence[dict]) -> dict:
        first_is_chosen = (torch.rand(len(batch)) < 0.5).tolist()  # the Trainer snapshots this RNG
        p = [r["prompt"] for r in batch]
        a = [r["chosen"] if f else r["rejected"] for r, f in zip(batch, first_is_chosen)]
        b = [r["rejected"] if f else r["chosen"] for r, f in zip(batch, first_is_chosen)]
        if stage == 1:
            return stage1_batch(gram.tokenizer, p, a, b, gram.config.template)
        return {**gram._encode(p, a, b), "chosen_first": torch.tensor(first_is_chosen)}

    def loss_fn(module: torch.nn.Module, batch: dict):
        if stage == 1:
            loss = lm_loss(module, batch)
            return loss, {"stage1_loss": float(loss.detach())}
        z = last_token_logits(module, batch["input_ids"], batch["attention_mask"],
                              gram.ab_ids.to(batch["input_ids"].device))  # (B, 2) through the module (DDP)
        return _stage2_loss(z, batch["chosen_first"], gram.config.label_smoothing)

    eval_fn = (lambda _m: evaluate_gram(gram, eval_rows)) if eval_rows else None
    c = gram.config
    settings = {"method": "gram", "stage": stage, "template": c.template, "instruction": c.instruction,
                "token_a": c.token_a, "token_b": c.token_b, "label_smoothing": c.label_smoothing}
    return judge_trainer(gram.model, config, rows, collate, loss_fn, eval_fn, settings).fit()
