"""Pairwise reward losses through the public API: every backend against the reference (forward +
grads), options, odd shapes, stability at |Δ| = 1e4, input errors, gradcheck, torch.compile.
opcheck of the raw ops: tests/ops/test_library.py; extreme values and NaN / inf inputs:
tests/ops/test_extremes.py."""
import math

import pytest
import torch
from conftest import backends_for
from helpers import assert_close, call_on, device_for

from mmreward import ops
from mmreward.ops import BackendUnavailableError, _backend

ALL = ("reference", "cpp", "cuda", "triton")
CPP_OK = _backend.why_unavailable("cpp", "pairwise_loss", "cpu") is None
TRITON_OK = _backend.why_unavailable("triton", "pairwise_loss", device_for("triton")) is None
CUDA_OK = torch.cuda.is_available() and _backend.has_kernel("pairwise_loss", "cuda")
needs_cpp = pytest.mark.skipif(not CPP_OK, reason="C++ extension with the pairwise ops not built")
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="triton (on a GPU, or TRITON_INTERPRET=1) not available")
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason="no CUDA GPU, or mmreward._C built without CUDA")

OPTIONS = {
    "plain": {},
    "margin": {"margin": True},
    "smooth": {"label_smoothing": 0.2},
    "center": {"center_coef": 0.05},
    "tie": {"tie": True},
    "all": {"margin": True, "label_smoothing": 0.1, "center_coef": 0.01, "tie": True},
}


