"""Fused reward ops. Each public function validates its inputs, picks a backend
(`mmreward.ops.select_backend`: C++ on CPU, Triton / CUDA on GPU, pure-PyTorch reference as
fallback; `MMREWARD_BACKEND` or `use_backend(...)` to force one) and runs it.
"""
from ._backend import (  # noqa: F401
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    cpu_cache_bytes,
    empty_cpu_cache,
    extension_error,
    extension_loaded,
    use_backend,
)
from ._backend import select as select_backend  # noqa: F401
from ._validate import set_check_finite  # noqa: F401

# pairwise reward losses (mmreward/ops/pairwise.py)
from .pairwise import (  # noqa: F401,E402
    listwise_loss,
    pairwise_accuracy,
    pairwise_loss,
    pairwise_loss_and_accuracy,
    reward_head_pairwise_loss,
    reward_head_pairwise_loss_and_accuracy,
)

# PRM step-reward ops (mmreward/ops/step_reward.py)
from .step_reward import (  # noqa: F401,E402
    first_below,
    pack_steps,
    pairs_from_groups,
    refine_process_rewards,
    segment_reduce,
    step_bce_loss,
    step_logits,
    step_pair_loss,
    step_positions,
    step_scores,
    step_value_loss,
    step_values,
    unpack_steps,
)

# VQ-codebook ops (mmreward/ops/codebook.py): Diffusion Reward entropy / VQ-Diffusion losses
from .codebook import (  # noqa: F401,E402
    categorical_kl,
    codebook_entropy,
    codebook_nll,
    frame_reduce,
    log_categorical,
)
