"""Attention op family: ``attention_heads(q, k, v, scale) -> out`` and its ``_backward``.

``q`` [B, H, Lq, D], ``k`` [B, H, Lk, D], ``v`` [B, H, Lk, Dv] (any strides), ``out`` [B, Lq, H, Dv]
(the heads already interleaved for the output projection), in the accumulation dtype. The
reference is PyTorch's ``scaled_dot_product_attention`` in that dtype; it is also what runs on a
GPU (``gpu_kernels=False``: the family has CPU kernels only, for small head widths where PyTorch's
CPU attention is memory-bound).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import OpSpec, acc_dtype, define


def attention_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale·q kᵀ) v per (batch, head), [B, Lq, H, Dv] in the accumulation dtype."""
    acc = acc_dtype(q.dtype)
    out = F.scaled_dot_product_attention(q.to(acc), k.to(acc), v.to(acc), scale=scale)  # (B, H, Lq, Dv)
    return out.transpose(1, 2)


def _fake_attention(q, k, v, scale):
    B, H, Lq, _ = q.shape
    return q.new_empty((B, Lq, H, v.shape[-1]), dtype=acc_dtype(q.dtype))


def _fake_attention_backward(grad, q, k, v, scale):
    return torch.empty_like(q, memory_format=torch.contiguous_format), torch.empty_like(
        k, memory_format=torch.contiguous_format), torch.empty_like(v, memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------------------
# sample inputs: the official VQ-Diffusion heads (D 8, self and cross), heads split off a fused
# projection (strided views), query counts that leave a partial 16-lane block, one query, one key,
# a head wider than the kernel's register block (40 > 32), Dv != D, and large scores
# ------------------------------------------------------------------------------------------------
_SHAPES = [  # (B, H, Lq, Lk, D, Dv, score scale)
    (2, 3, 5, 5, 8, 8, 1.0),
    (1, 2, 17, 33, 8, 8, 3.0),
    (2, 1, 1, 7, 4, 6, 1.0),
    (1, 2, 20, 1, 8, 8, 1.0),
    (1, 1, 3, 9, 40, 40, 1.0),
    (1, 2, 16, 4, 2, 3, 30.0),
]


def _qkv(shape, dtype, g, fused: bool):
    B, H, Lq, Lk, D, Dv, amp = shape
    if fused and Lq == Lk and D == Dv:  # q, k, v: views of one [B, L, 3·H·D] projection, as a model splits them
        x = torch.randn(B, Lq, 3, H, D, generator=g, dtype=torch.float64).to(dtype)
        q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q = torch.randn(B, H, Lq, D, generator=g, dtype=torch.float64).to(dtype)
        k = torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64).to(dtype)
        v = torch.randn(B, H, Lk, Dv, generator=g, dtype=torch.float64).to(dtype)
    return q * amp, k, v


def _attention_samples(dtype):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, shape in enumerate(_SHAPES):
        q, k, v = _qkv(shape, dtype, g, fused=i == 0)
        out.append((q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), shape[4] ** -0.5))
    return out


def _attention_backward_samples(dtype):
    g = torch.Generator().manual_seed(1)
    out = []
    for i, shape in enumerate(_SHAPES):
        q, k, v = _qkv(shape, dtype, g, fused=i == 0)
        B, H, Lq, _, _, Dv, _ = shape
        grad = torch.randn(B, Lq, H, Dv, generator=g, dtype=torch.float64).to(acc_dtype(dtype))
        out.append((grad, q, k, v, shape[4] ** -0.5))
    return out


define("attention", [
    OpSpec("attention_heads", _fake_attention, _attention_samples, attention_heads, gpu_kernels=False),
    OpSpec("attention_heads_backward", _fake_attention_backward, _attention_backward_samples, gpu_kernels=False),
])
