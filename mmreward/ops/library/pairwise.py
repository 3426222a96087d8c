"""Op library of the pairwise reward losses (see :mod:`mmreward.ops.pairwise` for the semantics):
pure-PyTorch references, fake kernels and sample inputs of

* ``pairwise_loss(r_chosen, r_rejected, margin?, tie?, label_smoothing, center_coef, reduction,
  need_grad) -> (loss, accuracy, grad_chosen, grad_rejected)``
* ``listwise_loss(rewards, ranks, reduction) -> (loss, pair_counts)``
* ``reward_head_pairwise_loss(h_chosen, h_rejected, weight, bias?, margin?, tie?, label_smoothing,
  center_coef, reduction, grad_h, grad_wb) -> (loss, accuracy, grad_h_chosen, grad_h_rejected,
  grad_weight, grad_bias)``

and their ``_backward`` ops. ``reduction``: 0 none, 1 mean, 2 sum. Margins and the bias are in the
accumulation dtype; the forward ops return the gradients they were asked for (``need_grad``,
``grad_h``, ``grad_wb``; empty otherwise), already scaled by the reduction.

Numerics shared with the kernels (``csrc/include/mmreward/math.h``): with q = r_c/4 − r_r/4 − m/4
(exact, and finite for every finite input), the per-pair loss is 4·((1 − p)·q if q ≥ 0 else −p·q) +
log1p(exp(−4|q|)) = softplus(−z) + (1 − p)·z at z = 4q, plus c·(r_c + r_r)² when c ≠ 0, plus 0 (NaN
for a non-finite input, in the loss and its gradient). The accuracy is NaN when any pair has a
non-finite input.
"""
from __future__ import annotations

import torch

from . import OpSpec, acc_dtype, define

REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------
def soft_logistic_q(q: torch.Tensor, p) -> torch.Tensor:
    """softplus(−z) + (1 − p)·z at z = 4q. Each piece takes the q ≥ 0 branch at q = 0, so autograd
    gives the exact derivative σ(z) − p there too."""
    pos = q >= 0
    lin = torch.where(pos, (1.0 - p) * q, -p * q)
    return 4.0 * lin + torch.log1p(torch.exp(-4.0 * torch.where(pos, q, -q)))


def _nan_if_not_finite(x: torch.Tensor) -> torch.Tensor:
    """0 where x is finite, NaN where it is not, with the same (0 / NaN) derivative: added to a loss,
    it makes both the loss and the gradient of a non-finite input NaN, as the kernels do. (The
    bounded factor tanh(x) keeps the backward from overflowing for huge finite x.)"""
    return (x - x) * torch.tanh(x)


def _pair_quarters(a, b, margin, tie):
    """q = z / 4 per pair (ties: without the margin) of rewards already in the accumulation dtype."""
    q = a * 0.25 - b * 0.25
    if margin is None:
        return q
    q_margin = q - margin.to(q.dtype) * 0.25
    return q_margin if tie is None else torch.where(tie, q, q_margin)


def pair_losses(r_chosen, r_rejected, margin, tie, label_smoothing: float, center_coef: float) -> torch.Tensor:
    """Per-pair losses [B] in the accumulation dtype (differentiable w.r.t. the rewards)."""
    dt = acc_dtype(r_chosen.dtype)
    a, b = r_chosen.to(dt), r_rejected.to(dt)  # one cast each: the gradient is rounded back once
    q = _pair_quarters(a, b, margin, tie)
    p = 1.0 - label_smoothing / 2.0
    if tie is not None:
        p = torch.where(tie, torch.tensor(0.5, dtype=dt, device=q.device), torch.tensor(p, dtype=dt, device=q.device))
    per = soft_logistic_q(q, p)
    if center_coef != 0.0:
        per = per + center_coef * (a + b) ** 2
    return per + _nan_if_not_finite(q)


def pair_accuracy(r_chosen, r_rejected, margin=None, tie=None) -> torch.Tensor:
    """Fraction of non-tie pairs with r_chosen > r_rejected (float32 0-d, no grad; 0 when every pair
    is a tie; NaN when any pair has a non-finite reward or margin)."""
    with torch.no_grad():
        win = r_chosen > r_rejected
        keep = torch.ones_like(win) if tie is None else ~tie
        n = keep.sum()
        acc = torch.where(n > 0, (win & keep).sum().float() / n.clamp_min(1).float(),
                          torch.zeros((), device=win.device))
        dt = acc_dtype(r_chosen.dtype)
        finite = torch.isfinite(_pair_quarters(r_chosen.to(dt), r_rejected.to(dt), margin, tie)).all()
        return torch.where(finite, acc, torch.full((), float("nan"), device=win.device))


