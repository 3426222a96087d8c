"""Supervised fine-tuning batches and the masked next-token loss shared by the generative RMs."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .runner import Prompt, render_prompt

IGNORE = -100


def sft_batch(tokenizer: Any, prompts: Sequence[Prompt], targets: Sequence[str], *, max_length: Optional[int] = None,
              add_eos: bool = True, chat_template_kwargs: Optional[dict] = None) -> dict:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (B, T): prompt tokens (chat messages
    are rendered with the generation prompt and ``chat_template_kwargs``) are masked with -100, the
    target (+ eos) is learned.
    Rows longer than ``max_length`` are an error, not silently cut (a cut target would teach garbage)."""
    if len(prompts) != len(targets):
        raise ValueError(f"sft_batch: {len(prompts)} prompts but {len(targets)} targets")
    if len(prompts) == 0:
        raise ValueError("sft_batch: empty batch")
    rows, labels = [], []
    for i, (p, t) in enumerate(zip(prompts, targets)):
        if not isinstance(t, str):
            raise TypeError(f"sft_batch: targets[{i}] is {type(t).__name__}, not str")
        p_ids = tokenizer.encode(render_prompt(tokenizer, p, f"prompts[{i}]", **(chat_template_kwargs or {})),
                                 add_special_tokens=False)
        if not p_ids:  # the first target token would have nothing before it: never predicted, never learned
            raise ValueError(f"sft_batch: prompts[{i}] encodes to no token (an empty prompt); the target's first token "
                             "needs a prompt token before it to be learned")
        t_ids = tokenizer.encode(t, add_special_tokens=False)
        if add_eos and tokenizer.eos_token_id is not None:
            t_ids = t_ids + [tokenizer.eos_token_id]
        if not t_ids:
            raise ValueError(f"sft_batch: targets[{i}] encodes to no token")
        ids = p_ids + t_ids
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"sft_batch: row {i} has {len(ids)} tokens > max_length={max_length}")
        rows.append(ids)
        labels.append([IGNORE] * len(p_ids) + t_ids)
    T = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
    lab = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (r, y) in enumerate(zip(rows, labels)):
        input_ids[i, :len(r)] = torch.tensor(r)
        lab[i, :len(y)] = torch.tensor(y)
        mask[i, :len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": lab}


def lm_loss(model: Any, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy on the unmasked labels (``mean`` over target tokens, or ``none`` → per row mean)."""
    if reduction not in ("mean", "none"):  # any other word used to give the mean without a word
        raise ValueError(f"lm_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    dev = next(model.parameters()).device
    out = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev))
    logits = out.logits[:, :-1].float()  # (B, T-1, V) predicts tokens 1..T-1
    target = batch["labels"][:, 1:].to(dev)  # (B, T-1)
    tok = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")  # (B, T-1)
    valid = (target != IGNORE).float()
    if reduction == "none":
        return (tok * valid).sum(1) / valid.sum(1).clamp(min=1)
    return (tok * valid).sum() / valid.sum().clamp(min=1)


def concat_batches(*batches: dict, pad_id: int = 0) -> dict:
    """Stack right-padded SFT batches of different lengths into one (so they share a forward pass)."""
    T = max(b["input_ids"].shape[1] for b in batches)
    out = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE)):
        out[key] = torch.cat([F.pad(b[key], (0, T - b[key].shape[1]), value=fill) for b in batches])
    return out
