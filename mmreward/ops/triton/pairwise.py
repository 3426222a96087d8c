"""Triton kernels of the pairwise reward losses (see :mod:`mmreward.ops.pairwise` for semantics):
the launch wrappers below are the kernels of ``torch.ops.mmreward_triton.<op>`` (same schemas,
autograd and fake kernels as the C++ ops; see :mod:`mmreward.ops.library`).

Numerics as in ``csrc/include/mmreward/math.h``: z = 4·(r_c/4 − r_r/4 − m/4), no centering term when
its coefficient is 0, NaN loss / gradients / accuracy from a non-finite input. Determinism: every
program writes its own partial sums (fixed grid for a given problem size), which are reduced with
``torch.sum`` afterwards; no atomics. bf16 / fp16 are converted to fp32 before any math; float64
stays float64; listwise row sums accumulate in float64.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from triton.runtime.interpreter import InterpretedFunction

from ..library import acc_dtype
from ._common import cast_out, register

BLOCK_PAIRS = 1024
HEAD_BLOCK_B = 16
HEAD_BLOCK_H = 256
HEAD_MAX_PROGRAMS = 128  # persistent grid for the head (bounds the [programs, H] grad_w partials)


def _opts64(dt, dev, ls, cc, s_red, dummy):
    """(p, cc, 1/B) as a float64 tensor for the float64 kernels: Triton passes a Python float as fp32,
    which put errors of ~1e-8 into float64 losses and gradients (label smoothing 0.1, the mean of 3
    pairs). Other dtypes take the float arguments (no extra device buffer)."""
    if dt != torch.float64:
        return dummy
    return torch.tensor([1.0 - ls / 2.0, cc, s_red], dtype=torch.float64).to(dev)


# ------------------------------------------------------------------------------------------------
# shared device math
# ------------------------------------------------------------------------------------------------
@triton.jit
def _soft_logistic_q(q, p):
    """loss = softplus(-z) + (1-p)·z, dz = σ(z) − p at z = 4q (q = z / 4 keeps z finite for every
    finite pair of rewards; the (1 − p)·z term is an exact 0 for p = 1)."""
    e = tl.exp(-4.0 * tl.abs(q))
    sp = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))
    loss = 4.0 * tl.where(q < 0, -p * q, (1.0 - p) * q) + sp
    dz = tl.where(q >= 0, 1.0, e) / (1.0 + e) - p
    return loss, dz


@triton.jit
def _nan_if_not_finite(x):
    """NaN where x is NaN / inf, else 0 (comparisons: a compiler may not fold them away)."""
    return tl.where((x != x) | (tl.abs(x) == float("inf")), float("nan"), 0.0)


@triton.jit
def _pair_math(a, b, m, is_tie, s, p, cc):
    """Per-pair loss, its grads w.r.t. r_chosen, r_rejected times the upstream grad `s`, and whether
    the pair had a non-finite input (then loss and grads are NaN)."""
    q0 = a * 0.25 - b * 0.25
    q = tl.where(is_tie, q0, q0 - m * 0.25)
    pp = tl.where(is_tie, 0.5, p)
    loss, dz = _soft_logistic_q(q, pp)
    sm = a + b
    loss = loss + tl.where(cc != 0.0, cc * sm * sm, 0.0)
    cen = tl.where(cc != 0.0, s * (2.0 * cc) * sm, 0.0)
    bad = _nan_if_not_finite(q)
    return loss + bad, s * dz + cen + bad, cen - s * dz + bad, bad != 0.0


# ------------------------------------------------------------------------------------------------
# pairwise_loss
# ------------------------------------------------------------------------------------------------
@triton.jit
def _store_counts(counts_ptr, pid, win, counted, bad):
    """Per-program pair counts: wins, non-tie pairs, pairs with a non-finite input."""
    tl.store(counts_ptr + 3 * pid, tl.sum(win.to(tl.int32), axis=0))
    tl.store(counts_ptr + 3 * pid + 1, tl.sum(counted.to(tl.int32), axis=0))
    tl.store(counts_ptr + 3 * pid + 2, tl.sum(bad.to(tl.int32), axis=0))


@triton.jit
def _pair_fwd_kernel(
    rc_ptr, rr_ptr, m_ptr, tie_ptr, g_ptr, loss_ptr, gc_ptr, gr_ptr, part_loss_ptr, part_counts_ptr,
    B, p, cc, s_red, opts64_ptr,
    HAS_M: tl.constexpr, HAS_TIE: tl.constexpr, PER_PAIR_G: tl.constexpr, STORE_LOSS: tl.constexpr,
    STORE_GRAD: tl.constexpr, IS64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if IS64:  # the float options exactly (a Python float argument reaches the kernel as fp32)
        p = tl.load(opts64_ptr)
        cc = tl.load(opts64_ptr + 1)
        s_red = tl.load(opts64_ptr + 2)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < B
    if IS64:
        a = tl.load(rc_ptr + offs, mask=mask, other=0.0).to(tl.float64)
        b = tl.load(rr_ptr + offs, mask=mask, other=0.0).to(tl.float64)
    else:
        a = tl.load(rc_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(rr_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_M:
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    else:
        m = tl.zeros_like(a)
    if HAS_TIE:
        is_tie = tl.load(tie_ptr + offs, mask=mask, other=0) != 0
    else:
        is_tie = offs < 0
    if PER_PAIR_G:
        s = tl.load(g_ptr + offs, mask=mask, other=0.0)
    else:
        s = tl.zeros_like(a) + tl.load(g_ptr) * s_red
    loss, gc, gr, bad = _pair_math(a, b, m, is_tie, s, p, cc)
    loss = tl.where(mask, loss, 0.0)
    if STORE_LOSS:
        tl.store(loss_ptr + offs, loss, mask=mask)
    if STORE_GRAD:
        tl.store(gc_ptr + offs, cast_out(gc, gc_ptr), mask=mask)
        tl.store(gr_ptr + offs, cast_out(gr, gr_ptr), mask=mask)
    counted = mask & (is_tie == 0)
    tl.store(part_loss_ptr + pid, tl.sum(loss, axis=0))
    _store_counts(part_counts_ptr, pid, counted & (a > b), counted, mask & bad)


def _pair_launch(r_chosen, r_rejected, margin, tie, ls, cc, reduction, *, grad=None, store_grad=False, grad_dtype=None):
    rc, rr = r_chosen.contiguous(), r_rejected.contiguous()
    B = rc.shape[0]
    dt = acc_dtype(rc.dtype)
    nprog = triton.cdiv(B, BLOCK_PAIRS)
    dev = rc.device
    per_pair_g = grad is not None and grad.dim() == 1
    store_loss = reduction == 0 and grad is None
    loss = torch.empty((B,) if store_loss else (0,), dtype=dt, device=dev)
    gdt = grad_dtype or dt
    gc = torch.empty((B,) if store_grad else (0,), dtype=gdt, device=dev)
    gr = torch.empty((B,) if store_grad else (0,), dtype=gdt, device=dev)
    part_loss = torch.empty(nprog, dtype=dt, device=dev)
    part_counts = torch.empty((nprog, 3), dtype=torch.int32, device=dev)
    s_red = 1.0 / B if (reduction == 1 and not per_pair_g) else 1.0
    if grad is None:
        g = torch.ones((1,), dtype=dt, device=dev)
    else:  # per pair [B], or the scalar upstream grad (read on the device: no sync)
        g = grad.to(dt).reshape(-1).contiguous()
    dummy = rc
    _pair_fwd_kernel[(nprog,)](
        rc, rr, margin if margin is not None else dummy, tie.view(torch.uint8) if tie is not None else dummy, g, loss,
        gc, gr, part_loss, part_counts, B, 1.0 - ls / 2.0, cc, s_red, _opts64(dt, dev, ls, cc, s_red, dummy),
        HAS_M=margin is not None, HAS_TIE=tie is not None, PER_PAIR_G=per_pair_g, STORE_LOSS=store_loss,
        STORE_GRAD=store_grad, IS64=dt == torch.float64, BLOCK=BLOCK_PAIRS,
    )
    return loss, gc, gr, part_loss, part_counts


def _finish(part_loss, B, reduction, part_counts):
    """(reduced loss, accuracy) from the programs' partials: accuracy NaN if any pair was non-finite."""
    total = part_loss.sum()
    win, cnt, bad = part_counts.sum(0).unbind()
    dev = part_loss.device
    acc = torch.where(cnt > 0, win.float() / cnt.clamp_min(1).float(), torch.zeros((), device=dev))
    acc = torch.where(bad > 0, torch.full((), float("nan"), device=dev), acc)
    return (total / B if reduction == 1 else total), acc


