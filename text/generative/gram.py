"""GRAM (Wang et al., 2025, "GRAM: A Generative Foundation Reward Model for Reward Generalization").

* stage 1 — unlabelled pair SFT: the LM learns to generate both responses of a pair from the prompt
  (``prompt → "[A] a [B] b"``), no preference label needed (:func:`stage1_batch` + ``sft.lm_loss``);
* stage 2 — a judge prompt shows both responses and the next token must be ``A`` or ``B``; the two
  token logits are the pair's rewards and the loss is the label-smoothed pairwise loss
  (``mmreward.ops.pairwise_loss(z_chosen, z_rejected, label_smoothing=ε)``; the paper shows label
  smoothing on this two-way softmax is a regularised Bradley–Terry objective);
* scoring — P(A) from the two-token softmax, averaged over both presentation orders;
* :func:`train_gram` runs either stage on the shared core Trainer (snapshots, exact resume, logs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.ops import pairwise_loss_and_accuracy

from .heads import last_token_logits
from .position import both_orders
from .runner import JudgeConfig, JudgeRunner
from .sft import sft_batch

__all__ = ["GRAMConfig", "GRAM", "stage1_batch", "gram_stage2_loss", "train_gram", "evaluate_gram"]


@dataclass
class GRAMConfig:
    instruction: str = field(default="Which response is better? Answer A or B.", metadata={"help": "judge question"})
    token_a: str = field(default="A", metadata={"help": "verdict token for the first response"})
    token_b: str = field(default="B", metadata={"help": "verdict token for the second response"})
    label_smoothing: float = field(default=0.1, metadata={"help": "ε of the stage-2 pairwise loss"})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward"})


def judge_messages(cfg: GRAMConfig, prompt: str, first: str, second: str) -> list[dict]:
    return [{"role": "user", "content": f"Question: {prompt}\n[A] {first}\n[B] {second}\n{cfg.instruction}"}]


def stage1_batch(tokenizer: Any, prompts: Sequence[str], a: Sequence[str], b: Sequence[str], **kw) -> dict:
    """Stage-1 SFT batch: prompt → both responses (no label)."""
    if not (len(prompts) == len(a) == len(b)):
        raise ValueError(f"stage1_batch: {len(prompts)} prompts, {len(a)} a, {len(b)} b")
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    return sft_batch(tokenizer, msgs, [f"[A] {x}\n[B] {y}" for x, y in zip(a, b)], **kw)


class GRAM:
    """Stage-2 judge over a causal LM: ``judge(prompts, first, second)`` → P(first ≻ second)."""

    def __init__(self, model: Any, tokenizer: Any, config: Optional[GRAMConfig] = None):
        self.config = config or GRAMConfig()
        self.model, self.tokenizer = model, tokenizer
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(batch_size=self.config.batch_size))
        self.ab_ids = torch.tensor(self.runner.token_ids([self.config.token_a, self.config.token_b]))

    def _encode(self, prompts, first, second) -> dict:
        if not (len(prompts) == len(first) == len(second)) or not prompts:
            raise ValueError(f"GRAM: prompts / first / second must be non-empty and equally long "
                             f"({len(prompts)}, {len(first)}, {len(second)})")
        texts = [self.runner.render(judge_messages(self.config, p, x, y)) for p, x, y in zip(prompts, first, second)]
        return self.runner.encode(texts)

    def logits(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        """(N, 2) logits of the A / B tokens (differentiable)."""
        enc = self._encode(prompts, first, second)
        return last_token_logits(self.model, enc["input_ids"], enc["attention_mask"], self.ab_ids.to(enc["input_ids"].device))

    @torch.no_grad()
    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        """(N,) P(first ≻ second) in one order."""
        was = self.model.training
        self.model.eval()
        try:
            out = [torch.softmax(self.logits(prompts[s:s + self.config.batch_size], first[s:s + self.config.batch_size],
                                             second[s:s + self.config.batch_size]), -1)[:, 0]
                   for s in range(0, len(prompts), self.config.batch_size)]
        finally:
            self.model.train(was)
        return torch.cat(out)

    def score_pair(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> dict:
        """Order-averaged P(a ≻ b) with both single-order probabilities and the swap consistency."""
        return both_orders(self.judge, prompts, a, b)


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
    was = gram.model.training
    gram.model.eval()
    with torch.no_grad():
        sft = float(lm_loss(gram.model, stage1_batch(gram.tokenizer, p, c, r)))
    gram.model.train(was)
    return {"accuracy": float((res["p"] > 0.5).double().mean()), "consistency": float(res["consistency"]),
            "stage1_loss": sft}


def train_gram(gram: GRAM, rows: Sequence[dict], config: Any, stage: int = 2,
               eval_rows: Optional[Sequence[dict]] = None) -> list[dict]:
    """Run GRAM's stage 1 (pair SFT: prompt → both responses, order drawn at random per row, labels
    unused) or stage 2 (the A / B judge, each pair shown in a random order) with
    :class:`mmreward.core.trainer.Trainer` (``config``: its ``TrainConfig``) on ``{"prompt", "chosen",
    "rejected"}`` rows. Returns the Trainer's history (``eval_*`` from :func:`evaluate_gram`)."""
    from mmreward.core.trainer import Trainer

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
            return stage1_batch(gram.tokenizer, p, a, b)
        return {**gram._encode(p, a, b), "chosen_first": torch.tensor(first_is_chosen)}

    def loss_fn(module: torch.nn.Module, batch: dict):
        if stage == 1:
            loss = lm_loss(module, batch)
            return loss, {"stage1_loss": float(loss.detach())}
        z = last_token_logits(module, batch["input_ids"], batch["attention_mask"],
                              gram.ab_ids.to(batch["input_ids"].device))  # (B, 2) through the module (DDP)
        return _stage2_loss(z, batch["chosen_first"], gram.config.label_smoothing)

    eval_fn = (lambda _m: evaluate_gram(gram, eval_rows)) if eval_rows else None
    return Trainer(gram.model, config, rows, collate, loss_fn, eval_fn=eval_fn).fit()
