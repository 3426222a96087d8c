"""Fused reward ops. Each public function validates its inputs, picks a backend
(`mmreward.ops.select_backend`: C++ on CPU, Triton / CUDA on GPU, pure-PyTorch reference as
fallback; `MMREWARD_BACKEND` or `use_backend(...)` to force one) and runs it.
"""
from ._backend import (  # noqa: F401
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    extension_error,
    extension_loaded,
    use_backend,
)
from ._backend import select as select_backend  # noqa: F401
from ._validate import set_check_finite  # noqa: F401
