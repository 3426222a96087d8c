"""Triton kernels for the pairwise reward losses (see :mod:`mmreward.ops.pairwise` for semantics).

Each op is a ``torch.library.custom_op("mmreward_triton::<op>")`` with the same schema as the C++
op ``torch.ops.mmreward.<op>``; fake kernels and autograd are shared with the C++ ops
(:func:`mmreward.ops.pairwise.register_fake_and_autograd`).

Determinism: every program writes its own partial sums (fixed grid for a given problem size), which
are reduced with ``torch.sum`` afterwards; no atomics. bf16 / fp16 are converted to fp32 before any
math; float64 stays float64.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import pairwise as _api

BLOCK_PAIRS = 1024
BLOCK_ROWS_LIST = 32
HEAD_BLOCK_B = 16
HEAD_BLOCK_H = 256
HEAD_MAX_PROGRAMS = 128  # persistent grid for the head (bounds the [programs, H] grad_w partials)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------------------------
# shared device math
# ------------------------------------------------------------------------------------------------
@triton.jit
def _soft_logistic(z, p):
    """loss = softplus(-z) + (1-p)·z, dz = σ(z) − p (stable for any finite z)."""
    e = tl.exp(-tl.abs(z))
    sp = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))
    loss = tl.where(z < 0, -z, 0.0) + sp + (1.0 - p) * z
    dz = tl.where(z >= 0, 1.0, e) / (1.0 + e) - p
    return loss, dz


@triton.jit
def _cast_out(x, ptr):
    """x converted to ptr's element type, rounding to nearest even. bf16 is rounded by hand: the
    interpreter (TRITON_INTERPRET=1) truncates fp32 -> bf16; on the GPU this is exact and cheap."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x.to(ptr.dtype.element_ty)


@triton.jit
def _pair_math(a, b, m, is_tie, s, p, cc):
    """Per-pair loss and its grads w.r.t. r_chosen, r_rejected times the upstream grad `s`."""
    delta = a - b
    z = tl.where(is_tie, delta, delta - m)
    pp = tl.where(is_tie, 0.5, p)
    loss, dz = _soft_logistic(z, pp)
    sm = a + b
    loss = loss + cc * sm * sm
    cen = s * (2.0 * cc) * sm
    return loss, s * dz + cen, cen - s * dz


