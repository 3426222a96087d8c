"""Op library of the PRM step-reward ops (see :mod:`mmreward.ops.step_reward` for the semantics):
pure-PyTorch references, fake kernels and sample inputs of

* ``step_head(hidden, index, w, w_neg?, bias?, target?, kind, reduction) -> (out, z)``
* ``step_pair_loss(r, pos, neg, weight?, reduce) -> out``
* ``step_segment_reduce(values, offsets, op, empty_value) -> out``
* ``step_first_below(values, offsets, threshold) -> index``
* ``step_refine(rewards, offsets, clip, eta, delta, gamma) -> (refined, returns)``

and the ``_backward`` ops of the first three. Arguments are normalised by the public functions:

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

from . import OpSpec, acc_dtype, define

IGNORE_INDEX = -100

# Step-head kinds (shared with csrc/cpu/step_reward.cpp: StepKind).
KIND_LOGIT, KIND_BCE, KIND_MSE = 0, 1, 2
# Segment reductions (shared with the kernels: SegOp).
SEG_OPS = {"min": 0, "prod": 1, "logprod": 2, "last": 3, "mean": 4, "max": 5, "sum": 6}


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
    acc = acc_dtype(hidden.dtype)
    h = hidden.index_select(0, index).to(acc)  # (S, H)
    wd = w.to(acc) if w_neg is None else w.to(acc) - w_neg.to(acc)
    z = h @ wd  # (S,)
    if bias is not None:
        z = z + bias.to(acc)
    if kind == KIND_LOGIT:
        return z, z.detach().clone()
    valid = target != IGNORE_INDEX
    z_all = z.detach()
    # ignored steps take no part: their hidden rows are zeroed before the loss, so whatever they hold (NaN)
    # gets a zero gradient, as in the kernels (masking only the loss sent 0·NaN = NaN to hidden and the head)
    h = torch.where(valid.unsqueeze(1), h, torch.zeros((), dtype=acc, device=h.device))
    z = h @ wd
    if bias is not None:
        z = z + bias.to(acc)
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
    return out, z_all


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


def step_segment_reduce(values: torch.Tensor, offsets: torch.Tensor, op: int, empty_value: float) -> torch.Tensor:
    """Per-sequence reduction of packed step values ``(S,)`` → ``(B,)`` (acc dtype).
    Sequences with no steps get ``empty_value`` (``log(empty_value)`` for logprod)."""
    acc = acc_dtype(values.dtype)
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


def step_first_below(values: torch.Tensor, offsets: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B,)`` int64: index within its sequence of the first step with ``value < threshold``; −1 if none."""
    lengths = offsets[1:] - offsets[:-1]
    B = lengths.numel()
    out = torch.full((B,), -1, dtype=torch.int64, device=values.device)
    if B == 0 or values.numel() == 0:
        return out
    pad, mask = _padded(values.to(acc_dtype(values.dtype)), offsets, float("inf"))
    below = (pad < threshold) & mask
    K = pad.shape[1]
    pos = torch.arange(K, device=values.device).expand(B, K)
    first = torch.where(below, pos, torch.full_like(pos, K)).min(dim=1).values
    return torch.where(first < K, first, out)