def _options(name, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(OPTIONS[name])
    if kw.get("margin"):
        kw["margin"] = torch.rand(B, generator=g)
    if kw.get("tie"):
        t = torch.rand(B, generator=g) < 0.3
        t[0] = True
        kw["tie"] = t
    return kw


def _run(backend, fn, tensors, grad_of, seed=1, **kw):
    """Run fn under `backend`; returns (output, grads of tensors listed in grad_of)."""
    xs = [t.detach().clone().requires_grad_(i in grad_of) for i, t in enumerate(tensors)]
    out = call_on(backend, fn, *xs, **kw)
    if isinstance(out, tuple):
        out = out[0]
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    if grad_of:
        (out * g).sum().backward()
    return out.detach(), [xs[i].grad for i in grad_of]


def _compare(backend, fn, tensors, grad_of, dtype, *, scale=1.0, **kw):
    out, grads = _run(backend, fn, tensors, grad_of, **kw)
    ref, ref_grads = _run("reference", fn, tensors, grad_of, **kw)
    assert out.dtype == ref.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(out, ref, dtype, scale=scale, msg=f"{backend} loss")
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        assert a is not None and a.dtype == tensors[grad_of[i]].dtype, f"grad {i} dtype"
        assert_close(a, b, dtype, scale=scale, msg=f"{backend} grad of input {grad_of[i]}")


# ------------------------------------------------------------------------------------------------
# pairwise_loss
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_pairwise_matches_reference(backend, reduction, option, dtype):
    for B in (1, 3, 1000):
        g = torch.Generator().manual_seed(B)
        rc = (torch.randn(B, generator=g) * 3).to(dtype)
        rr = (torch.randn(B, generator=g) * 3).to(dtype)
        kw = _options(option, B)
        _compare(backend, ops.pairwise_loss, [rc, rr], [0, 1], dtype, reduction=reduction,
                 scale=8.0 if reduction == "sum" else 1.0, **kw)
        loss, acc = call_on(backend, ops.pairwise_loss_and_accuracy, rc, rr, reduction=reduction, **kw)
        assert acc.dtype == torch.float32 and acc.dim() == 0 and not acc.requires_grad
        assert acc.item() == pytest.approx(ops.pairwise_accuracy(rc, rr, kw.get("tie")).item())


@pytest.mark.parametrize("backend", ["cpp", "triton", "cuda"])
def test_pairwise_large_batch(backend):
    if not {"cpp": CPP_OK, "triton": TRITON_OK, "cuda": CUDA_OK}[backend]:
        pytest.skip(f"{backend} unavailable")
    B = 1_000_003
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(B, generator=g) * 2, torch.randn(B, generator=g) * 2
    kw = dict(margin=torch.rand(B, generator=g), tie=torch.rand(B, generator=g) < 0.1, center_coef=0.01,
              label_smoothing=0.05)
    _compare(backend, ops.pairwise_loss, [rc, rr], [0, 1], torch.float32, **kw)
    if backend in ("cpp", "cuda"):  # reduction none + recompute backward at the large size too
        _compare(backend, ops.pairwise_loss, [rc, rr], [0, 1], torch.float32, reduction="none", **kw)


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
def test_pairwise_margin_forms(backend):
    B = 5
    rc, rr = torch.randn(B), torch.randn(B)
    a = call_on(backend, ops.pairwise_loss, rc, rr, margin=0.5)
    b = call_on(backend, ops.pairwise_loss, rc, rr, margin=torch.tensor(0.5))
    c = call_on(backend, ops.pairwise_loss, rc, rr, margin=torch.full((B,), 0.5, dtype=torch.float64))
    expected = -torch.nn.functional.logsigmoid(rc - rr - 0.5).mean()
    for x in (a, b, c):
        assert_close(x, expected, torch.float32)


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
def test_pairwise_all_ties_accuracy_zero(backend):
    rc, rr = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0])
    tie = torch.tensor([True, True])
    loss, acc = call_on(backend, ops.pairwise_loss_and_accuracy, rc, rr, tie=tie)
    assert acc.item() == 0.0
    d = rc - rr
    expected = (-0.5 * torch.nn.functional.logsigmoid(d) - 0.5 * torch.nn.functional.logsigmoid(-d)).mean()
    assert_close(loss, expected, torch.float32)


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_pairwise_stable_large_delta(backend, dtype):
    rc = torch.tensor([1e4, -1e4, 5e3, 0.0], dtype=dtype)
    rr = torch.tensor([0.0, 0.0, -5e3, 0.0], dtype=dtype)
    eps = 0.1
    tie = torch.tensor([False, False, True, False])
    for kw, p in (({}, 1.0), ({"label_smoothing": eps}, 1 - eps / 2)):
        xs = [rc.clone().requires_grad_(), rr.clone().requires_grad_()]
        loss = call_on(backend, ops.pairwise_loss, *xs, tie=tie, reduction="sum", **kw)
        loss.backward()
        d = (rc.double() - rr.double())
        pp = torch.where(tie, torch.tensor(0.5, dtype=torch.float64), torch.tensor(p, dtype=torch.float64))
        # analytic: softplus(-d) + (1 - p)·d ; d loss / d r_c = σ(d) - p
        sp = torch.where(d > 0, torch.zeros_like(d), -d) + torch.log1p(torch.exp(-d.abs()))
        expected = (sp + (1 - pp) * d).sum()
        dz = torch.sigmoid(d) - pp
        assert torch.isfinite(loss) and torch.isfinite(xs[0].grad).all() and torch.isfinite(xs[1].grad).all()
        torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-3)
        torch.testing.assert_close(xs[0].grad.double(), dz, rtol=1e-2, atol=1e-6)
        torch.testing.assert_close(xs[1].grad.double(), -dz, rtol=1e-2, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# listwise_loss
# ------------------------------------------------------------------------------------------------
def _listwise_inputs(B, K, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = (torch.randn(B, K, generator=g) * 2).to(dtype)
    ranks = torch.randint(0, max(K // 2, 2), (B, K), generator=g)  # many equal ranks (ties)
    ranks[torch.rand(B, K, generator=g) < 0.2] = -1  # padding
    if B >= 3:
        ranks[1] = -1  # a fully padded row: no pairs
        ranks[2] = 0  # all tied: no pairs
    return rewards, ranks


@pytest.mark.parametrize("backend", backends_for("listwise_loss"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("K", [2, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_listwise_matches_reference(backend, reduction, K, dtype):
    for B in (1, 3, 257):
        rewards, ranks = _listwise_inputs(B, K, dtype, seed=B * K)
        _compare(backend, ops.listwise_loss, [rewards, ranks], [0], dtype, reduction=reduction,
                 scale=8.0 if reduction == "sum" else 1.0)


@pytest.mark.parametrize("backend", backends_for("listwise_loss"))
def test_listwise_no_pairs_and_semantics(backend):
    rewards = torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.0, 0.0]], requires_grad=True)
    ranks = torch.tensor([[0, 1, -1], [2, 2, 2]], dtype=torch.int32)
    per = call_on(backend, ops.listwise_loss, rewards, ranks, reduction="none")
    mean = call_on(backend, ops.listwise_loss, rewards, ranks)
    assert_close(per.detach(), torch.tensor([-math.log(torch.sigmoid(torch.tensor(-1.0)).item()), 0.0]), torch.float32)
    assert_close(mean.detach(), per[0].detach(), torch.float32)
    mean.backward()
    assert rewards.grad[1].abs().sum() == 0 and rewards.grad[0, 2] == 0
    nopairs = torch.tensor([[0, 0]])
    z = call_on(backend, ops.listwise_loss, torch.randn(1, 2), nopairs)
    assert z.item() == 0.0


# ------------------------------------------------------------------------------------------------
# reward_head_pairwise_loss
# ------------------------------------------------------------------------------------------------
def _head_inputs(B, H, dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    hc = torch.randn(B, H, generator=g).to(dtype)
    hr = torch.randn(B, H, generator=g).to(dtype)
    w = (torch.randn(H, generator=g) / math.sqrt(H) * 2).to(dtype)
    b = torch.tensor(0.25) if bias else None
    return hc, hr, w, b


def _head_fn(hc, hr, w, b=None, **kw):
    return ops.reward_head_pairwise_loss(hc, hr, w, b, **kw)


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", ["plain", "margin", "all"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_head_matches_reference(backend, reduction, option, dtype):
    for B, H in ((1, 1), (3, 123), (17, 123), (3, 4096)):
        hc, hr, w, b = _head_inputs(B, H, dtype, seed=B + H)
        kw = _options(option, B)
        _compare(backend, _head_fn, [hc, hr, w, b], [0, 1, 2, 3], dtype, reduction=reduction,
                 scale=4.0 if reduction == "sum" else 1.0, **kw)


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
@pytest.mark.parametrize("grad_of", [[2, 3], [0, 1], [0]], ids=["frozen_backbone", "frozen_head", "chosen_only"])
def test_head_partial_grads_and_no_bias(backend, grad_of):
    hc, hr, w, b = _head_inputs(5, 33, torch.float32, seed=3)
    _compare(backend, _head_fn, [hc, hr, w, b], grad_of, torch.float32, center_coef=0.02)
    _compare(backend, _head_fn, [hc, hr, w], [g for g in grad_of if g < 3], torch.float32, reduction="sum")


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
@pytest.mark.parametrize("H", [0, 12288, 12289], ids=lambda h: f"H{h}")
def test_head_edge_widths(backend, H):
    """H = 0 (the bias alone scores both responses: loss and bias grad still non-trivial) and the
    widths around the CUDA kernel's shared-memory limit for the weight-grad partials (12288 fp32
    values + the kernel's static shared memory overflowed 48 KB before a fix found in review)."""
    B = 3
    hc, hr, w, _ = _head_inputs(B, H, torch.float32, seed=H)
    b = torch.tensor(0.25)
    kw = dict(margin=torch.tensor([0.5, 0.0, 1.0]), center_coef=0.01)
    _compare(backend, _head_fn, [hc, hr, w, b], [0, 1, 2, 3] if H else [2, 3], torch.float32, **kw)


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
def test_head_linear_layout_and_accuracy(backend):
    hc, hr, _, _ = _head_inputs(6, 16, torch.float32, seed=4)
    lin = torch.nn.Linear(16, 1)
    loss, acc = call_on(backend, ops.reward_head_pairwise_loss_and_accuracy, hc, hr, lin.weight, lin.bias)
    loss.backward()
    rc, rr = lin(hc).squeeze(-1), lin(hr).squeeze(-1)
    ref = -torch.nn.functional.logsigmoid(rc - rr).mean()
    assert_close(loss.detach(), ref.detach(), torch.float32)
    assert acc.item() == pytest.approx((rc > rr).float().mean().item())
    w_grad = lin.weight.grad.clone()
    lin.zero_grad()
    ref.backward()
    assert_close(w_grad, lin.weight.grad, torch.float32)


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
def test_head_fp32_weight_over_bf16_hidden(backend):
    """Mixed precision keeps the head in fp32 over a bf16 backbone: the head is cast to bf16 (as
    autocast's Linear and the step ops do) and its gradient comes back fp32 through the cast."""
    hc, hr, w, b = _head_inputs(5, 40, torch.bfloat16, seed=11)
    w32 = w.float().clone().requires_grad_()
    loss = call_on(backend, ops.reward_head_pairwise_loss, hc, hr, w32, b.float())
    loss.backward()
    w16 = w.clone().requires_grad_()
    ref = call_on(backend, ops.reward_head_pairwise_loss, hc, hr, w16, b.float())
    ref.backward()
    assert w32.grad.dtype == torch.float32
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(w32.grad, w16.grad.float())
    with pytest.raises(TypeError, match="h_rejected"):
        ops.reward_head_pairwise_loss(hc, hr.float(), w32)


@pytest.mark.parametrize("backend", backends_for("reward_head_pairwise_loss"))
def test_head_stable_large_delta(backend):
    H = 8
    hc = torch.zeros(2, H)
    hr = torch.zeros(2, H)
    hc[0, 0], hc[1, 0] = 1e4, -1e4
    w = torch.zeros(H)
    w[0] = 1.0
    xs = [hc.clone().requires_grad_(), hr.clone().requires_grad_(), w.clone().requires_grad_()]
    loss = call_on(backend, ops.reward_head_pairwise_loss, *xs, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(x.grad).all() for x in xs)
    torch.testing.assert_close(loss.double(), torch.tensor(1e4, dtype=torch.float64))
    # d/dr_c: σ(Δ) - 1 = [0, -1]; grad_h_c = that · w; grad_w = Σ coef_c·h_c + coef_r·h_r = [-(-1e4)=1e4, ...]
    exp_hc = torch.zeros(2, H)
    exp_hc[1, 0] = -1.0
    torch.testing.assert_close(xs[0].grad, exp_hc)
    torch.testing.assert_close(xs[1].grad, -exp_hc)
    exp_w = torch.zeros(H)
    exp_w[0] = 1e4
    torch.testing.assert_close(xs[2].grad, exp_w)


# ------------------------------------------------------------------------------------------------
# errors and backend selection
# ------------------------------------------------------------------------------------------------
def test_errors():
    r = torch.randn(4)
    with pytest.raises(ValueError, match="empty"):
        ops.pairwise_loss(torch.empty(0), torch.empty(0))
    with pytest.raises(ValueError, match="label_smoothing"):
        ops.pairwise_loss(r, r, label_smoothing=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        ops.pairwise_loss(r, r, label_smoothing=-0.1)
    with pytest.raises(ValueError, match="r_rejected"):
        ops.pairwise_loss(r, torch.randn(5))
    with pytest.raises(TypeError, match="r_rejected"):
        ops.pairwise_loss(r, r.double())
    with pytest.raises(ValueError, match="r_rejected"):
        ops.pairwise_loss(r, r.to("meta"))
    with pytest.raises(TypeError, match="tie"):
        ops.pairwise_loss(r, r, tie=torch.zeros(4))
    with pytest.raises(ValueError, match="margin"):
        ops.pairwise_loss(r, r, margin=torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        ops.pairwise_loss(r, r, reduction="avg")
    assert ops.listwise_loss(torch.tensor([[1.0, float("nan")]]), torch.tensor([[0, -1]])) == 0  # padding: ignored
    with pytest.raises(TypeError, match="ranks"):
        ops.listwise_loss(torch.randn(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="empty"):
        ops.listwise_loss(torch.empty(0, 3), torch.empty(0, 3, dtype=torch.long))
    h = torch.randn(3, 8)
    with pytest.raises(ValueError, match="weight"):
        ops.reward_head_pairwise_loss(h, h, torch.randn(7))
    with pytest.raises(TypeError, match="weight"):
        ops.reward_head_pairwise_loss(h, h, torch.randn(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        ops.reward_head_pairwise_loss(torch.empty(0, 8), torch.empty(0, 8), torch.randn(8))
    with pytest.raises(ValueError, match="bias"):
        ops.reward_head_pairwise_loss(h, h, torch.randn(8), torch.zeros(2))


def test_hidden_state_nan_propagates():
    h = torch.randn(3, 8)
    h[1, 2] = float("nan")
    assert torch.isnan(ops.reward_head_pairwise_loss(h, torch.randn(3, 8), torch.randn(8)))


def test_forced_unavailable_backend_raises():
    r = torch.randn(4)
    with _backend.use_backend("cuda"), pytest.raises(BackendUnavailableError):
        ops.pairwise_loss(r, r)
    with _backend.use_backend("cuda"), pytest.raises(BackendUnavailableError):
        ops.listwise_loss(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with _backend.use_backend("cuda"), pytest.raises(BackendUnavailableError):
        ops.reward_head_pairwise_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3))


@needs_cpp
def test_cpp_deterministic_across_thread_counts():
    B, H = 200_003, 64
    rc, rr = torch.randn(B), torch.randn(B)
    hc, hr, w, _ = _head_inputs(301, H, torch.float32)
    prev = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            w_ = w.clone().requires_grad_()
            loss = ops.reward_head_pairwise_loss(hc, hr, w_)
            loss.backward()
            outs.append((ops.pairwise_loss(rc, rr), loss.detach(), w_.grad))
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# gradcheck, torch.compile
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [b for b in ("reference", "cpp")])
def test_gradcheck_float64(backend):
    if backend == "cpp" and not CPP_OK:
        pytest.skip("C++ extension unavailable")
    B, K, H = 6, 5, 7
    g = torch.Generator().manual_seed(0)
    rc = torch.randn(B, generator=g, dtype=torch.float64, requires_grad=True)
    rr = torch.randn(B, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.rand(B, generator=g, dtype=torch.float64)
    tie = torch.rand(B, generator=g) < 0.4
    rewards = torch.randn(B, K, generator=g, dtype=torch.float64, requires_grad=True)
    ranks = torch.randint(-1, 3, (B, K), generator=g)
    hc = torch.randn(B, H, generator=g, dtype=torch.float64, requires_grad=True)
    hr = torch.randn(B, H, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(H, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    kw = dict(margin=m, tie=tie, label_smoothing=0.1, center_coef=0.02)
    with _backend.use_backend(backend):
        for red in ("mean", "sum", "none"):
            assert torch.autograd.gradcheck(lambda a, c: ops.pairwise_loss(a, c, reduction=red, **kw), (rc, rr))
            assert torch.autograd.gradcheck(lambda r: ops.listwise_loss(r, ranks, reduction=red), (rewards,))
            assert torch.autograd.gradcheck(
                lambda a, c, ww, bb: ops.reward_head_pairwise_loss(a, c, ww, bb, reduction=red, **kw), (hc, hr, w, b)
            )


@needs_cpp
def test_torch_compile_cpp():
    B, H = 8, 16
    hc, hr, w, b = _head_inputs(B, H, torch.float32, bias=True)
    rc, rr = torch.randn(B), torch.randn(B)
    m = torch.rand(B)

    def step(hc, hr, w, b, rc, rr):
        l1, acc = ops.reward_head_pairwise_loss_and_accuracy(hc, hr, w, b, margin=m, center_coef=0.01)
        l2 = ops.pairwise_loss(rc, rr, label_smoothing=0.1)
        l3 = ops.listwise_loss(torch.stack([rc, rr], 1), torch.tensor([[0, 1]]).expand(B, 2))
        return l1 + l2 + l3, acc

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    outs = []
    for fn in (step, compiled):
        xs = [t.clone().requires_grad_() for t in (hc, hr, w, b, rc, rr)]
        with _backend.use_backend("cpp"):
            loss, acc = fn(*xs)
        loss.backward()
        outs.append((loss.detach(), acc, *[x.grad for x in xs]))
    for a, e in zip(*outs):
        assert_close(a, e, torch.float32)