# ------------------------------------------------------------------------------------------------
# pairwise_loss
# ------------------------------------------------------------------------------------------------
@triton.jit
def _pair_fwd_kernel(
    rc_ptr, rr_ptr, m_ptr, tie_ptr, g_ptr, loss_ptr, gc_ptr, gr_ptr, part_loss_ptr, part_win_ptr, part_cnt_ptr,
    B, p, cc, s_red,
    HAS_M: tl.constexpr, HAS_TIE: tl.constexpr, PER_PAIR_G: tl.constexpr, STORE_LOSS: tl.constexpr,
    STORE_GRAD: tl.constexpr, IS64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
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
    loss, gc, gr = _pair_math(a, b, m, is_tie, s, p, cc)
    loss = tl.where(mask, loss, 0.0)
    if STORE_LOSS:
        tl.store(loss_ptr + offs, loss, mask=mask)
    if STORE_GRAD:
        tl.store(gc_ptr + offs, _cast_out(gc, gc_ptr), mask=mask)
        tl.store(gr_ptr + offs, _cast_out(gr, gr_ptr), mask=mask)
    counted = mask & (is_tie == 0)
    tl.store(part_loss_ptr + pid, tl.sum(loss, axis=0))
    tl.store(part_win_ptr + pid, tl.sum((counted & (a > b)).to(tl.int32), axis=0))
    tl.store(part_cnt_ptr + pid, tl.sum(counted.to(tl.int32), axis=0))


def _pair_launch(r_chosen, r_rejected, margin, tie, ls, cc, reduction, *, grad=None, store_grad=False, grad_dtype=None):
    rc, rr = r_chosen.contiguous(), r_rejected.contiguous()
    B = rc.shape[0]
    dt = _acc_dtype(rc.dtype)
    nprog = triton.cdiv(B, BLOCK_PAIRS)
    dev = rc.device
    per_pair_g = grad is not None and grad.dim() == 1
    store_loss = reduction == 0 and grad is None
    loss = torch.empty((B,) if store_loss else (0,), dtype=dt, device=dev)
    gdt = grad_dtype or dt
    gc = torch.empty((B,) if store_grad else (0,), dtype=gdt, device=dev)
    gr = torch.empty((B,) if store_grad else (0,), dtype=gdt, device=dev)
    part_loss = torch.empty(nprog, dtype=dt, device=dev)
    part_win = torch.empty(nprog, dtype=torch.int32, device=dev)
    part_cnt = torch.empty(nprog, dtype=torch.int32, device=dev)
    s_red = 1.0 / B if (reduction == 1 and not per_pair_g) else 1.0
    if grad is None:
        g = torch.ones((1,), dtype=dt, device=dev)
    else:  # per pair [B], or the scalar upstream grad (read on the device: no sync)
        g = grad.to(dt).reshape(-1).contiguous()
    dummy = rc
    _pair_fwd_kernel[(nprog,)](
        rc, rr, margin if margin is not None else dummy, tie.view(torch.uint8) if tie is not None else dummy, g, loss,
        gc, gr, part_loss, part_win, part_cnt, B, 1.0 - ls / 2.0, cc, s_red,
        HAS_M=margin is not None, HAS_TIE=tie is not None, PER_PAIR_G=per_pair_g, STORE_LOSS=store_loss,
        STORE_GRAD=store_grad, IS64=dt == torch.float64, BLOCK=BLOCK_PAIRS,
    )
    return loss, gc, gr, part_loss, part_win, part_cnt


def _finish(total, B, reduction, part_win, part_cnt, dev):
    win, cnt = part_win.sum(), part_cnt.sum()
    acc = torch.where(cnt > 0, win.float() / cnt.clamp_min(1).float(), torch.zeros((), device=dev))
    if reduction == 1:
        total = total / B
    return total, acc


@torch.library.custom_op("mmreward_triton::pairwise_loss", mutates_args=())
def pairwise_loss(
    r_chosen: Tensor, r_rejected: Tensor, margin: Optional[Tensor], tie: Optional[Tensor], label_smoothing: float,
    center_coef: float, reduction: int, need_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B = r_chosen.shape[0]
    loss, gc, gr, part_loss, part_win, part_cnt = _pair_launch(
        r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, store_grad=need_grad
    )
    total, acc = _finish(part_loss.sum(), B, reduction, part_win, part_cnt, r_chosen.device)
    if reduction != 0:
        loss = total
    return loss, acc, gc, gr


@torch.library.custom_op("mmreward_triton::pairwise_loss_backward", mutates_args=())
def pairwise_loss_backward(
    grad: Tensor, r_chosen: Tensor, r_rejected: Tensor, margin: Optional[Tensor], tie: Optional[Tensor],
    label_smoothing: float, center_coef: float, reduction: int,
) -> tuple[Tensor, Tensor]:
    if reduction != 0:
        grad = grad.reshape(())
    _, gc, gr, _, _, _ = _pair_launch(
        r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, grad=grad, store_grad=True,
        grad_dtype=r_chosen.dtype,
    )
    return gc, gr


# ------------------------------------------------------------------------------------------------
# listwise_loss
# ------------------------------------------------------------------------------------------------
@triton.jit
def _list_kernel(
    r_ptr, rk_ptr, s_ptr, row_loss_ptr, row_cnt_ptr, g_ptr, B, K,
    BACKWARD: tl.constexpr, IS64: tl.constexpr, BLOCK_R: tl.constexpr, KP: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, KP)
    rmask = rows < B
    tile_mask = rmask[:, None] & (cols[None, :] < K)
    offs = rows[:, None] * K + cols[None, :]
    if IS64:
        ri = tl.load(r_ptr + offs, mask=tile_mask, other=0.0).to(tl.float64)
    else:
        ri = tl.load(r_ptr + offs, mask=tile_mask, other=0.0).to(tl.float32)
    ki = tl.load(rk_ptr + offs, mask=tile_mask, other=-1)
    acc_loss = tl.zeros_like(ri)
    acc_cnt = tl.zeros([BLOCK_R, KP], dtype=tl.int32)
    acc_g = tl.zeros_like(ri)
    for j in range(0, K):
        if IS64:
            rj = tl.load(r_ptr + rows * K + j, mask=rmask, other=0.0).to(tl.float64)
        else:
            rj = tl.load(r_ptr + rows * K + j, mask=rmask, other=0.0).to(tl.float32)
        kj = tl.load(rk_ptr + rows * K + j, mask=rmask, other=-1)
        both = (ki >= 0) & (kj[:, None] >= 0)
        i_better = both & (ki < kj[:, None])  # pair (i, j): -log σ(r_i - r_j)
        d = ri - rj[:, None]
        loss, dz = _soft_logistic(d, 1.0)
        if BACKWARD:
            j_better = both & (kj[:, None] < ki)  # pair (j, i): d/dr_i of -log σ(r_j - r_i)
            _, dz2 = _soft_logistic(-d, 1.0)
            acc_g += tl.where(i_better, dz, 0.0) - tl.where(j_better, dz2, 0.0)
        else:
            acc_loss += tl.where(i_better, loss, 0.0)
            acc_cnt += i_better.to(tl.int32)
    if BACKWARD:
        s = tl.load(s_ptr + rows, mask=rmask, other=0.0)
        gi = acc_g * s[:, None]
        tl.store(g_ptr + offs, _cast_out(gi, g_ptr), mask=tile_mask)
    else:
        tl.store(row_loss_ptr + rows, tl.sum(acc_loss, axis=1), mask=rmask)
        tl.store(row_cnt_ptr + rows, tl.sum(acc_cnt, axis=1).to(tl.int64), mask=rmask)


def _list_launch(rewards, ranks, *, scale=None):
    r, rk = rewards.contiguous(), ranks.contiguous()
    B, K = r.shape
    dt = _acc_dtype(r.dtype)
    dev = r.device
    row_loss = torch.empty(B, dtype=dt, device=dev)
    row_cnt = torch.empty(B, dtype=torch.int64, device=dev)
    g = torch.empty_like(r) if scale is not None else row_loss
    _list_kernel[(triton.cdiv(B, BLOCK_ROWS_LIST),)](
        r, rk, scale if scale is not None else row_loss, row_loss, row_cnt, g, B, K,
        BACKWARD=scale is not None, IS64=dt == torch.float64, BLOCK_R=BLOCK_ROWS_LIST,
        KP=max(triton.next_power_of_2(K), 2),
    )
    return row_loss, row_cnt, g


@torch.library.custom_op("mmreward_triton::listwise_loss", mutates_args=())
def listwise_loss(rewards: Tensor, ranks: Tensor, reduction: int) -> tuple[Tensor, Tensor]:
    row_loss, row_cnt, _ = _list_launch(rewards, ranks)
    zero = torch.zeros((), dtype=row_loss.dtype, device=row_loss.device)
    if reduction == 0:
        loss = torch.where(row_cnt > 0, row_loss / row_cnt.clamp_min(1).to(row_loss.dtype), zero)
    elif reduction == 2:
        loss = row_loss.sum()
    else:
        n = row_cnt.sum()
        loss = torch.where(n > 0, row_loss.sum() / n.clamp_min(1).to(row_loss.dtype), zero)
    return loss, row_cnt


@torch.library.custom_op("mmreward_triton::listwise_loss_backward", mutates_args=())
def listwise_loss_backward(grad: Tensor, rewards: Tensor, ranks: Tensor, pair_counts: Tensor, reduction: int) -> Tensor:
    dt = _acc_dtype(rewards.dtype)
    g = grad.to(dt)
    cnt = pair_counts.to(dt)
    zero = torch.zeros((), dtype=dt, device=rewards.device)
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
    part_loss_ptr, part_gb_ptr, part_win_ptr, part_cnt_ptr,
    B, H, p, cc, s_red, NPROG,
    HAS_B: tl.constexpr, HAS_M: tl.constexpr, HAS_TIE: tl.constexpr, PER_PAIR_G: tl.constexpr,
    STORE_LOSS: tl.constexpr, GRAD_H: tl.constexpr, GRAD_WB: tl.constexpr, IS64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    if IS64:
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
        loss, cgc, cgr = _pair_math(a, b, m, is_tie, s, p, cc)
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
        # pass 2 (rows still in cache): grads
        if GRAD_H or GRAD_WB:
            for h0 in range(0, H, BLOCK_H):
                cols = h0 + cols0
                cmask = cols < H
                msk = rmask[:, None] & cmask[None, :]
                offs = rows[:, None] * H + cols[None, :]
                w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
                if GRAD_H:
                    tl.store(ghc_ptr + offs, _cast_out(cgc[:, None] * w[None, :], ghc_ptr), mask=msk)
                    tl.store(ghr_ptr + offs, _cast_out(cgr[:, None] * w[None, :], ghr_ptr), mask=msk)
                if GRAD_WB:
                    xc = tl.load(hc_ptr + offs, mask=msk, other=0.0).to(ACC)
                    xr = tl.load(hr_ptr + offs, mask=msk, other=0.0).to(ACC)
                    contrib = tl.sum(cgc[:, None] * xc + cgr[:, None] * xr, axis=0)
                    gptr = part_gw_ptr + pid * H + cols
                    tl.store(gptr, tl.load(gptr, mask=cmask, other=0.0) + contrib, mask=cmask)
    tl.store(part_loss_ptr + pid, tl.sum(tot_loss, axis=0))
    tl.store(part_gb_ptr + pid, tl.sum(tot_gb, axis=0))
    tl.store(part_win_ptr + pid, tl.sum(tot_win, axis=0))
    tl.store(part_cnt_ptr + pid, tl.sum(tot_cnt, axis=0))


def _head_launch(hc, hr, w, bias, margin, tie, ls, cc, reduction, grad_h, grad_wb, grad=None):
    hc, hr, w = hc.contiguous(), hr.contiguous(), w.contiguous()
    B, H = hc.shape
    dt = _acc_dtype(hc.dtype)
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
    part_win = torch.empty(nprog, dtype=torch.int32, device=dev)
    part_cnt = torch.empty(nprog, dtype=torch.int32, device=dev)
    s_red = 1.0 / B if (reduction == 1 and not per_pair_g) else 1.0
    if grad is None:
        g = torch.ones((1,), dtype=dt, device=dev)
    else:  # per pair [B], or the scalar upstream grad (read on the device: no sync)
        g = grad.to(dt).reshape(-1).contiguous()
    dummy = hc
    _head_kernel[(nprog,)](
        hc, hr, w, bias if bias is not None else dummy, margin if margin is not None else dummy,
        tie.view(torch.uint8) if tie is not None else dummy, g, loss, ghc, ghr, part_gw,
        part_loss, part_gb, part_win, part_cnt, B, H, 1.0 - ls / 2.0, cc, s_red, nprog,
        HAS_B=bias is not None, HAS_M=margin is not None, HAS_TIE=tie is not None, PER_PAIR_G=per_pair_g,
        STORE_LOSS=store_loss, GRAD_H=grad_h, GRAD_WB=grad_wb, IS64=dt == torch.float64,
        BLOCK_B=HEAD_BLOCK_B, BLOCK_H=HEAD_BLOCK_H,
    )
    gw = part_gw.sum(0).to(w.dtype) if grad_wb else torch.empty((0,), dtype=w.dtype, device=dev)
    gb = part_gb.sum() if grad_wb else torch.empty((0,), dtype=dt, device=dev)
    return loss, ghc, ghr, gw, gb, part_loss, part_win, part_cnt


@torch.library.custom_op("mmreward_triton::reward_head_pairwise_loss", mutates_args=())
def reward_head_pairwise_loss(
    h_chosen: Tensor, h_rejected: Tensor, weight: Tensor, bias: Optional[Tensor], margin: Optional[Tensor],
    tie: Optional[Tensor], label_smoothing: float, center_coef: float, reduction: int, grad_h: bool, grad_wb: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    B = h_chosen.shape[0]
    loss, ghc, ghr, gw, gb, part_loss, part_win, part_cnt = _head_launch(
        h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h, grad_wb
    )
    total, acc = _finish(part_loss.sum(), B, reduction, part_win, part_cnt, h_chosen.device)
    if reduction != 0:
        loss = total
    return loss, acc, ghc, ghr, gw, gb


@torch.library.custom_op("mmreward_triton::reward_head_pairwise_loss_backward", mutates_args=())
def reward_head_pairwise_loss_backward(
    grad: Tensor, h_chosen: Tensor, h_rejected: Tensor, weight: Tensor, bias: Optional[Tensor],
    margin: Optional[Tensor], tie: Optional[Tensor], label_smoothing: float, center_coef: float, reduction: int,
    grad_h: bool, grad_wb: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if reduction != 0:
        grad = grad.reshape(())
    _, ghc, ghr, gw, gb, _, _, _ = _head_launch(
        h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h, grad_wb,
        grad=grad,
    )
    return ghc, ghr, gw, gb


ops = torch.ops.mmreward_triton
_api.register_fake_and_autograd("mmreward_triton")
