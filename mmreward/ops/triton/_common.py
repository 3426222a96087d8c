"""What the Triton kernel modules share: the accumulation type, the bf16-rounding store, and the
registration of each module's launch wrappers as the kernels of ``torch.ops.mmreward_triton.<op>``
(schemas, autograd: the compiled extension; fake kernels: :mod:`mmreward.ops.library`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..library import acc_dtype

# CUDA tensors on a GPU; CPU tensors when TRITON_INTERPRET=1 (kernels interpreted on the host)
_KEYS = ("CUDA", "CPU")
_LIBRARY = torch.library.Library("mmreward_triton", "IMPL")


def register(*launchers) -> None:
    """Each launcher becomes the kernel of ``mmreward_triton::<its name>``."""
    for fn in launchers:
        for key in _KEYS:
            _LIBRARY.impl(fn.__name__, fn, key)


def acc_tl(dtype: torch.dtype):
    """The Triton type of :func:`mmreward.ops.library.acc_dtype`."""
    return tl.float64 if acc_dtype(dtype) == torch.float64 else tl.float32


@triton.jit
def cast_out(x, ptr):
    """x converted to ptr's element type, rounding to nearest even. bf16 is rounded by hand: the
    interpreter (TRITON_INTERPRET=1) truncates fp32 -> bf16; on the GPU this is exact and cheap."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x.to(ptr.dtype.element_ty)
