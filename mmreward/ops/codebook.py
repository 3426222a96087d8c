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

NaN / inf: the inputs are not scanned (that would cost a pass and, on a GPU, a synchronisation); a
NaN in a token's logits makes that token's value (and its frame's sum) NaN, never a finite number.
Target codes are checked on the host (one read; skipped for meta tensors). ``-inf`` logits: the fused
forward kernels treat them as zero-probability codes (the reference, like the official code, gives
NaN), but their gradients are not defined; a token whose logits are all ``-inf`` is NaN. Use a large
finite negative value (e.g. -1e4) to mask codes. ``categorical_kl`` / ``log_categorical`` expect
finite log-probabilities: clamp them as VQ-Diffusion does (``[−70, 0]``).
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from . import _dispatch, _validate
from .library import codebook as _lib

__all__ = ["codebook_entropy", "codebook_nll", "categorical_kl", "log_categorical", "frame_reduce"]

FRAME_REDUCTIONS = ("none", "sum", "mean")


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def _class_dim(op: str, class_dim) -> int:
    if isinstance(class_dim, bool) or not isinstance(class_dim, numbers.Integral) or class_dim not in (1, 2, -1):
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
    if _validate.readable(op, "target", target) and (mask is None or _validate.readable(op, "mask", mask)):
        t = target if mask is None else torch.where(mask, target, torch.zeros_like(target))
        lo, hi = (int(v) for v in torch.aminmax(t))  # one host read
        if lo < 0 or hi >= K:
            bad = lo if lo < 0 else hi
            hint = ("; to ignore tokens (e.g. cross_entropy's ignore_index -100), pass `mask` with False there: "
                    "masked tokens' targets may be anything") if lo < 0 else ""
            raise ValueError(f"{op}: `target` has index {bad} out of range [0, {K}) (K = number of codes){hint}")
    return target


def _check_pair(op: str, na: str, a, nb: str, b, cd: int):
    B, L, K = _geometry(op, na, a, cd)
    _validate.check_tensor(op, nb, b, ndim=(3,))
    _validate.check_same_shape(op, **{na: a, nb: b})
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: `{nb}` is {b.dtype} but `{na}` is {a.dtype}")
    _validate.check_same_device(op, **{na: a, nb: b})
    return B, L, K


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
    return _lib.frame_reduce(values, m, reduction)


def _finish(tok: torch.Tensor, mask: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    # `tok` is already 0 at masked tokens; only the mean needs the mask again (token counts).
    if reduction == "none":
        return tok
    if reduction == "sum":
        return tok.sum(1)
    return _lib.frame_reduce(tok, mask, "mean")


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
    tok = _dispatch.call(op, logits.device, logits, cd, m)[0]
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
    if m is not None:  # masked tokens' targets may be anything (e.g. -100): the kernels read them
        t = torch.where(m, t, torch.zeros_like(t))
    tok = _dispatch.call(op, logits.device, logits, t, cd, m)[0]
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
    return _finish(_dispatch.call(op, log_a.device, log_a, log_b, cd, m), m, reduction)


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
    return _finish(_dispatch.call(op, log_x0.device, log_x0, log_prob, cd, m), m, reduction)
