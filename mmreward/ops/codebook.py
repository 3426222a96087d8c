"""Fused VQ-codebook ops: the inner loop of Diffusion Reward (Huang et al., ECCV 2024), which
estimates the conditional entropy of the next frame under a VQ-Diffusion model (K = 1024 codes,
L = 64 tokens per frame), and the training losses of that model.

Per token (one distribution over the K codes of the class dim):

* :func:`codebook_entropy` — ``H = logsumexp(z) − Σ softmax(z)·z`` of logits ``z``.
* :func:`codebook_nll` — ``logsumexp(z) − z[target]`` (cross-entropy with integer targets).
* :func:`categorical_kl` — ``Σ exp(a)·(a − b)`` of two log-space distributions (VQ-Diffusion's
  ``multinomial_kl``; any K, e.g. 1025 with the mask class).
* :func:`log_categorical` — ``Σ exp(x0)·p`` (VQ-Diffusion's ``log_categorical``).

followed by a per-frame reduction over the L tokens (:func:`frame_reduce`), with an optional token
mask. Shapes:

* inputs: ``[B, L, K]`` with ``class_dim=-1`` (channel-last, default) or ``[B, K, L]`` with
  ``class_dim=1`` (VQ-Diffusion's layout). Any strides: the kernels read through strides, so
  transposed / sliced views are never copied.
* ``mask``: ``[B, L]`` bool (or 0/1 numbers; nonzero = keep), no gradient; masked tokens contribute
  0 (and get zero gradients); their targets may be anything (e.g. -100).
* ``target``: ``[B, L]`` integer codes in ``[0, K)`` (checked on unmasked tokens).
* output: ``reduction="sum"`` (default) → ``[B]`` (sum over unmasked tokens), ``"mean"`` → ``[B]``
  (mean over unmasked tokens, 0 for a frame without any), ``"none"`` → ``[B, L]``.

Precision: float32 results for float32 / bfloat16 / float16 inputs (accumulated in float32) and
float64 for float64 inputs; gradients come back in the input dtype and layout. The kernels do one
streaming pass over the codes (running max, online softmax) and never materialise softmax /
log-softmax tensors; logits of ±1e4 stay finite and accurate.

NaN / inf: the inputs are too large to scan for NaN cheaply, so they are not checked: a NaN in a
token's logits makes that token's value (and its frame's sum) NaN. ``-inf`` logits: the fused
forward kernels treat them as zero-probability codes (the reference, like the official code, gives
NaN), but their gradients are not defined; a token whose logits are all ``-inf`` is NaN. Use a large
finite negative value (e.g. -1e4) to mask codes. ``categorical_kl`` / ``log_categorical`` expect
finite log-probabilities: clamp them as VQ-Diffusion does (``[−70, 0]``).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _backend, _validate
from .reference import codebook as _ref

__all__ = ["codebook_entropy", "codebook_nll", "categorical_kl", "log_categorical", "frame_reduce"]

FRAME_REDUCTIONS = ("none", "sum", "mean")


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def _class_dim(op: str, class_dim) -> int:
    if isinstance(class_dim, bool) or class_dim not in (1, 2, -1):
        raise ValueError(f"{op}: `class_dim` must be 1 ([B, K, L]) or -1 ([B, L, K]), got {class_dim!r}")
    return 1 if class_dim == 1 else 2


def _check_reduction(op: str, reduction) -> str:
    if reduction not in FRAME_REDUCTIONS:
        raise ValueError(f"{op}: `reduction` must be one of {FRAME_REDUCTIONS}, got {reduction!r}")
    return reduction


def _geometry(op: str, name: str, x: torch.Tensor, cd: int) -> tuple[int, int, int]:
    _validate.check_tensor(op, name, x, ndim=(3,))
    B, L, K = (x.shape[0], x.shape[2], x.shape[1]) if cd == 1 else tuple(x.shape)
    layout = "[B, K, L]" if cd == 1 else "[B, L, K]"
    for n, v in (("B", B), ("L", L), ("K", K)):
        if v == 0:
            raise ValueError(f"{op}: `{name}` is empty ({layout} = {list(x.shape)}, {n} = 0); nothing to compute")
    return B, L, K


def _prep_mask(op: str, mask, B: int, L: int, device: torch.device) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{op}: `mask` must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.shape != (B, L):
        raise ValueError(f"{op}: `mask` has shape {tuple(mask.shape)}, expected [B, L] = [{B}, {L}]")
    if mask.device != device:
        raise ValueError(f"{op}: `mask` is on {mask.device} but the inputs are on {device}")
    if mask.dtype != torch.bool:
        if mask.is_complex():
            raise TypeError(f"{op}: `mask` must be bool (or real 0/1 numbers), got {mask.dtype}")
        mask = mask != 0
    return mask.detach().contiguous()


def _prep_target(op: str, target, B: int, L: int, K: int, device, mask) -> torch.Tensor:
    _validate.check_int_tensor(op, "target", target)
    if target.shape != (B, L):
        raise ValueError(f"{op}: `target` has shape {tuple(target.shape)}, expected [B, L] = [{B}, {L}]")
    if target.device != device:
        raise ValueError(f"{op}: `target` is on {target.device} but `logits` are on {device}")
    target = target.long().contiguous()
    if not torch.compiler.is_compiling():
        t = target if mask is None else torch.where(mask, target, torch.zeros_like(target))
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= K:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: `target` has index {bad} out of range [0, {K}) (K = number of codes)")
    return target


def _check_pair(op: str, na: str, a, nb: str, b, cd: int):
    B, L, K = _geometry(op, na, a, cd)
    _validate.check_tensor(op, nb, b, ndim=(3,))
    _validate.check_same_shape(op, **{na: a, nb: b})
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: `{nb}` is {b.dtype} but `{na}` is {a.dtype}")
    _validate.check_same_device(op, **{na: a, nb: b})
    return B, L, K


def _select(op: str, device: torch.device) -> str:
    return _backend.select_cached(op, device)


def _ops(backend: str):
    if backend == "triton":
        from .triton import codebook as tri  # lazy: only when the triton backend is chosen

        return tri.ops
    return torch.ops.mmreward


# ------------------------------------------------------------------------------------------------
# public ops
# ------------------------------------------------------------------------------------------------
def frame_reduce(
    values: torch.Tensor, mask: Optional[torch.Tensor] = None, reduction: str = "sum"
) -> torch.Tensor:
    """Reduce per-token values ``values`` [B, L] over each frame's L tokens.

    ``mask`` [B, L] (bool, nonzero = keep) or None. ``reduction``: ``"sum"`` → [B], ``"mean"`` → [B]
    (mean over the unmasked tokens; 0 for a frame without any), ``"none"`` → [B, L] with masked
    tokens set to 0. Differentiable w.r.t. ``values`` (plain PyTorch: [B, L] is tiny next to the
    [B, L, K] inputs of the other ops, so there is nothing to fuse).
    """
    op = "frame_reduce"
    _validate.check_tensor(op, "values", values, ndim=(2,))
    B, L = values.shape
    if B == 0 or L == 0:
        raise ValueError(f"{op}: `values` is empty (shape {tuple(values.shape)}); nothing to reduce")
    _check_reduction(op, reduction)
    m = _prep_mask(op, mask, B, L, values.device)
    return _ref.frame_reduce(values, m, reduction)


def _finish(tok: torch.Tensor, mask: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    # `tok` is already 0 at masked tokens; only the mean needs the mask again (token counts).
    if reduction == "none":
        return tok
    if reduction == "sum":
        return tok.sum(1)
    return _ref.frame_reduce(tok, mask, "mean")


def codebook_entropy(
    logits: torch.Tensor,
    *,
    class_dim: int = -1,
    mask: Optional[torch.Tensor] = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Entropy of softmax(logits) per token, reduced per frame.

    ``logits``: [B, L, K] (``class_dim=-1``) or [B, K, L] (``class_dim=1``), any float dtype.
    ``mask``: [B, L] or None. Returns [B] (``reduction="sum"`` / ``"mean"``) or [B, L] (``"none"``),
    float32 (float64 for float64 logits). Differentiable w.r.t. ``logits``.
    """
    op = "codebook_entropy"
    cd = _class_dim(op, class_dim)
    _check_reduction(op, reduction)
    B, L, K = _geometry(op, "logits", logits, cd)
    m = _prep_mask(op, mask, B, L, logits.device)
    backend = _select(op, logits.device)
    if backend == "reference":
        tok = _ref.codebook_entropy(logits, cd, m)
    else:
        tok = _ops(backend).codebook_entropy(logits, cd, m)[0]
    return _finish(tok, m, reduction)


