"""Input checks shared by all ops: clear errors, raised before any kernel runs.

Shape / dtype / device checks read only metadata and are always on. Checks that read values (index
ranges, label ranges) skip tensors without readable data (:func:`has_data`: meta tensors, fake
tensors while torch.compile traces). NaN / inf are never searched for on the hot paths: the kernels
make a non-finite input give NaN outputs instead (see each family's docstring). Only the small
per-sequence segment ops (:mod:`mmreward.ops.step_reward`) still check finiteness on the host,
which ``MMREWARD_CHECK_FINITE=0`` or :func:`set_check_finite` switches off.
"""
from __future__ import annotations

import numbers
import os
from typing import Iterable, Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_check_finite = os.environ.get("MMREWARD_CHECK_FINITE", "1") != "0"


def set_check_finite(enabled: bool) -> None:
    """Turn NaN / inf input checks on or off globally."""
    global _check_finite
    _check_finite = bool(enabled)


def has_data(t: torch.Tensor) -> bool:
    """True if ``t``'s values can be read (not a meta tensor, not a fake / functional tensor while
    torch.compile or another tracer runs)."""
    return t.device.type != "meta" and type(t) in (torch.Tensor, torch.nn.Parameter) and not (
        torch.compiler.is_compiling())


def check_finite_enabled() -> bool:
    return _check_finite and not torch.compiler.is_compiling()


def is_real(x) -> bool:
    """A real number, not a bool (fast path for the common float / int)."""
    return type(x) in (float, int) or (isinstance(x, numbers.Real) and not isinstance(x, bool))


def _where(op: str, name: str) -> str:
    return f"{op}: `{name}`"


def check_tensor(op: str, name: str, t, *, ndim: Optional[Sequence[int]] = None, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_where(op, name)} must be a torch.Tensor, got {type(t).__name__}")
    if floating and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{_where(op, name)} must be float32/bfloat16/float16/float64, got {t.dtype}")
    if ndim is not None and t.dim() not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{_where(op, name)} must be {want}, got shape {tuple(t.shape)}")


def check_int_tensor(op: str, name: str, t, *, ndim: Optional[Sequence[int]] = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_where(op, name)} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{_where(op, name)} must be an integer tensor, got {t.dtype}")
    if ndim is not None and t.dim() not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{_where(op, name)} must be {want}, got shape {tuple(t.shape)}")


def check_same_shape(op: str, **tensors: torch.Tensor) -> None:
    items = [(n, t) for n, t in tensors.items() if t is not None]
    (n0, t0), rest = items[0], items[1:]
    for n, t in rest:
        if t.shape != t0.shape:
            raise ValueError(f"{op}: `{n}` has shape {tuple(t.shape)} but `{n0}` has {tuple(t0.shape)}")


def check_same_device(op: str, **tensors: Optional[torch.Tensor]) -> torch.device:
    items = [(n, t) for n, t in tensors.items() if t is not None]
    n0, t0 = items[0]
    for n, t in items[1:]:
        if t.device != t0.device:
            raise ValueError(f"{op}: `{n}` is on {t.device} but `{n0}` is on {t0.device}")
    return t0.device


def check_nonempty(op: str, name: str, t: torch.Tensor, dim: int = 0) -> None:
    if t.dim() == 0 or t.shape[dim] == 0:
        raise ValueError(f"{op}: `{name}` is empty (shape {tuple(t.shape)}); nothing to compute a loss over")


def check_finite(op: str, tensors: Iterable[tuple[str, Optional[torch.Tensor]]]) -> None:
    if not check_finite_enabled():
        return
    for name, t in tensors:
        if t is None or not t.is_floating_point() or t.numel() == 0 or not has_data(t):
            continue
        if not bool(torch.isfinite(t).all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(torch.isinf(t).sum())
            raise ValueError(
                f"{op}: `{name}` has {n_nan} NaN and {n_inf} inf values (of {t.numel()}); "
                "fix the upstream computation (set MMREWARD_CHECK_FINITE=0 to skip this check)"
            )


REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def reduction_code(op: str, reduction: str) -> int:
    try:
        return REDUCTIONS[reduction]
    except (KeyError, TypeError):  # TypeError: an unhashable value such as a list
        raise ValueError(f"{op}: reduction must be one of {tuple(REDUCTIONS)}, got {reduction!r}") from None
