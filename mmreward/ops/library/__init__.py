"""The op library: what each op is, independently of the kernels that run it.

Every op exists in two namespaces with one schema and one autograd, both C++
(``csrc/cpu/<family>.cpp``; see ``csrc/include/mmreward/op_library.h``):

* ``torch.ops.mmreward.<op>``         the C++ (CPU) and CUDA kernels of the compiled extension;
* ``torch.ops.mmreward_triton.<op>``  the Triton kernels (``mmreward/ops/triton/<family>.py``).

Each family module here (:mod:`.pairwise`, :mod:`.step_reward`, :mod:`.codebook`) declares its ops as
:class:`OpSpec` s and registers them with :func:`define`: the pure-PyTorch reference (the test oracle
and the fallback backend), the fake kernel (output shapes, for meta tensors and torch.compile; one
for both namespaces) and ``sample_inputs`` (argument tuples that reach every option of the kernels,
used by the tests, ``torch.library.opcheck``, the torch.compile checks and the Triton cubin check).

This package imports nothing else from ``mmreward`` besides the backend probe, so every other part
of ``mmreward.ops`` (public functions, dispatch, Triton kernels) can import it without a cycle.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .. import _backend

NAMESPACES = ("mmreward", "mmreward_triton")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every op accumulates in and returns its float results in: float64 for float64
    inputs, float32 for float32 / bfloat16 / float16."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class OpSpec:
    """One op of the library (the C++ schema says its arguments and outputs)."""

    name: str
    # output tensors with the right shapes / dtypes / devices for the given arguments
    fake: Callable
    # (dtype) -> [args, ...]: CPU arguments covering the op's options; differentiable inputs of
    # forward ops require grad
    sample_inputs: Callable[[torch.dtype], list]
    # forward ops: the pure-PyTorch op, same arguments; returns the op's leading outputs (those that
    # are not gradients computed ahead for autograd), differentiable through PyTorch's autograd
    reference: Optional[Callable] = None
    # forward ops with a C++ autograd formula (the others' outputs carry no gradient)
    differentiable: bool = True
    # False: no CUDA / Triton kernels; on a GPU the reference runs (it is already a fused PyTorch kernel)
    gpu_kernels: bool = True
    # set by :func:`define` from the family it registers the op under
    family: str = ""


OPS: dict[str, OpSpec] = {}


def define(family: str, specs: list[OpSpec]) -> None:
    """Add a family's ops to :data:`OPS` and register their fake kernels in both namespaces (the
    schemas exist only when the compiled extension is loaded)."""
    specs = [dataclasses.replace(spec, family=family) for spec in specs]
    for spec in specs:
        OPS[spec.name] = spec
        if not spec.gpu_kernels:
            _backend.REFERENCE_ON_GPU.add(spec.name)
    if not _backend.extension_loaded():
        return
    for spec in specs:
        for ns in NAMESPACES:
            torch.library.register_fake(f"{ns}::{spec.name}", spec.fake)


def ops_of(family: str) -> list[OpSpec]:
    return [s for s in OPS.values() if s.family == family]


def sample_inputs(op: str, dtype: torch.dtype = torch.float32) -> list:
    """Argument tuples (CPU tensors) for ``torch.ops.<namespace>.<op>``."""
    return OPS[op].sample_inputs(dtype)
