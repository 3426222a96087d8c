"""Triton kernels of the PRM step-reward ops: the launch wrappers below are the kernels of
``torch.ops.mmreward_triton.step_*`` (same schemas, autograd and fake kernels as the C++ ops; see
``mmreward/ops/step_reward.py`` and :mod:`mmreward.ops.library.step_reward`). Runs on CUDA tensors,
or on CPU tensors under ``TRITON_INTERPRET=1``. Accumulation is fp32 (fp64 for fp64 inputs); the
reductions run in a fixed order inside one program, so results are deterministic.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..library import acc_dtype
from ._common import acc_tl, cast_out, register

IGNORE = -100.0
_IGNORE = tl.constexpr(IGNORE)  # what kernels read: compiled @triton.jit code sees only constexpr globals


def _scalar(x: float, like: torch.Tensor) -> torch.Tensor:
    """A float argument as a 1-element accumulation-dtype tensor (exact for fp64 kernels)."""
    return torch.full((1,), float(x), dtype=acc_dtype(like.dtype), device=like.device)


def _block(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(max(int(n), 1))))


# ---------------------------------------------------------------------------------------------- head


@triton.jit
def _head_fwd_kernel(
    h_ptr, idx_ptr, w_ptr, wn_ptr, bias_ptr, tgt_ptr, z_ptr, loss_ptr, H,
    KIND: tl.constexpr, HAS_WN: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr,
):
    s = tl.program_id(0)
    row = tl.load(idx_ptr + s).to(tl.int64)
    acc = tl.zeros([BLOCK_H], dtype=ACC)
    for j0 in range(0, H, BLOCK_H):
        cols = j0 + tl.arange(0, BLOCK_H)
        m = cols < H
        h = tl.load(h_ptr + row * H + cols, mask=m, other=0.0).to(ACC)
        w = tl.load(w_ptr + cols, mask=m, other=0.0).to(ACC)
        if HAS_WN:
            w = w - tl.load(wn_ptr + cols, mask=m, other=0.0).to(ACC)
        acc += h * w
    z = tl.sum(acc, axis=0)
    if HAS_BIAS:
        z = z + tl.load(bias_ptr).to(ACC)
    tl.store(z_ptr + s, z)
    if KIND != 0:
        y = tl.load(tgt_ptr + s).to(ACC)
        valid = y != _IGNORE
        if KIND == 1:  # BCE with logits: softplus(z) - y z
            loss = tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z))) - y * z
        else:  # MSE
            loss = (z - y) * (z - y)
        tl.store(loss_ptr + s, tl.where(valid, loss, 0.0))


@triton.jit
def _head_bwd_kernel(
    h_ptr, idx_ptr, w_ptr, wn_ptr, gz_ptr, gh_ptr, gw_ptr, S, H,
    HAS_WN: tl.constexpr, NEED_GH: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr,
):
    # one program per block of hidden columns; steps are visited in order (deterministic, and
    # repeated step positions accumulate without atomics)
    pid = tl.program_id(0)
    cols = pid * BLOCK_H + tl.arange(0, BLOCK_H)
    m = cols < H
    wd = tl.load(w_ptr + cols, mask=m, other=0.0).to(ACC)
    if HAS_WN:
        wd = wd - tl.load(wn_ptr + cols, mask=m, other=0.0).to(ACC)
    gw = tl.zeros([BLOCK_H], dtype=ACC)
    for s in range(0, S):
        g = tl.load(gz_ptr + s).to(ACC)
        row = tl.load(idx_ptr + s).to(tl.int64)
        h = tl.load(h_ptr + row * H + cols, mask=m, other=0.0).to(ACC)
        gw += g * h
        if NEED_GH:
            old = tl.load(gh_ptr + row * H + cols, mask=m, other=0.0).to(ACC)
            tl.store(gh_ptr + row * H + cols, cast_out(old + g * wd, gh_ptr), mask=m)
    tl.store(gw_ptr + cols, cast_out(gw, gw_ptr), mask=m)


def step_head(
    hidden: torch.Tensor,
    index: torch.Tensor,
    w: torch.Tensor,
    w_neg: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    target: Optional[torch.Tensor],
    kind: int,
    reduction: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden, index, w = hidden.contiguous(), index.contiguous(), w.contiguous()
    S, H = index.shape[0], hidden.shape[1]
    acc = acc_dtype(hidden.dtype)
    z = torch.empty(S, dtype=acc, device=hidden.device)
    loss = torch.empty(S if kind != 0 else 1, dtype=acc, device=hidden.device)
    if S > 0:
        _head_fwd_kernel[(S,)](
            hidden, index, w, w_neg.contiguous() if w_neg is not None else w, bias if bias is not None else z,
            target.contiguous() if target is not None else z, z, loss, H,
            KIND=kind, HAS_WN=w_neg is not None, HAS_BIAS=bias is not None, ACC=acc_tl(hidden.dtype),
            BLOCK_H=_block(H, 1024),
        )
    if kind == 0:
        return z.clone(), z
    if reduction == 0:
        return loss, z
    total = loss.sum()
    if reduction == 1:
        total = total / (target != IGNORE).sum().clamp(min=1).to(acc)
    return total, z


def step_head_backward(
    grad_out: torch.Tensor,
    hidden: torch.Tensor,
    index: torch.Tensor,
    w: torch.Tensor,
    w_neg: Optional[torch.Tensor],
    z: torch.Tensor,
    target: Optional[torch.Tensor],
    kind: int,
    reduction: int,
    need_grad_hidden: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden, index, w = hidden.contiguous(), index.contiguous(), w.contiguous()
    N, H = hidden.shape
    S = index.shape[0]
    acc = acc_dtype(hidden.dtype)
    g = grad_out.to(acc)
    # d loss / d z  (S,) — tiny elementwise work
    if kind == 0:
        gz = g
    else:
        valid = target != IGNORE
        if reduction == 1:
            g = g / valid.sum().clamp(min=1).to(acc)
        d = torch.sigmoid(z) - target if kind == 1 else 2.0 * (z - target)
        gz = torch.where(valid, g * d, torch.zeros_like(d))
    gz = gz.contiguous()
    gh = torch.zeros((N, H) if need_grad_hidden else (0,), dtype=hidden.dtype, device=hidden.device)
    gw = torch.empty(H, dtype=w.dtype, device=w.device)
    BLOCK = _block(H, 256)
    _head_bwd_kernel[(triton.cdiv(H, BLOCK),)](
        hidden, index, w, w_neg.contiguous() if w_neg is not None else w, gz, gh if need_grad_hidden else hidden,
        gw, S, H, HAS_WN=w_neg is not None, NEED_GH=need_grad_hidden, ACC=acc_tl(hidden.dtype), BLOCK_H=BLOCK,
    )
    return gh, gw, gz.sum()


# ---------------------------------------------------------------------------------------------- pairs


@triton.jit
def _pair_fwd_kernel(r_ptr, pos_ptr, neg_ptr, out_ptr, P, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < P
    rp = tl.load(r_ptr + tl.load(pos_ptr + offs, mask=m, other=0), mask=m, other=0.0)
    rn = tl.load(r_ptr + tl.load(neg_ptr + offs, mask=m, other=0), mask=m, other=0.0)
    x = rn - rp  # -log σ(rp - rn) = softplus(rn - rp)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))), mask=m)


@triton.jit
def _pair_bwd_kernel(g_ptr, r_ptr, pos_ptr, neg_ptr, w_ptr, gr_ptr, P, REDUCE: tl.constexpr, HAS_W: tl.constexpr):
    # single program, pairs in order: deterministic scatter into the (small) per-step gradient
    g0 = tl.load(g_ptr)
    for p in range(0, P):
        i = tl.load(pos_ptr + p)
        j = tl.load(neg_ptr + p)
        if REDUCE:
            g = g0
            if HAS_W:
                g = g * tl.load(w_ptr + p)
        else:
            g = tl.load(g_ptr + p)
        x = tl.load(r_ptr + j) - tl.load(r_ptr + i)
        d = g / (1.0 + tl.exp(-x))
        tl.store(gr_ptr + i, tl.load(gr_ptr + i) - d)
        tl.store(gr_ptr + j, tl.load(gr_ptr + j) + d)


def step_pair_loss(
    r: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, weight: Optional[torch.Tensor], reduce: bool
) -> torch.Tensor:
    r, pos, neg = r.contiguous(), pos.contiguous(), neg.contiguous()
    P = pos.shape[0]
    per = torch.empty(P, dtype=r.dtype, device=r.device)
    if P > 0:
        BLOCK = _block(P, 1024)
        _pair_fwd_kernel[(triton.cdiv(P, BLOCK),)](r, pos, neg, per, P, BLOCK=BLOCK)
    if not reduce:
        return per
    return (per * weight).sum() if weight is not None else per.sum()


def step_pair_loss_backward(
    grad: torch.Tensor, r: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, weight: Optional[torch.Tensor], reduce: bool
) -> torch.Tensor:
    r, pos, neg = r.contiguous(), pos.contiguous(), neg.contiguous()
    gr = torch.zeros_like(r)
    P = pos.shape[0]
    if P > 0:
        _pair_bwd_kernel[(1,)](
            grad.to(r.dtype).contiguous().reshape(-1), r, pos, neg,
            weight.contiguous() if weight is not None else r, gr, P, REDUCE=reduce, HAS_W=weight is not None,
        )
    return gr


# ---------------------------------------------------------------------------------------------- segments


@triton.jit
def _seg_fwd_kernel(v_ptr, off_ptr, out_ptr, ev_ptr, OP: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    s0 = tl.load(off_ptr + b)
    s1 = tl.load(off_ptr + b + 1)
    n = s1 - s0
    if OP == 0:
        acc = tl.full([BLOCK], float("inf"), ACC)
    elif OP == 5:
        acc = tl.full([BLOCK], float("-inf"), ACC)
    else:
        acc = tl.zeros([BLOCK], ACC)
    for i0 in range(s0, s1, BLOCK):
        offs = i0 + tl.arange(0, BLOCK)
        m = offs < s1
        if OP == 0:
            v = tl.load(v_ptr + offs, mask=m, other=float("inf")).to(ACC)
            acc = tl.minimum(acc, v)
        elif OP == 5:
            v = tl.load(v_ptr + offs, mask=m, other=float("-inf")).to(ACC)
            acc = tl.maximum(acc, v)
        elif OP == 1 or OP == 2:
            v = tl.load(v_ptr + offs, mask=m, other=1.0).to(ACC)
            acc += tl.log(v)
        else:
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(ACC)
            acc += v
    if OP == 0:
        res = tl.min(acc, axis=0)
    elif OP == 5:
        res = tl.max(acc, axis=0)
    else:
        res = tl.sum(acc, axis=0)
    if OP == 1:
        res = tl.exp(res)
    if OP == 4:
        res = res / tl.maximum(n, 1).to(ACC)
    if OP == 3:
        res = tl.load(v_ptr + tl.maximum(s1 - 1, 0)).to(ACC)
    ev = tl.load(ev_ptr).to(ACC)
    if OP == 2:
        ev = tl.log(ev)
    tl.store(out_ptr + b, tl.where(n > 0, res, ev))


@triton.jit
def _seg_bwd_kernel(g_ptr, v_ptr, off_ptr, gv_ptr, OP: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    s0 = tl.load(off_ptr + b)
    s1 = tl.load(off_ptr + b + 1)
    n = s1 - s0
    go = tl.load(g_ptr + b).to(ACC)
    if OP == 0 or OP == 5:
        # pass 1: extremum; pass 2: first index holding it
        if OP == 0:
            ext = tl.full([BLOCK], float("inf"), ACC)
        else:
            ext = tl.full([BLOCK], float("-inf"), ACC)
        for i0 in range(s0, s1, BLOCK):
            offs = i0 + tl.arange(0, BLOCK)
            m = offs < s1
            if OP == 0:
                ext = tl.minimum(ext, tl.load(v_ptr + offs, mask=m, other=float("inf")).to(ACC))
            else:
                ext = tl.maximum(ext, tl.load(v_ptr + offs, mask=m, other=float("-inf")).to(ACC))
        if OP == 0:
            e = tl.min(ext, axis=0)
        else:
            e = tl.max(ext, axis=0)
        first = tl.full([BLOCK], 2**62, tl.int64)
        for i0 in range(s0, s1, BLOCK):
            offs = i0 + tl.arange(0, BLOCK)
            m = offs < s1
            v = tl.load(v_ptr + offs, mask=m, other=0.0).to(ACC)
            first = tl.minimum(first, tl.where(m & (v == e), offs.to(tl.int64), 2**62))
        k = tl.min(first, axis=0)
        if n > 0:
            tl.store(gv_ptr + k, cast_out(go, gv_ptr))
    elif OP == 3:
        if n > 0:
            tl.store(gv_ptr + s1 - 1, cast_out(go, gv_ptr))
    elif OP == 4 or OP == 6:
        d = go
        if OP == 4:
            d = go / tl.maximum(n, 1).to(ACC)
        for i0 in range(s0, s1, BLOCK):
            offs = i0 + tl.arange(0, BLOCK)
            m = offs < s1
            tl.store(gv_ptr + offs, cast_out(tl.zeros([BLOCK], ACC) + d, gv_ptr), mask=m)
    elif OP == 2:
        for i0 in range(s0, s1, BLOCK):
            offs = i0 + tl.arange(0, BLOCK)
            m = offs < s1
            v = tl.load(v_ptr + offs, mask=m, other=1.0).to(ACC)
            tl.store(gv_ptr + offs, cast_out(go / v, gv_ptr), mask=m)
    else:  # prod: d/dv_i = prod_{j != i} v_j (exact with zeros)
        ls = tl.zeros([BLOCK], ACC)
        nz = tl.zeros([BLOCK], tl.int32)
        for i0 in range(s0, s1, BLOCK):
            offs = i0 + tl.arange(0, BLOCK)
            m = offs < s1
            v = tl.load(v_ptr + offs, mask=m, other=1.0).to(ACC)
            isz = v == 0.0
            nz += isz.to(tl.int32)
            ls += tl.log(tl.where(isz, 1.0, v))
        L = tl.sum(ls, axis=0)
        Z = tl.sum(nz, axis=0)
        for i0 in range(s0, s1, BLOCK):
            offs = i0 + tl.arange(0, BLOCK)
            m = offs < s1
            v = tl.load(v_ptr + offs, mask=m, other=1.0).to(ACC)
            isz = v == 0.0
            d_nz = tl.where(Z == 0, tl.exp(L - tl.log(tl.where(isz, 1.0, v))), 0.0)
            d_z = tl.where(Z == 1, tl.exp(L + tl.zeros([BLOCK], ACC)), 0.0)
            d = tl.where(isz, d_z, d_nz)
            tl.store(gv_ptr + offs, cast_out(go * d, gv_ptr), mask=m)


def step_segment_reduce(values: torch.Tensor, offsets: torch.Tensor, op: int, empty_value: float) -> torch.Tensor:
    values, offsets = values.contiguous(), offsets.contiguous()
    B = offsets.shape[0] - 1
    out = torch.empty(B, dtype=acc_dtype(values.dtype), device=values.device)
    if B > 0:
        _seg_fwd_kernel[(B,)](values, offsets, out, _scalar(empty_value, values), OP=op, ACC=acc_tl(values.dtype), BLOCK=128)
    return out


def step_segment_reduce_backward(grad: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor, op: int) -> torch.Tensor:
    values, offsets = values.contiguous(), offsets.contiguous()
    B = offsets.shape[0] - 1
    gv = torch.zeros_like(values)
    if B > 0:
        _seg_bwd_kernel[(B,)](
            grad.to(acc_dtype(values.dtype)).contiguous(), values, offsets, gv, OP=op, ACC=acc_tl(values.dtype), BLOCK=128
        )
    return gv


@triton.jit
def _first_below_kernel(v_ptr, off_ptr, out_ptr, thr_ptr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    s0 = tl.load(off_ptr + b)
    s1 = tl.load(off_ptr + b + 1)
    first = tl.full([BLOCK], 2**62, tl.int64)
    t = tl.load(thr_ptr).to(ACC)
    for i0 in range(s0, s1, BLOCK):
        offs = i0 + tl.arange(0, BLOCK)
        m = offs < s1
        v = tl.load(v_ptr + offs, mask=m, other=0.0).to(ACC)
        first = tl.minimum(first, tl.where(m & (v < t), offs.to(tl.int64), 2**62))
    k = tl.min(first, axis=0)
    tl.store(out_ptr + b, tl.where(k < 2**62, k - s0, -1))


def step_first_below(values: torch.Tensor, offsets: torch.Tensor, threshold: float) -> torch.Tensor:
    values, offsets = values.contiguous(), offsets.contiguous()
    B = offsets.shape[0] - 1
    out = torch.empty(B, dtype=torch.int64, device=values.device)
    if B > 0:
        _first_below_kernel[(B,)](values, offsets, out, _scalar(threshold, values), ACC=acc_tl(values.dtype), BLOCK=128)
    return out


@triton.jit
def _refine_kernel(r_ptr, off_ptr, ref_ptr, ret_ptr, eta_ptr, gamma_ptr, CLIP: tl.constexpr, DELTA: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0)
    s0 = tl.load(off_ptr + b)
    s1 = tl.load(off_ptr + b + 1)
    e = tl.load(eta_ptr).to(ACC)
    gm = tl.load(gamma_ptr).to(ACC)
    nxt = tl.zeros([1], ACC)
    run = tl.zeros([1], ACC)
    one = tl.arange(0, 1)
    for t in range(0, s1 - s0):  # reverse scan over the sequence
        i = s1 - 1 - t
        r = tl.load(r_ptr + i + one).to(ACC)
        if CLIP:
            r = tl.minimum(r - e, 0.0)
        rt = r
        if DELTA:
            rt = tl.where(t > 0, r - nxt, r)
        nxt = r
        run = rt + gm * run
        tl.store(ref_ptr + i + one, rt)
        tl.store(ret_ptr + i + one, run)


def step_refine(
    rewards: torch.Tensor, offsets: torch.Tensor, clip: bool, eta: float, delta: bool, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    rewards, offsets = rewards.contiguous(), offsets.contiguous()
    B = offsets.shape[0] - 1
    acc = acc_dtype(rewards.dtype)
    refined = torch.empty(rewards.shape, dtype=acc, device=rewards.device)
    returns = torch.empty(rewards.shape, dtype=acc, device=rewards.device)
    if B > 0 and rewards.numel() > 0:
        _refine_kernel[(B,)](
            rewards, offsets, refined, returns, _scalar(eta, rewards), _scalar(gamma, rewards), CLIP=clip, DELTA=delta, ACC=acc_tl(rewards.dtype)
        )
    return refined, returns


register(step_head, step_head_backward, step_pair_loss, step_pair_loss_backward, step_segment_reduce,
         step_segment_reduce_backward, step_first_below, step_refine)
