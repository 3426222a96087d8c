"""The one way every public op runs.

``call(op, device, *args)`` picks the backend for ``op`` on ``device`` (:func:`_backend.select`)
and runs that backend's implementation with the op's schema arguments:

* ``reference`` -> ``library.OPS[op].reference(*args)`` (pure PyTorch; autograd does the backward);
* ``cpp`` / ``cuda`` -> ``torch.ops.mmreward.<op>`` (the dispatcher picks the CPU or CUDA kernel);
* ``triton`` -> ``torch.ops.mmreward_triton.<op>``, whose kernels ``mmreward/ops/triton/<family>.py``
  registers when the family is first run on Triton.

Both namespaces carry the same C++ autograd, so a training step runs no Python autograd code, and
both have the library's fake kernels, so the same call works on meta tensors and under torch.compile.
Returns what the op returns (the reference: the op's leading outputs, without the gradients the
compiled ops may compute ahead for their backward).

The implementation is resolved once per (op, device type, forced backend) — nothing else it depends
on changes while the process runs, and resolving costs ~30 µs, more than a small op — and under
torch.compile once while tracing (baked into the graph).
"""
from __future__ import annotations

import importlib

import torch

from . import _backend
from .library import OPS

_RESOLVED: dict = {}


def call(op: str, device: torch.device, *args):
    if torch.compiler.is_compiling():
        return _implementation(_backend_at_trace(op, device.type, -1 if device.index is None else device.index), op)(
            *args)
    forced = _backend.forced_backend()
    key = (op, device.type, forced)
    fn = _RESOLVED.get(key)
    if fn is None:
        fn = _implementation(_backend.select(op, device), op)  # raises BackendUnavailableError: never cached
        _RESOLVED[key] = fn
    if forced is None and any(_is_functorch(a) for a in args):
        # torch.func transforms (grad, vjp, jacrev, vmap) cannot run the compiled ops' C++ autograd
        # ("cannot use C++ torch::autograd::Function with functorch transforms"): the automatic choice
        # is the reference there, which they differentiate / batch like any PyTorch code
        return OPS[op].reference(*args)
    return fn(*args)


_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


def _is_functorch(a) -> bool:
    return _is_wrapped is not None and isinstance(a, torch.Tensor) and _is_wrapped(a)


def _implementation(backend: str, op: str):
    if backend == "reference":
        return OPS[op].reference
    if backend == "triton":
        _load_triton_kernels(OPS[op].family)
        return getattr(torch.ops.mmreward_triton, op).default
    return getattr(torch.ops.mmreward, op).default


@_backend.assume_constant_result
def _backend_at_trace(op: str, device_type: str, device_index: int) -> str:
    device = torch.device(device_type, device_index) if device_index >= 0 else torch.device(device_type)
    return _backend.select(op, device)


@_backend.assume_constant_result
def _load_triton_kernels(family: str) -> bool:
    """Registers the family's Triton kernels (imports triton: only once the backend is chosen).
    torch.compile runs this while tracing, so the kernels exist before the graph runs."""
    importlib.import_module(f"{__package__}.triton.{family}")
    return True
