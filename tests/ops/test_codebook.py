"""VQ-codebook ops (entropy, NLL, categorical KL, log-categorical, frame_reduce): every backend
against the reference (forward + gradients), fp32 / bf16 / fp64, both layouts and non-contiguous
views, masks and reductions, odd shapes (K = 1, 7, 1024, 1025; L = 1, 63), clamped log-probs,
logits of ±1e4, input errors, gradcheck in float64. opcheck of the raw ops: tests/ops/test_library.py;
extreme values (K up to 4097, bf16 targets with p -> 1): tests/ops/test_extremes.py.

Every backend runs on the device it runs on here (`helpers.device_for`): inputs and expectations
are made on the CPU, moved to that device for the call (`helpers.call_on`) and the results moved
back, so gradients still land on CPU leaves; non-contiguous layouts are built on the device itself.
The reference runs stay on the CPU."""
import pytest
import torch

from mmreward.ops import _backend
from mmreward.ops import codebook as cb
from mmreward.ops.library import codebook as ref

from conftest import backends_for
from helpers import assert_close, call_on, device_for

OPS = ("entropy", "nll", "kl", "logcat")
SHAPES = [(1, 1, 1), (3, 63, 7), (1, 16, 1024), (2, 17, 1025), (3, 1, 7), (2, 40, 33), (2, 100, 9)]
# Triton on a GPU: every shape; the Triton interpreter (no GPU) is slow on CPU: a subset for it
TRITON_DEVICE = device_for("triton")
TRITON_SHAPES = SHAPES if TRITON_DEVICE == "cuda" else [(1, 1, 1), (3, 63, 7), (2, 17, 1025), (2, 40, 33)]


def _public(op):
    return {
        "entropy": cb.codebook_entropy,
        "nll": cb.codebook_nll,
        "kl": cb.categorical_kl,
        "logcat": cb.log_categorical,
    }[op]


def _place(x, layout):
    """The logical tensor x ([B, L, K] or [B, K, L]) in the requested memory layout, on x's device
    and in x's dtype (built there, not copied from another device, which could drop the strides);
    differentiable, so gradients reach x."""
    if layout == "contig":
        return x.contiguous()
    if layout == "transposed":  # the other layout's memory, viewed: the kernels read through strides
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "strided":  # every other element of the last dim and a batch slice: no unit stride
        big = x.new_zeros((x.shape[0] + 1, x.shape[1], 2 * x.shape[2]))
        big[1:, :, ::2] = x
        return big[1:, :, ::2]
    raise AssertionError(layout)


