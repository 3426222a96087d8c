"""PRM step-reward ops: every backend against the reference (forward + grads, fp32 / bf16), layouts
(batched mask, packed index, (b, t) pairs), odd shapes, equality with the full-vocabulary path,
segment reductions / first_below / refinement against per-sequence Python loops, input errors,
gradcheck in float64 (reference and C++). opcheck of the raw ops: tests/ops/test_library.py.

Every backend runs on the device it runs on here (`helpers.device_for`: C++ and reference on CPU
tensors, CUDA on the GPU, Triton on the GPU when there is one, else interpreted on CPU tensors):
inputs and expectations are built on the CPU, `helpers.call_on` moves the inputs (keyword tensors
included) to the backend's device and the outputs back, and gradients reach the CPU leaves through
the differentiable `.to`. So anything a function run on a backend needs as a tensor goes in as an
argument or keyword, never through a closure (only the CPU-only tests below may capture tensors)."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import backends_for
from helpers import assert_close, call_on, device_for

from mmreward import ops
from mmreward.ops import _backend
from mmreward.ops import step_reward as sr

CPP_OK = _backend.why_unavailable("cpp", "step_head", "cpu") is None
TRITON_OK = _backend.why_unavailable("triton", "step_head", device_for("triton")) is None
CUDA_OK = torch.cuda.is_available() and _backend.has_kernel("step_head", "cuda")
needs_cpp = pytest.mark.skipif(not CPP_OK, reason="C++ extension with the step-reward ops not built")
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="triton (on a GPU, or TRITON_INTERPRET=1) not available")
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason="no CUDA GPU, or mmreward._C built without the CUDA step ops")
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _run(backend, fn, tensors, grad_of, seed=1, **kw):
    """fn(*tensors, **kw) under `backend`, on its device (`kw` tensors moved there too); returns the
    output (on the CPU) and the grads of the (CPU leaf) tensors listed in grad_of."""
    xs = [t.detach().clone().requires_grad_(i in grad_of) if isinstance(t, torch.Tensor) and t.is_floating_point()
          else t for i, t in enumerate(tensors)]
    out = call_on(backend, fn, *xs, **kw)
    if grad_of:
        g = torch.randn(out.shape, generator=_gen(seed), dtype=out.dtype)
        (out * g).sum().backward()
    return out.detach(), [xs[i].grad for i in grad_of]


def _compare(backend, fn, tensors, grad_of, dtype, *, scale=1.0, **kw):
    out, grads = _run(backend, fn, tensors, grad_of, **kw)
    ref, ref_grads = _run("reference", fn, tensors, grad_of, **kw)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.dtype == ref.dtype == acc, (out.dtype, ref.dtype)
    assert out.shape == ref.shape
    assert_close(out, ref, dtype, scale=scale, msg=f"{backend} output")
    # bf16 gradients are fp32 sums rounded to bf16: backends sum in different orders, so the two
    # roundings may differ by one bf16 ulp (2^-7 relative) -> allow 2x the bf16 tolerance
    gscale = max(scale, 2.0) if dtype == torch.bfloat16 else scale
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        assert a is not None and a.dtype == tensors[grad_of[i]].dtype, f"grad {i} dtype"
        assert_close(a, b, dtype, scale=gscale, msg=f"{backend} grad of input {grad_of[i]}")
    return out, grads


def _layout(kind, B, T, H, dtype, seed, *, p=0.3):
    """hidden + step-position kwargs for one layout; step counts per sequence include 0, 1 and many."""
    g = _gen(seed)
    mask = torch.rand(B, T, generator=g) < p
    if B >= 3:
        mask[0] = False  # a sequence without steps
        mask[1] = False
        mask[1, T - 1] = True  # exactly one step, at the last position
    hidden = torch.randn(B, T, H, generator=g).to(dtype)
    if kind == "mask":
        return hidden, dict(step_mask=mask)
    if kind == "pairs":
        return hidden, dict(step_index=mask.nonzero())
    if kind == "packed_mask":
        return hidden.reshape(B * T, H), dict(step_mask=mask.reshape(-1))
    if kind == "packed_index":  # unsorted flat indices
        idx = mask.reshape(-1).nonzero().squeeze(1)
        return hidden.reshape(B * T, H), dict(step_index=idx[torch.randperm(idx.numel(), generator=g)])
    raise ValueError(kind)


LAYOUTS = ["mask", "pairs", "packed_mask", "packed_index"]
SHAPES = [(1, 1, 1), (3, 9, 123), (4, 33, 17)]


def _rows(H, dtype, seed, n=2):
    g = _gen(seed)
    return [(torch.randn(H, generator=g) / math.sqrt(H) * 2).to(dtype) for _ in range(n)]


def _labels(S, seed, soft, ignore=True):
    g = _gen(seed)
    y = torch.rand(S, generator=g) if soft else (torch.rand(S, generator=g) < 0.5).float()
    if ignore and S > 1:
        y[torch.rand(S, generator=g) < 0.25] = -100
    return y


# ------------------------------------------------------------------------------------------------
# 1. two-token scoring / BCE
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", backends_for("step_head"))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@DTYPES
def test_step_scores_matches_reference(backend, layout, shape, dtype):
    B, T, H = shape
    hidden, steps = _layout(layout, B, T, H, dtype, seed=H)
    wg, wb = _rows(H, dtype, seed=H + 1)
    bg, bb = torch.tensor(0.3), torch.tensor(-0.2)

    def fn(h, wg, wb, bg, bb, **steps):
        return ops.step_scores(h, wg, wb, b_good=bg, b_bad=bb, **steps)

    _compare(backend, fn, [hidden, wg, wb, bg, bb], [0, 1, 2, 3, 4], dtype, scale=2.0, **steps)
    _compare(backend, lambda h, w, b, **st: ops.step_logits(h, w, b, **st), [hidden, wg, wb], [0, 1, 2], dtype,
             scale=2.0, **steps)


@pytest.mark.parametrize("backend", backends_for("step_head"))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@DTYPES
def test_step_bce_matches_reference(backend, layout, reduction, soft, dtype):
    B, T, H = 4, 21, 37
    hidden, steps = _layout(layout, B, T, H, dtype, seed=7)
    S = sr.step_positions(hidden.shape, **steps).numel()
    wg, wb = _rows(H, dtype, seed=8)
    y = _labels(S, 9, soft)

    def fn(h, wg, wb, bg, *, labels, **steps):
        return ops.step_bce_loss(h, wg, wb, labels, b_good=bg, reduction=reduction, **steps)

    out, _ = _compare(backend, fn, [hidden, wg, wb, torch.tensor(0.1)], [0, 1, 2, 3], dtype,
                      scale=4.0 if reduction == "sum" else 1.0, labels=y, **steps)
    if reduction == "none":
        assert out.shape == (S,) and bool((out[y == -100] == 0).all())


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_per_position_labels_and_hidden_without_grad(backend):
    B, T, H = 3, 10, 16
    hidden, steps = _layout("mask", B, T, H, torch.float32, seed=3, p=0.5)
    wg, wb = _rows(H, torch.float32, seed=4)
    pos_labels = torch.full((B, T), -100.0)
    pos_labels[steps["step_mask"]] = _labels(int(steps["step_mask"].sum()), 5, soft=True, ignore=False)
    per_step = pos_labels[steps["step_mask"]]
    a = call_on(backend, ops.step_bce_loss, hidden, wg, wb, pos_labels, **steps)
    b = call_on(backend, ops.step_bce_loss, hidden, wg, wb, per_step, **steps)
    assert_close(a, b, torch.float32)
    # frozen backbone: only the head rows need gradients (no (N, H) gradient is built)
    _compare(backend, lambda wg, wb, *, h, y, **st: ops.step_bce_loss(h, wg, wb, y, **st), [wg, wb], [0, 1],
             torch.float32, h=hidden, y=per_step, **steps)


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_no_steps_and_bool_labels(backend):
    h = torch.randn(2, 4, 6, requires_grad=True)
    w = torch.randn(6, requires_grad=True)
    p = call_on(backend, ops.step_scores, h, w, w * 0.5, step_mask=torch.zeros(2, 4, dtype=torch.bool))
    assert p.shape == (0,)
    p.sum().backward()
    assert h.grad is not None and float(h.grad.abs().sum()) == 0.0
    m = torch.tensor([[True, False, True, False], [False, False, False, True]])
    a = call_on(backend, ops.step_bce_loss, h, w, w * 0.5, torch.tensor([True, False, True]), step_mask=m)
    b = call_on(backend, ops.step_bce_loss, h, w, w * 0.5, torch.tensor([1.0, 0.0, 1.0]), step_mask=m)
    assert_close(a, b, torch.float32)


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_all_ignored_gives_zero_loss(backend):
    hidden, steps = _layout("mask", 2, 5, 8, torch.float32, seed=1, p=0.9)
    S = int(steps["step_mask"].sum())
    wg, wb = [t.requires_grad_() for t in _rows(8, torch.float32, seed=2)]
    loss = call_on(backend, ops.step_bce_loss, hidden, wg, wb, torch.full((S,), -100.0), **steps)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(wg.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_large_hidden_and_duplicate_steps(backend):
    """H = 4096 (real PRM size, few steps to keep it cheap) and a repeated step position."""
    N, H = 6, 4096
    g = _gen(11)
    hidden = torch.randn(N, H, generator=g)
    idx = torch.tensor([5, 0, 5, 2])
    wg, wb = _rows(H, torch.float32, seed=12)
    y = torch.tensor([1.0, 0.0, 0.7, -100.0])
    _compare(backend, lambda h, a, b, *, y, idx: ops.step_bce_loss(h, a, b, y, step_index=idx), [hidden, wg, wb],
             [0, 1, 2], torch.float32, y=y, idx=idx)


@pytest.mark.parametrize("backend", backends_for("step_head"))
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_two_token_equals_full_logits_path(backend, soft):
    """The full-vocabulary computation users run: logits = h @ W.T + b, 2-class softmax over the
    (good, bad) columns, BCE; scores, loss and all gradients must agree."""
    B, T, H, Vocab, good, bad = 3, 12, 24, 97, 13, 71
    g = _gen(21)
    hidden = torch.randn(B, T, H, generator=g)
    W = torch.randn(Vocab, H, generator=g) / math.sqrt(H)
    bvec = torch.randn(Vocab, generator=g) * 0.1
    mask = torch.rand(B, T, generator=g) < 0.4
    S = int(mask.sum())
    y = _labels(S, 22, soft)
    valid = y != -100

    h1, W1, b1 = (t.clone().requires_grad_() for t in (hidden, W, bvec))
    logits = h1 @ W1.T + b1  # (B, T, V)
    two = logits[mask][:, [good, bad]]  # (S, 2)
    p_full = torch.softmax(two, dim=-1)[:, 0]
    logp = torch.log_softmax(two, dim=-1)
    loss_full = -(y[valid] * logp[valid, 0] + (1 - y[valid]) * logp[valid, 1]).mean()
    loss_full.backward()

    h2 = hidden.clone().requires_grad_()
    rows = [t.clone().requires_grad_() for t in (W[good], W[bad], bvec[good], bvec[bad])]
    p = call_on(backend, ops.step_scores, h2, rows[0], rows[1], b_good=rows[2], b_bad=rows[3], step_mask=mask)
    loss = call_on(backend, ops.step_bce_loss, h2, rows[0], rows[1], y, b_good=rows[2], b_bad=rows[3], step_mask=mask)
    loss.backward()
    f32 = torch.float32
    assert_close(p, p_full, f32)
    assert_close(loss, loss_full, f32)
    assert_close(h2.grad, h1.grad, f32)
    assert_close(rows[0].grad, W1.grad[good], f32)
    assert_close(rows[1].grad, W1.grad[bad], f32)
    assert_close(rows[2].grad, b1.grad[good], f32)
    assert_close(rows[3].grad, b1.grad[bad], f32)


# ------------------------------------------------------------------------------------------------
# 2. scalar heads: values / MSE / pairwise (PPM)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", backends_for("step_head"))
@pytest.mark.parametrize("layout", ["mask", "packed_index"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@DTYPES
def test_value_loss_matches_reference(backend, layout, reduction, dtype):
    hidden, steps = _layout(layout, 4, 19, 29, dtype, seed=31)
    S = sr.step_positions(hidden.shape, **steps).numel()
    (w,) = _rows(29, dtype, seed=32, n=1)
    t = torch.rand(S, generator=_gen(33))
    t[::4] = -100

    def loss(h, w, b, *, targets, **steps):
        return ops.step_value_loss(h, w, targets, b, reduction=reduction, **steps)

    _compare(backend, loss, [hidden, w, torch.tensor(0.2)], [0, 1, 2], dtype, scale=4.0 if reduction == "sum" else 1.0,
             targets=t, **steps)
    _compare(backend, lambda h, w, **st: ops.step_values(h, w, 0.5, **st), [hidden, w], [0, 1], dtype, **steps)


def _ppm_loop(r, group, polarity):
    """rStar PPM by hand: per group −mean_{pos, neg} log σ(r_pos − r_neg); mean over groups."""
    losses = []
    for gid in sorted(set(group.tolist())):
        if gid < 0:
            continue
        pos = [i for i in range(len(r)) if group[i] == gid and polarity[i]]
        neg = [i for i in range(len(r)) if group[i] == gid and not polarity[i]]
        if not pos or not neg:
            continue
        terms = [-F.logsigmoid(r[i] - r[j]) for i in pos for j in neg]
        losses.append(torch.stack(terms).sum() / (len(pos) * len(neg)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("backend", backends_for("step_head"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@DTYPES
def test_pair_loss_matches_reference(backend, reduction, dtype):
    hidden, steps = _layout("mask", 4, 16, 23, dtype, seed=41, p=0.6)
    S = sr.step_positions(hidden.shape, **steps).numel()
    (w,) = _rows(23, dtype, seed=42, n=1)
    g = _gen(43)
    group = torch.randint(-1, 3, (S,), generator=g)
    pol = torch.rand(S, generator=g) < 0.5
    _compare(backend, lambda h, w, b, **kw: ops.step_pair_loss(h, w, b, reduction=reduction, **kw),
             [hidden, w, torch.tensor(0.0)], [0, 1], dtype, scale=4.0 if reduction == "sum" else 1.0,
             step_group=group, step_polarity=pol, **steps)
    pos, neg, pg = ops.pairs_from_groups(group, pol)
    _compare(backend, lambda h, w, **kw: ops.step_pair_loss(h, w, reduction=reduction, **kw),
             [hidden, w], [0, 1], dtype, scale=4.0 if reduction == "sum" else 1.0,
             pos_index=pos, neg_index=neg, pair_group=pg, **steps)


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_pair_loss_equals_rstar_formula(backend):
    hidden, steps = _layout("packed_mask", 3, 20, 15, torch.float32, seed=51, p=0.7)
    S = sr.step_positions(hidden.shape, **steps).numel()
    (w,) = _rows(15, torch.float32, seed=52, n=1)
    g = _gen(53)
    group = torch.randint(0, 4, (S,), generator=g)
    pol = torch.rand(S, generator=g) < 0.4
    loss = call_on(backend, ops.step_pair_loss, hidden, w, 0.1, step_group=group, step_polarity=pol, **steps)
    r = call_on(backend, ops.step_values, hidden, w, 0.1, **steps)
    assert_close(loss, _ppm_loop(r, group, pol), torch.float32)


@pytest.mark.parametrize("backend", backends_for("step_head"))
def test_pair_loss_with_cpu_pairs_and_hidden_on_the_device(backend):
    """Pairs and groups from a CPU data loader with hidden states on the backend's device (the GPU
    for cuda / triton there): the op moves them, rather than handing host pointers to a kernel."""
    hidden, steps = _layout("packed_mask", 3, 20, 15, torch.float32, seed=61, p=0.7)
    S = sr.step_positions(hidden.shape, **steps).numel()
    (w,) = _rows(15, torch.float32, seed=62, n=1)
    g = _gen(63)
    pos, neg = torch.randint(0, S, (9,), generator=g), torch.randint(0, S, (9,), generator=g)
    grp = torch.randint(0, 3, (9,), generator=g)
    dev = device_for(backend)
    with _backend.use_backend(backend):
        got = ops.step_pair_loss(hidden.to(dev), w.to(dev), 0.1, pos_index=pos, neg_index=neg, pair_group=grp,
                                 step_mask=steps["step_mask"].to(dev))
    exp = call_on("reference", ops.step_pair_loss, hidden, w, 0.1, pos_index=pos, neg_index=neg, pair_group=grp,
                  **steps)
    assert got.device.type == dev
    assert_close(got.cpu(), exp, torch.float32)


# ------------------------------------------------------------------------------------------------
# 3. segment reductions, first_below; 4. refinement
# ------------------------------------------------------------------------------------------------
LENGTHS = [0, 1, 5, 0, 2, 17, 1, 40]


def _seg_loop(x, lengths, reduce, empty=1.0):
    out, s = [], 0
    for n in lengths:
        v = x[s:s + n].double()
        s += n
        if n == 0:
            out.append(math.log(empty) if reduce == "logprod" else empty)
        else:
            out.append({"min": v.min(), "max": v.max(), "prod": v.prod(), "logprod": v.log().sum(), "last": v[-1],
                        "mean": v.mean(), "sum": v.sum()}[reduce].item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("backend", backends_for("step_segment_reduce"))
@pytest.mark.parametrize("reduce", sr.SEGMENT_REDUCTIONS)
@DTYPES
def test_segment_reduce_matches_reference(backend, reduce, dtype):
    lengths = torch.tensor(LENGTHS)
    S = int(lengths.sum())
    x = (torch.rand(S, generator=_gen(61)) * 0.9 + 0.05).to(dtype)
    grad_of = [] if reduce == "logprod" and dtype == torch.bfloat16 else [0]
    out, _ = _compare(backend, lambda v, lengths: ops.segment_reduce(v, lengths, reduce=reduce), [x], grad_of, dtype,
                      scale=4.0, lengths=lengths)
    assert_close(out, _seg_loop(x, LENGTHS, reduce), dtype, scale=4.0)
    # padded (B, K) + mask gives the same
    padded = ops.unpack_steps(x, lengths, fill=float("nan"))
    mask = torch.arange(padded.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    out2 = call_on(backend, ops.segment_reduce, padded.nan_to_num(0.5), mask=mask, reduce=reduce)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    out3 = call_on(backend, ops.segment_reduce, x, offsets=offsets, reduce=reduce)
    assert torch.equal(out, out2) and torch.equal(out, out3)


@pytest.mark.parametrize("backend", backends_for("step_segment_reduce"))
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # log(0) = -inf in the Triton interpreter
def test_segment_prod_with_zeros_and_empty_value(backend):
    x = torch.tensor([0.5, 0.0, 0.25, 0.0, 0.0, 0.9, 0.8])
    lengths = torch.tensor([3, 0, 2, 2])
    _compare(backend, lambda v, lengths: ops.segment_reduce(v, lengths, reduce="prod", empty_value=0.7), [x], [0],
             torch.float32, lengths=lengths)
    m = call_on(backend, ops.segment_reduce, x, lengths, reduce="min", empty_value=-1.0)
    assert m[1].item() == -1.0


@pytest.mark.parametrize("backend", backends_for("step_first_below"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
def test_first_below(backend, dtype):
    lengths = torch.tensor(LENGTHS)
    x = torch.rand(int(lengths.sum()), generator=_gen(71)).to(dtype)
    for thr in (0.0, 0.2, 0.5, 1.1):
        out = call_on(backend, ops.first_below, x, lengths, threshold=thr)
        exp, s = [], 0
        for n in LENGTHS:
            hits = [i for i in range(n) if float(x[s + i]) < thr]
            exp.append(hits[0] if hits else -1)
            s += n
        assert out.dtype == torch.int64 and out.tolist() == exp


def _refine_loop(r, lengths, clip, delta, gamma):
    ref_all, ret_all, s = [], [], 0
    for n in lengths:
        v = [float(t) for t in r[s:s + n]]
        s += n
        if clip is not None:
            v = [min(t - clip, 0.0) for t in v]
        if delta:
            v = [v[k] - v[k + 1] for k in range(n - 1)] + v[-1:]
        G, run = [0.0] * n, 0.0
        for k in range(n - 1, -1, -1):
            run = v[k] + gamma * run
            G[k] = run
        ref_all += v
        ret_all += G
    return torch.tensor(ref_all, dtype=torch.float64), torch.tensor(ret_all, dtype=torch.float64)


@pytest.mark.parametrize("backend", backends_for("step_refine"))
@pytest.mark.parametrize("clip,delta", [(None, False), (0.4, False), (None, True), (0.4, True)],
                         ids=["plain", "clip", "delta", "clip+delta"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
def test_refine_process_rewards(backend, clip, delta, dtype):
    lengths = torch.tensor(LENGTHS)
    r = torch.rand(int(lengths.sum()), generator=_gen(81)).to(dtype)
    for gamma in (1.0, 0.9):
        refined, returns = call_on(backend, ops.refine_process_rewards, r, lengths, clip=clip, delta=delta, gamma=gamma)
        e_ref, e_ret = _refine_loop(r.double(), LENGTHS, clip, delta, gamma)
        tol = torch.float64 if dtype == torch.float64 else torch.float32
        assert_close(refined, e_ref, tol, scale=2.0)
        assert_close(returns, e_ret, tol, scale=8.0)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_errors():
    h = torch.randn(2, 5, 8)
    w = torch.randn(8)
    m = torch.zeros(2, 5, dtype=torch.bool)
    m[0, 1] = m[1, 3] = True
    with pytest.raises(ValueError, match="w_good"):
        ops.step_scores(h, torch.randn(7), w, step_mask=m)
    with pytest.raises(ValueError, match="w_bad"):
        ops.step_scores(h, w, torch.randn(8, 1), step_mask=m)
    with pytest.raises(ValueError, match="hidden"):
        ops.step_scores(torch.randn(8), w, w, step_mask=m)
    with pytest.raises(TypeError, match="hidden"):
        ops.step_scores(h.long(), w, w, step_mask=m)
    with pytest.raises(ValueError, match="step_mask"):
        ops.step_scores(h, w, w, step_mask=m.reshape(-1))
    with pytest.raises(TypeError, match="step_mask"):
        ops.step_scores(h, w, w, step_mask=m.float())
    with pytest.raises(ValueError, match="exactly one"):
        ops.step_scores(h, w, w)
    with pytest.raises(ValueError, match="exactly one"):
        ops.step_scores(h, w, w, step_mask=m, step_index=torch.tensor([1]))
    with pytest.raises(ValueError, match="step_index.*out of range"):
        ops.step_scores(h, w, w, step_index=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="step_index.*out of range"):
        ops.step_scores(h, w, w, step_index=torch.tensor([-1]))
    with pytest.raises(ValueError, match="step_index.*out of range"):
        ops.step_scores(h, w, w, step_index=torch.tensor([[0, 5]]))
    with pytest.raises(TypeError, match="step_index"):
        ops.step_scores(h, w, w, step_index=torch.tensor([0.0]))
    with pytest.raises(ValueError, match="b_good"):
        ops.step_scores(h, w, w, b_good=torch.zeros(2), step_mask=m)
    with pytest.raises(ValueError, match="labels.*\\[0, 1\\]"):
        ops.step_bce_loss(h, w, w, torch.tensor([0.5, 1.5]), step_mask=m)
    with pytest.raises(ValueError, match="labels.*\\[0, 1\\]"):
        ops.step_bce_loss(h, w, w, torch.tensor([-1.0, 1.0]), step_mask=m)
    with pytest.raises(ValueError, match="labels.*NaN"):
        ops.step_bce_loss(h, w, w, torch.tensor([float("nan"), 1.0]), step_mask=m)
    with pytest.raises(ValueError, match="labels.*shape"):
        ops.step_bce_loss(h, w, w, torch.tensor([1.0, 0.0, 1.0]), step_mask=m)
    with pytest.raises(ValueError, match="no step positions"):
        ops.step_bce_loss(h, w, w, torch.zeros(0), step_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        ops.step_bce_loss(h, w, w, torch.tensor([1.0, 0.0]), step_mask=m, reduction="avg")
    with pytest.raises(ValueError, match="targets.*NaN"):
        ops.step_value_loss(h, w, torch.tensor([float("nan"), 1.0]), step_mask=m)
    with pytest.raises(ValueError, match="pos_index"):
        ops.step_pair_loss(h, w, step_mask=m, pos_index=torch.tensor([2]), neg_index=torch.tensor([0]))
    with pytest.raises(ValueError, match="no \\(positive, negative\\)"):
        ops.step_pair_loss(h, w, step_mask=m, step_group=torch.tensor([0, 0]),
                           step_polarity=torch.tensor([True, True]))
    with pytest.raises(ValueError, match="step_group"):
        ops.step_pair_loss(h, w, step_mask=m, step_group=torch.tensor([0, 0, 0]),
                           step_polarity=torch.tensor([True, False, True]))
    x = torch.rand(5)
    with pytest.raises(ValueError, match="lengths.*sum"):
        ops.segment_reduce(x, torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="lengths.*negative"):
        ops.segment_reduce(x, torch.tensor([6, -1]))
    with pytest.raises(ValueError, match="offsets"):
        ops.segment_reduce(x, offsets=torch.tensor([0, 3, 2, 5]))
    with pytest.raises(ValueError, match="exactly one"):
        ops.segment_reduce(x)
    with pytest.raises(ValueError, match="reduce"):
        ops.segment_reduce(x, torch.tensor([5]), reduce="median")
    with pytest.raises(ValueError, match="scores.*NaN"):
        ops.segment_reduce(torch.tensor([0.1, float("nan")]), torch.tensor([2]))
    with pytest.raises(ValueError, match="scores.*>= 0"):
        ops.segment_reduce(torch.tensor([0.1, -0.5]), torch.tensor([2]), reduce="prod")
    with pytest.raises(ValueError, match="scores.*NaN"):
        ops.first_below(torch.tensor([float("nan")]), torch.tensor([1]))
    with pytest.raises(ValueError, match="rewards.*inf"):
        ops.refine_process_rewards(torch.tensor([float("inf")]), torch.tensor([1]))
    with pytest.raises(ValueError, match="gamma"):
        ops.refine_process_rewards(x, torch.tensor([5]), gamma=1.5)


@pytest.mark.parametrize("clip", [float("inf"), float("-inf"), float("nan")])
def test_refine_clip_must_be_finite(clip):
    """Regression: clip=inf returned -inf rewards although the error message promises finite ones."""
    with pytest.raises(ValueError, match="`clip` must be a finite float"):
        ops.refine_process_rewards(torch.rand(5), torch.tensor([5]), clip=clip)


def test_first_below_nan_threshold_is_an_error():
    """Regression: a NaN threshold returned -1 (no step below it) for every sequence."""
    with pytest.raises(ValueError, match="`threshold` must be a number"):
        ops.first_below(torch.rand(5), torch.tensor([2, 3]), threshold=float("nan"))
    assert ops.first_below(torch.tensor([0.2, 0.9]), torch.tensor([2]), threshold=float("inf")).tolist() == [0]


@pytest.mark.parametrize("lengths,match", [([2, 2], "sum to 4 but `packed` has 5"), ([6, -1], "negative"),
                                           ([], "empty")])
def test_unpack_steps_wrong_lengths_is_an_error(lengths, match):
    """Regression: lengths that do not match the packed steps raised a raw RuntimeError."""
    with pytest.raises(ValueError, match=match):
        ops.unpack_steps(torch.arange(5.0), torch.tensor(lengths, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# gradcheck / determinism
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
def test_gradcheck_float64(backend):
    d = torch.float64
    g = _gen(101)
    h = torch.randn(3, 6, 5, generator=g, dtype=d, requires_grad=True)
    wg, wb = (torch.randn(5, generator=g, dtype=d, requires_grad=True) for _ in range(2))
    bg = torch.tensor(0.1, dtype=d, requires_grad=True)
    mask = torch.rand(3, 6, generator=g) < 0.5
    mask[0, 0] = mask[1, 0] = True
    S = int(mask.sum())
    y = torch.rand(S, generator=g, dtype=d)
    y[0] = -100
    grp = torch.arange(S) % 2
    pol = torch.arange(S) % 3 == 0
    with _backend.use_backend(backend):
        assert torch.autograd.gradcheck(lambda h, a, b, c: ops.step_scores(h, a, b, b_good=c, step_mask=mask),
                                        (h, wg, wb, bg))
        for red in ("mean", "sum", "none"):
            assert torch.autograd.gradcheck(
                lambda h, a, b, c: ops.step_bce_loss(h, a, b, y, b_good=c, step_mask=mask, reduction=red),
                (h, wg, wb, bg))
            assert torch.autograd.gradcheck(
                lambda h, a, c: ops.step_value_loss(h, a, y, c, step_mask=mask, reduction=red), (h, wg, bg))
            assert torch.autograd.gradcheck(
                lambda h, a, c: ops.step_pair_loss(h, a, c, step_mask=mask, step_group=grp, step_polarity=pol,
                                                   reduction=red), (h, wg, bg))
        x = (torch.rand(12, generator=g, dtype=d) + 0.1).requires_grad_()
        lengths = torch.tensor([4, 0, 1, 7])
        for red in ("min", "max", "prod", "logprod", "last", "mean", "sum"):
            assert torch.autograd.gradcheck(lambda v: ops.segment_reduce(v, lengths, reduce=red), (x,))


@needs_cpp
def test_cpp_deterministic():
    hidden, steps = _layout("packed_index", 4, 64, 300, torch.float32, seed=5, p=0.5)
    wg, wb = _rows(300, torch.float32, seed=6)
    y = _labels(sr.step_positions(hidden.shape, **steps).numel(), 7, soft=True)
    outs = [_run("cpp", lambda h, a, b: ops.step_bce_loss(h, a, b, y, **steps), [hidden, wg, wb], [0, 1, 2])
            for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.equal(a, b)


def test_pack_unpack_roundtrip():
    vals = torch.arange(12.0).reshape(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    packed, lengths = ops.pack_steps(vals, mask)
    assert packed.tolist() == [0.0, 1.0, 8.0, 9.0, 10.0, 11.0] and lengths.tolist() == [2, 0, 4]
    back = ops.unpack_steps(packed, lengths, fill=-1.0)
    assert back.tolist() == [[0.0, 1.0, -1.0, -1.0], [-1.0] * 4, [8.0, 9.0, 10.0, 11.0]]