def _reduce(per: torch.Tensor, reduction: int) -> torch.Tensor:
    return per if reduction == 0 else per.sum() if reduction == 2 else per.mean()


def pairwise_loss(r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, need_grad):
    per = pair_losses(r_chosen, r_rejected, margin, tie, label_smoothing, center_coef)
    return _reduce(per, reduction), pair_accuracy(r_chosen, r_rejected, margin, tie)


def listwise_loss(rewards, ranks, reduction):
    """Every ordered pair (i, j) of a row with 0 <= rank_i < rank_j adds softplus(r_j − r_i);
    materialises [B, K, K]. Returns (loss, pair counts per row)."""
    dt = acc_dtype(rewards.dtype)
    rq = rewards.to(dt) * 0.25
    valid = ranks >= 0
    zero = torch.zeros((), dtype=dt, device=rq.device)
    rq_ranked = torch.where(valid, rq, zero)  # padding may hold anything, NaN included
    better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)  # [B, K, K]
    nll = torch.where(better, soft_logistic_q(rq_ranked.unsqueeze(2) - rq_ranked.unsqueeze(1), 1.0), zero)
    # NaN for a row with a non-finite reward at a ranked position (read from rq_ranked, whose padding is
    # 0: a where() over _nan_if_not_finite(rq) sent 0·NaN = NaN gradients to non-finite padding)
    row_sum = nll.sum(dim=(1, 2)) + _nan_if_not_finite(rq_ranked).sum(1)
    row_cnt = better.sum(dim=(1, 2))
    if reduction == 0:
        loss = torch.where(row_cnt > 0, row_sum / row_cnt.clamp_min(1).to(dt), row_sum)
    elif reduction == 2:
        loss = row_sum.sum()
    else:
        total = row_cnt.sum()
        loss = torch.where(total > 0, row_sum.sum() / total.clamp_min(1).to(dt), row_sum.sum())
    return loss, row_cnt


def reward_head_pairwise_loss(h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef,
                              reduction, grad_h, grad_wb):
    """r = h·w + b (accumulated in the accumulation dtype), then :func:`pairwise_loss`."""
    dt = acc_dtype(h_chosen.dtype)
    w = weight.to(dt)
    rc, rr = h_chosen.to(dt) @ w, h_rejected.to(dt) @ w
    if bias is not None:
        rc, rr = rc + bias.to(dt), rr + bias.to(dt)
    return pairwise_loss(rc, rr, margin, tie, label_smoothing, center_coef, reduction, False)


# ------------------------------------------------------------------------------------------------
# fake kernels
# ------------------------------------------------------------------------------------------------
def _fake_pairwise(r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction, need_grad):
    dt = acc_dtype(r_chosen.dtype)
    B = r_chosen.shape[0]
    n = B if need_grad else 0
    return (r_chosen.new_empty((B,) if reduction == 0 else (), dtype=dt), r_chosen.new_empty((), dtype=torch.float32),
            r_chosen.new_empty((n,), dtype=dt), r_chosen.new_empty((n,), dtype=dt))


def _fake_pairwise_backward(grad, r_chosen, r_rejected, margin, tie, label_smoothing, center_coef, reduction):
    return torch.empty_like(r_chosen), torch.empty_like(r_rejected)


def _fake_listwise(rewards, ranks, reduction):
    B = rewards.shape[0]
    loss = rewards.new_empty((B,) if reduction == 0 else (), dtype=acc_dtype(rewards.dtype))
    return loss, rewards.new_empty((B,), dtype=torch.int64)


def _fake_listwise_backward(grad, rewards, ranks, pair_counts, reduction):
    # contiguous, as every kernel returns it: empty_like kept a transposed `rewards`' strides, and
    # torch.compile (inductor) then failed on the real gradient ("expected ... stride 5==1")
    return rewards.new_empty(rewards.shape)


def _fake_head(h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef, reduction, grad_h,
               grad_wb):
    dt = acc_dtype(h_chosen.dtype)
    B, H = h_chosen.shape
    loss = h_chosen.new_empty((B,) if reduction == 0 else (), dtype=dt)
    acc = h_chosen.new_empty((), dtype=torch.float32)
    return (loss, acc) + _fake_head_backward(None, h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing,
                                             center_coef, reduction, grad_h, grad_wb)


def _fake_head_backward(grad, h_chosen, h_rejected, weight, bias, margin, tie, label_smoothing, center_coef,
                        reduction, grad_h, grad_wb):
    B, H = h_chosen.shape
    gshape = (B, H) if grad_h else (0,)
    return (h_chosen.new_empty(gshape), h_chosen.new_empty(gshape), weight.new_empty((H,) if grad_wb else (0,)),
            h_chosen.new_empty(() if grad_wb else (0,), dtype=acc_dtype(h_chosen.dtype)))


