"""Pairwise reward-model training on the core Trainer and the fused pairwise ops.

    cfg = RewardTrainConfig(output_dir="runs/rm", max_steps=500, batch_size=8, lr=2e-5, loss="bt")
    history = train_reward_model(rm, "train.jsonl", eval_pairs="test.jsonl", config=cfg)
    rm.save_pretrained("runs/rm")

Each micro-batch runs chosen and rejected through the backbone in one concatenated forward (2B rows,
padded to one length), then :func:`mmreward.ops.pairwise_loss_and_accuracy` gives the loss:
Bradley–Terry (``loss="bt"``), BT with the data's per-pair margins (``loss="margin"``), GRAM label
smoothing (``label_smoothing``), reward centering (``center_coef``) and RRM ties (pairs with
``tie``: target ½) — all in the op. Everything else (accumulation, autocast, LR schedule, DDP,
snapshots, resume, logs, curves) is :class:`mmreward.core.trainer.Trainer`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.trainer import Trainer, TrainConfig

from .data import PairCollator, PreferencePair, load_preference_pairs, model_max_length

LOSSES = ("bt", "margin")


@dataclass
class RewardTrainConfig(TrainConfig):
    output_dir: str = field(default="runs/text_rm", metadata={"help": "folder for logs, snapshots, curves.png (and the CLI's final model)"})
    lr: float = field(default=2e-5, metadata={"help": "peak learning rate (AdamW)"})
    loss: str = field(default="bt", metadata={"help": "bt (Bradley-Terry) | margin (BT minus the data's per-pair margin)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "GRAM label smoothing epsilon in [0, 1)"})
    center_coef: float = field(default=0.0, metadata={"help": "reward centering coefficient: + c * (r_chosen + r_rejected)^2"})
    max_length: Optional[int] = field(default=None, metadata={"help": "max tokens per input (default: the model's limit); longer inputs lose their start"})
    eval_batch_size: int = field(default=32, metadata={"help": "batch size when scoring the eval pairs"})
    fused_head: bool = field(default=False, metadata={"help": "head + loss in one op (reward_head_pairwise_loss): no reward tensor, grads in the forward pass"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"RewardTrainConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0.0 <= self.label_smoothing < 1.0):
            raise ValueError(f"RewardTrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not (isinstance(self.center_coef, (int, float)) and math.isfinite(self.center_coef) and self.center_coef >= 0):
            raise ValueError(f"RewardTrainConfig.center_coef must be a finite number >= 0, got {self.center_coef!r}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
                                            or self.max_length < 2):
            raise ValueError(f"RewardTrainConfig.max_length must be an integer >= 2 or None, got {self.max_length!r}")
        if isinstance(self.eval_batch_size, bool) or not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise ValueError(f"RewardTrainConfig.eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}")


def evaluate_pairs(model: Any, pairs: Any, *, batch_size: int = 32, max_length: Optional[int] = None) -> dict[str, float]:
    """Pairwise accuracy of ``model`` (a RewardModel) on preference pairs (tie pairs are left out):
    ``{"accuracy", "reward_gap" (mean r_chosen - r_rejected), "n"}``."""
    pairs = [p for p in load_preference_pairs(pairs) if not p.tie]
    if not pairs:
        raise ValueError("evaluate_pairs: no non-tie pairs to evaluate")
    prompts = [p.prompt for p in pairs]
    r = model.score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                    batch_size=batch_size, max_length=max_length)
    n = len(pairs)
    gap = r[:n] - r[n:]
    return {"accuracy": (gap > 0).float().mean().item(), "reward_gap": gap.mean().item(), "n": float(n)}


def pairwise_loss_fn(config: RewardTrainConfig):
    """``loss_fn(model, batch)`` for the Trainer: one forward over the 2B concatenated rows."""
    from mmreward.ops import pairwise_loss_and_accuracy, reward_head_pairwise_loss_and_accuracy

    options = dict(label_smoothing=config.label_smoothing, center_coef=config.center_coef)

    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        margin = batch.get("margin") if config.loss == "margin" else None
        if config.fused_head:
            head = getattr(model, "module", model).head  # model may be the DDP wrapper
            h = model(batch["input_ids"], batch["attention_mask"], return_hidden=True)  # (2B, H)
            B = h.shape[0] // 2
            loss, acc = reward_head_pairwise_loss_and_accuracy(h[:B], h[B:], head.weight, head.bias, margin=margin,
                                                               tie=batch.get("tie"), **options)
            with torch.no_grad():
                gap = ((h[:B] - h[B:]).float() @ head.weight.float().reshape(-1)).mean().item()
            return loss, {"accuracy": acc.item(), "reward_gap": gap}
        r = model(batch["input_ids"], batch["attention_mask"])  # (2B,): chosen rows, then rejected rows
        B = r.shape[0] // 2
        r_c, r_r = r[:B], r[B:]
        loss, acc = pairwise_loss_and_accuracy(r_c, r_r, margin=margin, tie=batch.get("tie"), **options)
        with torch.no_grad():
            gap = (r_c - r_r).float().mean().item()
        return loss, {"accuracy": acc.item(), "reward_gap": gap}

    return loss_fn


def train_reward_model(model: Any, train_pairs: Any, eval_pairs: Any = None,
                       config: Optional[RewardTrainConfig] = None) -> list[dict]:
    """Train ``model`` (a RewardModel with a tokenizer) on preference pairs; returns the per-step history
    (``loss``, ``accuracy``, ``reward_gap``, ``lr``, ``grad_norm``; ``eval_accuracy`` / ``eval_reward_gap``
    every ``eval_every`` steps and at the end when ``eval_pairs`` is given). Saving the final model is
    the caller's job: ``model.save_pretrained(folder)``."""
    config = config if config is not None else RewardTrainConfig()
    if not isinstance(config, RewardTrainConfig):
        raise TypeError(f"config must be a RewardTrainConfig, got {type(config).__name__}")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("the model has no tokenizer: build it with RewardModel.from_backbone(..., tokenizer=...)")
    train: Sequence[PreferencePair] = load_preference_pairs(train_pairs)
    evals = load_preference_pairs(eval_pairs) if eval_pairs is not None else None
    if config.loss == "margin" and all(p.margin is None for p in train):
        raise ValueError("loss='margin' but no training pair has a 'margin' field")
    if config.loss == "bt" and any(p.margin is not None for p in train):
        warnings.warn("the training pairs have margins but loss='bt' ignores them (use loss='margin')")
    max_length = config.max_length or model_max_length(tokenizer, getattr(model, "config", None))

    eval_fn = None
    if evals is not None:
        def eval_fn(m):
            return evaluate_pairs(m, evals, batch_size=config.eval_batch_size, max_length=max_length)

    trainer = Trainer(model, config, train, PairCollator(tokenizer, max_length), pairwise_loss_fn(config), eval_fn)
    return trainer.fit()
