"""Input checks shared by all ops: clear errors, raised before any kernel runs.

Shape / dtype / device checks read only metadata and are always on. Checks that read values (index
ranges, label ranges) skip tensors without readable data (:func:`has_data`: meta tensors, fake
tensors while torch.compile traces). NaN / inf are never searched for on the hot paths: the kernels
make a non-finite input give NaN outputs instead (see each family's docstring). Only the small
per-sequence segment ops (:mod:`mmreward.ops.step_reward`) still check finiteness on the host,
which ``MMREWARD_CHECK_FINITE=0`` or :func:`set_check_finite` switches off.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Iterable, Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _env_enabled(value: str) -> bool:
    """MMREWARD_CHECK_FINITE: "0" (documented) and the usual spellings of off turn the checks off
    ("false" used to leave them on)."""
    return value.strip().lower() not in ("0", "false", "no", "off")


_check_finite = _env_enabled(os.environ.get("MMREWARD_CHECK_FINITE", "1"))


def set_check_finite(enabled: bool) -> None:
    """Turn NaN / inf input checks on or off globally."""
    global _check_finite
    if not (isinstance(enabled, bool) or (type(enabled).__module__ == "numpy" and type(enabled).__name__ in (
            "bool", "bool_")) or (isinstance(enabled, numbers.Integral) and enabled in (0, 1))):
        # bool("false") is True: a string would silently leave the checks on
        raise TypeError(f"set_check_finite: `enabled` must be True or False, got {enabled!r}")
    _check_finite = bool(enabled)


_functorch = getattr(torch._C, "_functorch", None)


def is_vmapped(t) -> bool:
    """True if ``t`` is (or wraps) a tensor batched by ``torch.func.vmap``, whose values cannot be read
    on the host ("data-dependent control flow")."""
    if _functorch is None or not isinstance(t, torch.Tensor) or torch.compiler.is_compiling():
        return False
    while _functorch.is_functorch_wrapped_tensor(t):
        if _functorch.is_batchedtensor(t):
            return True
        t = _functorch.get_unwrapped(t)
    return False


def has_data(t: torch.Tensor) -> bool:
    """True if ``t``'s values can be read (not a meta tensor, not a fake / functional tensor while
    torch.compile or another tracer runs)."""
    return t.device.type != "meta" and type(t) in (torch.Tensor, torch.nn.Parameter) and not (
        torch.compiler.is_compiling())


def readable(op: str, name: str, t: torch.Tensor) -> bool:
    """:func:`has_data` for an input whose values an op checks on the host (indices, labels, codes):
    one clear error for a tensor batched by ``torch.func.vmap`` (vmap cannot read values; skipping
    the check would let an out-of-range value through)."""
    if not has_data(t):
        return False
    if is_vmapped(t):
        raise ValueError(f"{op}: `{name}` is batched by torch.func.vmap, but its values are checked on the host "
                         f"(vmap cannot read them): vmap over the other inputs only (in_dims=None for `{name}`)")
    return True


def check_movable(op: str, name: str, t: torch.Tensor, device: torch.device, other: str) -> None:
    """``t`` (an index / length tensor the op moves to ``device``, e.g. from a CPU data loader to
    the GPU) can be moved there: a meta tensor has no values to copy (moving real values onto meta
    is fine: shapes only)."""
    if t.device.type == "meta" and device.type != "meta":
        raise ValueError(f"{op}: `{name}` is a meta tensor (shapes only, no values) but `{other}` is on {device}; "
                         f"pass `{name}` with its values (or `{other}` on meta too)")


def check_finite_enabled() -> bool:
    return _check_finite and not torch.compiler.is_compiling()


def is_real(x) -> bool:
    """A real number, not a bool (fast path for the common float / int)."""
    return type(x) in (float, int) or (isinstance(x, numbers.Real) and not isinstance(x, bool))


def is_finite_real(x) -> bool:
    """A finite real number (not a bool, NaN or ±inf). Comparisons, not math.isfinite / math.isnan:
    torch.compile(dynamic=True) cannot trace those even on a constant ("torch.* op returned
    non-Tensor"), which broke fullgraph compilation of the ops that check their float options."""
    return is_real(x) and -math.inf < float(x) < math.inf


def is_nan_real(x) -> bool:
    """A real number that is NaN (compile-safe, see :func:`is_finite_real`)."""
    return is_real(x) and float(x) != float(x)


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
        if is_vmapped(t):
            raise ValueError(
                f"{op}: `{name}` is batched by torch.func.vmap, which cannot search it for NaN / inf on the host; "
                "turn the check off to vmap this op (mmreward.ops.set_check_finite(False) or MMREWARD_CHECK_FINITE=0)"
            )
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
