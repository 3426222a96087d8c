"""A user's sweep over the public ops: every op x backend x dtype x memory layout against the written-out
float64 formula (forward and gradients), plus the defects the sweep found: torch.compile(dynamic=True)
of the ops with float options, the listwise backward's fake strides under torch.compile, and the Triton
pairwise kernels' float64 options."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import backends_for
from helpers import call_on

import mmreward.ops as O
from mmreward.ops import _backend, _dispatch

F64 = torch.float64
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# gradients come back in the input dtype (rounded once): a few of its ulps
GRAD_TOL = {F64: (1e-9, 1e-7), torch.float32: (1e-5, 1e-4), torch.bfloat16: (4e-2, 4e-2),
            torch.float16: (4e-3, 4e-3)}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _pair_formula(rc, rr, margin=None, label_smoothing=0.0, center_coef=0.0, tie=None, reduction="mean"):
    d = rc - rr
    z = d if margin is None else d - margin
    p = torch.full_like(d, 1 - label_smoothing / 2)
    if tie is not None:
        z, p = torch.where(tie, d, z), torch.where(tie, torch.full_like(d, 0.5), p)
    per = F.softplus(-z) + (1 - p) * z + center_coef * (rc + rr) ** 2
    return {"none": per, "mean": per.mean(), "sum": per.sum()}[reduction]


def _make(name, dt):
    """(differentiable inputs in `dt`, data, call(**inputs, **data), formula(**float64 inputs, **data))."""
    g = _gen(sum(map(ord, name)))
    r = lambda *s: torch.randn(*s, generator=g).to(dt)
    if name == "pairwise_loss":
        d = dict(margin=torch.rand(7, generator=g), tie=torch.rand(7, generator=g) < 0.4, label_smoothing=0.1,
                 center_coef=0.05, reduction="none")
        return dict(rc=r(7), rr=r(7)), d, lambda rc, rr, **k: O.pairwise_loss(rc, rr, **k), _pair_formula
    if name == "reward_head_pairwise_loss":
        def formula(hc, hr, w, b, **k):
            return _pair_formula(hc @ w + b, hr @ w + b, **k)
        d = dict(label_smoothing=0.2, reduction="mean")
        return (dict(hc=r(5, 9), hr=r(5, 9), w=r(9), b=r(())), d,
                lambda hc, hr, w, b, **k: O.reward_head_pairwise_loss(hc, hr, w, b, **k), formula)
    if name == "listwise_loss":
        ranks = torch.stack([torch.randperm(6, generator=g) for _ in range(3)])
        ranks[:, ::4] = -1

        def formula(x, ranks):
            valid = ranks >= 0
            better = (ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]
            xx = torch.where(valid, x, torch.zeros((), dtype=x.dtype))
            nll = torch.where(better, F.softplus(xx[:, None, :] - xx[:, :, None]), torch.zeros((), dtype=x.dtype))
            return nll.sum((1, 2)) / better.sum((1, 2))
        return dict(x=r(3, 6)), dict(ranks=ranks), lambda x, ranks: O.listwise_loss(x, ranks, reduction="none"), formula
    idx = torch.tensor([7, 0, 3, 12])
    if name == "step_bce_loss":
        y = torch.tensor([1.0, -100.0, 0.25, 0.0])

        def formula(h, wg, wb, y):
            z = h.reshape(-1, h.shape[-1])[idx] @ (wg - wb) + 0.1
            keep = y != -100
            per = F.binary_cross_entropy_with_logits(z, torch.where(keep, y, 0).to(z.dtype), reduction="none")
            return torch.where(keep, per, torch.zeros_like(per))
        return (dict(h=r(2, 7, 5), wg=r(5), wb=r(5)), dict(y=y),
                lambda h, wg, wb, y: O.step_bce_loss(h, wg, wb, y, b_good=0.1, step_index=idx, reduction="none"),
                formula)
    if name == "step_pair_loss":
        grp, pol = torch.tensor([0, 0, 1, 1]), torch.tensor([True, False, False, True])

        def formula(h, w):
            v = h.reshape(-1, h.shape[-1])[idx] @ w
            return (F.softplus(v[1] - v[0]) + F.softplus(v[2] - v[3])) / 2
        return (dict(h=r(2, 7, 5), w=r(5)), {},
                lambda h, w: O.step_pair_loss(h, w, step_index=idx, step_group=grp, step_polarity=pol), formula)
    if name == "segment_reduce":
        lens = torch.tensor([2, 0, 3])

        def formula(s):
            return torch.stack([s[:2].log().sum(), torch.zeros((), dtype=s.dtype), s[2:].log().sum()])
        return (dict(s=(torch.rand(5, generator=g) + 0.1).to(dt)), {},
                lambda s: O.segment_reduce(s, lens, reduce="logprod"), formula)
    if name in ("codebook_entropy", "codebook_nll", "categorical_kl"):
        tgt, mask = torch.randint(0, 11, (2, 3), generator=g), torch.tensor([[True, False, True], [True, True, True]])

        def tok(a, b=None):
            a = a.transpose(1, 2)
            if name == "codebook_entropy":
                lp = a.log_softmax(-1)
                t = -(lp.exp() * lp).sum(-1)
            elif name == "codebook_nll":
                t = a.logsumexp(-1) - a.gather(-1, tgt[..., None])[..., 0]
            else:
                t = (a.exp() * (a - b.transpose(1, 2))).sum(-1)
            return torch.where(mask, t, torch.zeros_like(t)).sum(1) / mask.sum(1)
        kw = dict(class_dim=1, mask=mask, reduction="mean")
        if name == "categorical_kl":
            a, b = (torch.randn(2, 11, 3, generator=g).log_softmax(1).to(dt) for _ in range(2))
            return dict(a=a, b=b), {}, lambda a, b: O.categorical_kl(a, b, **kw), tok
        call = (lambda a: O.codebook_entropy(a, **kw)) if name == "codebook_entropy" else (
            lambda a: O.codebook_nll(a, tgt, **kw))
        return dict(a=r(2, 11, 3) * 3), {}, call, tok
    if name.startswith("attention"):
        D = int(name[len("attention"):])

        def formula(q, k, v):
            return (torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5, -1) @ v).transpose(1, 2)
        return dict(q=r(2, 3, 5, D), k=r(2, 3, 7, D), v=r(2, 3, 7, D)), {}, O.attention, formula
    raise AssertionError(name)


OPS = ["pairwise_loss", "reward_head_pairwise_loss", "listwise_loss", "step_bce_loss", "step_pair_loss",
       "segment_reduce", "codebook_entropy", "codebook_nll", "categorical_kl", "attention8", "attention24"]


def _layout(x, layout):
    """x's values in a fresh leaf with another memory layout."""
    x = x.detach()
    if x.dim() == 0 or layout == "contiguous":
        return x.clone()
    if layout == "strided":  # every other element of a wider buffer
        big = torch.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "transposed":  # storage in reversed dim order
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "offset":  # a view with a storage offset
        buf = torch.zeros(x.numel() + 3, dtype=x.dtype)
        buf[3:] = x.reshape(-1)
        return buf[3:].view(x.shape)
    if layout == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x.clone()


