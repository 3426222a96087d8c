"""Pure-PyTorch reference for the PRM step-reward ops (the test oracle and the fallback).

Inputs here are already validated and normalised by ``mmreward.ops.step_reward``:

* ``hidden``  ``(N, H)`` contiguous, ``index`` ``(S,)`` int64 rows of ``hidden`` that are step positions.
* ``w`` ``(H,)`` head row (``w_neg`` ``(H,)`` optional second row: the score is ``h·(w − w_neg)``),
  ``bias`` 0-d tensor in the accumulation dtype (fp32, or fp64 for fp64 inputs) or None.
* packed per-step values ``(S,)`` with ``offsets`` ``(B + 1,)`` int64 (sequence ``b`` owns
  ``[offsets[b], offsets[b + 1])``).

Everything accumulates in fp32 (fp64 stays fp64). Only the gathered ``(S, H)`` rows are used:
no vocabulary-sized tensor is ever built, even here.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

# Step-head kinds (shared with csrc/cpu/step_reward.cpp: StepKind).
KIND_LOGIT, KIND_BCE, KIND_MSE = 0, 1, 2
# Segment reductions (shared with the kernels: SegOp).
SEG_OPS = {"min": 0, "prod": 1, "logprod": 2, "last": 3, "mean": 4, "max": 5, "sum": 6}


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def step_head(
    hidden: torch.Tensor,  # (N, H)
    index: torch.Tensor,  # (S,) int64
    w: torch.Tensor,  # (H,)
    w_neg: Optional[torch.Tensor],  # (H,) or None
    bias: Optional[torch.Tensor],  # () acc dtype or None
    target: Optional[torch.Tensor],  # (S,) acc dtype, -100 = ignore; None for kind 0
    kind: int,
    reduction: int,  # 0 none, 1 mean, 2 sum
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(out, z)``; ``z`` ``(S,)`` per-step logits/values (acc dtype).
    kind 0: ``out = z``; kind 1: BCE-with-logits vs ``target``; kind 2: MSE vs ``target``.
    Losses: ``(S,)`` (0 at ignored steps) for reduction none, else a 0-d mean over valid steps (0 if
    none is valid) or sum."""
    acc = _acc(hidden.dtype)
    h = hidden.index_select(0, index).to(acc)  # (S, H)
    wd = w.to(acc) if w_neg is None else w.to(acc) - w_neg.to(acc)
    z = h @ wd  # (S,)
    if bias is not None:
        z = z + bias.to(acc)
    if kind == KIND_LOGIT:
        return z, z.detach().clone()
    valid = target != IGNORE_INDEX
    y = torch.where(valid, target, torch.zeros_like(target)).to(acc)
    if kind == KIND_BCE:
        per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    elif kind == KIND_MSE:
        per = (z - y) ** 2
    else:
        raise ValueError(f"unknown step-head kind {kind}")
    per = torch.where(valid, per, torch.zeros_like(per))
    if reduction == 0:
        out = per
    elif reduction == 2:
        out = per.sum()
    else:
        n = valid.sum()
        out = per.sum() / n.clamp(min=1).to(acc)
    return out, z.detach()


def step_pair_loss(
    r: torch.Tensor,  # (S,) acc dtype
    pos: torch.Tensor,  # (P,) int64
    neg: torch.Tensor,  # (P,) int64
    weight: Optional[torch.Tensor],  # (P,) acc dtype or None (= 1)
    reduce: bool,
) -> torch.Tensor:
    """``l_p = −log σ(r[pos_p] − r[neg_p])``; ``reduce`` → ``Σ_p weight_p l_p`` (0-d), else ``(P,)``."""
    d = r.index_select(0, pos) - r.index_select(0, neg)
    per = -F.logsigmoid(d)
    if not reduce:
        return per
    if weight is not None:
        per = per * weight
    return per.sum()


