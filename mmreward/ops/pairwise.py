"""Fused pairwise reward losses (Bradley–Terry family), forward and backward.

With Δ = r_chosen − r_rejected and z = Δ − margin, the per-pair loss is

    ℓ = −(1 − ε/2)·log σ(z) − (ε/2)·log σ(−z)            (ε = label_smoothing; ε = 0: Bradley–Terry)
      + c·(r_chosen + r_rejected)²                         (c = center_coef, TRL center_rewards_coefficient)

and for pairs marked in ``tie`` (RRM, target probability ½): ℓ = −½·log σ(Δ) − ½·log σ(−Δ) + the
centering term (margin and smoothing do not apply to ties). ``reduction`` is applied to the per-pair
losses: ``mean`` (so centering adds c·mean((r_c + r_r)²), as in TRL), ``sum`` or ``none`` ([B]).

Semantics and conventions:

* ``margin`` (per pair [B], 0-d or a number) is data, as in TRL / OpenRLHF: it gets no gradient.
* The accuracy is the fraction of non-tie pairs with r_chosen > r_rejected (strict), computed in
  the same pass; 0 when every pair is a tie. It is a float32 0-d tensor without grad.
* Losses are float32 (float64 for float64 inputs); bf16 / fp16 inputs are accumulated in fp32;
  gradients come back in the input dtype. Stable for any finite Δ (tested at |Δ| = 1e4).
* :func:`listwise_loss` (ImageReward): ``rewards`` [B, K] and integer ``ranks`` [B, K] (smaller is
  better; equal ranks form no pair; rank < 0 marks padding). Every ordered pair (i, j) of a row with
  0 <= rank_i < rank_j contributes −log σ(r_i − r_j). ``mean``: mean over all pairs of the batch;
  ``sum``: their sum; ``none``: per row, the mean over that row's pairs (0 for a row without pairs).
  A batch without any pair gives loss 0 (and zero gradients). The fused kernels never build the
  [B, K, K] pair tensor.
* :func:`reward_head_pairwise_loss`: r = h·w + b from last-token hidden states ``h_chosen``,
  ``h_rejected`` [B, H] and the head ``weight`` ([H] or nn.Linear's [1, H]) and ``bias`` (0-d, [1] or
  None), then the pairwise loss, without materialising anything larger than [B] besides the grads.
  With reduction mean / sum and grad required, the gradients w.r.t. h, w and b are computed in the
  forward pass while each row of h is in cache and scaled by grad_output in backward (the Liger
  fused-linear trick; the grads are held from forward to backward); reduction ``none`` recomputes in
  backward. Hidden states are not checked for NaN / inf (too big to scan): a NaN there propagates
  to the loss and gradients.

NaN / inf in rewards, margins and listwise rewards raise ``ValueError`` (see
:func:`mmreward.ops.set_check_finite`).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch

from . import _backend, _validate
from .reference import pairwise as _ref

__all__ = [
    "pairwise_loss",
    "pairwise_loss_and_accuracy",
    "pairwise_accuracy",
    "listwise_loss",
    "reward_head_pairwise_loss",
    "reward_head_pairwise_loss_and_accuracy",
]

MarginT = Optional[Union[torch.Tensor, float]]


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_options(op: str, label_smoothing, center_coef, reduction) -> int:
    red = _validate.reduction_code(op, reduction)
    if not isinstance(label_smoothing, numbers.Real) or not (0.0 <= float(label_smoothing) < 1.0):
        raise ValueError(f"{op}: `label_smoothing` must be a number in [0, 1), got {label_smoothing!r}")
    if not isinstance(center_coef, numbers.Real) or not math.isfinite(float(center_coef)):
        raise ValueError(f"{op}: `center_coef` must be a finite number, got {center_coef!r}")
    return red


def _prep_margin(op: str, margin: MarginT, B: int, ref: torch.Tensor, dt: torch.dtype) -> Optional[torch.Tensor]:
    if margin is None:
        return None
    if isinstance(margin, numbers.Real) and not isinstance(margin, bool):
        return torch.full((B,), float(margin), dtype=dt, device=ref.device)
    _validate.check_tensor(op, "margin", margin, ndim=(0, 1))
    if margin.device != ref.device:
        raise ValueError(f"{op}: `margin` is on {margin.device} but the rewards are on {ref.device}")
    if margin.dim() == 1 and margin.shape[0] != B:
        raise ValueError(f"{op}: `margin` has shape {tuple(margin.shape)}, expected ({B},) (one per pair) or 0-d")
    # margin is data (TRL / OpenRLHF): no gradient flows into it
    return margin.detach().to(dt).expand(B).contiguous()


def _prep_tie(op: str, tie: Optional[torch.Tensor], B: int, ref: torch.Tensor) -> Optional[torch.Tensor]:
    if tie is None:
        return None
    if not isinstance(tie, torch.Tensor):
        raise TypeError(f"{op}: `tie` must be a bool torch.Tensor, got {type(tie).__name__}")
    if tie.dtype != torch.bool:
        raise TypeError(f"{op}: `tie` must be a bool tensor, got {tie.dtype}")
    if tie.shape != (B,):
        raise ValueError(f"{op}: `tie` has shape {tuple(tie.shape)}, expected ({B},)")
    if tie.device != ref.device:
        raise ValueError(f"{op}: `tie` is on {tie.device} but the rewards are on {ref.device}")
    return tie.contiguous()


def _check_pair_rewards(op: str, r_chosen, r_rejected) -> None:
    _validate.check_tensor(op, "r_chosen", r_chosen, ndim=(1,))
    _validate.check_tensor(op, "r_rejected", r_rejected, ndim=(1,))
    _validate.check_same_shape(op, r_chosen=r_chosen, r_rejected=r_rejected)
    if r_chosen.dtype != r_rejected.dtype:
        raise TypeError(f"{op}: `r_rejected` is {r_rejected.dtype} but `r_chosen` is {r_chosen.dtype}")
    _validate.check_same_device(op, r_chosen=r_chosen, r_rejected=r_rejected)
    _validate.check_nonempty(op, "r_chosen", r_chosen)


def _select(op: str, device: torch.device) -> str:
    return _backend.select_cached(op, device)


def _triton():
    from .triton import pairwise as tri  # lazy: only when the triton backend is chosen

    return tri


def _check_finite(op: str, items) -> None:
    """_validate.check_finite with a cheaper common case: one sum per tensor and one host sync. A
    NaN / inf anywhere makes the sum non-finite; a non-finite sum (NaN / inf, or an overflow of
    finite values) runs the detailed check, which raises only for real NaN / inf."""
    if not _validate.check_finite_enabled():
        return
    ts = [t.detach() for _, t in items if t is not None and t.is_floating_point() and t.numel() > 0]
    if not ts:
        return
    total = ts[0].sum()
    for t in ts[1:]:
        total = total + t.sum()
    if not math.isfinite(total.item()):
        _validate.check_finite(op, items)


def _namespace(backend: str) -> str:
    if backend == "triton":
        _triton()  # defines torch.ops.mmreward_triton.*
        return "mmreward_triton"
    return "mmreward"


def _needs_grad(*ts: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


# ------------------------------------------------------------------------------------------------
# pairwise_loss
# ------------------------------------------------------------------------------------------------
def _pairwise(op, r_chosen, r_rejected, margin, label_smoothing, center_coef, tie, reduction):
    _check_pair_rewards(op, r_chosen, r_rejected)
    red = _check_options(op, label_smoothing, center_coef, reduction)
    B = r_chosen.shape[0]
    dt = _acc_dtype(r_chosen.dtype)
    m = _prep_margin(op, margin, B, r_chosen, dt)
    t = _prep_tie(op, tie, B, r_chosen)
    _check_finite(op, [("r_chosen", r_chosen), ("r_rejected", r_rejected), ("margin", m)])
    backend = _select("pairwise_loss", r_chosen.device)
    ls, cc = float(label_smoothing), float(center_coef)
    if backend == "reference":
        return _ref.pairwise_loss(r_chosen, r_rejected, m, t, ls, cc, reduction)
    need_grad = red != 0 and _needs_grad(r_chosen, r_rejected)
    ns = _namespace(backend)
    loss, acc, _, _ = _call(ns, "pairwise_loss", r_chosen, r_rejected, m, t, ls, cc, red, need_grad)
    return loss, acc


def pairwise_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    *,
    margin: MarginT = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    tie: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pairwise reward loss of rewards ``r_chosen``, ``r_rejected`` [B] (see the module docstring)."""
    return _pairwise("pairwise_loss", r_chosen, r_rejected, margin, label_smoothing, center_coef, tie, reduction)[0]