def _inputs(op, B, L, K, cd, dtype, *, scale=2.0, seed=0):
    """Logical inputs, contiguous CPU tensors in `dtype` (random numbers from a CPU generator)."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, K, L) if cd == 1 else (B, L, K)
    kd = 1 if cd == 1 else 2
    if op in ("entropy", "nll"):
        x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
        if op == "entropy":
            return (x,)
        return (x, torch.randint(0, K, (B, L), generator=g))
    # log-space distributions along the class dim, clamped like VQ-Diffusion
    a, b = (torch.log_softmax(torch.randn(shape, generator=g, dtype=torch.float64) * scale, kd).clamp(-70, 0)
            for _ in range(2))
    return (a.to(dtype), b.to(dtype))


def _run(op, backend, inputs, cd, mask, reduction, layout="contig"):
    """`op` under `backend` on the device it runs on (helpers.call_on): the CPU inputs and mask
    are moved there, the differentiable inputs put in `layout` on that device, and the result comes
    back to the CPU (gradients flow back to the CPU tensors)."""
    n = 1 if op in ("entropy", "nll") else 2
    dev = device_for(backend)

    def fn(*args, mask):
        assert all(a.device.type == dev for a in args) and (mask is None or mask.device.type == dev)
        xs = [_place(x, layout) for x in args[:n]]
        assert layout == "contig" or not any(x.is_contiguous() for x in xs), layout
        return _public(op)(*xs, *args[n:], class_dim=cd, mask=mask, reduction=reduction)

    return call_on(backend, fn, *inputs, mask=mask)


def _diff_inputs(op, inputs):
    return list(inputs[:1]) if op in ("entropy", "nll") else list(inputs)


def _check_against_reference(op, backend, B, L, K, cd, layout, dtype, mask_kind, reduction, seed=0):
    inputs = _inputs(op, B, L, K, cd, dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    mask = None
    if mask_kind == "mask":
        mask = torch.rand(B, L, generator=g) > 0.3
        if op == "nll":  # targets of masked tokens may be anything
            inputs = (inputs[0], torch.where(mask, inputs[1], torch.full_like(inputs[1], -100)))
    diff = _diff_inputs(op, inputs)
    xs = [x.detach().clone().requires_grad_(True) for x in diff]
    xr = [x.detach().clone().requires_grad_(True) for x in diff]
    out = _run(op, backend, tuple(xs) + tuple(inputs[len(diff):]), cd, mask, reduction, layout)
    exp = _run(op, "reference", tuple(xr) + tuple(inputs[len(diff):]), cd, mask, reduction, layout)
    assert out.device.type == exp.device.type == "cpu"
    assert out.shape == exp.shape and out.dtype == exp.dtype == ref.acc_dtype(dtype)
    scale = 1.0 if reduction == "none" else max(1.0, L ** 0.5)
    tol_dt = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype  # fp32 accumulation
    assert_close(out, exp, tol_dt, scale=scale * 4, msg=f"{op} forward")
    w = torch.randn(out.shape, generator=g, dtype=out.dtype)
    (out * w).sum().backward()
    (exp * w).sum().backward()
    for a, b in zip(xs, xr):
        assert a.grad.shape == a.shape and a.grad.dtype == a.dtype
        assert_close(a.grad, b.grad, dtype, scale=4, msg=f"{op} grad")


# ------------------------------------------------------------------------------------------------
# every backend vs reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cd", [-1, 1])
def test_matches_reference_fp32(backend, op, shape, cd):
    if backend == "triton" and shape not in TRITON_SHAPES:
        pytest.skip("triton interpreter: subset of shapes")  # never on a GPU: TRITON_SHAPES = SHAPES
    _check_against_reference(op, backend, *shape, cd, "contig", torch.float32, "none", "none")


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["transposed", "strided"])
@pytest.mark.parametrize("cd", [-1, 1])
def test_noncontiguous(backend, op, layout, cd):
    _check_against_reference(op, backend, 2, 37, 65, cd, layout, torch.float32, "mask", "none", seed=3)


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("cd", [-1, 1])
def test_mask_and_reduction(backend, op, reduction, cd):
    _check_against_reference(op, backend, 3, 33, 40, cd, "contig", torch.float32, "mask", reduction, seed=5)


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("cd", [-1, 1])
def test_dtypes(backend, op, dtype, cd):
    _check_against_reference(op, backend, 2, 21, 70, cd, "contig", dtype, "mask", "none", seed=7)


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("cd", [-1, 1])
def test_vq_diffusion_sizes(backend, cd):
    """K = 1024 entropy / NLL and K + 1 = 1025 KL at Diffusion Reward's L = 64."""
    if backend == "triton" and TRITON_DEVICE == "cpu":
        pytest.skip("covered by smaller shapes under the interpreter")
    for op, K in (("entropy", 1024), ("nll", 1024), ("kl", 1025), ("logcat", 1025)):
        _check_against_reference(op, backend, 2, 64, K, cd, "contig", torch.float32, "mask", "sum", seed=11)


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("cd", [-1, 1])
def test_extreme_logits_finite(backend, cd):
    """Logits of ±1e4 (one dominant code, ties, a token entirely at -1e4) stay finite and accurate."""
    B, L, K = 2, 19, 50
    z = torch.randn(B, L, K, dtype=torch.float64)
    z[0, :, 3] = 1e4
    z[1, :5] = -1e4
    z[1, 5:10, :2] = 1e4  # ties at the max
    z[1, 10:, ::3] = -1e4
    t = torch.randint(0, K, (B, L))
    zz = z.transpose(1, 2).contiguous() if cd == 1 else z
    for dtype in (torch.float32, torch.float64):
        x = zz.to(dtype).requires_grad_(True)
        xr = zz.to(dtype).requires_grad_(True)
        for op, args in (("entropy", ()), ("nll", (t,))):
            fn = _public(op)
            out = call_on(backend, fn, x, *args, class_dim=cd, reduction="none")
            exp = call_on("reference", fn, xr, *args, class_dim=cd, reduction="none")
            assert torch.isfinite(out).all()
            assert_close(out, exp, dtype, scale=10)
            (g,) = torch.autograd.grad(out.sum(), x)
            (gr,) = torch.autograd.grad(exp.sum(), xr)
            assert torch.isfinite(g).all()
            assert_close(g, gr, dtype, scale=10)
    # log-probs clamped at -70 (VQ-Diffusion) and extreme values for KL / log-categorical
    a = torch.full((B, L, K), -70.0)
    a[..., 0] = 0.0
    b = torch.log_softmax(torch.randn(B, L, K) * 30, -1).clamp(-70, 0)
    if cd == 1:
        a, b = a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous()
    for op in ("kl", "logcat"):
        out = call_on(backend, _public(op), a, b, class_dim=cd, reduction="none")
        exp = call_on("reference", _public(op), a, b, class_dim=cd, reduction="none")
        assert torch.isfinite(out).all()
        assert_close(out, exp, torch.float32, scale=10)


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
def test_nan_propagates(backend):
    z = torch.randn(2, 4, 9)
    z[1, 2, 5] = float("nan")
    out = call_on(backend, cb.codebook_entropy, z, reduction="none")
    assert torch.isnan(out[1, 2]) and torch.isfinite(out[0]).all() and torch.isfinite(out[1, :2]).all()


