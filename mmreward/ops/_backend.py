"""Backend selection for mmreward ops.

Every public op runs (through :mod:`mmreward.ops._dispatch`) on one of four implementations:

* ``reference`` – pure PyTorch (``mmreward.ops.library``); the test oracle and the fallback.
* ``cpp``       – C++/OpenMP kernels in the compiled extension ``mmreward._C`` (CPU tensors).
* ``cuda``      – CUDA kernels in the same extension (CUDA tensors, when built with CUDA).
* ``triton``    – Triton kernels (``mmreward.ops.triton``); CUDA tensors, or CPU tensors when
  ``TRITON_INTERPRET=1`` is set *before* the kernels are defined (tests do this). They use the
  compiled extension's schemas and C++ autograd, so they need it too.

Default: CUDA tensor -> triton, else cuda; CPU tensor -> cpp; extension missing -> reference
with one warning; meta tensor -> the ops' fake kernels (shapes only, whatever is forced).
``MMREWARD_BACKEND=reference|cpp|cuda|triton`` (or the :func:`use_backend` context manager)
forces one; a forced backend that cannot run the call is an error, never a silent fallback.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
import warnings
from typing import Iterator, Optional

import torch

BACKENDS = ("reference", "cpp", "cuda", "triton")
ENV_VAR = "MMREWARD_BACKEND"

_local = threading.local()
_warned_fallback = False


class BackendUnavailableError(RuntimeError):
    """A backend was requested explicitly but cannot run this call."""


@functools.lru_cache(maxsize=None)
def extension_error() -> Optional[str]:
    """Why ``mmreward._C`` could not be imported (None if it is loaded)."""
    if os.environ.get("MMREWARD_SKIP_EXT") == "1" and importlib.util.find_spec("mmreward._C") is None:
        return "mmreward was installed with MMREWARD_SKIP_EXT=1 (pure Python)"
    try:
        import mmreward._C  # noqa: F401  (registers torch.ops.mmreward.*)
    except ImportError as e:  # not built, or built against another torch
        return f"{type(e).__name__}: {e}"
    return None


def extension_loaded() -> bool:
    return extension_error() is None


# Ops of the compiled library that are utilities, not tensor ops with backends.
UTILITY_OPS = ("ext_info", "release_cpu_buffers", "cached_cpu_buffer_bytes")

# Ops with no CUDA / Triton kernels, whose reference is the GPU implementation (e.g. attention:
# PyTorch's fused scaled_dot_product_attention); filled by mmreward.ops.library.define.
REFERENCE_ON_GPU: set = set()


def empty_cpu_cache() -> int:
    """Free the C++ kernels' cached large CPU output buffers that nothing references any more;
    returns the bytes freed (0 without the extension). The kernels keep buffers such as the fused
    reward head's ``[B, H]`` grads for reuse, like the CUDA caching allocator; cap them with
    ``MMREWARD_CPU_BUFFER_CACHE_MB`` (default 4096, 0 = off)."""
    return int(torch.ops.mmreward.release_cpu_buffers()) if extension_loaded() else 0


def cpu_cache_bytes() -> int:
    """Bytes held by the C++ kernels' CPU buffer cache (buffers in use included)."""
    return int(torch.ops.mmreward.cached_cpu_buffer_bytes()) if extension_loaded() else 0


def has_kernel(op: str, device_type: str) -> bool:
    """True if ``torch.ops.mmreward.<op>`` has a kernel for ``device_type`` ('cpu' | 'cuda' | 'meta':
    the fake kernel)."""
    if not extension_loaded():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}[device_type]
    name = f"mmreward::{op}"
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
    except RuntimeError:  # op not defined at all
        return False


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def forced_backend() -> Optional[str]:
    """The backend forced by :func:`use_backend` (this thread) or ``MMREWARD_BACKEND``, or None."""
    forced = getattr(_local, "forced", None)
    if forced is None:
        forced = os.environ.get(ENV_VAR) or None
    if forced is not None and forced not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={forced!r} is not one of {BACKENDS}")
    return forced


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Force a backend inside a ``with`` block (``None`` restores automatic choice)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    prev = getattr(_local, "forced", None)
    _local.forced = name
    try:
        yield
    finally:
        _local.forced = prev