def pairwise_loss_and_accuracy(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    *,
    margin: MarginT = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    tie: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, accuracy)``: :func:`pairwise_loss` and the pairwise accuracy from the same pass."""
    return _pairwise(
        "pairwise_loss_and_accuracy", r_chosen, r_rejected, margin, label_smoothing, center_coef, tie, reduction
    )


def pairwise_accuracy(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, tie: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Fraction of non-tie pairs with r_chosen > r_rejected (float32 0-d, no grad; 0 if all are ties)."""
    op = "pairwise_accuracy"
    _check_pair_rewards(op, r_chosen, r_rejected)
    t = _prep_tie(op, tie, r_chosen.shape[0], r_chosen)
    return _ref.pairwise_accuracy(r_chosen.detach(), r_rejected.detach(), t)


# ------------------------------------------------------------------------------------------------
# listwise_loss
# ------------------------------------------------------------------------------------------------
def listwise_loss(rewards: torch.Tensor, ranks: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """All-pairs ranking loss of ``rewards`` [B, K] under integer ``ranks`` [B, K] (module docstring)."""
    op = "listwise_loss"
    _validate.check_tensor(op, "rewards", rewards, ndim=(2,))
    _validate.check_int_tensor(op, "ranks", ranks, ndim=(2,))
    _validate.check_same_shape(op, rewards=rewards, ranks=ranks)
    _validate.check_same_device(op, rewards=rewards, ranks=ranks)
    _validate.check_nonempty(op, "rewards", rewards)
    red = _validate.reduction_code(op, reduction)
    if _validate.check_finite_enabled():  # padded entries (rank < 0) may hold anything
        _check_finite(op, [("rewards", rewards.detach().masked_fill(ranks < 0, 0))])
    backend = _select("listwise_loss", rewards.device)
    rk = ranks.to(torch.int64).contiguous()
    if backend == "reference":
        return _ref.listwise_loss(rewards, rk, reduction)
    return _call(_namespace(backend), "listwise_loss", rewards, rk, red)[0]


# ------------------------------------------------------------------------------------------------
# reward_head_pairwise_loss
# ------------------------------------------------------------------------------------------------
def _head(op, h_chosen, h_rejected, weight, bias, margin, label_smoothing, center_coef, tie, reduction):
    _validate.check_tensor(op, "h_chosen", h_chosen, ndim=(2,))
    _validate.check_tensor(op, "h_rejected", h_rejected, ndim=(2,))
    _validate.check_same_shape(op, h_chosen=h_chosen, h_rejected=h_rejected)
    _validate.check_tensor(op, "weight", weight, ndim=(1, 2))
    B, H = h_chosen.shape
    if weight.numel() != H or (weight.dim() == 2 and weight.shape[0] != 1):
        raise ValueError(f"{op}: `weight` has shape {tuple(weight.shape)}, expected ({H},) or (1, {H})")
    for name, t in (("h_rejected", h_rejected), ("weight", weight)):
        if t.dtype != h_chosen.dtype:
            raise TypeError(f"{op}: `{name}` is {t.dtype} but `h_chosen` is {h_chosen.dtype}")
    if bias is not None:
        _validate.check_tensor(op, "bias", bias, ndim=(0, 1))
        if bias.numel() != 1:
            raise ValueError(f"{op}: `bias` must hold one value (0-d or [1]), got shape {tuple(bias.shape)}")
    _validate.check_same_device(op, h_chosen=h_chosen, h_rejected=h_rejected, weight=weight, bias=bias)
    _validate.check_nonempty(op, "h_chosen", h_chosen)
    red = _check_options(op, label_smoothing, center_coef, reduction)
    dt = _acc_dtype(h_chosen.dtype)
    m = _prep_margin(op, margin, B, h_chosen, dt)
    t = _prep_tie(op, tie, B, h_chosen)
    _check_finite(op, [("weight", weight), ("bias", bias), ("margin", m)])
    backend = _select("reward_head_pairwise_loss", h_chosen.device)
    ls, cc = float(label_smoothing), float(center_coef)
    w = weight.reshape(H)
    b = None if bias is None else bias.to(dt).reshape(())
    if backend == "reference":
        return _ref.reward_head_pairwise_loss(h_chosen, h_rejected, w, b, m, t, ls, cc, reduction)
    grad_h = red != 0 and _needs_grad(h_chosen, h_rejected)
    grad_wb = red != 0 and _needs_grad(w, b)
    out = _call(_namespace(backend), "reward_head_pairwise_loss", h_chosen, h_rejected, w, b, m, t, ls, cc, red,
                grad_h, grad_wb)
    return out[0], out[1]


def reward_head_pairwise_loss(
    h_chosen: torch.Tensor,
    h_rejected: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    margin: MarginT = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    tie: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Reward head r = h·w + b fused with :func:`pairwise_loss` (module docstring)."""
    return _head(
        "reward_head_pairwise_loss", h_chosen, h_rejected, weight, bias, margin, label_smoothing, center_coef, tie,
        reduction,
    )[0]


def reward_head_pairwise_loss_and_accuracy(
    h_chosen: torch.Tensor,
    h_rejected: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    margin: MarginT = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    tie: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, accuracy)`` of :func:`reward_head_pairwise_loss`, accuracy from the same pass."""
    return _head(
        "reward_head_pairwise_loss_and_accuracy", h_chosen, h_rejected, weight, bias, margin, label_smoothing,
        center_coef, tie, reduction,
    )


# ------------------------------------------------------------------------------------------------
# fake kernels + autograd, shared by the C++ ops (torch.ops.mmreward) and the Triton custom ops
# (torch.ops.mmreward_triton): same schemas, same conventions.
# ------------------------------------------------------------------------------------------------
def _fake_pairwise(r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, need_grad):
    dt = _acc_dtype(r_chosen.dtype)
    B = r_chosen.shape[0]
    loss = r_chosen.new_empty((B,) if reduction == 0 else (), dtype=dt)
    acc = r_chosen.new_empty((), dtype=torch.float32)
    n = B if need_grad else 0
    return loss, acc, r_chosen.new_empty((n,), dtype=dt), r_chosen.new_empty((n,), dtype=dt)


def _fake_pairwise_backward(grad, r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction):
    return torch.empty_like(r_chosen), torch.empty_like(r_rejected)


def _fake_listwise(rewards, ranks, reduction):
    dt = _acc_dtype(rewards.dtype)
    B = rewards.shape[0]
    loss = rewards.new_empty((B,) if reduction == 0 else (), dtype=dt)
    return loss, rewards.new_empty((B,), dtype=torch.int64)


def _fake_listwise_backward(grad, rewards, ranks, pair_counts, reduction):
    return torch.empty_like(rewards)


def _fake_head(h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h, grad_wb):
    dt = _acc_dtype(h_chosen.dtype)
    B, H = h_chosen.shape
    loss = h_chosen.new_empty((B,) if reduction == 0 else (), dtype=dt)
    acc = h_chosen.new_empty((), dtype=torch.float32)
    gshape = (B, H) if grad_h else (0,)
    return (
        loss,
        acc,
        h_chosen.new_empty(gshape),
        h_chosen.new_empty(gshape),
        weight.new_empty((H,) if grad_wb else (0,)),
        h_chosen.new_empty(() if grad_wb else (0,), dtype=dt),
    )


def _fake_head_backward(
    grad, h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h, grad_wb
):
    out = _fake_head(h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h,
                     grad_wb)
    return out[2:]


def _is_one(g: torch.Tensor) -> bool:
    """True if the upstream grad is exactly 1 (then the grads saved in forward are used as they are)."""
    if g.numel() != 1 or _tracing(g):
        return False
    return g.item() == 1.0


def _tracing(g: torch.Tensor) -> bool:
    """True while torch.compile / make_fx / fake-tensor tracing (no data-dependent branching then)."""
    if type(g) is not torch.Tensor:  # FakeTensor, FunctionalTensor, other subclasses
        return True
    if torch.compiler.is_compiling():
        return True
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None


def _pairwise_autograd(ns):
    def setup_context(ctx, inputs, output):
        r_chosen, r_rejected, margin, tie, ls, cc, red, need_grad = inputs
        _, acc, gc, gr = output
        ctx.set_materialize_grads(False)  # no zero [B, H] grads for the non-differentiable outputs
        ctx.mark_non_differentiable(acc, gc, gr)
        ctx.args = (ls, cc, red, need_grad)
        ctx.dtypes = (r_chosen.dtype, r_rejected.dtype)
        if need_grad:
            ctx.save_for_backward(gc, gr)
        else:
            ctx.save_for_backward(r_chosen, r_rejected, margin, tie)

    def backward(ctx, grad_loss, *_):
        if grad_loss is None:
            return (None,) * 8
        ls, cc, red, need_grad = ctx.args
        if need_grad:
            gc, gr = ctx.saved_tensors
            if not _is_one(grad_loss):
                gc, gr = gc * grad_loss, gr * grad_loss
            gc, gr = gc.to(ctx.dtypes[0]), gr.to(ctx.dtypes[1])
        else:
            r_chosen, r_rejected, margin, tie = ctx.saved_tensors
            gc, gr = getattr(torch.ops, ns).pairwise_loss_backward(
                grad_loss, r_chosen, r_rejected, margin, tie, ls, cc, red
            )
        return gc, gr, None, None, None, None, None, None

    return backward, setup_context


def _listwise_autograd(ns):
    def setup_context(ctx, inputs, output):
        rewards, ranks, red = inputs
        _, counts = output
        ctx.set_materialize_grads(False)  # no zero [B, H] grads for the non-differentiable outputs
        ctx.mark_non_differentiable(counts)
        ctx.red = red
        ctx.save_for_backward(rewards, ranks, counts)

    def backward(ctx, grad_loss, _):
        if grad_loss is None:
            return None, None, None
        rewards, ranks, counts = ctx.saved_tensors
        g = getattr(torch.ops, ns).listwise_loss_backward(grad_loss, rewards, ranks, counts, ctx.red)
        return g, None, None

    return backward, setup_context


def _head_autograd(ns, eager=False):
    # eager=True (the autograd.Function path, never traced): the [B, H] grads computed in forward are
    # held as plain attributes and dropped when backward hands them over, so autograd can adopt them
    # as `.grad` without a copy (saved tensors would still be referenced and AccumulateGrad would
    # clone 2·B·H values). A second backward through the graph (retain_graph) recomputes.
    def setup_context(ctx, inputs, output):
        h_chosen, h_rejected, weight, bias, margin, tie, ls, cc, red, grad_h, grad_wb = inputs
        _, acc, ghc, ghr, gw, gb = output
        ctx.set_materialize_grads(False)  # no zero [B, H] grads for the non-differentiable outputs
        ctx.mark_non_differentiable(acc, ghc, ghr, gw, gb)
        ctx.args = (ls, cc, red, grad_h, grad_wb)
        ctx.has_bias = bias is not None
        if (grad_h or grad_wb) and eager:
            ctx.fwd_grads = [ghc, ghr, gw, gb]
            ctx.save_for_backward(h_chosen, h_rejected, weight, bias, margin, tie)  # for a 2nd backward
        elif grad_h or grad_wb:  # grads were computed in the forward pass
            ctx.save_for_backward(ghc, ghr, gw, gb)
        else:
            ctx.save_for_backward(h_chosen, h_rejected, weight, bias, margin, tie)

    def backward(ctx, grad_loss, *_):
        if grad_loss is None:
            return (None,) * 11
        ls, cc, red, grad_h, grad_wb = ctx.args
        need = ctx.needs_input_grad
        if (grad_h or grad_wb) and not (eager and ctx.fwd_grads is None):
            if eager:
                ghc, ghr, gw, gb = ctx.fwd_grads
                ctx.fwd_grads = None  # a second backward (retain_graph) recomputes below
            else:
                ghc, ghr, gw, gb = ctx.saved_tensors
            if not _is_one(grad_loss):
                g = grad_loss
                ghc, ghr = (ghc * g, ghr * g) if grad_h else (ghc, ghr)
                gw, gb = (gw * g, gb * g) if grad_wb else (gw, gb)
        else:
            h_chosen, h_rejected, weight, bias, margin, tie = ctx.saved_tensors
            grad_h, grad_wb = need[0] or need[1], need[2] or need[3]
            ghc, ghr, gw, gb = getattr(torch.ops, ns).reward_head_pairwise_loss_backward(
                grad_loss, h_chosen, h_rejected, weight, bias, margin, tie, ls, cc, red, grad_h, grad_wb
            )
        return (
            ghc if grad_h and need[0] else None,
            ghr if grad_h and need[1] else None,
            gw if grad_wb and need[2] else None,
            gb if grad_wb and need[3] and ctx.has_bias else None,
            None, None, None, None, None, None, None,
        )

    return backward, setup_context


_EAGER: dict = {}


def _eager_function(ns: str, name: str, backward, setup_context):
    """An autograd.Function running the op below the autograd key with the same setup_context /
    backward as its register_autograd registration. Used outside torch.compile only: it skips
    torch.library's per-call Python wrapper (~100 us of argument re-packing per call)."""

    def forward(ctx, *args):
        with torch._C._AutoDispatchBelowAutograd():
            out = getattr(getattr(torch.ops, ns), name)(*args)
        setup_context(ctx, args, out)
        return out

    return type(f"_Eager_{ns}_{name}", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(backward),
    })


def _call(ns: str, name: str, *args):
    """torch.ops.<ns>.<name>(*args) with autograd: the registered op under torch.compile / tracing
    (and when no grad is needed), a lighter autograd.Function wrapper in eager mode."""
    fn = _EAGER.get((ns, name))
    if fn is None or torch.compiler.is_compiling() or not torch.is_grad_enabled() or not any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in args
    ) or any(isinstance(a, torch.Tensor) and type(a) not in (torch.Tensor, torch.nn.Parameter) for a in args):
        return getattr(getattr(torch.ops, ns), name)(*args)
    return fn.apply(*args)