def _padded(values: torch.Tensor, offsets: torch.Tensor, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, Kmax)`` padded copy (differentiable) and the ``(B, Kmax)`` validity mask."""
    lengths = offsets[1:] - offsets[:-1]
    B = lengths.numel()
    K = int(lengths.max()) if B > 0 else 0
    pos = torch.arange(K, device=values.device)
    mask = pos.unsqueeze(0) < lengths.unsqueeze(1)  # (B, K)
    out = torch.full((B, K), fill, dtype=values.dtype, device=values.device)
    out = out.masked_scatter(mask, values)
    return out, mask


def segment_reduce(values: torch.Tensor, offsets: torch.Tensor, op: int, empty_value: float) -> torch.Tensor:
    """Per-sequence reduction of packed step values ``(S,)`` → ``(B,)`` (acc dtype).
    Sequences with no steps get ``empty_value`` (``log(empty_value)`` for logprod)."""
    acc = _acc(values.dtype)
    v = values.to(acc)
    lengths = offsets[1:] - offsets[:-1]
    empty = lengths == 0
    B = lengths.numel()
    if B == 0:
        return v.new_zeros(0)
    if op == SEG_OPS["min"]:
        pad, mask = _padded(v, offsets, float("inf"))
        out = pad.min(dim=1).values if pad.shape[1] > 0 else v.new_zeros(B)
    elif op == SEG_OPS["max"]:
        pad, mask = _padded(v, offsets, float("-inf"))
        out = pad.max(dim=1).values if pad.shape[1] > 0 else v.new_zeros(B)
    elif op == SEG_OPS["prod"]:
        pad, mask = _padded(v, offsets, 1.0)
        out = pad.prod(dim=1)
    elif op == SEG_OPS["logprod"]:
        pad, mask = _padded(v, offsets, 1.0)
        out = torch.log(pad).sum(dim=1)
    elif op in (SEG_OPS["sum"], SEG_OPS["mean"]):
        pad, mask = _padded(v, offsets, 0.0)
        out = pad.sum(dim=1)
        if op == SEG_OPS["mean"]:
            out = out / lengths.clamp(min=1).to(acc)
    elif op == SEG_OPS["last"]:
        last = (offsets[1:] - 1).clamp(min=0)
        out = v.index_select(0, last) if v.numel() > 0 else v.new_zeros(B)
    else:
        raise ValueError(f"unknown segment op {op}")
    fill = torch.tensor(empty_value, dtype=acc, device=v.device)
    if op == SEG_OPS["logprod"]:
        fill = torch.log(fill)
    return torch.where(empty, fill, out)


def first_below(values: torch.Tensor, offsets: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B,)`` int64: index within its sequence of the first step with ``value < threshold``; −1 if none."""
    lengths = offsets[1:] - offsets[:-1]
    B = lengths.numel()
    out = torch.full((B,), -1, dtype=torch.int64, device=values.device)
    if B == 0 or values.numel() == 0:
        return out
    pad, mask = _padded(values.to(_acc(values.dtype)), offsets, float("inf"))
    below = (pad < threshold) & mask
    K = pad.shape[1]
    pos = torch.arange(K, device=values.device).expand(B, K)
    first = torch.where(below, pos, torch.full_like(pos, K)).min(dim=1).values
    return torch.where(first < K, first, out)


def refine_process_rewards(
    rewards: torch.Tensor,  # (S,)
    offsets: torch.Tensor,  # (B + 1,)
    clip: bool,
    eta: float,
    delta: bool,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gao et al. 2024 reward refinement, per sequence of ``K`` steps:
    Clip ``r̃_k = min(r_k − η, 0)``; Delta ``r̃_k = r_k − r_{k+1}`` (k < K), ``r̃_K = r_K``
    (clip first when both). Returns ``(refined (S,), returns-to-go (S,))`` with
    ``G_k = Σ_{j ≥ k} γ^{j−k} r̃_j`` inside each sequence (acc dtype)."""
    acc = _acc(rewards.dtype)
    r = rewards.to(acc)
    if clip:
        r = torch.clamp(r - eta, max=0.0)
    S = r.numel()
    seg_end = torch.zeros(S, dtype=torch.bool, device=r.device)
    lengths = offsets[1:] - offsets[:-1]
    nonempty = lengths > 0
    if S > 0:
        seg_end[(offsets[1:] - 1)[nonempty]] = True
    if delta and S > 0:
        nxt = torch.cat([r[1:], r.new_zeros(1)])
        r = torch.where(seg_end, r, r - nxt)
    if S == 0:
        return r, r.clone()
    pad, mask = _padded(r, offsets, 0.0)  # (B, K); padding is 0 so it adds nothing to G
    cols = [None] * pad.shape[1]
    running = pad.new_zeros(pad.shape[0])
    for k in range(pad.shape[1] - 1, -1, -1):  # reverse scan over step slots
        running = pad[:, k] + gamma * running
        cols[k] = running
    G = torch.stack(cols, dim=1)[mask]
    return r, G
