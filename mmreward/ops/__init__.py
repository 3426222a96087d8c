"""Fused reward ops. Each public function validates its inputs and runs the op through one
dispatch path (`_dispatch.call`): the backend (`mmreward.ops.select_backend`: C++ on CPU, Triton /
CUDA on GPU, pure-PyTorch reference as fallback; `MMREWARD_BACKEND` or `use_backend(...)` to force
one) and the op's definition in `mmreward.ops.library` (reference, fake kernel, sample inputs).
See docs/ops.md.
"""
from ._backend import (  # noqa: F401
    BACKENDS,
    BackendUnavailableError,
    cpu_cache_bytes,
    empty_cpu_cache,
    extension_error,
    extension_loaded,
    use_backend,
)
from ._backend import select as select_backend  # noqa: F401
from ._dispatch import available_backends  # noqa: F401  (also takes public function names)
from ._validate import set_check_finite  # noqa: F401

# The public ops of each family (its module's __all__; see docs/ops.md)
from .pairwise import *  # noqa: F401,F403,E402  pairwise reward losses
from .step_reward import *  # noqa: F401,F403,E402  PRM step-reward ops
from .codebook import *  # noqa: F401,F403,E402  VQ-codebook ops (Diffusion Reward entropy / VQ-Diffusion losses)
from .attention import *  # noqa: F401,F403,E402  small-head multi-head attention (VQ-Diffusion's transformer)