def register_fake_and_autograd(ns: str) -> None:
    """Fake kernels + autograd for the ops of namespace ``ns`` ('mmreward' or 'mmreward_triton')."""
    for name, fake, autograd in (
        ("pairwise_loss", _fake_pairwise, _pairwise_autograd),
        ("listwise_loss", _fake_listwise, _listwise_autograd),
        ("reward_head_pairwise_loss", _fake_head, _head_autograd),
    ):
        torch.library.register_fake(f"{ns}::{name}", fake)
        backward, setup_context = autograd(ns)
        torch.library.register_autograd(f"{ns}::{name}", backward, setup_context=setup_context)
        if autograd is _head_autograd:
            backward, setup_context = _head_autograd(ns, eager=True)
        _EAGER[(ns, name)] = _eager_function(ns, name, backward, setup_context)
    for name, fake in (
        ("pairwise_loss_backward", _fake_pairwise_backward),
        ("listwise_loss_backward", _fake_listwise_backward),
        ("reward_head_pairwise_loss_backward", _fake_head_backward),
    ):
        torch.library.register_fake(f"{ns}::{name}", fake)


# The C++ schemas exist only when mmreward._C is loaded (csrc/cpu/pairwise.cpp defines them).
if _backend.has_kernel("pairwise_loss", "cpu"):
    register_fake_and_autograd("mmreward")