def step_refine(
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
    acc = acc_dtype(rewards.dtype)
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


# ------------------------------------------------------------------------------------------------
# fake kernels
# ------------------------------------------------------------------------------------------------
def _fake_step_head(hidden, index, w, w_neg, bias, target, kind, reduction):
    S = index.shape[0]
    acc = acc_dtype(hidden.dtype)
    out = hidden.new_empty((S,) if (kind == KIND_LOGIT or reduction == 0) else (), dtype=acc)
    return out, hidden.new_empty((S,), dtype=acc)


def _fake_step_head_backward(grad_out, hidden, index, w, w_neg, z, target, kind, reduction, need_grad_hidden):
    gh = hidden.new_empty(tuple(hidden.shape) if need_grad_hidden else (0,))
    return gh, w.new_empty(w.shape), hidden.new_empty((), dtype=acc_dtype(hidden.dtype))


def _fake_pair(r, pos, neg, weight, reduce):
    return r.new_empty(() if reduce else (pos.shape[0],))


def _fake_pair_backward(grad, r, pos, neg, weight, reduce):
    return r.new_empty(r.shape)


def _fake_segment(values, offsets, op, empty_value):
    return values.new_empty((offsets.shape[0] - 1,), dtype=acc_dtype(values.dtype))


def _fake_segment_backward(grad, values, offsets, op):
    return values.new_empty(values.shape)


def _fake_first_below(values, offsets, threshold):
    return offsets.new_empty((offsets.shape[0] - 1,), dtype=torch.int64)


def _fake_refine(rewards, offsets, clip, eta, delta, gamma):
    acc = acc_dtype(rewards.dtype)
    return rewards.new_empty(rewards.shape, dtype=acc), rewards.new_empty(rewards.shape, dtype=acc)


# ------------------------------------------------------------------------------------------------
# sample inputs: every kind / reduction, with and without the second head row, the bias and the
# hidden-state gradient, repeated step positions, every segment reduction over segments of 0, 1 and
# several steps, clip / delta, a hidden size wider than one Triton column block (256)
# ------------------------------------------------------------------------------------------------
N, H = 9, 300
INDEX = (3, 0, 7, 3, 8)  # position 3 twice
OFFSETS = (0, 3, 3, 4, 9)  # segments of 3, 0, 1, 5 steps


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _head_inputs(dtype, seed):
    g = _gen(seed)
    acc = acc_dtype(dtype)
    hidden = torch.randn(N, H, generator=g).to(dtype)
    w, wn = (torch.randn(H, generator=g).div(H ** 0.5).to(dtype) for _ in range(2))
    bias = torch.tensor(0.2, dtype=acc)
    target = torch.tensor([1.0, 0.0, IGNORE_INDEX, 0.3, 0.9], dtype=acc)
    return g, acc, hidden, w, wn, bias, target


def _step_head_samples(dtype):
    g, acc, hidden, w, wn, bias, target = _head_inputs(dtype, 0)
    idx = torch.tensor(INDEX)

    def leaves(*ts):
        return [t.clone().requires_grad_() for t in ts]

    out = []
    for kind, red in ((KIND_LOGIT, 0), (KIND_BCE, 0), (KIND_BCE, 1), (KIND_BCE, 2), (KIND_MSE, 1)):
        h, w_, wn_, b = leaves(hidden, w, wn, bias)
        out.append((h, idx, w_, wn_ if kind != KIND_MSE else None, b, target if kind else None, kind, red))
    out.append((hidden, idx, *leaves(w), None, None, None, KIND_LOGIT, 0))  # frozen backbone, no bias
    return out


def _step_head_backward_samples(dtype):
    g, acc, hidden, w, wn, bias, target = _head_inputs(dtype, 1)
    idx = torch.tensor(INDEX)
    z = torch.randn(len(INDEX), generator=g, dtype=acc)
    return [
        (torch.tensor(1.0, dtype=acc), hidden, idx, w, wn, z, target, KIND_BCE, 1, True),
        (torch.randn(len(INDEX), generator=g, dtype=acc), hidden, idx, w, None, z, None, KIND_LOGIT, 0, False),
        (torch.randn(len(INDEX), generator=g, dtype=acc), hidden, idx, w, None, z, target, KIND_MSE, 0, True),
    ]


def _pair_inputs(dtype, seed):
    g = _gen(seed)
    acc = acc_dtype(dtype)
    r = torch.randn(len(INDEX), generator=g, dtype=acc)
    pos, neg = torch.tensor([0, 0, 2, 4]), torch.tensor([1, 3, 3, 1])
    weight = torch.tensor([0.25, 0.25, 0.5, 1.0], dtype=acc)
    return g, acc, r, pos, neg, weight


def _step_pair_loss_samples(dtype):
    g, acc, r, pos, neg, weight = _pair_inputs(dtype, 2)
    return [(r.clone().requires_grad_(), pos, neg, wt, reduce)
            for wt, reduce in ((weight, True), (None, True), (None, False))]


def _step_pair_loss_backward_samples(dtype):
    g, acc, r, pos, neg, weight = _pair_inputs(dtype, 3)
    return [(torch.tensor(1.5, dtype=acc), r, pos, neg, weight, True),
            (torch.tensor(1.0, dtype=acc), r, pos, neg, None, True),
            (torch.randn(pos.shape[0], generator=g, dtype=acc), r, pos, neg, None, False)]


def _segment_values(dtype, seed):
    return torch.rand(OFFSETS[-1], generator=_gen(seed), dtype=torch.float64).add(0.1).to(dtype)


def _step_segment_reduce_samples(dtype):
    values, offsets = _segment_values(dtype, 4), torch.tensor(OFFSETS)
    return [(values.clone().requires_grad_(), offsets, op, 0.5) for op in SEG_OPS.values()]


def _step_segment_reduce_backward_samples(dtype):
    values, offsets = _segment_values(dtype, 5), torch.tensor(OFFSETS)
    grad = torch.randn(len(OFFSETS) - 1, generator=_gen(6), dtype=acc_dtype(dtype))
    return [(grad, values, offsets, op) for op in SEG_OPS.values()]


def _step_first_below_samples(dtype):
    return [(_segment_values(dtype, 7), torch.tensor(OFFSETS), 0.5)]


def _step_refine_samples(dtype):
    values, offsets = _segment_values(dtype, 8), torch.tensor(OFFSETS)
    return [(values, offsets, clip, 0.3, delta, 0.9) for clip in (False, True) for delta in (False, True)]


define("step_reward", [
    OpSpec("step_head", _fake_step_head, _step_head_samples, step_head),
    OpSpec("step_head_backward", _fake_step_head_backward, _step_head_backward_samples),
    OpSpec("step_pair_loss", _fake_pair, _step_pair_loss_samples, step_pair_loss),
    OpSpec("step_pair_loss_backward", _fake_pair_backward, _step_pair_loss_backward_samples),
    OpSpec("step_segment_reduce", _fake_segment, _step_segment_reduce_samples, step_segment_reduce),
    OpSpec("step_segment_reduce_backward", _fake_segment_backward,
           _step_segment_reduce_backward_samples),
    OpSpec("step_first_below", _fake_first_below, _step_first_below_samples, step_first_below,
           differentiable=False),
    OpSpec("step_refine", _fake_refine, _step_refine_samples, step_refine, differentiable=False),
])
