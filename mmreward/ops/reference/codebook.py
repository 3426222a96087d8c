"""Pure-PyTorch reference of the VQ-codebook ops (the test oracle and the fallback).

Written the way Diffusion Reward / VQ-Diffusion write them (``log_softmax``, ``exp``, multiply,
sum), but accumulated in float32 (float64 stays float64) instead of casting everything to float64.
All functions take the canonical ``class_dim`` (1: [B, K, L], 2: [B, L, K]) and a bool ``mask``
[B, L] or None, and return per-token values [B, L] (0 at masked tokens); autograd does the backward.
"""
from __future__ import annotations

from typing import Optional

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tokens_last(x: torch.Tensor, class_dim: int) -> torch.Tensor:
    """[B, L, K] view (no copy) of a [B, K, L] (class_dim=1) or [B, L, K] (class_dim=2) tensor."""
    x = x.to(acc_dtype(x.dtype))
    return x.transpose(1, 2) if class_dim == 1 else x


def _masked(v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    return v if mask is None else torch.where(mask, v, torch.zeros((), dtype=v.dtype, device=v.device))


def codebook_entropy(logits: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) z = -sum p log p per token, [B, L]."""
    z = _tokens_last(logits, class_dim)
    logp = torch.log_softmax(z, dim=-1)
    h = -(logp.exp() * logp).sum(-1)
    return _masked(h, mask)


def codebook_nll(
    logits: torch.Tensor, target: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """logsumexp(z) - z[target] per token, [B, L]."""
    z = _tokens_last(logits, class_dim)
    t = target.long()
    if mask is not None:  # targets of masked tokens may be anything (e.g. -100)
        t = torch.where(mask, t, torch.zeros_like(t))
    nll = -torch.log_softmax(z, dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)
    return _masked(nll, mask)


def categorical_kl(
    log_a: torch.Tensor, log_b: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """sum exp(a) (a - b) per token, [B, L] (VQ-Diffusion's multinomial_kl)."""
    a = _tokens_last(log_a, class_dim)
    b = _tokens_last(log_b, class_dim)
    return _masked((a.exp() * (a - b)).sum(-1), mask)


def log_categorical(
    log_x0: torch.Tensor, log_prob: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """sum exp(x0) p per token, [B, L] (VQ-Diffusion's log_categorical)."""
    a = _tokens_last(log_x0, class_dim)
    b = _tokens_last(log_prob, class_dim)
    return _masked((a.exp() * b).sum(-1), mask)


def frame_reduce(values: torch.Tensor, mask: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    """Per-frame reduction of per-token values [B, L]: 'none' -> [B, L] (0 at masked tokens),
    'sum' -> [B], 'mean' -> [B] (mean over unmasked tokens; 0 for a frame without any)."""
    v = _masked(values, mask)
    if reduction == "none":
        return v
    s = v.sum(1)
    if reduction == "sum":
        return s
    if mask is None:
        return s / values.shape[1]
    return s / mask.sum(1).clamp_min(1).to(s.dtype)