def codebook_nll(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_dim: int = -1,
    mask: Optional[torch.Tensor] = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Negative log-likelihood ``logsumexp(z) − z[target]`` per token, reduced per frame.

    ``logits``: [B, L, K] (``class_dim=-1``) or [B, K, L] (``class_dim=1``); ``target``: [B, L]
    integer codes in [0, K) (any value at masked tokens). Returns [B] or [B, L] (``"none"``), float32
    (float64 for float64 logits). Differentiable w.r.t. ``logits``.
    """
    op = "codebook_nll"
    cd = _class_dim(op, class_dim)
    _check_reduction(op, reduction)
    B, L, K = _geometry(op, "logits", logits, cd)
    m = _prep_mask(op, mask, B, L, logits.device)
    t = _prep_target(op, target, B, L, K, logits.device, m)
    backend = _select(op, logits.device)
    if backend == "reference":
        tok = _ref.codebook_nll(logits, t, cd, m)
    else:
        if m is not None:
            t = torch.where(m, t, torch.zeros_like(t))
        tok = _ops(backend).codebook_nll(logits, t, cd, m)[0]
    return _finish(tok, m, reduction)


def categorical_kl(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    *,
    class_dim: int = -1,
    mask: Optional[torch.Tensor] = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """KL(a ‖ b) = Σ exp(a)·(a − b) per token of two log-space distributions, reduced per frame.

    ``log_a``, ``log_b``: same shape and dtype, [B, L, K] (``class_dim=-1``) or [B, K, L]
    (``class_dim=1``); K is arbitrary (e.g. 1025 with VQ-Diffusion's mask class). Inputs are used as
    given (not normalised); clamp them to [−70, 0] as VQ-Diffusion does. Returns [B] or [B, L],
    float32 (float64 for float64). Differentiable w.r.t. both inputs.
    """
    op = "categorical_kl"
    cd = _class_dim(op, class_dim)
    _check_reduction(op, reduction)
    B, L, K = _check_pair(op, "log_a", log_a, "log_b", log_b, cd)
    m = _prep_mask(op, mask, B, L, log_a.device)
    backend = _select(op, log_a.device)
    if backend == "reference":
        tok = _ref.categorical_kl(log_a, log_b, cd, m)
    else:
        tok = _ops(backend).categorical_kl(log_a, log_b, cd, m)
    return _finish(tok, m, reduction)


def log_categorical(
    log_x0: torch.Tensor,
    log_prob: torch.Tensor,
    *,
    class_dim: int = -1,
    mask: Optional[torch.Tensor] = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Σ exp(log_x0)·log_prob per token (VQ-Diffusion's ``log_categorical``), reduced per frame.

    ``log_x0``, ``log_prob``: same shape and dtype, [B, L, K] (``class_dim=-1``) or [B, K, L]
    (``class_dim=1``). Returns [B] or [B, L], float32 (float64 for float64). Differentiable w.r.t.
    both inputs.
    """
    op = "log_categorical"
    cd = _class_dim(op, class_dim)
    _check_reduction(op, reduction)
    B, L, K = _check_pair(op, "log_x0", log_x0, "log_prob", log_prob, cd)
    m = _prep_mask(op, mask, B, L, log_x0.device)
    backend = _select(op, log_x0.device)
    if backend == "reference":
        tok = _ref.log_categorical(log_x0, log_prob, cd, m)
    else:
        tok = _ops(backend).log_categorical(log_x0, log_prob, cd, m)
    return _finish(tok, m, reduction)


# ------------------------------------------------------------------------------------------------
# fake kernels + autograd, shared by the C++ ops (torch.ops.mmreward) and the Triton custom ops
# (torch.ops.mmreward_triton): same schemas.
#   codebook_entropy(logits, class_dim, mask) -> (H, lse, mu)         H, lse, mu: [B, L] acc dtype
#   codebook_nll(logits, target, class_dim, mask) -> (nll, lse)
#   categorical_kl(log_a, log_b, class_dim, mask) -> kl
#   log_categorical(log_x0, log_prob, class_dim, mask) -> out
#   <op>_backward(grad, <inputs>, <saved stats>, class_dim, mask) -> grad(s) in the input layout
# ------------------------------------------------------------------------------------------------
def _bl(x: torch.Tensor, class_dim: int) -> tuple[int, int]:
    return (x.shape[0], x.shape[2]) if class_dim == 1 else (x.shape[0], x.shape[1])


def _tok_empty(x: torch.Tensor, class_dim: int) -> torch.Tensor:
    return x.new_empty(_bl(x, class_dim), dtype=_ref.acc_dtype(x.dtype))


def _dense(x: torch.Tensor) -> bool:
    """Tensor::is_non_overlapping_and_dense (what empty_like keeps the strides of)."""
    import torch._prims_common as pc

    fn = getattr(pc, "is_non_overlapping_and_dense_or_false", None) or getattr(pc, "is_non_overlapping_and_dense")
    return bool(fn(x))


def grad_like(x: torch.Tensor, class_dim: int) -> torch.Tensor:
    """Gradient buffer in the input's layout (what the kernels allocate): empty_like for dense
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


def _entropy_autograd(ns):
    def setup_context(ctx, inputs, output):
        logits, class_dim, mask = inputs
        _, lse, mu = output
        ctx.mark_non_differentiable(lse, mu)
        ctx.class_dim = class_dim
        ctx.save_for_backward(logits, lse, mu, mask)

    def backward(ctx, grad, *_):
        logits, lse, mu, mask = ctx.saved_tensors
        g = getattr(torch.ops, ns).codebook_entropy_backward(grad, logits, lse, mu, ctx.class_dim, mask)
        return g, None, None

    return backward, setup_context


def _nll_autograd(ns):
    def setup_context(ctx, inputs, output):
        logits, target, class_dim, mask = inputs
        _, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.class_dim = class_dim
        ctx.save_for_backward(logits, target, lse, mask)

    def backward(ctx, grad, _):
        logits, target, lse, mask = ctx.saved_tensors
        g = getattr(torch.ops, ns).codebook_nll_backward(grad, logits, target, lse, ctx.class_dim, mask)
        return g, None, None, None

    return backward, setup_context


def _pair_autograd(name):
    def make(ns):
        def setup_context(ctx, inputs, output):
            a, b, class_dim, mask = inputs
            ctx.class_dim = class_dim
            ctx.save_for_backward(a, b, mask)

        def backward(ctx, grad):
            a, b, mask = ctx.saved_tensors
            ga, gb = getattr(getattr(torch.ops, ns), f"{name}_backward")(grad, a, b, ctx.class_dim, mask)
            need = ctx.needs_input_grad
            return (ga if need[0] else None), (gb if need[1] else None), None, None

        return backward, setup_context

    return make


def register_fake_and_autograd(ns: str) -> None:
    """Fake kernels + autograd for the codebook ops of namespace ``ns`` ('mmreward' / 'mmreward_triton')."""
    for name, fake, autograd in (
        ("codebook_entropy", _fake_entropy, _entropy_autograd),
        ("codebook_nll", _fake_nll, _nll_autograd),
        ("categorical_kl", _fake_pair, _pair_autograd("categorical_kl")),
        ("log_categorical", _fake_pair, _pair_autograd("log_categorical")),
    ):
        torch.library.register_fake(f"{ns}::{name}", fake)
        backward, setup_context = autograd(ns)
        torch.library.register_autograd(f"{ns}::{name}", backward, setup_context=setup_context)
    for name, fake in (
        ("codebook_entropy_backward", _fake_entropy_backward),
        ("codebook_nll_backward", _fake_nll_backward),
        ("categorical_kl_backward", _fake_pair_backward),
        ("log_categorical_backward", _fake_pair_backward),
    ):
        torch.library.register_fake(f"{ns}::{name}", fake)


# The C++ schemas exist only when mmreward._C is loaded (csrc/cpu/codebook.cpp defines them).
if _backend.has_kernel("codebook_entropy", "cpu"):
    register_fake_and_autograd("mmreward")