@pytest.mark.parametrize("backend", backends_for("codebook_entropy"))
@pytest.mark.parametrize("cd", [-1, 1])
@pytest.mark.parametrize("K,at", [(64, 3), (64, 0), (1024, 3)])
def test_nan_among_the_first_codes_propagates(backend, cd, K, at):
    """A NaN read before any finite code (the first codes of a lane / thread) must not be dropped
    when a finite code arrives (a CUDA online-softmax bug caught in review)."""
    z = torch.randn(2, 4, K)
    z[1, 2, at] = float("nan")
    z = z.transpose(1, 2).contiguous() if cd == 1 else z
    t = torch.zeros(2, 4, dtype=torch.long)
    for fn, args in ((cb.codebook_entropy, ()), (cb.codebook_nll, (t,))):
        out = call_on(backend, fn, z, *args, class_dim=cd, reduction="none")
        assert torch.isnan(out[1, 2]) and torch.isfinite(out[0]).all() and torch.isfinite(out[1, :2]).all(), fn


# ------------------------------------------------------------------------------------------------
# frame_reduce and public-API semantics
# ------------------------------------------------------------------------------------------------
def test_frame_reduce():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    m = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.equal(cb.frame_reduce(v), torch.tensor([6.0, 15.0]))
    assert torch.equal(cb.frame_reduce(v, m), torch.tensor([4.0, 0.0]))
    assert torch.equal(cb.frame_reduce(v, m, "mean"), torch.tensor([2.0, 0.0]))
    assert torch.equal(cb.frame_reduce(v, m.int(), "none"), torch.tensor([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(cb.frame_reduce(v, None, "mean"), torch.tensor([2.0, 5.0]))
    cb.frame_reduce(v, m).sum().backward()
    assert torch.equal(v.grad, m.float())


def test_entropy_matches_official_float64():
    """Same numbers as Diffusion Reward's float64 code path (log_softmax, exp, multiply, sum)."""
    z = torch.randn(3, 1024, 64) * 3  # VQ-Diffusion layout
    logp = torch.log_softmax(z.double(), dim=1)
    official = -(logp.exp() * logp).sum(1).sum(1)
    torch.testing.assert_close(cb.codebook_entropy(z, class_dim=1).double(), official, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(cb.codebook_entropy(z.double(), class_dim=1), official, atol=1e-9, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# input errors
# ------------------------------------------------------------------------------------------------
def test_errors():
    z = torch.randn(2, 5, 7)
    t = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="`logits` must be 3-D"):
        cb.codebook_entropy(torch.randn(5, 7))
    with pytest.raises(TypeError, match="`logits` must be float"):
        cb.codebook_entropy(torch.zeros(2, 5, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="`logits` is empty"):
        cb.codebook_entropy(torch.randn(2, 0, 7))
    with pytest.raises(ValueError, match="`logits` is empty"):
        cb.codebook_entropy(torch.randn(2, 5, 0))
    with pytest.raises(ValueError, match="`class_dim`"):
        cb.codebook_entropy(z, class_dim=0)
    with pytest.raises(ValueError, match="`reduction`"):
        cb.codebook_entropy(z, reduction="batchmean")
    with pytest.raises(ValueError, match="`mask` has shape"):
        cb.codebook_entropy(z, mask=torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="`mask` has shape"):
        cb.codebook_entropy(z, class_dim=1, mask=torch.ones(2, 5, dtype=torch.bool))  # L = 7 there
    with pytest.raises(TypeError, match="`mask` must be"):
        cb.codebook_entropy(z, mask=[[True] * 5] * 2)
    with pytest.raises(ValueError, match="`target` has index 7 out of range"):
        cb.codebook_nll(z, torch.full((2, 5), 7))
    with pytest.raises(ValueError, match="`target` has index -1 out of range"):
        cb.codebook_nll(z, torch.full((2, 5), -1))
    with pytest.raises(ValueError, match="`target` has shape"):
        cb.codebook_nll(z, torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="`target` must be an integer"):
        cb.codebook_nll(z, t.float())
    with pytest.raises(ValueError, match="`log_b` has shape"):
        cb.categorical_kl(z, torch.randn(2, 5, 8))
    with pytest.raises(TypeError, match="`log_b` is torch.float64"):
        cb.categorical_kl(z, z.double())
    with pytest.raises(ValueError, match="`log_prob` must be 3-D"):
        cb.log_categorical(z, torch.randn(2, 5))
    with pytest.raises(ValueError, match="`values` must be 2-D"):
        cb.frame_reduce(z)
    # masked targets are not range-checked
    m = torch.ones(2, 5, dtype=torch.bool)
    m[0, 0] = False
    tt = t.clone()
    tt[0, 0] = -100
    cb.codebook_nll(z, tt, mask=m)


@pytest.mark.skipif(not _backend.extension_loaded(), reason="needs the C++ extension")
def test_cpp_op_errors():
    ops = torch.ops.mmreward
    with pytest.raises(RuntimeError, match="out of range"):
        ops.codebook_nll(torch.randn(1, 2, 3), torch.tensor([[0, 3]]), 2, None)
    with pytest.raises(RuntimeError, match="class_dim"):
        ops.codebook_entropy(torch.randn(1, 2, 3), 0, None)
    with pytest.raises(RuntimeError, match="mask"):
        ops.codebook_entropy(torch.randn(1, 2, 3), 2, torch.ones(1, 3, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------
# gradcheck
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=pytest.mark.skipif(
    not _backend.has_kernel("codebook_entropy", "cpu"), reason="no C++ kernels"))])
@pytest.mark.parametrize("cd", [-1, 1])
def test_gradcheck_float64(backend, cd):
    B, L, K = 2, 17, 6
    shape = (B, K, L) if cd == 1 else (B, L, K)
    kd = 1 if cd == 1 else 2
    z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, K, (B, L))
    m = torch.rand(B, L) > 0.3
    a = torch.log_softmax(torch.randn(shape, dtype=torch.float64), kd).requires_grad_(True)
    b = torch.log_softmax(torch.randn(shape, dtype=torch.float64), kd).requires_grad_(True)
    with _backend.use_backend(backend):
        assert torch.autograd.gradcheck(lambda x: cb.codebook_entropy(x, class_dim=cd, mask=m, reduction="none"), (z,))
        assert torch.autograd.gradcheck(lambda x: cb.codebook_nll(x, t, class_dim=cd, mask=m, reduction="mean"), (z,))
        assert torch.autograd.gradcheck(lambda x, y: cb.categorical_kl(x, y, class_dim=cd, reduction="none"), (a, b))
        assert torch.autograd.gradcheck(lambda x, y: cb.log_categorical(x, y, class_dim=cd, mask=m), (a, b))
