"""Test setup. TRITON_INTERPRET must be set before any Triton kernel is defined, so Triton kernels
run on CPU tensors when there is no GPU (set here, before mmreward.ops.triton is imported)."""
import os

try:  # decide before triton is imported anywhere
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from mmreward.ops import _backend  # noqa: E402


def backends_for(op: str, device_type: str | None = None):
    """pytest params for every backend of `op`; those that cannot run here skip with the reason.
    Each backend is tested on the device it runs on here (`helpers.device_for`): the C++ and
    reference ops on CPU tensors, the CUDA kernels on the GPU, Triton on the GPU when there is one
    and in the interpreter on CPU tensors otherwise."""
    from helpers import device_for

    params = []
    for b in _backend.BACKENDS:
        dev = device_type or device_for(b)
        if dev == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA GPU on this machine"
        else:
            reason = _backend.why_unavailable(b, op, dev)
        marks = [pytest.mark.skip(reason=f"{b}: {reason}")] if reason else []
        params.append(pytest.param(b, marks=marks, id=b))
    return params


@pytest.fixture
def force_backend():
    """`with force_backend(name):` runs the ops under one backend."""
    return _backend.use_backend


@pytest.fixture(autouse=True, scope="module")
def _one_thread_outside_ops(request):
    """Model / trainer / env tests run tiny tensors, for which one intra-op thread is far faster
    than contended OpenMP threads (15–25× on a shared 2-core VM). The op tests keep the default so
    the kernels' multi-threaded paths stay covered."""
    if os.sep + "ops" + os.sep in str(request.node.path):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
