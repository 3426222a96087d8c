"""``--device`` / ``dtype=`` requests checked against what this torch build and machine can do."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Union

import torch


class DeviceError(ValueError):
    """A device or dtype request that cannot be met here (the message says why and what to use)."""


# the same check serves the CLI's --device and the Python API's device= arguments
_CPU = 'cpu (--device cpu, or device="cpu" in Python)'


def resolve_device(spec: Union[None, int, str, torch.device] = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` (or ``1``, as torch reads it), ``"auto"`` / None (CUDA when
    usable, else CPU) → a device this process can use, or :class:`DeviceError` naming the problem."""
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
        spec = f"cuda:{spec}"
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        # "CPU" / "Cuda:0" as people type them; torch itself only takes lower case
        dev = spec if isinstance(spec, torch.device) else torch.device(str(spec).strip().lower())
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {spec!r}: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise DeviceError(f"device {spec!r} requested, but this torch build ({torch.__version__}) has no CUDA "
                              f"support: use {_CPU}, or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested, but no CUDA GPU is visible to this process "
                              f"(check CUDA_VISIBLE_DEVICES / the driver): use {_CPU}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested, but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"device {spec!r} requested, but MPS is not available here: use {_CPU}")
    elif dev.type not in ("cpu", "meta"):
        raise DeviceError(f"device type {dev.type!r} is not supported: use cpu or cuda")
    return dev


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "fp64": torch.float64, "float64": torch.float64, "double": torch.float64}


_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def resolve_dtype(spec: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """``None`` or ``"auto"`` (keep the saved dtype), a ``torch.dtype`` or a name (fp32 / bf16 / fp16 / fp64)."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":  # transformers' spelling of "as saved"
        return None
    if spec is None or isinstance(spec, torch.dtype):
        if isinstance(spec, torch.dtype) and spec not in _SUPPORTED:
            # float8 types are floating point, but no model computes in them: every score would fail deep
            # inside torch (``addmm`` not implemented for Float8) instead of here
            raise DeviceError(f"dtype must be one of float32, bfloat16, float16 or float64, got {spec}")
        return spec
    key = str(spec).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise DeviceError(f"unknown dtype {spec!r}: use fp32, bf16, fp16 or fp64 (or auto: as saved)")
    return _DTYPES[key]


__all__ = ["DeviceError", "resolve_device", "resolve_dtype", "seeded_sampling"]


_SAMPLING_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_sampling(seed: int, device: Union[str, torch.device] = "cpu") -> Iterator[None]:
    """Random draws inside the block (``model.generate(do_sample=True)``, which takes no generator) come from
    ``torch.manual_seed(seed)`` in a forked RNG: the caller's global RNG is neither reseeded nor advanced.
    torch's RNG is one per process, so blocks in different threads take turns — two threads sampling at once
    would otherwise draw from each other's seeds and restore each other's saved states."""
    device = torch.device(device)
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
