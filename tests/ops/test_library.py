"""Every op of the library (mmreward.ops.library.OPS) on its own sample inputs: opcheck (schema,
autograd registration, fake kernel, AOT dispatch) in every namespace / backend, the compiled
kernels against the reference, gradcheck in float64, and torch.compile.

The samples are the ones the Triton cubin check compiles (scripts/triton_compile_check.py), so the
options tested here are the options compiled there. Each backend runs on the device it runs on here
(`helpers.device_for`)."""
import pytest
import torch
from helpers import assert_close, device_for, samples_on, to_device
from torch.utils._pytree import tree_map

import mmreward.ops  # noqa: F401  (defines every family's specs)
from mmreward.ops import _backend, _dispatch
from mmreward.ops._backend import UTILITY_OPS
from mmreward.ops.library import OPS, acc_dtype, sample_inputs

FORWARD = sorted(n for n, s in OPS.items() if s.reference is not None)
ALL = sorted(OPS)
NAMESPACE = {"cpp": "mmreward", "cuda": "mmreward", "triton": "mmreward_triton"}
COMPILED = ("cpp", "cuda", "triton")
GRADCHECK_MAX_INPUTS = 4000  # numerical Jacobians: samples with more differentiable values are skipped


def _op(backend, name):
    if backend == "triton":
        _dispatch._load_triton_kernels(OPS[name].family)
    return getattr(getattr(torch.ops, NAMESPACE[backend]), name).default


def _skip_unless(backend, name):
    dev = device_for(backend)
    reason = "no CUDA GPU on this machine" if dev == "cuda" and not torch.cuda.is_available() else (
        _backend.why_unavailable(backend, name, dev))
    if reason:
        pytest.skip(f"{backend}: {reason}")
    return dev


def test_every_compiled_op_has_a_spec():
    if not _backend.extension_loaded():
        pytest.skip(_backend.extension_error())
    compiled = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("mmreward::")}
    assert compiled - set(UTILITY_OPS) == set(OPS), "ops without an OpSpec (or specs without an op)"
    triton = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("mmreward_triton::")}
    assert triton == set(OPS), "the two namespaces must define the same ops"


@pytest.mark.parametrize("name", ALL)
def test_samples_cover_the_op(name):
    samples = sample_inputs(name)
    assert len(samples) >= 1
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for args in sample_inputs(name, dtype):
            floats = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
            assert all(a.dtype in (dtype, acc_dtype(dtype)) for a in floats), name
    if OPS[name].reference is not None and OPS[name].differentiable:  # some input takes a gradient
        assert any(isinstance(a, torch.Tensor) and a.requires_grad for args in samples for a in args)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("name", ALL)
def test_opcheck(backend, name):
    dev = _skip_unless(backend, name)
    for args in samples_on([(name, a) for a in sample_inputs(name)], dev):
        torch.library.opcheck(_op(backend, name), args[1])


def _leading(out, n):
    out = out if isinstance(out, tuple) else (out,)
    return out[:n]


def _grad_inputs(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def _run(fn, args, n_out, seed=0):
    """Outputs (the first n_out) of fn(*args) on fresh leaves, and the grads of the differentiable inputs
    under a random upstream gradient of the first output."""
    leaves = tree_map(lambda a: a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
                      else a, args)
    out = _leading(fn(*leaves), n_out)
    xs = _grad_inputs(leaves)
    grads = []
    if xs:
        w = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        grads = torch.autograd.grad((out[0] * w.to(out[0].device, out[0].dtype)).sum(), xs, allow_unused=True)
    return [o.detach() for o in out], grads


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", FORWARD)
def test_matches_reference(backend, dtype, name):
    dev = _skip_unless(backend, name)
    spec = OPS[name]
    for args in sample_inputs(name, dtype):
        ref_out, ref_grads = _run(spec.reference, args, 8)
        out, grads = _run(_op(backend, name), to_device(args, dev), len(ref_out))
        for a, b in zip(out, ref_out):
            assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
            if a.is_floating_point():
                assert_close(a.cpu(), b, torch.float32, scale=8, msg=f"{backend} {name}")
            else:
                assert torch.equal(a.cpu(), b)
        for a, b in zip(grads, ref_grads):
            assert (a is None) == (b is None)
            if a is not None:
                assert_close(a.cpu(), b, dtype, scale=4, msg=f"{backend} {name} grad")


@pytest.mark.parametrize("name", FORWARD)
def test_gradcheck_float64_cpp(name):
    _skip_unless("cpp", name)
    for args in sample_inputs(name, torch.float64):
        idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
        if not idx or sum(args[i].numel() for i in idx) > GRADCHECK_MAX_INPUTS:
            continue

        def fn(*xs, args=args, idx=idx):
            full = list(args)
            for i, x in zip(idx, xs):
                full[i] = x
            return _leading(_op("cpp", name)(*full), 1)[0]

        assert torch.autograd.gradcheck(fn, [args[i].detach().clone().requires_grad_() for i in idx])


@pytest.mark.parametrize("name", FORWARD)
def test_torch_compile_cpp(name):
    """fullgraph compile (aot_eager) of each forward op on its samples: same outputs and gradients."""
    _skip_unless("cpp", name)
    op = _op("cpp", name)
    for args in sample_inputs(name)[:3]:
        torch.compiler.reset()
        compiled = torch.compile(lambda *a: op(*a), fullgraph=True, backend="aot_eager", dynamic=False)
        n = len(_leading(OPS[name].reference(*args), 8))
        out, grads = _run(compiled, args, n)
        exp, exp_grads = _run(op, args, n)
        for a, b in zip(out + list(grads), exp + list(exp_grads)):
            if a is not None and a.is_floating_point():
                assert_close(a, b, torch.float32)


@pytest.mark.parametrize("forced", [None, "reference"])
def test_meta_tensors_run_on_fake_kernels(forced):
    """Shapes without data: the public ops work on meta tensors (a value read would raise), on the
    fake kernels whatever backend is forced (regression: `.item()` on a meta tensor)."""
    if not _backend.extension_loaded():
        pytest.skip(_backend.extension_error())
    from mmreward import ops

    m = torch.device("meta")
    rc, rr = torch.randn(5, device=m), torch.randn(5, device=m)
    with _backend.use_backend(forced):
        loss, acc = ops.pairwise_loss_and_accuracy(rc, rr, margin=0.5, tie=torch.zeros(5, dtype=torch.bool, device=m))
        assert loss.device == m and loss.shape == () and acc.shape == ()
        assert ops.pairwise_loss(rc, rr, reduction="none").shape == (5,)
        assert ops.listwise_loss(torch.randn(3, 4, device=m), torch.zeros(3, 4, dtype=torch.long, device=m)).shape == ()
        h = torch.randn(5, 7, device=m)
        assert ops.reward_head_pairwise_loss(h, h, torch.randn(7, device=m)).shape == ()
        z = torch.randn(2, 3, 11, device=m)
        assert ops.codebook_entropy(z).shape == (2,)
        assert ops.codebook_nll(z, torch.zeros(2, 3, dtype=torch.long, device=m), reduction="none").shape == (2, 3)
        assert ops.categorical_kl(z, z).shape == (2,)
        hidden = torch.randn(2, 4, 7, device=m)
        assert ops.step_scores(hidden, torch.randn(7, device=m), torch.randn(7, device=m),
                               step_index=torch.tensor([[0, 1], [1, 3]], device=m)).shape == (2,)
        assert ops.segment_reduce(torch.rand(6, device=m), torch.tensor([2, 4], device=m)).shape == (2,)
