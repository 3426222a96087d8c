"""Op library of the VQ-codebook ops (see :mod:`mmreward.ops.codebook` for the semantics):
pure-PyTorch references, fake kernels and sample inputs of

* ``codebook_entropy(logits, class_dim, mask?) -> (entropy, lse, mu)``   per token [B, L]
* ``codebook_nll(logits, target, class_dim, mask?) -> (nll, lse)``
* ``categorical_kl(log_a, log_b, class_dim, mask?) -> kl``
* ``log_categorical(log_x0, log_prob, class_dim, mask?) -> out``

and their ``_backward`` ops (gradients in the inputs' layout, see :func:`grad_like`).
``class_dim``: 1 ([B, K, L]) or 2 / -1 ([B, L, K]); ``mask``: bool [B, L] or None (masked tokens give
0). The references are written the way Diffusion Reward / VQ-Diffusion write them (``log_softmax``,
``exp``, multiply, sum), accumulated in float32 (float64 stays float64); autograd does the backward.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import OpSpec, acc_dtype, define


def _tokens_last(x: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[B, L, K] view (no copy) of a [B, K, L] (class_dim=1) or [B, L, K] (class_dim=2) tensor; with a
    mask, masked tokens' logits are replaced by 0 first, so that whatever they hold (NaN / inf) gets a
    zero gradient, as in the kernels (masking only the output sent 0·NaN = NaN back)."""
    x = x.to(acc_dtype(x.dtype))
    x = x.transpose(1, 2) if class_dim == 1 else x
    return x if mask is None else torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _masked(v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    return v if mask is None else torch.where(mask, v, torch.zeros((), dtype=v.dtype, device=v.device))


def codebook_entropy(logits: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]):
    """H = logsumexp(z) - sum softmax(z) z = -sum p log p per token, [B, L]; with logsumexp(z) and
    E_p[z] (what the kernels keep for backward; not differentiable)."""
    z = _tokens_last(logits, class_dim, mask)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    h = -(p * logp).sum(-1)
    with torch.no_grad():
        lse, mu = torch.logsumexp(z, dim=-1), (p * z).sum(-1)
    return _masked(h, mask), _masked(lse, mask), _masked(mu, mask)


