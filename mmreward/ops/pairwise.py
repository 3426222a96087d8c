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
  gradients come back in the input dtype. Exact for every finite input, up to rewards of ±3e38
  whose difference exceeds the float range (z is formed as 4·(r_c/4 − r_r/4 − m/4)); the centering
  term is left out, not multiplied by 0, when ``center_coef`` is 0.
* :func:`listwise_loss` (ImageReward): ``rewards`` [B, K] and integer ``ranks`` [B, K] (smaller is
  better; equal ranks form no pair; rank < 0 marks padding). Every ordered pair (i, j) of a row with
  0 <= rank_i < rank_j contributes −log σ(r_i − r_j). ``mean``: mean over all pairs of the batch;
  ``sum``: their sum; ``none``: per row, the mean over that row's pairs (0 for a row without pairs).
  A batch without any pair gives loss 0 (and zero gradients). The fused kernels never build the
  [B, K, K] pair tensor.
* :func:`reward_head_pairwise_loss`: r = h·w + b from last-token hidden states ``h_chosen``,
  ``h_rejected`` [B, H] and the head ``weight`` ([H] or nn.Linear's [1, H]) and ``bias`` (0-d, [1], a
  number or None; an fp32 head over bf16 / fp16 hidden states is cast to their dtype), then the pairwise loss,
  without materialising anything larger than [B] besides the grads.
  With reduction mean / sum and grad required, the gradients w.r.t. h, w and b are computed in the
  forward pass while each row of h is in cache and scaled by grad_output in backward (the Liger
  fused-linear trick; the grads are held from forward to backward; a CPU grad_output of 1 costs
  nothing, a CUDA one is multiplied in without being read); reduction ``none`` recomputes in
  backward.

NaN / inf inputs are never searched for (that would cost a pass over the data and, on a GPU, a
device synchronisation per call). Instead the kernels guarantee that they never give a finite
result from them: a pair with a NaN / inf reward (or margin, hidden state, head weight or bias)
gets a NaN loss and NaN gradients, so the mean / sum is NaN; ``accuracy`` is NaN when any pair has
one (also from :func:`pairwise_accuracy`); a listwise row with a NaN / inf reward at a ranked
(rank >= 0) position has a NaN loss (padding may hold anything). Trainers check the loss anyway.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from . import _dispatch, _validate
from .library import acc_dtype
from .library import pairwise as _lib

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
def _check_options(op: str, label_smoothing, center_coef, reduction) -> int:
    red = _validate.reduction_code(op, reduction)
    if not _validate.is_real(label_smoothing) or not (0.0 <= float(label_smoothing) < 1.0):
        raise ValueError(f"{op}: `label_smoothing` must be a number in [0, 1), got {label_smoothing!r}")
    if not _validate.is_finite_real(center_coef):
        raise ValueError(f"{op}: `center_coef` must be a finite number, got {center_coef!r}")
    return red


def _prep_margin(op: str, margin: MarginT, B: int, ref: torch.Tensor, dt: torch.dtype) -> Optional[torch.Tensor]:
    """The margin as a [B] tensor in the accumulation dtype (no copy if it already is one)."""
    if margin is None:
        return None
    if not isinstance(margin, torch.Tensor) and _validate.is_real(margin):
        return torch.full((B,), float(margin), dtype=dt, device=ref.device)
    _validate.check_tensor(op, "margin", margin, ndim=(0, 1))
    if margin.device != ref.device:
        raise ValueError(f"{op}: `margin` is on {margin.device} but the rewards are on {ref.device}")
    if margin.dim() == 1 and margin.shape[0] != B:
        raise ValueError(f"{op}: `margin` has shape {tuple(margin.shape)}, expected ({B},) (one per pair) or 0-d")
    if margin.dim() == 1 and margin.dtype == dt and not margin.requires_grad and margin.is_contiguous():
        return margin
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
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"{op}: `r_rejected` has shape {tuple(r_rejected.shape)} but `r_chosen` has "
                         f"{tuple(r_chosen.shape)}")
    if r_chosen.dtype != r_rejected.dtype:
        raise TypeError(f"{op}: `r_rejected` is {r_rejected.dtype} but `r_chosen` is {r_chosen.dtype}")
    if r_chosen.device != r_rejected.device:
        raise ValueError(f"{op}: `r_rejected` is on {r_rejected.device} but `r_chosen` is on {r_chosen.device}")
    _validate.check_nonempty(op, "r_chosen", r_chosen)


