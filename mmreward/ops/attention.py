"""Multi-head attention for small head widths.

* :func:`attention` — ``softmax(scale·q kᵀ) v`` per batch and head, for ``q`` [B, H, Lq, D],
  ``k`` [B, H, Lk, D], ``v`` [B, H, Lk, Dv]; returns [B, Lq, H, Dv] (the heads interleaved, so
  ``out.flatten(2)`` feeds an output projection without a copy), in the inputs' dtype.

On the CPU the C++ kernel takes 16 queries per SIMD block and walks the keys twice, keeping the
block's scores in a small buffer (in L1 up to ~500 keys), which pays off where heads are narrow:
VQ-Diffusion's official models use 16 heads of width 8, where PyTorch's CPU attention streams a
score matrix 8–16× the size of its inputs through memory (``benchmarks/bench_attention.py``). On a GPU the op runs PyTorch's fused
``scaled_dot_product_attention``. No mask, no dropout (callers that need them use PyTorch's).
Differentiable w.r.t. ``q``, ``k`` and ``v``; accumulates in float32 (float64 for float64).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.autograd.forward_ad as _fwad
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import _backend, _dispatch, _validate
from .library import attention as _lib  # noqa: F401  (defines the family's specs)

__all__ = ["attention"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(scale · q kᵀ) v`` per (batch, head) as [B, Lq, H, Dv] in ``q``'s dtype.

    ``q`` [B, H, Lq, D], ``k`` [B, H, Lk, D], ``v`` [B, H, Lk, Dv]: one floating dtype (under autocast,
    mixed dtypes are cast to the autocast dtype, as ``scaled_dot_product_attention`` does) and device,
    any strides (e.g. heads split off a fused projection by ``view`` + ``transpose``), Lk ≥ 1,
    D ≥ 1. ``scale`` defaults to 1/√D, as in ``scaled_dot_product_attention``.
    """
    op = "attention_heads"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _validate.check_tensor(op, name, t, ndim=(4,))
    _validate.check_same_device(op, q=q, k=k, v=v)
    if not (q.dtype == k.dtype == v.dtype) and q.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(
            q.device.type):
        # under autocast, q from an autocast Linear (bf16) and k / v kept in fp32 are what
        # scaled_dot_product_attention accepts (it casts all three to the autocast dtype): do the same
        dt = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Lq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        raise ValueError(f"{op}: q, k, v must share [B, H], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[3] != D:
        raise ValueError(f"{op}: q and k must have the same head width D, got {D} and {k.shape[3]}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"{op}: k and v must have the same length Lk, got {k.shape[2]} and {v.shape[2]}")
    if k.shape[2] < 1 or D < 1:
        raise ValueError(f"{op}: needs at least one key (Lk ≥ 1) and D ≥ 1, got Lk {k.shape[2]}, D {D}")
    if scale is None:
        scale = D ** -0.5
    elif not _validate.is_real(scale) or not float(scale) == float(scale):
        raise ValueError(f"{op}: scale must be a real number, got {scale!r}")
    with sdpa_kernel([SDPBackend.MATH]) if _higher_order_reference(q, k, v) else contextlib.nullcontext():
        out = _dispatch.call(op, q.device, q, k, v, float(scale))
    if _nan_rows_may_be_lost(op, q, k, D):
        # PyTorch's CPU attention (the reference, and the C++ op's path for D > 8) returns a finite,
        # zero row for a query with a NaN score; the softmax formula, the D <= 8 kernel and the docs
        # give NaN: take the formula's NaNs (computed only when q or k holds a NaN / inf)
        acc = out.dtype
        ref = (torch.softmax(q.to(acc) @ k.to(acc).transpose(-1, -2) * float(scale), -1) @ v.to(acc)).transpose(1, 2)
        out = torch.where(torch.isnan(ref), ref, out)
    return out if out.dtype == q.dtype else out.to(q.dtype)


def _higher_order_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """The reference (PyTorch's SDPA) runs where higher-order or forward-mode gradients may be taken:
    under torch.func transforms (hessian, jacfwd, jvp), with forward-AD dual tensors, or with the
    reference forced and grads required (the backend the docs name for gradient penalties). SDPA's
    fused CPU / GPU kernels have no double backward and no forward-mode formula ("derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"); its math
    kernel, the formula written in ATen ops, has both."""
    if torch.compiler.is_compiling():
        return False
    ts = (q, k, v)
    if any(_dispatch._is_functorch(t) for t in ts):
        return True
    if _fwad._current_level >= 0 and any(_dispatch._has_tangent(t) for t in ts):
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts) and _backend.forced_backend() == "reference"


def _nan_rows_may_be_lost(op: str, q: torch.Tensor, k: torch.Tensor, D: int) -> bool:
    if q.device.type != "cpu" or not (_validate.has_data(q) and _validate.has_data(k)):
        return False
    if _validate.is_vmapped(q) or _validate.is_vmapped(k):
        return True  # values cannot be read under vmap: always take the formula's NaNs
    if D <= 8 and _backend.forced_backend() in (None, "cpp") and _backend.select(op, q.device) == "cpp" and not (
            _dispatch._is_functorch(q) or _dispatch._is_functorch(k)):
        return False  # the C++ kernel itself gives NaN rows
    # one host read (CPU); a sum is NaN / inf if any element is (a finite overflow only costs the formula)
    return not bool(torch.isfinite(q.sum() + k.sum()))