def _sweep_params():
    for op in OPS:
        public = "attention" if op.startswith("attention") else op
        for p in backends_for(_dispatch._PUBLIC_OPS.get(public, public)):  # the op's own name
            yield pytest.param(op, p.values[0], marks=p.marks, id=f"{op}-{p.id}")


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
@pytest.mark.parametrize("op,backend", list(_sweep_params()))
def test_sweep_matches_float64_formula(op, backend):
    """Forward and gradients of every public op on every backend, dtype and layout, against the
    formula evaluated in float64 on the same (rounded) inputs."""
    for dt in DTYPES:
        inputs, data, call, formula = _make(op, dt)
        x64 = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
        want = formula(**x64, **data)
        gw = torch.randn(want.shape, generator=_gen(1), dtype=F64)
        want_g = torch.autograd.grad((want * gw).sum(), list(x64.values()))
        for layout in ("contiguous", "strided", "transposed", "offset", "channels_last"):
            leaves = {k: _layout(v, layout).requires_grad_() for k, v in inputs.items()}
            out = call_on(backend, call, **leaves, **data)
            msg = f"{op} {backend} {dt} {layout}"
            out_dt = dt if op.startswith("attention") else (F64 if dt == F64 else torch.float32)
            assert out.dtype == out_dt, msg
            if op.startswith("attention") and dt != F64:  # the output is rounded to the input dtype once
                tol = dict(rtol=GRAD_TOL[dt][1], atol=GRAD_TOL[dt][0])
            else:  # float32 / float64 results of exactly representable inputs
                tol = dict(rtol=1e-9, atol=1e-10) if dt == F64 else dict(rtol=2e-5, atol=2e-6)
            torch.testing.assert_close(out.double(), want.detach(), **tol, msg=msg)
            got_g = torch.autograd.grad((out.double() * gw).sum(), list(leaves.values()))
            for (k, leaf), a, b in zip(leaves.items(), got_g, want_g):
                assert a.dtype == leaf.dtype and a.shape == leaf.shape, f"{msg} grad {k}"
                atol, rtol = GRAD_TOL[dt]
                torch.testing.assert_close(a.double(), b, atol=atol * max(1.0, b.abs().max().item()), rtol=rtol,
                                           msg=f"{msg} grad {k}")