def _needs_grad(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and ((a is not None and a.requires_grad) or (b is not None and b.requires_grad))


# ------------------------------------------------------------------------------------------------
# pairwise_loss
# ------------------------------------------------------------------------------------------------
def _pairwise(op, r_chosen, r_rejected, margin, label_smoothing, center_coef, tie, reduction):
    _check_pair_rewards(op, r_chosen, r_rejected)
    red = _check_options(op, label_smoothing, center_coef, reduction)
    B = r_chosen.shape[0]
    m = _prep_margin(op, margin, B, r_chosen, acc_dtype(r_chosen.dtype))
    t = _prep_tie(op, tie, B, r_chosen)
    need_grad = red != 0 and _needs_grad(r_chosen, r_rejected)
    out = _dispatch.call("pairwise_loss", r_chosen.device, r_chosen, r_rejected, m, t, float(label_smoothing),
                         float(center_coef), red, need_grad)
    return out[0], out[1]


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
    """Fraction of non-tie pairs with r_chosen > r_rejected (float32 0-d, no grad; 0 if all are ties;
    NaN if any reward is NaN / inf)."""
    op = "pairwise_accuracy"
    _check_pair_rewards(op, r_chosen, r_rejected)
    t = _prep_tie(op, tie, r_chosen.shape[0], r_chosen)
    return _lib.pair_accuracy(r_chosen.detach(), r_rejected.detach(), None, t)


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
    rk = ranks.to(torch.int64).contiguous()
    return _dispatch.call("listwise_loss", rewards.device, rewards, rk, red)[0]


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
    if h_rejected.dtype != h_chosen.dtype:
        raise TypeError(f"{op}: `h_rejected` is {h_rejected.dtype} but `h_chosen` is {h_chosen.dtype}")
    if weight.dtype == torch.float32 and h_chosen.dtype in (torch.bfloat16, torch.float16):
        # An fp32 head over a half-precision backbone (mixed precision): the head is cast to the hidden
        # states' dtype, as the step ops and autocast's Linear do; its gradient returns in fp32 through the cast.
        weight = weight.to(h_chosen.dtype)
    elif weight.dtype != h_chosen.dtype:
        raise TypeError(f"{op}: `weight` is {weight.dtype} but `h_chosen` is {h_chosen.dtype} (only an fp32 head over "
                        "bf16 / fp16 hidden states is cast)")
    if bias is not None and not isinstance(bias, torch.Tensor) and _validate.is_real(bias):
        # a fixed number (as the step ops take): data, no gradient; was "`bias` must be a torch.Tensor"
        bias = torch.tensor(float(bias), dtype=acc_dtype(h_chosen.dtype), device=h_chosen.device)
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: `bias` must be a torch.Tensor, a number or None, got {type(bias).__name__}")
        _validate.check_tensor(op, "bias", bias, ndim=(0, 1))
        if bias.numel() != 1:
            raise ValueError(f"{op}: `bias` must hold one value (0-d or [1]), got shape {tuple(bias.shape)}")
    _validate.check_same_device(op, h_chosen=h_chosen, h_rejected=h_rejected, weight=weight, bias=bias)
    _validate.check_nonempty(op, "h_chosen", h_chosen)
    red = _check_options(op, label_smoothing, center_coef, reduction)
    dt = acc_dtype(h_chosen.dtype)
    m = _prep_margin(op, margin, B, h_chosen, dt)
    t = _prep_tie(op, tie, B, h_chosen)
    w = weight.reshape(H)
    b = None if bias is None else bias.to(dt).reshape(())
    grad_h = red != 0 and _needs_grad(h_chosen, h_rejected)
    grad_wb = red != 0 and _needs_grad(w, b)
    out = _dispatch.call("reward_head_pairwise_loss", h_chosen.device, h_chosen, h_rejected, w, b, m, t,
                         float(label_smoothing), float(center_coef), red, grad_h, grad_wb)
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
