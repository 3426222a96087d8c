"""Triton kernels of the VQ-codebook ops (see :mod:`mmreward.ops.codebook` for semantics): the
launch wrappers below are the kernels of ``torch.ops.mmreward_triton.<op>`` (same schemas, autograd
and fake kernels as the C++ ops; see :mod:`mmreward.ops.library.codebook`).

Every program owns BLOCK_T tokens and streams over the K codes in [BLOCK_T, BLOCK_K] tiles read
through (sB, sL, sK) strides, so [B, L, K] and [B, K, L] (and any view) run without copies; the
tile shape follows the layout (wide along K when codes are contiguous, wide along L when tokens
are). Softmax statistics use a running max (online softmax). bf16 / fp16 are converted to fp32
before any math; float64 stays float64.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from ..library import acc_dtype
from ..library.codebook import grad_like
from ._common import acc_tl, cast_out, register


def _geo(x: Tensor, cd: int):
    """(B, L, K, sB, sL, sK) of a [B, K, L] (cd=1) or [B, L, K] (cd=2) tensor."""
    if cd == 1:
        return x.shape[0], x.shape[2], x.shape[1], x.stride(0), x.stride(2), x.stride(1)
    return x.shape[0], x.shape[1], x.shape[2], x.stride(0), x.stride(1), x.stride(2)


def _cd(class_dim: int) -> int:
    if class_dim not in (1, 2, -1):
        raise ValueError(f"class_dim must be 1 or -1, got {class_dim}")
    return 1 if class_dim == 1 else 2


def _blocks(K: int, sK: int, sL: int):
    """(BLOCK_T tokens, BLOCK_K codes) per tile: wide along whichever dim is contiguous. The
    interpreter pays per operation rather than per element: 8x the tokens per program there."""
    kp = triton.next_power_of_2(K)
    tokens = 8 if isinstance(_stats_kernel, InterpretedFunction) else 1
    if sK != 1 and sL == 1:  # tokens contiguous: wide along L
        return 64 * tokens, min(kp, 32)
    return 16 * tokens, min(kp, 256)


def _mask_arg(mask: Optional[Tensor], x: Tensor):
    if mask is None:
        return x, False  # dummy pointer, never read
    return mask.contiguous().view(torch.uint8), True


@triton.jit
def _tok_offsets(pid, N, L, sB, sL, BLOCK_T: tl.constexpr):
    i = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    valid = i < N
    ii = tl.where(valid, i, 0).to(tl.int64)
    b = ii // L
    l = ii - b * L
    return i, ii, valid, b * sB + l * sL


# ------------------------------------------------------------------------------------------------
# softmax statistics (entropy, NLL)
# ------------------------------------------------------------------------------------------------
@triton.jit
def _stats_kernel(
    x_ptr, t_ptr, m_ptr, o1_ptr, o2_ptr, o3_ptr,
    N, L, K, sB, sL, sK,
    HAS_MASK: tl.constexpr, IS_NLL: tl.constexpr, ACC: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    i, ii, valid, base = _tok_offsets(pid, N, L, sB, sL, BLOCK_T)
    keep = valid
    if HAS_MASK:
        keep = keep & (tl.load(m_ptr + ii, mask=valid, other=0) != 0)
    m = tl.full([BLOCK_T], float("-inf"), ACC)
    s = tl.zeros([BLOCK_T], ACC)
    t = tl.zeros([BLOCK_T], ACC)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        lm = keep[:, None] & (kk < K)[None, :]
        ptrs = x_ptr + base[:, None] + kk.to(tl.int64)[None, :] * sK
        x = tl.load(ptrs, mask=lm, other=float("-inf")).to(ACC)
        cm = tl.max(x, 1)
        mn = tl.maximum(m, cm)
        mn = tl.where(mn == float("-inf"), 0.0, mn)  # nothing seen yet (masked / all -inf so far)
        first = m == float("-inf")
        d = tl.where(first, 0.0, mn - tl.where(first, 0.0, m)).to(ACC)
        sc = tl.exp(-d)
        t = sc * (t - d * s)
        s = sc * s
        m = tl.where(first & (cm == float("-inf")), m, mn)
        dz = x - mn[:, None]
        dz = tl.where(dz < -1000.0, -1000.0, dz)  # -inf codes / padding: e = 0, e * dz = 0
        e = tl.where(lm, tl.exp(dz), 0.0)
        s += tl.sum(e, 1)
        t += tl.sum(e * dz, 1)
    s = tl.where(keep, s, 1.0)
    s = tl.where(m == float("-inf"), float("nan"), s)  # all -inf: NaN, as log_softmax gives
    ls = tl.log(s)
    tm = t / s
    if IS_NLL:
        y = tl.load(t_ptr + ii, mask=keep, other=0)
        zy = tl.load(x_ptr + base + y.to(tl.int64) * sK, mask=keep, other=0.0).to(ACC)
        lse = m + ls
        tl.store(o1_ptr + ii, tl.where(keep, lse - zy, 0.0), mask=valid)
        tl.store(o2_ptr + ii, tl.where(keep, lse, 0.0), mask=valid)
    else:
        tl.store(o1_ptr + ii, tl.where(keep, ls - tm, 0.0), mask=valid)
        tl.store(o2_ptr + ii, tl.where(keep, m + ls, 0.0), mask=valid)
        tl.store(o3_ptr + ii, tl.where(keep, m + tm, 0.0), mask=valid)


@triton.jit
def _softmax_bwd_kernel(
    x_ptr, y_ptr, g_ptr, lse_ptr, mu_ptr, t_ptr, m_ptr,
    N, L, K, sB, sL, sK, oB, oL, oK,
    HAS_MASK: tl.constexpr, IS_NLL: tl.constexpr, ACC: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """entropy: dz = g p (mu - z);  nll: dz = g (p - onehot(target)),  p = exp(z - lse)."""
    pid = tl.program_id(0)
    i, ii, valid, base = _tok_offsets(pid, N, L, sB, sL, BLOCK_T)
    b = ii // L
    obase = b * oB + (ii - b * L) * oL
    keep = valid
    if HAS_MASK:
        keep = keep & (tl.load(m_ptr + ii, mask=valid, other=0) != 0)
    g = tl.where(keep, tl.load(g_ptr + ii, mask=valid, other=0.0).to(ACC), 0.0)
    lse = tl.load(lse_ptr + ii, mask=valid, other=0.0).to(ACC)
    if IS_NLL:
        y = tl.load(t_ptr + ii, mask=valid, other=-1).to(tl.int64)
    else:
        mu = tl.load(mu_ptr + ii, mask=valid, other=0.0).to(ACC)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        lm = valid[:, None] & (kk < K)[None, :]
        z = tl.load(x_ptr + base[:, None] + kk.to(tl.int64)[None, :] * sK, mask=lm, other=0.0).to(ACC)
        p = tl.exp(z - lse[:, None])
        if IS_NLL:
            v = g[:, None] * (p - tl.where(kk.to(tl.int64)[None, :] == y[:, None], 1.0, 0.0))
        else:
            v = g[:, None] * p * (mu[:, None] - z)
        v = tl.where(keep[:, None], v, 0.0)
        optr = y_ptr + obase[:, None] + kk.to(tl.int64)[None, :] * oK
        tl.store(optr, cast_out(v, y_ptr), mask=lm)


# ------------------------------------------------------------------------------------------------
# pairwise sums (KL, log-categorical)
# ------------------------------------------------------------------------------------------------
@triton.jit
def _pair_fwd_kernel(
    a_ptr, b_ptr, m_ptr, o_ptr,
    N, L, K, aB, aL, aK, bB, bL, bK,
    HAS_MASK: tl.constexpr, IS_KL: tl.constexpr, ACC: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    i, ii, valid, abase = _tok_offsets(pid, N, L, aB, aL, BLOCK_T)
    bt = ii // L
    bbase = bt * bB + (ii - bt * L) * bL
    keep = valid
    if HAS_MASK:
        keep = keep & (tl.load(m_ptr + ii, mask=valid, other=0) != 0)
    acc = tl.zeros([BLOCK_T], ACC)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        k64 = kk.to(tl.int64)[None, :]
        lm = keep[:, None] & (kk < K)[None, :]
        a = tl.load(a_ptr + abase[:, None] + k64 * aK, mask=lm, other=0.0).to(ACC)
        b = tl.load(b_ptr + bbase[:, None] + k64 * bK, mask=lm, other=0.0).to(ACC)
        if IS_KL:
            f = tl.exp(a) * (a - b)
        else:
            f = tl.exp(a) * b
        acc += tl.sum(tl.where(lm, f, 0.0), 1)
    tl.store(o_ptr + ii, tl.where(keep, acc, 0.0), mask=valid)


@triton.jit
def _pair_bwd_kernel(
    a_ptr, b_ptr, g_ptr, m_ptr, ga_ptr, gb_ptr,
    N, L, K, aB, aL, aK, bB, bL, bK, gaB, gaL, gaK, gbB, gbL, gbK,
    HAS_MASK: tl.constexpr, IS_KL: tl.constexpr, ACC: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    i, ii, valid, abase = _tok_offsets(pid, N, L, aB, aL, BLOCK_T)
    bt = ii // L
    lt = ii - bt * L
    bbase = bt * bB + lt * bL
    gabase = bt * gaB + lt * gaL
    gbbase = bt * gbB + lt * gbL
    keep = valid
    if HAS_MASK:
        keep = keep & (tl.load(m_ptr + ii, mask=valid, other=0) != 0)
    g = tl.where(keep, tl.load(g_ptr + ii, mask=valid, other=0.0).to(ACC), 0.0)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        k64 = kk.to(tl.int64)[None, :]
        lm = valid[:, None] & (kk < K)[None, :]
        a = tl.load(a_ptr + abase[:, None] + k64 * aK, mask=lm, other=0.0).to(ACC)
        b = tl.load(b_ptr + bbase[:, None] + k64 * bK, mask=lm, other=0.0).to(ACC)
        e = g[:, None] * tl.exp(a)
        if IS_KL:
            da = e * (a - b + 1.0)
            db = -e
        else:
            da = e * b
            db = e
        z = keep[:, None]
        da = tl.where(z, da, 0.0)
        db = tl.where(z, db, 0.0)
        tl.store(ga_ptr + gabase[:, None] + k64 * gaK, cast_out(da, ga_ptr), mask=lm)
        tl.store(gb_ptr + gbbase[:, None] + k64 * gbK, cast_out(db, gb_ptr), mask=lm)


# ------------------------------------------------------------------------------------------------
# custom ops
# ------------------------------------------------------------------------------------------------
def _stats(x: Tensor, target: Optional[Tensor], class_dim: int, mask: Optional[Tensor]):
    cd = _cd(class_dim)
    B, L, K, sB, sL, sK = _geo(x, cd)
    N = B * L
    acc = acc_dtype(x.dtype)
    o1 = x.new_empty((B, L), dtype=acc)
    o2 = x.new_empty((B, L), dtype=acc)
    o3 = x.new_empty((B, L), dtype=acc)
    if N == 0:
        return o1, o2, o3
    mptr, has_mask = _mask_arg(mask, x)
    t = target.contiguous().long() if target is not None else o1
    BT, BK = _blocks(K, sK, sL)
    _stats_kernel[(triton.cdiv(N, BT),)](
        x, t, mptr, o1, o2, o3, N, L, K, sB, sL, sK,
        HAS_MASK=has_mask, IS_NLL=target is not None, ACC=acc_tl(x.dtype), BLOCK_T=BT, BLOCK_K=BK,
    )
    return o1, o2, o3


def _softmax_bwd(grad, x, lse, mu, target, class_dim, mask):
    cd = _cd(class_dim)
    B, L, K, sB, sL, sK = _geo(x, cd)
    out = grad_like(x, cd)
    N = B * L
    if N == 0 or K == 0:
        return out.zero_()
    _, _, _, oB, oL, oK = _geo(out, cd)
    acc = acc_dtype(x.dtype)
    g = grad.to(acc).contiguous()
    ls = lse.to(acc).contiguous()
    m_ = mu.to(acc).contiguous() if mu is not None else ls
    t = target.contiguous().long() if target is not None else ls
    mptr, has_mask = _mask_arg(mask, x)
    BT, BK = _blocks(K, sK, sL)
    _softmax_bwd_kernel[(triton.cdiv(N, BT),)](
        x, out, g, ls, m_, t, mptr, N, L, K, sB, sL, sK, oB, oL, oK,
        HAS_MASK=has_mask, IS_NLL=target is not None, ACC=acc_tl(x.dtype), BLOCK_T=BT, BLOCK_K=BK,
    )
    return out


def _pair_fwd(a, b, class_dim, mask, is_kl):
    cd = _cd(class_dim)
    B, L, K, aB, aL, aK = _geo(a, cd)
    _, _, _, bB, bL, bK = _geo(b, cd)
    out = a.new_empty((B, L), dtype=acc_dtype(a.dtype))
    N = B * L
    if N == 0:
        return out
    mptr, has_mask = _mask_arg(mask, a)
    BT, BK = _blocks(K, aK, aL)
    _pair_fwd_kernel[(triton.cdiv(N, BT),)](
        a, b, mptr, out, N, L, K, aB, aL, aK, bB, bL, bK,
        HAS_MASK=has_mask, IS_KL=is_kl, ACC=acc_tl(a.dtype), BLOCK_T=BT, BLOCK_K=BK,
    )
    return out


def _pair_bwd(grad, a, b, class_dim, mask, is_kl):
    cd = _cd(class_dim)
    B, L, K, aB, aL, aK = _geo(a, cd)
    _, _, _, bB, bL, bK = _geo(b, cd)
    ga = grad_like(a, cd)
    gb = grad_like(b, cd)
    N = B * L
    if N == 0 or K == 0:
        return ga.zero_(), gb.zero_()
    _, _, _, gaB, gaL, gaK = _geo(ga, cd)
    _, _, _, gbB, gbL, gbK = _geo(gb, cd)
    g = grad.to(acc_dtype(a.dtype)).contiguous()
    mptr, has_mask = _mask_arg(mask, a)
    BT, BK = _blocks(K, aK, aL)
    _pair_bwd_kernel[(triton.cdiv(N, BT),)](
        a, b, g, mptr, ga, gb, N, L, K, aB, aL, aK, bB, bL, bK, gaB, gaL, gaK, gbB, gbL, gbK,
        HAS_MASK=has_mask, IS_KL=is_kl, ACC=acc_tl(a.dtype), BLOCK_T=BT, BLOCK_K=BK,
    )
    return ga, gb


def codebook_entropy(logits: Tensor, class_dim: int, mask: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    return _stats(logits, None, class_dim, mask)


def codebook_entropy_backward(
    grad: Tensor, logits: Tensor, lse: Tensor, mu: Tensor, class_dim: int, mask: Optional[Tensor]
) -> Tensor:
    return _softmax_bwd(grad, logits, lse, mu, None, class_dim, mask)


def codebook_nll(logits: Tensor, target: Tensor, class_dim: int, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    nll, lse, _ = _stats(logits, target, class_dim, mask)
    return nll, lse


def codebook_nll_backward(
    grad: Tensor, logits: Tensor, target: Tensor, lse: Tensor, class_dim: int, mask: Optional[Tensor]
) -> Tensor:
    return _softmax_bwd(grad, logits, lse, None, target, class_dim, mask)


def categorical_kl(log_a: Tensor, log_b: Tensor, class_dim: int, mask: Optional[Tensor]) -> Tensor:
    return _pair_fwd(log_a, log_b, class_dim, mask, True)


def categorical_kl_backward(
    grad: Tensor, log_a: Tensor, log_b: Tensor, class_dim: int, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    return _pair_bwd(grad, log_a, log_b, class_dim, mask, True)


def log_categorical(log_x0: Tensor, log_prob: Tensor, class_dim: int, mask: Optional[Tensor]) -> Tensor:
    return _pair_fwd(log_x0, log_prob, class_dim, mask, False)


def log_categorical_backward(
    grad: Tensor, log_x0: Tensor, log_prob: Tensor, class_dim: int, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    return _pair_bwd(grad, log_x0, log_prob, class_dim, mask, False)


register(codebook_entropy, codebook_entropy_backward, codebook_nll, codebook_nll_backward, categorical_kl,
         categorical_kl_backward, log_categorical, log_categorical_backward)