# ------------------------------------------------------------------------------------------------
# torch.compile(dynamic=True, fullgraph=True): the float options' checks


_DYN_CALLS = {  # defaults included: the failure came with the options' default values
    "pairwise_loss": lambda s: O.pairwise_loss(s, s.flip(0)),
    "pairwise_loss options": lambda s: O.pairwise_loss(s, s.flip(0), label_smoothing=0.1, center_coef=0.01),
    "pairwise_loss_and_accuracy": lambda s: O.pairwise_loss_and_accuracy(s, s.flip(0))[0],
    "reward_head_pairwise_loss": lambda s: O.reward_head_pairwise_loss(s.view(5, 1), s.flip(0).view(5, 1),
                                                                       torch.ones(1)),
    "first_below": lambda s: O.first_below(s, torch.tensor([2, 3])),
    "refine_process_rewards": lambda s: O.refine_process_rewards(s, torch.tensor([2, 3]), clip=0.3, gamma=0.9)[1],
}


@pytest.mark.parametrize("name", sorted(_DYN_CALLS))
def test_compile_dynamic_fullgraph_with_float_options(name):
    """docs/ops.md promises fullgraph torch.compile; with dynamic=True (or mark_dynamic) the option checks'
    math.isfinite / math.isnan failed to trace ("torch.* op returned non-Tensor") even on constants."""
    f = _DYN_CALLS[name]
    s = torch.rand(5, generator=_gen(0))
    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")(s)
    torch.testing.assert_close(got, f(s))
    # the checks still refuse bad options
    with pytest.raises(ValueError, match="`center_coef` must be a finite number"):
        O.pairwise_loss(s, s, center_coef=math.inf)
    with pytest.raises(ValueError, match="`threshold` must be a number"):
        O.first_below(s, torch.tensor([2, 3]), threshold=math.nan)
    with pytest.raises(ValueError, match="`clip` must be a finite float"):
        O.refine_process_rewards(s, torch.tensor([2, 3]), clip=-math.inf)
    with pytest.raises(ValueError, match="cannot be stored"):
        O.unpack_steps(torch.tensor([1, 2, 3, 4, 5]), torch.tensor([2, 3]), fill=math.inf)


