"""Pure-PyTorch reference for the pairwise reward losses (the test oracle and the fallback).

Autograd does the backward. Everything is computed in float32 (float64 stays float64); the loss is
returned in that accumulation dtype. See :mod:`mmreward.ops.pairwise` for the semantics.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

_RED = {0: "none", 1: "mean", 2: "sum"}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reduce(per: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.mean()


def pairwise_per_pair(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: Optional[torch.Tensor],
    tie: Optional[torch.Tensor],
    label_smoothing: float,
    center_coef: float,
) -> torch.Tensor:
    """Per-pair loss in the accumulation dtype (differentiable w.r.t. the rewards)."""
    dt = acc_dtype(r_chosen.dtype)
    rc, rr = r_chosen.to(dt), r_rejected.to(dt)
    delta = rc - rr
    z = delta if margin is None else delta - margin.to(dt)
    p = 1.0 - label_smoothing / 2.0
    # -p·log σ(z) - (1-p)·log σ(-z); ties: target 0.5 on the raw Δ (no margin).
    per = -p * F.logsigmoid(z) - (1.0 - p) * F.logsigmoid(-z)
    if tie is not None:
        per_tie = -0.5 * F.logsigmoid(delta) - 0.5 * F.logsigmoid(-delta)
        per = torch.where(tie, per_tie, per)
    if center_coef != 0.0:
        per = per + center_coef * (rc + rr) ** 2
    return per


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fraction of non-tie pairs with r_chosen > r_rejected (float32 0-d; 0 when there are none)."""
    with torch.no_grad():
        win = r_chosen > r_rejected
        if tie is None:
            return win.float().mean()
        keep = ~tie
        n = keep.sum()
        return torch.where(n > 0, (win & keep).sum().float() / n.clamp_min(1).float(), torch.zeros((), device=win.device))


def pairwise_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: Optional[torch.Tensor] = None,
    tie: Optional[torch.Tensor] = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    per = pairwise_per_pair(r_chosen, r_rejected, margin, tie, label_smoothing, center_coef)
    return _reduce(per, reduction), pairwise_accuracy(r_chosen, r_rejected, tie)


def listwise_loss(rewards: torch.Tensor, ranks: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """All ordered pairs (i better than j: 0 <= rank_i < rank_j) of each row; materialises [B, K, K]."""
    dt = acc_dtype(rewards.dtype)
    r = rewards.to(dt)
    valid = ranks >= 0
    better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)  # [B, K, K]
    diff = r.unsqueeze(2) - r.unsqueeze(1)  # r_i - r_j
    nll = torch.where(better, -F.logsigmoid(diff), torch.zeros((), dtype=dt, device=r.device))
    row_sum = nll.sum(dim=(1, 2))
    row_cnt = better.sum(dim=(1, 2))
    if reduction == "none":
        return torch.where(row_cnt > 0, row_sum / row_cnt.clamp_min(1).to(dt), torch.zeros((), dtype=dt, device=r.device))
    if reduction == "sum":
        return row_sum.sum()
    total = row_cnt.sum()
    return torch.where(total > 0, row_sum.sum() / total.clamp_min(1).to(dt), torch.zeros((), dtype=dt, device=r.device))


def reward_head_pairwise_loss(
    h_chosen: torch.Tensor,
    h_rejected: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    margin: Optional[torch.Tensor] = None,
    tie: Optional[torch.Tensor] = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """r = h·w + b (fp32 accumulation) then :func:`pairwise_loss` on the rewards."""
    dt = acc_dtype(h_chosen.dtype)
    w = weight.to(dt)
    rc = h_chosen.to(dt) @ w
    rr = h_rejected.to(dt) @ w
    if bias is not None:
        b = bias.to(dt).reshape(())
        rc = rc + b
        rr = rr + b
    return pairwise_loss(rc, rr, margin, tie, label_smoothing, center_coef, reduction)
