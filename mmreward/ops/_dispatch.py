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
import torch.autograd.forward_ad as _fwad

from . import _backend
from .library import OPS

_RESOLVED: dict = {}

# public functions whose op has another name (docs/ops.md), and those that run plain PyTorch (None)
_PUBLIC_OPS = {
    "pairwise_loss_and_accuracy": "pairwise_loss",
    "reward_head_pairwise_loss_and_accuracy": "reward_head_pairwise_loss",
    "step_scores": "step_head", "step_logits": "step_head", "step_values": "step_head",
    "step_bce_loss": "step_head", "step_value_loss": "step_head",
    "segment_reduce": "step_segment_reduce", "first_below": "step_first_below",
    "refine_process_rewards": "step_refine",
    "attention": "attention_heads",
    "pairwise_accuracy": None, "pairs_from_groups": None, "step_positions": None, "pack_steps": None,
    "unpack_steps": None, "frame_reduce": None,
}


def available_backends(op: str, device) -> list[str]:
    """The backends that can run ``op`` on tensors of ``device`` ('cpu', 'cuda', 'meta' or a device)
    here. ``op``: an op name (``mmreward.ops.library.OPS``, e.g. ``'attention_heads'``) or a public
    function's name (``'attention'``, ``'step_scores'``); the functions that are plain PyTorch
    (``pairwise_accuracy``, ``frame_reduce``, ...) list ``['reference']``. An unknown name is a
    ``ValueError`` (it used to list ``['reference']``, as if the op had no kernels)."""
    if not isinstance(op, str):
        raise TypeError(f"available_backends: `op` must be an op or function name (str), got {type(op).__name__}")
    name = _PUBLIC_OPS.get(op, op)
    if name is None:
        _backend._device_type(device)  # the device is still checked
        return ["reference"]
    if name not in OPS and not _backend.has_kernel(name, "cpu") and not _backend.has_kernel(name, "meta"):
        known = sorted({n for n in OPS if not n.endswith("_backward")} | set(_PUBLIC_OPS))
        raise ValueError(f"available_backends: unknown op {op!r}; use an op or public function name: {', '.join(known)}")
    return _backend.available_backends(name, device)


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
    if _fwad._current_level >= 0 and any(_has_tangent(a) for a in args):
        # forward-mode AD (dual tensors): the compiled ops' C++ autograd has no forward formula, so the
        # tangent was silently dropped (None); the reference carries it like any PyTorch code
        if forced in (None, "reference"):
            return OPS[op].reference(*args)
        raise _backend.BackendUnavailableError(
            f"{op}: backend {forced!r} requested but unavailable: forward-mode AD (torch.autograd.forward_ad dual "
            "tensors) needs the 'reference' backend (or force none: the automatic choice runs the reference there)")
    if any(_is_functorch(a) for a in args):
        # torch.func transforms (grad, vjp, jacrev, vmap) cannot run the compiled ops' C++ autograd
        # ("cannot use C++ torch::autograd::Function with functorch transforms"): the automatic choice
        # is the reference there, which they differentiate / batch like any PyTorch code
        if forced is None:
            return OPS[op].reference(*args)
        try:
            return fn(*args)
        except RuntimeError as e:  # a forced compiled backend under grad / vjp: say what to do
            if "functorch transforms" not in str(e):
                raise
            raise _backend.BackendUnavailableError(
                f"{op}: backend {forced!r} requested but unavailable: torch.func transforms (grad, vjp, jacrev) "
                "cannot run its C++ autograd; use the 'reference' backend (or force none: the automatic choice "
                "runs the reference under torch.func)") from None
    return fn(*args)


_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


def _has_tangent(a) -> bool:
    return isinstance(a, torch.Tensor) and _fwad.unpack_dual(a).tangent is not None


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