# ------------------------------------------------------------------------------------------------
# listwise_loss_backward: fake kernel strides


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_listwise_backward_fake_matches_kernel_strides_for_transposed_rewards(backend):
    """Rewards given as a transposed view (e.g. scores.view(K, B).t()): the fake kernel kept their
    strides (empty_like) while every kernel returns a contiguous gradient, so torch.compile (inductor)
    failed in backward with "expected size 4==4, stride 5==1 ... listwise_loss_backward"."""
    if _backend.why_unavailable(backend, "listwise_loss", "cpu"):
        pytest.skip(f"{backend}: {_backend.why_unavailable(backend, 'listwise_loss', 'cpu')}")
    if backend == "triton":
        _dispatch._load_triton_kernels("pairwise")
    ns = torch.ops.mmreward if backend == "cpp" else torch.ops.mmreward_triton
    g = _gen(0)
    rewards = torch.randn(5, 4, generator=g).t()
    ranks = torch.stack([torch.randperm(5, generator=g) for _ in range(4)])
    for red in (0, 1, 2):
        counts = ns.listwise_loss.default(rewards, ranks, red)[1]
        grad = torch.ones(4) if red == 0 else torch.tensor(1.0)
        torch.library.opcheck(ns.listwise_loss_backward.default, (grad, rewards, ranks, counts, red))


# ------------------------------------------------------------------------------------------------
# Triton pairwise kernels in float64: options passed exactly


@pytest.mark.parametrize("backend", backends_for("pairwise_loss"))
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_float64_pairwise_options_are_exact(backend, reduction):
    """Triton passes a Python float argument as fp32: label_smoothing 0.1, center_coef 0.05 and the
    mean's 1/B reached the float64 kernels rounded, an error of ~1e-7 in float64 losses and gradients
    (vs ~1e-16 on the other backends)."""
    g = _gen(3)
    rc, rr = torch.randn(3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    kw = dict(margin=torch.rand(3, generator=g, dtype=F64), label_smoothing=0.1, center_coef=0.05,
              reduction=reduction)
    a, b = rc.clone().requires_grad_(), rr.clone().requires_grad_()
    loss = call_on(backend, O.pairwise_loss, a, b, **kw)
    x, y = rc.clone().requires_grad_(), rr.clone().requires_grad_()
    want = _pair_formula(x, y, **kw)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(loss.sum(), (a, b)), torch.autograd.grad(want.sum(), (x, y)),
                               rtol=1e-13, atol=1e-14)
    hc, hr = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    w = torch.randn(4, generator=g, dtype=F64)
    head = call_on(backend, O.reward_head_pairwise_loss, hc, hr, w, **kw)
    torch.testing.assert_close(head, _pair_formula(hc @ w, hr @ w, **kw), rtol=1e-13, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# step ops with a symbolic batch size (torch.export / torch.compile dynamic shapes)


@pytest.mark.parametrize("where", ["step_index", "step_mask"])
def test_step_scores_export_keeps_the_batch_dynamic(where):
    """Exporting a PRM scorer with a dynamic batch failed: step_positions took int() of hidden's symbolic
    sizes ("You marked B as dynamic but your code specialized it to be a constant (2)"); under
    torch.compile(dynamic=True) the same specialisation recompiled for every batch size."""
    g = _gen(5)
    w = torch.randn(8, generator=g)

    class Scorer(torch.nn.Module):
        def forward(self, hidden, steps):
            kw = {where: steps}
            return O.step_scores(hidden, w, w.flip(0), b_good=0.1, **kw)

    def steps(B):
        return torch.tensor([1, 7]) if where == "step_index" else torch.arange(B * 5).view(B, 5) % 3 == 0

    B = torch.export.Dim("B", min=2, max=64)
    ep = torch.export.export(Scorer(), (torch.randn(2, 5, 8, generator=g), steps(2)),
                             dynamic_shapes=({0: B}, None if where == "step_index" else {0: B}))
    h = torch.randn(7, 5, 8, generator=g)
    torch.testing.assert_close(ep.module()(h, steps(7)), Scorer()(h, steps(7)))
