"""Extreme values against a float64 oracle, on every backend: rewards of ±3e38 (their difference
exceeds the float range), the centering term with coefficient 0, listwise rows of K = 1025 / 4097
(row sums over ~K²/2 pairs), codebook targets with p -> 1 in bf16, K up to 4097, B = 1 / 3 / 4097;
and non-finite inputs, which must never give a finite result.

The oracle evaluates each op's formula in float64 from the inputs' exact values; results are
rounded once to the output dtype, so the tolerances are a few ulps of that dtype (outputs float32,
gradients in the input dtype)."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import backends_for
from helpers import call_on

from mmreward import ops

# non-finite inputs: numpy (the Triton interpreter) warns about the overflows they cause
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

F64 = torch.float64
# a few ulps: float32 outputs / float32 and bfloat16 gradients
OUT_TOL = dict(rtol=4e-6, atol=1e-6)
GRAD_TOL = {torch.float32: dict(rtol=4e-6, atol=1e-7), torch.bfloat16: dict(rtol=8e-3, atol=1e-6)}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def _close(actual, expected, **tol):
    torch.testing.assert_close(actual.double(), expected.to(actual.dtype).double(), **tol)


# ------------------------------------------------------------------------------------------------
# pairwise_loss
# ------------------------------------------------------------------------------------------------
def _pair_oracle(rc, rr, margin, tie, ls, cc):
    """Per-pair loss and d loss / d r_c, d r_r in float64."""
    a, b = rc.to(F64), rr.to(F64)
    delta = a - b
    z = delta if margin is None else delta - margin.to(F64)
    p = torch.full_like(a, 1 - ls / 2)
    if tie is not None:
        z, p = torch.where(tie, delta, z), torch.where(tie, torch.full_like(a, 0.5), p)
    loss = F.softplus(-z) + (1 - p) * z + cc * (a + b) ** 2
    dz = torch.sigmoid(z) - p
    return loss, dz + 2 * cc * (a + b), -dz + 2 * cc * (a + b)


HUGE = 3e38
EXTREME_PAIRS = [  # (r_chosen, r_rejected): differences beyond the float range, equal huge values, zeros
    (HUGE, -HUGE), (-HUGE, HUGE), (HUGE, HUGE), (-HUGE, -HUGE), (1e38, -1e38), (HUGE, 0.0), (0.0, 0.0),
    (1.5, -2.0), (-3.0, 1e-3), (3.3e38, -3.3e38),
]


def _extreme_rewards(dtype, B):
    rc = torch.tensor([c for c, _ in EXTREME_PAIRS], dtype=F64)
    rr = torch.tensor([r for _, r in EXTREME_PAIRS], dtype=F64)
    reps = math.ceil(B / len(EXTREME_PAIRS))
    return rc.repeat(reps)[:B].to(dtype), rr.repeat(reps)[:B].to(dtype)


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
@pytest.mark.parametrize("B", [1, 3, 4097])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"tie": True}, {"margin": True},
                                     {"center_coef": 0.0, "label_smoothing": 0.2}],
                         ids=["bt", "smooth", "tie", "margin", "center0"])
@DTYPES
def test_pairwise_huge_rewards_match_float64(backend, B, options, dtype):
    """Regression: C++ gave NaN for finite rewards near 3e38 (the centering term was formed with a
    0 coefficient; (1 − p)·z was 0·∞ for an overflowing difference)."""
    rc, rr = _extreme_rewards(dtype, B)
    g = torch.Generator().manual_seed(B)
    kw = {k: v for k, v in options.items() if k in ("label_smoothing", "center_coef")}
    if options.get("tie"):
        kw["tie"] = torch.rand(B, generator=g) < 0.5
    if options.get("margin"):
        kw["margin"] = torch.rand(B, generator=g) * 2
    a, b = rc.clone().requires_grad_(), rr.clone().requires_grad_()
    loss = call_on(backend, ops.pairwise_loss, a, b, reduction="none", **kw)
    w = torch.randn(B, generator=g)
    (loss * w).sum().backward()
    exp, exp_gc, exp_gr = _pair_oracle(rc, rr, kw.get("margin"), kw.get("tie"), kw.get("label_smoothing", 0.0),
                                       kw.get("center_coef", 0.0))
    assert not torch.isnan(loss).any()
    _close(loss, exp, **OUT_TOL)
    _close(a.grad, exp_gc * w.to(F64), **GRAD_TOL[dtype])
    _close(b.grad, exp_gr * w.to(F64), **GRAD_TOL[dtype])
    # the mean of the per-pair losses rounded to float32, summed in float32: inf once that sum overflows
    mean = call_on(backend, ops.pairwise_loss, rc, rr, **kw)
    total = exp.float().double().sum()
    _close(mean, total / B if total < torch.finfo(torch.float32).max else torch.tensor(math.inf), **OUT_TOL)


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
def test_pairwise_center_coef_zero_near_float_max(backend):
    """The issue's case: finite rewards near 3e38, center_coef=0 (r_c + r_r overflows)."""
    rc = torch.tensor([3e38, 2e38], requires_grad=True)
    rr = torch.tensor([3e38, 3e38], requires_grad=True)
    loss = call_on(backend, ops.pairwise_loss, rc, rr, center_coef=0.0)
    loss.backward()
    exp = (F.softplus(torch.tensor(0.0, dtype=F64)) + F.softplus(torch.tensor(1e38, dtype=F64))) / 2
    assert torch.isfinite(loss) and loss.item() == pytest.approx(exp.item(), rel=1e-6)
    assert torch.isfinite(rc.grad).all() and torch.isfinite(rr.grad).all()


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
@pytest.mark.parametrize("B", [1, 3, 4097])
def test_head_large_batch_matches_float64(backend, B):
    H = 33
    g = torch.Generator().manual_seed(B)
    hc, hr = torch.randn(B, H, generator=g) * 30, torch.randn(B, H, generator=g) * 30
    w = torch.randn(H, generator=g)
    args = [t.clone().requires_grad_() for t in (hc, hr, w)]
    loss = call_on(backend, ops.reward_head_pairwise_loss, *args, label_smoothing=0.1)
    loss.backward()
    a, b = hc.to(F64) @ w.to(F64), hr.to(F64) @ w.to(F64)
    per, dc, dr = _pair_oracle(a, b, None, None, 0.1, 0.0)
    _close(loss, per.mean(), rtol=2e-5, atol=1e-5)  # the dot products round in float32
    _close(args[0].grad, dc[:, None] * w.to(F64) / B, rtol=1e-4, atol=1e-7)
    _close(args[2].grad, (dc[:, None] * hc.to(F64) + dr[:, None] * hr.to(F64)).sum(0) / B, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# listwise_loss
# ------------------------------------------------------------------------------------------------
def _list_oracle(rewards, ranks):
    """Row loss sums, pair counts and d(Σ loss)/d rewards in float64."""
    r = rewards.to(F64).requires_grad_()
    valid = ranks >= 0
    better = (ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    rr = torch.where(valid, r, torch.zeros((), dtype=F64))
    nll = torch.where(better, F.softplus(rr[:, None, :] - rr[:, :, None]), torch.zeros((), dtype=F64))
    row = nll.sum((1, 2))
    (grad,) = torch.autograd.grad(row.sum(), r)
    return row.detach(), better.sum((1, 2)), grad


@pytest.mark.parametrize("backend", backends_for("listwise_loss"))
@pytest.mark.parametrize("B,K", [(3, 1025), (1, 4097)])
@DTYPES
def test_listwise_long_rows_match_float64(backend, B, K, dtype):
    """Regression: C++ summed a row's ~K²/2 pair losses in float32 (1.5e-5 off at K = 1025)."""
    g = torch.Generator().manual_seed(K)
    rewards = (torch.randn(B, K, generator=g, dtype=F64) * 3).to(dtype)
    ranks = torch.stack([torch.randperm(K, generator=g) for _ in range(B)])
    ranks[:, ::7] = -1  # padding
    r = rewards.clone().requires_grad_()
    out = call_on(backend, ops.listwise_loss, r, ranks, reduction="sum")
    out.backward()
    row, cnt, grad = _list_oracle(rewards, ranks)
    _close(out, row.sum(), **OUT_TOL)
    # each entry sums ~K pair derivatives of size <= 1, each within an ulp: an ulp per term
    _close(r.grad, grad, rtol=GRAD_TOL[dtype]["rtol"], atol=K * 6e-8)
    per = call_on(backend, ops.listwise_loss, rewards, ranks, reduction="none")
    _close(per, row / cnt, **OUT_TOL)


# ------------------------------------------------------------------------------------------------
# codebook ops
# ------------------------------------------------------------------------------------------------
def _nll_oracle(logits, target):
    z = logits.to(F64).requires_grad_()
    nll = torch.logsumexp(z, -1) - z.gather(-1, target[..., None])[..., 0]
    return nll, z


@pytest.mark.parametrize("backend", backends_for("codebook_nll"))
@pytest.mark.parametrize("B,L,K", [(1, 1, 4097), (3, 5, 1025), (4097, 1, 7)], ids=lambda v: str(v))
@DTYPES
def test_codebook_nll_confident_targets_match_float64(backend, B, L, K, dtype):
    """Targets with p -> 1: the target's gradient g·(p − 1) is ~0. Regression: C++ subtracted the
    one-hot after rounding g·p to bf16 (7.8e-3 off where the truth is ~0)."""
    g = torch.Generator().manual_seed(K)
    logits = torch.randn(B, L, K, generator=g, dtype=F64)
    target = torch.randint(0, K, (B, L), generator=g)
    logits.scatter_(-1, target[..., None], 30.0)  # p_target ≈ 1 − K·e^-30
    x = logits.to(dtype).requires_grad_()
    w = torch.randn(B, L, generator=g) * 3
    out = call_on(backend, ops.codebook_nll, x, target, reduction="none")
    (out * w).sum().backward()
    exp, z = _nll_oracle(x.detach(), target)
    (exp * w.to(F64)).sum().backward()
    _close(out, exp.detach(), rtol=4e-6, atol=1e-5)  # logsumexp of logits ~30: an fp32 ulp is 2e-6
    _close(x.grad, z.grad, rtol=GRAD_TOL[dtype]["rtol"], atol=1e-5)
    at_target = x.grad.gather(-1, target[..., None])
    assert at_target.abs().max() < 1e-4


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("B,L,K", [(1, 1, 4097), (3, 5, 1025), (4097, 1, 7)], ids=lambda v: str(v))
def test_codebook_entropy_matches_float64(backend, B, L, K):
    g = torch.Generator().manual_seed(K + 1)
    logits = torch.randn(B, L, K, generator=g) * 4
    logits[..., 0] = 40.0  # one nearly certain code
    x = logits.clone().requires_grad_()
    out = call_on(backend, ops.codebook_entropy, x, reduction="none")
    out.sum().backward()
    z = logits.to(F64).requires_grad_()
    logp = torch.log_softmax(z, -1)
    exp = -(logp.exp() * logp).sum(-1)
    exp.sum().backward()
    _close(out, exp.detach(), rtol=1e-4, atol=2e-5)
    _close(x.grad, z.grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# non-finite inputs never give a finite result (no host-side check any more)
# ------------------------------------------------------------------------------------------------
BAD = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["r_chosen", "r_rejected", "margin"])
def test_pairwise_nonfinite_input_gives_nan(backend, bad, where):
    B = 5
    rc, rr, m = torch.randn(B), torch.randn(B), torch.rand(B)
    {"r_chosen": rc, "r_rejected": rr, "margin": m}[where][2] = bad
    a, b = rc.clone().requires_grad_(), rr.clone().requires_grad_()
    per = call_on(backend, ops.pairwise_loss, a, b, margin=m, reduction="none")
    assert torch.isnan(per[2]) and torch.isfinite(per[[0, 1, 3, 4]]).all()
    for reduction in ("mean", "sum"):
        loss, acc = call_on(backend, ops.pairwise_loss_and_accuracy, a, b, margin=m, reduction=reduction)
        assert torch.isnan(loss) and torch.isnan(acc)
    loss.backward()
    assert torch.isnan(a.grad[2]) and torch.isfinite(a.grad[[0, 1, 3, 4]]).all()


@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf"])
def test_pairwise_accuracy_nonfinite_is_nan(bad):
    """Regression: a NaN reward gave accuracy 0.5, silently."""
    rc, rr = torch.tensor([1.0, bad]), torch.tensor([0.0, 0.0])
    assert torch.isnan(ops.pairwise_accuracy(rc, rr))
    assert ops.pairwise_accuracy(torch.tensor([1.0, 0.0]), rr).item() == 0.5


@pytest.mark.parametrize("backend", backends_for("listwise_loss"))
@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf"])
def test_listwise_nonfinite_ranked_reward_gives_nan(backend, bad):
    rewards = torch.randn(3, 4)
    ranks = torch.tensor([[0, 1, 2, -1], [0, 1, 2, -1], [0, 0, 0, 0]])
    rewards[1, 0] = bad  # a ranked entry: that row is NaN
    rewards[0, 3] = bad  # padding: ignored
    per = call_on(backend, ops.listwise_loss, rewards, ranks, reduction="none")
    assert torch.isnan(per[1]) and torch.isfinite(per[[0, 2]]).all()
    assert torch.isnan(call_on(backend, ops.listwise_loss, rewards, ranks))


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
@pytest.mark.parametrize("where", ["h_chosen", "weight", "bias"])
def test_head_nonfinite_input_gives_nan(backend, where):
    h = torch.randn(4, 8)
    w, bias = torch.randn(8), torch.tensor(0.1)
    {"h_chosen": h[1], "weight": w, "bias": bias.view(1)}[where][0] = float("inf")
    loss, acc = call_on(backend, ops.reward_head_pairwise_loss_and_accuracy, h, torch.randn(4, 8), w, bias)
    assert torch.isnan(loss) and torch.isnan(acc)


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_step_scores_nonfinite_hidden_gives_nan(backend):
    """σ(±inf) would be a finite 1 / 0: a non-finite logit gives a NaN score instead."""
    h = torch.randn(2, 3, 4)
    h[0, 1, 2] = float("inf")
    w = torch.ones(4)
    p = call_on(backend, ops.step_scores, h, w, torch.zeros(4), step_index=torch.tensor([[0, 1], [1, 0]]))
    assert torch.isnan(p[0]) and torch.isfinite(p[1])
