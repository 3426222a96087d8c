"""The C++ kernels' CPU cache of large output buffers: a freed [B, H] grad buffer is reused, a live
one never is, results are unchanged, and the cap / release controls work."""
import os
import subprocess
import sys

import pytest
import torch

from mmreward import ops
from mmreward.ops import _backend

pytestmark = pytest.mark.skipif(_backend.why_unavailable("cpp", "reward_head_pairwise_loss", "cpu") is not None,
                                reason="C++ extension with the reward head op not built")

B, H = 2048, 2048  # 16 MiB per fp32 grad: the smallest size the cache takes


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    hc = torch.randn(B, H, generator=g).requires_grad_()
    hr = torch.randn(B, H, generator=g).requires_grad_()
    w = (torch.randn(H, generator=g) / H**0.5).requires_grad_()
    return hc, hr, w


def _step(hc, hr, w, backend="cpp"):
    with _backend.use_backend(backend):
        ops.reward_head_pairwise_loss(hc, hr, w).backward()


def test_freed_grad_buffer_is_reused_and_results_unchanged():
    hc, hr, w = _inputs()
    _step(hc, hr, w)
    first = {hc.grad.data_ptr(), hr.grad.data_ptr()}
    assert ops.cpu_cache_bytes() >= 2 * B * H * 4
    hc.grad = hr.grad = w.grad = None  # optimizer.zero_grad(set_to_none=True)
    _step(hc, hr, w)
    assert {hc.grad.data_ptr(), hr.grad.data_ptr()} == first  # the same two buffers again
    ref = [t.detach().clone().requires_grad_() for t in (hc, hr, w)]
    _step(*ref, backend="reference")
    for a, b in zip((hc, hr, w), ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_live_grad_is_never_overwritten():
    hc, hr, w = _inputs(1)
    _step(hc, hr, w)
    kept_c, kept_r = hc.grad, hr.grad  # the user holds the first step's grads
    snap_c, snap_r = kept_c.clone(), kept_r.clone()
    hc.grad = hr.grad = w.grad = None
    with torch.no_grad():
        hc.mul_(-1.5)  # different inputs, so different grads
    _step(hc, hr, w)
    held = {kept_c.data_ptr(), kept_r.data_ptr()}
    assert hc.grad.data_ptr() not in held and hr.grad.data_ptr() not in held
    assert torch.equal(kept_c, snap_c) and torch.equal(kept_r, snap_r)
    # a view of a grad keeps its buffer alive too
    view = hc.grad[:3]
    snap = view.clone()
    hc.grad = hr.grad = w.grad = None
    _step(hc, hr, w)
    assert torch.equal(view, snap)


def test_empty_cpu_cache_frees_unreferenced_buffers():
    hc, hr, w = _inputs(2)
    _step(hc, hr, w)
    held = hc.grad
    hr.grad = None
    freed = ops.empty_cpu_cache()
    assert freed >= B * H * 4  # hr's grad buffer (and any older free ones)
    assert ops.cpu_cache_bytes() >= B * H * 4  # hc's grad is still referenced, so still cached
    del held
    hc.grad = None
    ops.empty_cpu_cache()
    assert ops.cpu_cache_bytes() == 0


def _run_child(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


CHILD = (
    "import torch; from mmreward import ops; torch.set_num_threads(1)\n"
    f"hc = torch.randn({B}, {H}, requires_grad=True); hr = torch.randn({B}, {H}, requires_grad=True)\n"
    f"w = torch.randn({H}, requires_grad=True)\n"
    "ops.reward_head_pairwise_loss(hc, hr, w).backward()\n"
    "print('cached', ops.cpu_cache_bytes())\n"
)


def test_cap_zero_turns_the_cache_off():
    p = _run_child(CHILD, MMREWARD_CPU_BUFFER_CACHE_MB="0")
    assert p.returncode == 0, p.stderr
    assert "cached 0" in p.stdout


def test_cap_limits_cached_bytes_and_bad_cap_is_an_error():
    p = _run_child(CHILD, MMREWARD_CPU_BUFFER_CACHE_MB="20")  # one 16 MiB grad fits, two do not
    assert p.returncode == 0, p.stderr
    assert f"cached {B * H * 4}" in p.stdout
    p = _run_child(CHILD, MMREWARD_CPU_BUFFER_CACHE_MB="lots")
    assert p.returncode != 0 and "MMREWARD_CPU_BUFFER_CACHE_MB must be a non-negative integer" in p.stderr