def codebook_nll(logits: torch.Tensor, target: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]):
    """logsumexp(z) - z[target] per token, [B, L]; with logsumexp(z) (not differentiable)."""
    z = _tokens_last(logits, class_dim, mask)
    t = target.long()
    if mask is not None:  # targets of masked tokens may be anything (e.g. -100)
        t = torch.where(mask, t, torch.zeros_like(t))
    nll = -torch.log_softmax(z, dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        lse = torch.logsumexp(z, dim=-1)
    return _masked(nll, mask), _masked(lse, mask)


def categorical_kl(
    log_a: torch.Tensor, log_b: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """sum exp(a) (a - b) per token, [B, L] (VQ-Diffusion's multinomial_kl)."""
    a = _tokens_last(log_a, class_dim, mask)
    b = _tokens_last(log_b, class_dim, mask)
    return _masked((a.exp() * (a - b)).sum(-1), mask)


def log_categorical(
    log_x0: torch.Tensor, log_prob: torch.Tensor, class_dim: int, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """sum exp(x0) p per token, [B, L] (VQ-Diffusion's log_categorical)."""
    a = _tokens_last(log_x0, class_dim, mask)
    b = _tokens_last(log_prob, class_dim, mask)
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


# ------------------------------------------------------------------------------------------------
# gradient layout and fake kernels
# ------------------------------------------------------------------------------------------------
def _bl(x: torch.Tensor, class_dim: int) -> tuple[int, int]:
    return (x.shape[0], x.shape[2]) if class_dim == 1 else (x.shape[0], x.shape[1])


def _tok_empty(x: torch.Tensor, class_dim: int) -> torch.Tensor:
    return x.new_empty(_bl(x, class_dim), dtype=acc_dtype(x.dtype))


def _dense(x: torch.Tensor) -> bool:
    """Tensor::is_non_overlapping_and_dense (what empty_like keeps the strides of)."""
    import torch._prims_common as pc

    fn = getattr(pc, "is_non_overlapping_and_dense_or_false", None) or getattr(pc, "is_non_overlapping_and_dense")
    return bool(fn(x))


def grad_like(x: torch.Tensor, class_dim: int) -> torch.Tensor:
    """Gradient buffer in the input's layout (what every backend allocates): empty_like for dense
    inputs; otherwise the dense layout whose token (L) or class (K) dim is contiguous like x's."""
    if _dense(x):
        return torch.empty_like(x)
    B, L = _bl(x, class_dim)
    K = x.shape[1] if class_dim == 1 else x.shape[2]
    sK, sL = (x.stride(1), x.stride(2)) if class_dim == 1 else (x.stride(2), x.stride(1))
    if sL == 1 and sK != 1:
        t = x.new_empty((B, K, L))
        return t if class_dim == 1 else t.transpose(1, 2)
    t = x.new_empty((B, L, K))
    return t.transpose(1, 2) if class_dim == 1 else t


def _fake_entropy(logits, class_dim, mask):
    return _tok_empty(logits, class_dim), _tok_empty(logits, class_dim), _tok_empty(logits, class_dim)


def _fake_entropy_backward(grad, logits, lse, mu, class_dim, mask):
    return grad_like(logits, class_dim)


def _fake_nll(logits, target, class_dim, mask):
    return _tok_empty(logits, class_dim), _tok_empty(logits, class_dim)


def _fake_nll_backward(grad, logits, target, lse, class_dim, mask):
    return grad_like(logits, class_dim)


def _fake_pair(a, b, class_dim, mask):
    return _tok_empty(a, class_dim)


def _fake_pair_backward(grad, a, b, class_dim, mask):
    return grad_like(a, class_dim), grad_like(b, class_dim)


# ------------------------------------------------------------------------------------------------
# sample inputs: both layouts and a transposed view (the kernels pick their tiles from the strides),
# with and without a mask, an odd codebook and one wider than a Triton code block (1025 > 256)
# ------------------------------------------------------------------------------------------------
B, L = 2, 5


def _layouts(K):
    """(class_dim, shape, view) triples: [B, L, K], [B, K, L], and [B, K, L] memory viewed as [B, L, K]."""
    return [(2, (B, L, K), None), (1, (B, K, L), None), (2, (B, K, L), lambda x: x.transpose(1, 2))]


def _logits(shape, view, dtype, g, scale=2.0):
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    return view(x) if view else x


def _log_probs(shape, view, dtype, g, class_dim):
    x = _logits(shape, view, torch.float64, g)
    return torch.log_softmax(x, 1 if class_dim == 1 else 2).clamp(-70, 0).to(dtype)


def _samples(dtype, make):
    g = torch.Generator().manual_seed(0)
    out = []
    for K in (37, 1025):
        for i, (cd, shape, view) in enumerate(_layouts(K)):
            mask = (torch.rand(B, L, generator=g) < 0.7) if (i + K) % 2 else None
            out.append(make(g, cd, shape, view, mask, K))
    return out


def _entropy_samples(dtype):
    return _samples(dtype, lambda g, cd, shape, view, mask, K: (
        _logits(shape, view, dtype, g).requires_grad_(), cd, mask))


def _nll_samples(dtype):
    return _samples(dtype, lambda g, cd, shape, view, mask, K: (
        _logits(shape, view, dtype, g).requires_grad_(), torch.randint(0, K, (B, L), generator=g), cd, mask))


def _pair_samples(dtype):
    return _samples(dtype, lambda g, cd, shape, view, mask, K: (
        _log_probs(shape, view, dtype, g, cd).requires_grad_(), _log_probs(shape, view, dtype, g, cd).requires_grad_(),
        cd, mask))


def _entropy_backward_samples(dtype):
    def make(g, cd, shape, view, mask, K):
        x = _logits(shape, view, dtype, g)
        _, lse, mu = codebook_entropy(x, cd, mask)
        return torch.randn(B, L, generator=g, dtype=lse.dtype), x, lse, mu, cd, mask

    return _samples(dtype, make)


def _nll_backward_samples(dtype):
    def make(g, cd, shape, view, mask, K):
        x, t = _logits(shape, view, dtype, g), torch.randint(0, K, (B, L), generator=g)
        _, lse = codebook_nll(x, t, cd, mask)
        return torch.randn(B, L, generator=g, dtype=lse.dtype), x, t, lse, cd, mask

    return _samples(dtype, make)


def _pair_backward_samples(dtype):
    return _samples(dtype, lambda g, cd, shape, view, mask, K: (
        torch.randn(B, L, generator=g, dtype=acc_dtype(dtype)), _log_probs(shape, view, dtype, g, cd),
        _log_probs(shape, view, dtype, g, cd), cd, mask))


define("codebook", [
    OpSpec("codebook_entropy", _fake_entropy, _entropy_samples, codebook_entropy),
    OpSpec("codebook_entropy_backward", _fake_entropy_backward, _entropy_backward_samples),
    OpSpec("codebook_nll", _fake_nll, _nll_samples, codebook_nll),
    OpSpec("codebook_nll_backward", _fake_nll_backward, _nll_backward_samples),
    OpSpec("categorical_kl", _fake_pair, _pair_samples, categorical_kl),
    OpSpec("categorical_kl_backward", _fake_pair_backward, _pair_backward_samples),
    OpSpec("log_categorical", _fake_pair, _pair_samples, log_categorical),
    OpSpec("log_categorical_backward", _fake_pair_backward, _pair_backward_samples),
])