# ------------------------------------------------------------------------------------------------
# sample inputs: every option the kernels specialise on (margin / tie / bias present, reduction,
# gradients in the forward pass, per-pair or scalar upstream gradient), B = 1 and an odd B, a head
# wider than one Triton column block (256)
# ------------------------------------------------------------------------------------------------
B, K, H = 5, 4, 300


def _inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    acc = acc_dtype(dtype)

    def randn(*shape, dt=dtype):
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dt)

    return g, acc, randn


def _pairwise_samples(dtype):
    g, acc, randn = _inputs(dtype)
    out = []
    for n in (B, 1):
        rc, rr = randn(n), randn(n)
        margin, tie = randn(n, dt=acc).abs(), torch.rand(n, generator=g) < 0.4
        for red in (0, 1, 2):
            out.append((rc.clone().requires_grad_(), rr.clone().requires_grad_(), margin, tie, 0.1, 0.01, red,
                        red != 0))
            out.append((rc, rr, None, None, 0.0, 0.0, red, False))
    return out


def _pairwise_backward_samples(dtype):
    g, acc, randn = _inputs(dtype, 1)
    rc, rr = randn(B), randn(B)
    margin, tie = randn(B, dt=acc).abs(), torch.rand(B, generator=g) < 0.4
    return [(randn(B, dt=acc) if red == 0 else randn(dt=acc), rc, rr, margin if red else None, tie if red else None,
             0.1, 0.01, red) for red in (0, 1, 2)]


def _ranks(g, n, k):
    ranks = torch.randint(-1, 3, (n, k), generator=g)
    ranks[0, :2] = torch.tensor([0, 1])  # at least one pair
    return ranks


def _listwise_samples(dtype):
    g, acc, randn = _inputs(dtype, 2)
    out = []
    for k in (K, 1):
        rewards, ranks = randn(B, k), _ranks(g, B, k) if k > 1 else torch.zeros(B, 1, dtype=torch.long)
        out += [(rewards.clone().requires_grad_(), ranks, red) for red in (0, 1, 2)]
    return out


def _listwise_backward_samples(dtype):
    g, acc, randn = _inputs(dtype, 3)
    rewards, ranks = randn(B, K), _ranks(g, B, K)
    out = []
    for red in (0, 1, 2):
        counts = listwise_loss(rewards, ranks, red)[1]
        out.append((randn(B, dt=acc) if red == 0 else randn(dt=acc), rewards, ranks, counts, red))
    return out


def _head_samples(dtype):
    g, acc, randn = _inputs(dtype, 4)
    hc, hr, w = randn(B, H), randn(B, H), randn(H) / H ** 0.5
    bias, margin, tie = randn(dt=acc), randn(B, dt=acc).abs(), torch.rand(B, generator=g) < 0.4

    def leaves(*ts):
        return [t.clone().requires_grad_() for t in ts]

    out = []
    for red in (0, 1, 2):
        fwd = red != 0
        out.append((*leaves(hc, hr, w, bias), margin, tie, 0.1, 0.01, red, fwd, fwd))
        out.append((hc, hr, w, None, None, None, 0.0, 0.0, red, False, False))
    # gradients in the forward pass for the head only / the hidden states only
    out.append((hc, hr, *leaves(w, bias), None, tie, 0.0, 0.0, 2, False, True))
    out.append((*leaves(hc, hr), w, bias, margin, None, 0.0, 0.0, 1, True, False))
    return out


def _head_backward_samples(dtype):
    g, acc, randn = _inputs(dtype, 5)
    hc, hr, w = randn(B, H), randn(B, H), randn(H) / H ** 0.5
    bias, margin, tie = randn(dt=acc), randn(B, dt=acc).abs(), torch.rand(B, generator=g) < 0.4
    return [(randn(B, dt=acc) if red == 0 else randn(dt=acc), hc, hr, w, bias if red else None, margin, tie, 0.1,
             0.01, red, red != 2, True) for red in (0, 1, 2)]


define("pairwise", [
    OpSpec("pairwise_loss", _fake_pairwise, _pairwise_samples, pairwise_loss),
    OpSpec("pairwise_loss_backward", _fake_pairwise_backward, _pairwise_backward_samples),
    OpSpec("listwise_loss", _fake_listwise, _listwise_samples, listwise_loss),
    OpSpec("listwise_loss_backward", _fake_listwise_backward, _listwise_backward_samples),
    OpSpec("reward_head_pairwise_loss", _fake_head, _head_samples, reward_head_pairwise_loss),
    OpSpec("reward_head_pairwise_loss_backward", _fake_head_backward, _head_backward_samples),
])