def pairwise_loss(
    r_chosen: Tensor, r_rejected: Tensor, margin: Optional[Tensor], tie: Optional[Tensor], label_smoothing: float,
    center_coef: float, reduction: int, need_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    loss, gc, gr, part_loss, part_counts = _pair_launch(
        r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, store_grad=need_grad
    )
    total, acc = _finish(part_loss, r_chosen.shape[0], reduction, part_counts)
    return (loss if reduction == 0 else total), acc, gc, gr


def pairwise_loss_backward(
    grad: Tensor, r_chosen: Tensor, r_rejected: Tensor, margin: Optional[Tensor], tie: Optional[Tensor],
    label_smoothing: float, center_coef: float, reduction: int,
) -> tuple[Tensor, Tensor]:
    if reduction != 0:
        grad = grad.reshape(())
    _, gc, gr, _, _ = _pair_launch(
        r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, grad=grad, store_grad=True,
        grad_dtype=r_chosen.dtype,
    )
    return gc, gr


# ------------------------------------------------------------------------------------------------
# listwise_loss: program (row block, i block) holds a [BR, BI] tile of rewards r_i and walks the
# rows' entries j in [BR, BI, BJ] tiles of pairs
# ------------------------------------------------------------------------------------------------
@triton.jit
def _list_kernel(
    r_ptr, rk_ptr, s_ptr, part_loss_ptr, part_cnt_ptr, g_ptr, B, K, NBI,
    BACKWARD: tl.constexpr, IS64: tl.constexpr, BR: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
):
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    rmask = rows < B
    ib = tl.program_id(1)
    ii = ib * BI + tl.arange(0, BI)
    base = rows.to(tl.int64) * K
    mask_i = rmask[:, None] & (ii[None, :] < K)
    offs_i = base[:, None] + ii[None, :]
    if IS64:
        ri = tl.load(r_ptr + offs_i, mask=mask_i, other=0.0).to(tl.float64)
    else:
        ri = tl.load(r_ptr + offs_i, mask=mask_i, other=0.0).to(tl.float32)
    ki = tl.load(rk_ptr + offs_i, mask=mask_i, other=-1)
    qi = ri * 0.25
    acc_loss = tl.zeros([BR, BI], dtype=tl.float64)  # a row has ~K²/2 terms: float64 sums
    acc_cnt = tl.zeros([BR, BI], dtype=tl.int32)
    acc_g = tl.zeros([BR, BI], dtype=tl.float64)
    row_bad = tl.zeros([BR, BJ], dtype=tl.float64)  # NaN if a ranked reward of the row is not finite
    for j0 in range(0, K, BJ):
        jj = j0 + tl.arange(0, BJ)
        mask_j = rmask[:, None] & (jj[None, :] < K)
        offs_j = base[:, None] + jj[None, :]
        if IS64:
            rj = tl.load(r_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float64)
        else:
            rj = tl.load(r_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float32)
        kj = tl.load(rk_ptr + offs_j, mask=mask_j, other=-1)
        qj = rj * 0.25
        row_bad += tl.where(kj >= 0, _nan_if_not_finite(qj), 0.0).to(tl.float64)
        both = (ki[:, :, None] >= 0) & (kj[:, None, :] >= 0)
        i_better = both & (ki[:, :, None] < kj[:, None, :])  # pair (i, j): -log σ(r_i - r_j)
        q = qi[:, :, None] - qj[:, None, :]
        loss, dz = _soft_logistic_q(q, 1.0)
        if BACKWARD:
            j_better = both & (kj[:, None, :] < ki[:, :, None])  # pair (j, i): d/dr_i of -log σ(r_j - r_i)
            _, dz2 = _soft_logistic_q(-q, 1.0)
            acc_g += tl.sum((tl.where(i_better, dz, 0.0) - tl.where(j_better, dz2, 0.0)).to(tl.float64), axis=2)
        else:
            acc_loss += tl.sum(tl.where(i_better, loss, 0.0).to(tl.float64), axis=2)
            acc_cnt += tl.sum(i_better.to(tl.int32), axis=2)
    bad = tl.sum(row_bad, axis=1)
    if BACKWARD:
        s = tl.load(s_ptr + rows, mask=rmask, other=0.0).to(tl.float64)
        tl.store(g_ptr + offs_i, cast_out((acc_g + bad[:, None]) * s[:, None], g_ptr), mask=mask_i)
    else:
        tl.store(part_loss_ptr + rows * NBI + ib, tl.sum(acc_loss, axis=1) + tl.where(ib == 0, bad, 0.0), mask=rmask)
        tl.store(part_cnt_ptr + rows * NBI + ib, tl.sum(acc_cnt, axis=1).to(tl.int64), mask=rmask)


def _list_blocks(B: int, K: int) -> tuple[int, int, int]:
    """(BR, BI, BJ): pair tiles of up to 2048 on a GPU, where a tile lives in registers; of up to 2^18
    in the interpreter, which pays per operation rather than per element (same kernel, same results)."""
    interpreted = isinstance(_list_kernel, InterpretedFunction)
    side, budget = (512, 2 ** 18) if interpreted else (32, 2048)
    bk = max(2, min(side, triton.next_power_of_2(K)))
    br = max(1, min(64 if not interpreted else 256, budget // (bk * bk), triton.next_power_of_2(B)))
    return br, bk, bk


def _list_launch(rewards, ranks, *, scale=None):
    """(row loss sums [B] float64, pair counts [B], grad [B, K] when `scale` is given)."""
    r, rk = rewards.contiguous(), ranks.contiguous()
    B, K = r.shape
    dev = r.device
    br, bi, bj = _list_blocks(B, K)
    nbi = triton.cdiv(K, bi)
    part_loss = torch.empty((B, nbi), dtype=torch.float64, device=dev)
    part_cnt = torch.empty((B, nbi), dtype=torch.int64, device=dev)
    g = torch.empty_like(r) if scale is not None else part_loss
    _list_kernel[(triton.cdiv(B, br), nbi)](
        r, rk, scale if scale is not None else part_loss, part_loss, part_cnt, g, B, K, nbi,
        BACKWARD=scale is not None, IS64=r.dtype == torch.float64, BR=br, BI=bi, BJ=bj,
    )
    return part_loss.sum(1), part_cnt.sum(1), g


def listwise_loss(rewards: Tensor, ranks: Tensor, reduction: int) -> tuple[Tensor, Tensor]:
    row_loss, row_cnt, _ = _list_launch(rewards, ranks)
    if reduction == 0:
        loss = torch.where(row_cnt > 0, row_loss / row_cnt.clamp_min(1), row_loss)
    elif reduction == 2:
        loss = row_loss.sum()
    else:
        n = row_cnt.sum()
        loss = torch.where(n > 0, row_loss.sum() / n.clamp_min(1), row_loss.sum())
    return loss.to(acc_dtype(rewards.dtype)), row_cnt


def listwise_loss_backward(grad: Tensor, rewards: Tensor, ranks: Tensor, pair_counts: Tensor, reduction: int) -> Tensor:
    g = grad.to(torch.float64)
    cnt = pair_counts.to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64, device=rewards.device)
    if reduction == 0:
        scale = torch.where(cnt > 0, g / cnt.clamp_min(1), zero)
    elif reduction == 2:
        scale = g.reshape(()).expand(rewards.shape[0])
    else:
        n = cnt.sum()
        scale = torch.where(n > 0, g.reshape(()) / n.clamp_min(1), zero).expand(rewards.shape[0])
    return _list_launch(rewards, ranks, scale=scale.contiguous())[2]


# ------------------------------------------------------------------------------------------------
# reward_head_pairwise_loss
# ------------------------------------------------------------------------------------------------
@triton.jit
def _head_kernel(
    hc_ptr, hr_ptr, w_ptr, b_ptr, m_ptr, tie_ptr, g_ptr, loss_ptr, ghc_ptr, ghr_ptr, part_gw_ptr,
    part_loss_ptr, part_gb_ptr, part_counts_ptr,
    B, H, p, cc, s_red, opts64_ptr, NPROG,
    HAS_B: tl.constexpr, HAS_M: tl.constexpr, HAS_TIE: tl.constexpr, PER_PAIR_G: tl.constexpr,
    STORE_LOSS: tl.constexpr, GRAD_H: tl.constexpr, GRAD_WB: tl.constexpr, IS64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    if IS64:  # the float options exactly (a Python float argument reaches the kernel as fp32)
        p = tl.load(opts64_ptr)
        cc = tl.load(opts64_ptr + 1)
        s_red = tl.load(opts64_ptr + 2)
        ACC = tl.float64
    else:
        ACC = tl.float32
    if HAS_B:
        bias = tl.load(b_ptr).to(ACC)
    else:
        bias = 0.0
    tot_loss = tl.zeros([BLOCK_B], dtype=ACC)
    tot_gb = tl.zeros([BLOCK_B], dtype=ACC)
    tot_win = tl.zeros([BLOCK_B], dtype=tl.int32)
    tot_cnt = tl.zeros([BLOCK_B], dtype=tl.int32)
    tot_bad = tl.zeros([BLOCK_B], dtype=tl.int32)
    n_blocks = tl.cdiv(B, BLOCK_B)
    cols0 = tl.arange(0, BLOCK_H)
    for blk in range(pid, n_blocks, NPROG):
        rows = blk * BLOCK_B + tl.arange(0, BLOCK_B)
        rmask = rows < B
        # pass 1: rewards
        a = tl.zeros([BLOCK_B], dtype=ACC)
        b = tl.zeros([BLOCK_B], dtype=ACC)
        for h0 in range(0, H, BLOCK_H):
            cols = h0 + cols0
            cmask = cols < H
            msk = rmask[:, None] & cmask[None, :]
            offs = rows[:, None] * H + cols[None, :]
            w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
            xc = tl.load(hc_ptr + offs, mask=msk, other=0.0).to(ACC)
            xr = tl.load(hr_ptr + offs, mask=msk, other=0.0).to(ACC)
            a += tl.sum(xc * w[None, :], axis=1)
            b += tl.sum(xr * w[None, :], axis=1)
        a = a + bias
        b = b + bias
        if HAS_M:
            m = tl.load(m_ptr + rows, mask=rmask, other=0.0).to(ACC)
        else:
            m = tl.zeros_like(a)
        if HAS_TIE:
            is_tie = tl.load(tie_ptr + rows, mask=rmask, other=0) != 0
        else:
            is_tie = rows < 0
        if PER_PAIR_G:
            s = tl.load(g_ptr + rows, mask=rmask, other=0.0).to(ACC)
        else:
            s = tl.zeros_like(a) + tl.load(g_ptr).to(ACC) * s_red
        loss, cgc, cgr, bad = _pair_math(a, b, m, is_tie, s, p, cc)
        loss = tl.where(rmask, loss, 0.0)
        cgc = tl.where(rmask, cgc, 0.0)
        cgr = tl.where(rmask, cgr, 0.0)
        if STORE_LOSS:
            tl.store(loss_ptr + rows, loss, mask=rmask)
        counted = rmask & (is_tie == 0)
        tot_loss += loss
        tot_gb += cgc + cgr
        tot_win += (counted & (a > b)).to(tl.int32)
        tot_cnt += counted.to(tl.int32)
        tot_bad += (rmask & bad).to(tl.int32)
        # pass 2 (rows still in cache): grads
        if GRAD_H or GRAD_WB:
            for h0 in range(0, H, BLOCK_H):
                cols = h0 + cols0
                cmask = cols < H
                msk = rmask[:, None] & cmask[None, :]
                offs = rows[:, None] * H + cols[None, :]
                w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
                if GRAD_H:
                    tl.store(ghc_ptr + offs, cast_out(cgc[:, None] * w[None, :], ghc_ptr), mask=msk)
                    tl.store(ghr_ptr + offs, cast_out(cgr[:, None] * w[None, :], ghr_ptr), mask=msk)
                if GRAD_WB:
                    xc = tl.load(hc_ptr + offs, mask=msk, other=0.0).to(ACC)
                    xr = tl.load(hr_ptr + offs, mask=msk, other=0.0).to(ACC)
                    contrib = tl.sum(cgc[:, None] * xc + cgr[:, None] * xr, axis=0)
                    gptr = part_gw_ptr + pid * H + cols
                    tl.store(gptr, tl.load(gptr, mask=cmask, other=0.0) + contrib, mask=cmask)
    tl.store(part_loss_ptr + pid, tl.sum(tot_loss, axis=0))
    tl.store(part_gb_ptr + pid, tl.sum(tot_gb, axis=0))
    _store_counts(part_counts_ptr, pid, tot_win, tot_cnt, tot_bad)


def _head_launch(hc, hr, w, bias, margin, tie, ls, cc, reduction, grad_h, grad_wb, grad=None):
    hc, hr, w = hc.contiguous(), hr.contiguous(), w.contiguous()
    B, H = hc.shape
    dt = acc_dtype(hc.dtype)
    dev = hc.device
    nprog = max(1, min(triton.cdiv(B, HEAD_BLOCK_B), HEAD_MAX_PROGRAMS))
    per_pair_g = grad is not None and reduction == 0
    store_loss = reduction == 0 and grad is None
    loss = torch.empty((B,) if store_loss else (0,), dtype=dt, device=dev)
    ghc = torch.empty((B, H) if grad_h else (0,), dtype=hc.dtype, device=dev)
    ghr = torch.empty((B, H) if grad_h else (0,), dtype=hc.dtype, device=dev)
    part_gw = torch.zeros((nprog, H) if grad_wb else (0,), dtype=dt, device=dev)
    part_loss = torch.empty(nprog, dtype=dt, device=dev)
    part_gb = torch.empty(nprog, dtype=dt, device=dev)
    part_counts = torch.empty((nprog, 3), dtype=torch.int32, device=dev)
    s_red = 1.0 / B if (reduction == 1 and not per_pair_g) else 1.0
    if grad is None:
        g = torch.ones((1,), dtype=dt, device=dev)
    else:  # per pair [B], or the scalar upstream grad (read on the device: no sync)
        g = grad.to(dt).reshape(-1).contiguous()
    dummy = hc
    _head_kernel[(nprog,)](
        hc, hr, w, bias if bias is not None else dummy, margin if margin is not None else dummy,
        tie.view(torch.uint8) if tie is not None else dummy, g, loss, ghc, ghr, part_gw,
        part_loss, part_gb, part_counts, B, H, 1.0 - ls / 2.0, cc, s_red, _opts64(dt, dev, ls, cc, s_red, dummy),
        nprog,
        HAS_B=bias is not None, HAS_M=margin is not None, HAS_TIE=tie is not None, PER_PAIR_G=per_pair_g,
        STORE_LOSS=store_loss, GRAD_H=grad_h, GRAD_WB=grad_wb, IS64=dt == torch.float64,
        BLOCK_B=HEAD_BLOCK_B, BLOCK_H=HEAD_BLOCK_H,
    )
    gw = part_gw.sum(0).to(w.dtype) if grad_wb else torch.empty((0,), dtype=w.dtype, device=dev)
    gb = part_gb.sum() if grad_wb else torch.empty((0,), dtype=dt, device=dev)
    return loss, ghc, ghr, gw, gb, part_loss, part_counts


def reward_head_pairwise_loss(
    h_chosen: Tensor, h_rejected: Tensor, weight: Tensor, bias: Optional[Tensor], margin: Optional[Tensor],
    tie: Optional[Tensor], label_smoothing: float, center_coef: float, reduction: int, grad_h: bool, grad_wb: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    loss, ghc, ghr, gw, gb, part_loss, part_counts = _head_launch(
        h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h, grad_wb
    )
    total, acc = _finish(part_loss, h_chosen.shape[0], reduction, part_counts)
    return (loss if reduction == 0 else total), acc, ghc, ghr, gw, gb


def reward_head_pairwise_loss_backward(
    grad: Tensor, h_chosen: Tensor, h_rejected: Tensor, weight: Tensor, bias: Optional[Tensor],
    margin: Optional[Tensor], tie: Optional[Tensor], label_smoothing: float, center_coef: float, reduction: int,
    grad_h: bool, grad_wb: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if reduction != 0:
        grad = grad.reshape(())
    _, ghc, ghr, gw, gb, _, _ = _head_launch(
        h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h, grad_wb,
        grad=grad,
    )
    return ghc, ghr, gw, gb


register(pairwise_loss, pairwise_loss_backward, listwise_loss, listwise_loss_backward, reward_head_pairwise_loss,
         reward_head_pairwise_loss_backward)