_DEVICE_TYPES = ("cpu", "cuda", "meta")


def _device_type(device) -> str:
    if isinstance(device, str) and device in _DEVICE_TYPES:  # the common case, checked without parsing
        return device
    if isinstance(device, torch.device):
        return device.type
    if not isinstance(device, str):  # an int would mean "the current accelerator", None nothing
        raise TypeError(f"device must be a torch.device or a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        return torch.device(device).type
    except RuntimeError:  # 'bogus', 'cuda:x', 'CPU' listed only `reference` before
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'meta'") from None


def why_unavailable(backend: str, op: str, device_type) -> Optional[str]:
    """None if ``backend`` can run ``op`` on tensors of ``device_type`` ('cpu' | 'cuda' or a
    device), else the reason."""
    device_type = _device_type(device_type)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if backend == "reference" or device_type == "meta":
        return None  # meta tensors run the ops' fake kernels (shapes only) whatever backend is forced (select)
    if backend in ("cuda", "triton") and op in REFERENCE_ON_GPU:
        return f"{op!r} has no {backend} kernel: on a GPU its reference runs (PyTorch's own fused kernel)"
    if backend in ("cpp", "cuda"):
        want = "cpu" if backend == "cpp" else "cuda"
        if device_type != want:
            return f"backend {backend!r} runs on {want} tensors, got {device_type} tensors"
        if not extension_loaded():
            return f"the compiled extension is not available ({extension_error()})"
        if not has_kernel(op, device_type):
            return f"mmreward._C has no {want.upper()} kernel for {op!r} (built without it?)"
        return None
    if not triton_installed():
        return "triton is not installed (pip install 'mmreward[triton]')"
    if not extension_loaded():
        return f"the Triton ops use the compiled extension's schemas and autograd ({extension_error()})"
    if device_type == "cuda" or (device_type == "cpu" and triton_interpret()):
        return None
    return "triton runs on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before import)"


def available_backends(op: str, device) -> list[str]:
    """The backends that can run ``op`` on tensors of ``device`` ('cpu', 'cuda', or a device) here."""
    return [b for b in BACKENDS if why_unavailable(b, op, device) is None]


def select(op: str, device: torch.device) -> str:
    """Pick the backend for one call of ``op`` on tensors living on ``device``."""
    global _warned_fallback
    device_type = device.type
    forced = forced_backend()
    if device_type == "meta":  # shapes only: the ops' fake kernels (whatever backend is forced)
        return "cpp" if has_kernel(op, "meta") else "reference"
    if forced is not None:
        reason = why_unavailable(forced, op, device_type)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend {forced!r} requested but unavailable: {reason}")
        return forced
    if device_type == "cuda":
        if op in REFERENCE_ON_GPU:
            return "reference"
        order = ("triton", "cuda") if triton_installed() else ("cuda",)
    elif device_type == "cpu":
        order = ("cpp",)
    else:
        order = ()
    for b in order:
        if why_unavailable(b, op, device_type) is None:
            return b
    if not _warned_fallback and device_type in ("cpu", "cuda"):
        _warned_fallback = True
        reason = why_unavailable(order[0], op, device_type) if order else "no kernel for this device"
        warnings.warn(
            f"mmreward: using the pure-PyTorch reference ops ({reason}). "
            "Results are identical but slower; see `python -m mmreward.env_report`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"


def assume_constant_result(fn):
    """What `torch.compiler.assume_constant_result` does, without importing torch._dynamo (which
    imports triton) when mmreward.ops is imported: torch.compile evaluates `fn` once while tracing
    and bakes its result into the graph."""
    fn._dynamo_marked_constant = True
    return fn
